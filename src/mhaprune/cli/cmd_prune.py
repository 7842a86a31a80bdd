"""``mhaprune prune``: calibrate → init → search → convert → fine-tune (KD) → evaluate → save.

With no arguments it is the embedded default: the bundled ``flatten_swin_micro`` on Fashion-MNIST to 70% of its MACs,
sized to finish in about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from ._common import add_data_args
from .cmd_train import add_train_args, train_defaults

DEFAULT_MODEL = "flatten_swin_micro"


def _method_lines() -> str:
    from ..methods import get_method, list_methods

    rows = []
    for name in list_methods():
        info = get_method(name)
        tag = "trains" if info.trains else "one-shot"
        rows.append(f"  {name:<18} {info.summary} [{tag}]")
    return "methods (--method NAME):\n" + "\n".join(rows)


def add_parser(sub):
    import argparse

    from ..pipeline import PRUNE_TRAIN, PruneRecipe
    from ..pruning import PruneConfig
    from ._options import add_config_args

    p = sub.add_parser(
        "prune",
        help="prune a model to a MACs target (no arguments: the embedded default)",
        description="Prune a model to a MACs target with a registered method, fine-tune it with distillation, "
        "evaluate and save it. With no arguments: the bundled flatten_swin_micro to 70% of its MACs with ours.",
        epilog=_method_lines(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", metavar="YAML", help="recipe file; explicit flags win")
    m = p.add_argument_group("model (default: the bundled flatten_swin_micro)")
    m.add_argument("--model", metavar="NAME", help="registered model (its bundled weights when it has them)")
    m.add_argument("--checkpoint", metavar="DIR", help="model folder to prune")
    m.add_argument("--timm", metavar="NAME", help="a timm model (with --pretrained-file, or --random-init)")
    m.add_argument("--pretrained-file", metavar="PATH", help="weights of the --timm model (safetensors or .pth)")
    m.add_argument("--hf", metavar="DIR", help="a Hugging Face model folder (config.json + model.safetensors)")
    m.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="builder argument (repeatable)")
    m.add_argument(
        "--random-init",
        action="store_true",
        default=None,
        help="allow a model without trained weights (for latency/shape studies)",
    )
    add_data_args(p)
    from ..data import TextDataConfig

    add_config_args(p.add_argument_group("text (a Hugging Face text encoder: --hf DIR)"), TextDataConfig)
    b = p.add_argument_group("method, budget and stages")
    add_config_args(b, PruneRecipe)
    add_config_args(b, PruneConfig, only=("target_macs",))
    meth = p.add_argument_group("method options (docs/method.md; each method reads its own, see --help's list)")
    add_config_args(meth, PruneConfig, skip=("target_macs",))
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/prune-MODEL-TIMESTAMP)")
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep the stages' resume checkpoints after a successful run (default: removed; metrics stay)",
    )
    add_train_args(p, base=PRUNE_TRAIN, skip=_PER_STAGE)
    p.add_argument("--epochs", type=float, default=None, help=argparse.SUPPRESS)  # refused with a hint below
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # likewise
    p.set_defaults(func=run)


# recipe fields that prune sets per stage (--search-epochs / --finetune-max-steps ...), not for both at once
_PER_STAGE = ("epochs", "max_steps")


def prune_defaults() -> dict:
    """What every prune flag means when neither it nor the recipe file sets it (from the config dataclasses)."""
    from ..data import TextDataConfig
    from ..pipeline import PRUNE_TRAIN, PruneRecipe
    from ..pruning import PruneConfig
    from ._options import config_defaults

    return {
        **train_defaults(PRUNE_TRAIN, skip=_PER_STAGE),
        "no_augment": True,  # the fine-tune of a trained model: no augmentation
        "epochs": None,
        "max_steps": None,
        "random_init": False,
        "timm": None,
        "hf": None,
        "pretrained_file": None,
        **config_defaults(PruneRecipe),
        **config_defaults(PruneConfig),
        **config_defaults(TextDataConfig),
    }


def _prune_config(opts: dict):
    from ..pruning import PruneConfig
    from ._options import config_values

    kw = config_values(PruneConfig, opts)
    target = kw.get("target_macs", PruneConfig.target_macs)
    try:
        kw["target_macs"] = float(target)
    except (TypeError, ValueError):
        pass
    return PruneConfig(**kw, seed=opts["seed"])


def _recipe(opts: dict):
    from ..pipeline import PruneRecipe
    from ._options import config_values

    return PruneRecipe(**config_values(PruneRecipe, opts))


def _fmt(n: float) -> str:
    return f"{n / 1e9:.3f} G" if n >= 1e9 else f"{n / 1e6:.2f} M"


def print_report(report: dict) -> None:
    d, p = report["dense"], report["pruned"]
    print(f"{'':<14}{'dense':>16}{'pruned':>16}")
    print(f"{'params':<14}{d['params']:>16,}{p['params']:>16,}  ({100 * p['params'] / d['params']:.1f}%)")
    print(
        f"{'MACs':<14}{_fmt(d['macs']):>16}{_fmt(p['macs']):>16}  ({100 * p['macs'] / d['macs']:.1f}%; target "
        f"{100 * report['target_macs'] / d['macs']:.1f}%)"
    )
    for kind, v in d["macs_by_kind"].items():
        print(f"  {kind:<12}{_fmt(v):>16}{_fmt(p['macs_by_kind'].get(kind, 0)):>16}")
    test = report.get("test", {}).get("pruned", {})
    if "top1" in test:
        td, tp = report["test"]["dense"]["top1"], test["top1"]
        print(f"{'top-1 (test)':<14}{td:>15.2f}%{tp:>15.2f}%  ({tp - td:+.2f} pp)")
    elif "cosine" in test:
        print(f"{'cosine (test)':<14}{1:>16.3f}{test['cosine']:>16.3f}  (pooled embedding vs the dense model)")
        print(f"{'top-' + str(test['k']) + ' nbrs':<14}{1:>16.3f}{test['neighbours']:>16.3f}  (neighbour agreement)")
    if "latency" in report:
        lat = report["latency"]
        print(
            f"{'latency b' + str(lat['batch']):<14}{1e3 * lat['dense_s']:>13.2f} ms{1e3 * lat['pruned_s']:>13.2f} ms  "
            f"(speedup {lat['speedup']:.2f}x; MACs ratio {lat['macs_ratio']:.2f}x)"
        )
    print(
        f"time: search {report['search_s']:.0f} s, fine-tune {report['finetune_s']:.0f} s, total "
        f"{report['wall_s']:.0f} s"
    )


def _load_model(opts: dict, name: str | None, model_args: dict):
    from ..interop import from_hf, from_timm
    from ..models import create_model
    from ._common import UserError, load_model_arg

    if opts["timm"]:
        return from_timm(opts["timm"], opts["pretrained_file"], **model_args)
    if opts["hf"]:
        if model_args:
            raise UserError("--model-arg cannot be combined with --hf (the folder's config.json fixes the model)")
        return from_hf(opts["hf"], random_init=bool(opts["random_init"]))
    if name:
        return create_model(name, pretrained=not opts["random_init"], **model_args)
    model = load_model_arg(None, opts["checkpoint"], model_args=model_args)
    if getattr(model, "pruning_plan", None) is not None:
        raise UserError(
            f"{opts['checkpoint']} is already pruned; plans do not compose yet, so prune the dense "
            f"model it came from with a lower --target-macs instead"
        )
    return model


def _text_splits(opts: dict, model, objective: str):
    """Train / validation / test splits of the ``--text-file`` items, tokenized by the model folder's tokenizer."""
    from ..data import build_text_data, load_tokenizer
    from ._common import UserError

    if not opts["text_file"]:
        raise UserError(
            f"{model.arch_name} is a text encoder: pass --text-file SRC (a text / CSV / JSONL file, a fortunes-style "
            f"folder, or fortunes)"
        )
    if objective == "classification":
        raise UserError(
            "--objective classification needs labels and text items carry none; use --objective features (the "
            "pooled embedding and hidden states) or logits"
        )
    tokenizer = load_tokenizer(opts["hf"] or opts["checkpoint"])
    return build_text_data(
        opts["text_file"], tokenizer, opts["max_length"], opts["holdout"], opts["holdout"], 0,
        opts["text_column"], getattr(model.config, "max_position_embeddings", None),
    )  # fmt: skip


def _check_objective(model, train_set, objective: str, recipe) -> None:
    """The model can give what the objective needs (one forward of two training items), before anything is written."""
    import copy

    from ..pipeline import labelled_calibration
    from ..train import make_objective

    x, _ = labelled_calibration(train_set, 2, 0)
    teacher = copy.deepcopy(model) if objective != "classification" else None
    make_objective(objective, teacher, **recipe.objective_options()).check(model, x)


def _source_flags(opts: dict, name: str | None) -> str:
    """The flags that name the model being pruned, as a user would type them for ``mhaprune train``."""
    if opts["checkpoint"]:
        return f"--checkpoint {opts['checkpoint']}"
    if name:
        return f"--model {name}" + ("" if opts["random_init"] else " --pretrained")
    return "--checkpoint DIR (the model saved as a folder)"


def _model_name(opts: dict) -> str | None:
    """The registered model to prune (``None`` for --checkpoint / --timm / --hf), after checking the sources."""
    from ..models import model_info, pretrained_models
    from ._common import UserError

    sources = [k for k in ("model", "checkpoint", "timm", "hf") if opts[k]]
    if len(sources) > 1:
        raise UserError(f"give one model source, not {' and '.join('--' + k for k in sources)}")
    if opts["pretrained_file"] and not opts["timm"]:
        raise UserError("--pretrained-file goes with --timm NAME (weights for the timm model)")
    name = opts["model"] or (None if sources else DEFAULT_MODEL)
    if name:
        model_info(name)  # a mistyped name says so, with the close names, before anything else
    if name and not opts["random_init"] and name not in pretrained_models():
        raise UserError(
            f"{name} has no bundled trained weights; pass --checkpoint DIR with a trained model, or "
            f"--random-init to prune untrained weights (bundled: {', '.join(pretrained_models())})"
        )
    if opts["timm"] and not (opts["pretrained_file"] or opts["random_init"]):
        raise UserError(
            f"--timm {opts['timm']} needs its trained weights: pass --pretrained-file PATH (nothing is downloaded), "
            f"or --random-init to prune untrained weights"
        )
    return name


def _stage_configs(opts: dict, recipe, n_train: int, device: str, progress: bool):
    """The search and fine-tune recipes the flags describe, checked against the data (``None``: no such stage)."""
    from ..methods import get_method
    from ..pipeline import PRUNE_TRAIN
    from .cmd_train import train_config_from

    # a stage runs when its epochs are > 0; its own --search-max-steps / --finetune-max-steps caps it
    search = None
    if get_method(recipe.method).trains and recipe.search_epochs > 0:
        search_opts = {
            **opts,
            "epochs": recipe.search_epochs,
            "max_steps": recipe.search_max_steps,
            "warmup_epochs": 0.0,
        }
        search = train_config_from(search_opts, device, progress, PRUNE_TRAIN)
    epochs = recipe.finetune_budget()
    finetune = None
    if epochs > 0:
        ft_opts = {**opts, "epochs": epochs, "max_steps": recipe.finetune_max_steps}
        finetune = train_config_from(ft_opts, device, progress, PRUNE_TRAIN)
    for stage in (search, finetune):
        if stage is not None:
            stage.validate(n_train)
    return search, finetune


def run(args) -> int:
    import torch

    from ..data import build_data
    from ..data.text import copy_tokenizer
    from ..export import model_card, save_pruned
    from ..methods import get_method, method_config
    from ..pipeline import LatencySpec, prune
    from ..pruning import ModelCost, latency_budget
    from ..train import CHECKPOINT, read_checkpoint
    from ..utils import atomic_write_json, atomic_write_text, checksum_path, run_metadata, seed_all, write_error
    from ._common import (
        UserError,
        check_classes,
        elastic_resume,
        load_yaml_config,
        new_head_hint,
        parse_model_args,
        pick_device,
        prepare_out_dir,
        resolve,
        set_threads,
    )

    t0 = time.time()
    file_recipe = load_yaml_config(args.config)
    opts = resolve(args, prune_defaults(), file_recipe)
    if opts["epochs"] is not None:
        raise UserError("prune takes --search-epochs and --finetune-epochs, not --epochs")
    if opts["max_steps"] is not None:
        raise UserError("prune takes --search-max-steps and --finetune-max-steps (one per stage), not --max-steps")
    set_threads(opts["threads"])
    cfg = _prune_config(opts)  # validates the method options before any work
    recipe = _recipe(opts)  # ... and the method's name
    method = get_method(recipe.method)
    cfg = method_config(method, cfg)
    if not method.trains and (args.search_epochs or file_recipe.get("search_epochs")):
        raise UserError(
            f"method {method.name} is one-shot and takes no search epochs; drop --search-epochs (methods that train: "
            f"ours and its variants)"
        )
    name = _model_name(opts)
    label = name or opts["timm"] or ("hf" if opts["hf"] else "checkpoint")
    out_arg = args.out or f"runs/prune-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    markers = ("config.json", "resolved_config.json", "search/checkpoint.pt", "finetune/checkpoint.pt")
    elastic_resume(args, out_arg, ("search/checkpoint.pt", "finetune/checkpoint.pt"))
    prepare_out_dir(out_arg, args.overwrite, args.resume, markers, create=False)
    seed_all(opts["seed"])
    model = _load_model(opts, name, parse_model_args(args.model_arg))
    text = getattr(model, "input_size", None) is None
    objective = recipe.objective_for(text)
    device = pick_device(opts["device"])
    if text:
        splits = _text_splits(opts, model, objective)
    else:
        if opts["text_file"]:
            raise UserError(f"--text-file goes with a text encoder (--hf DIR); {model.arch_name} takes images")
        ModelCost(model, model.input_size).resolve_target(cfg.target_macs, cfg.groups(), cfg.min_per_head)
        if cfg.target_latency is not None:  # measures the device's tables (cached for the run) and checks the target
            latency_budget(model, torch.randn(1, *model.input_size), cfg, device=device)
        splits = build_data(
            opts["data"], model.input_size, opts["data_dir"], augment=not opts["no_augment"], fit=opts["fit"],
            channels=opts["channels"],
        )  # fmt: skip
        if objective == "classification":
            check_classes(model, splits.classes, new_head_hint(_source_flags(opts, name), splits.classes))
    _check_objective(model, splits.train, objective, recipe)
    search, finetune = _stage_configs(opts, recipe, len(splits.train), device, not args.no_progress)
    if args.resume:  # a checkpoint that cannot be used stops here, before anything is written
        for stage in ("search", "finetune"):
            if (Path(out_arg) / stage / CHECKPOINT).exists():
                read_checkpoint(Path(out_arg) / stage / CHECKPOINT)
    out = prepare_out_dir(out_arg, args.overwrite, args.resume, markers)
    meta = run_metadata()
    resolved = {**opts, "prune_config": cfg.to_dict(), "recipe": recipe.__dict__, **meta}
    atomic_write_json(out / "resolved_config.json", resolved)
    result = prune(
        model,
        splits.train,
        splits.val,
        splits.test,
        method=recipe.method,
        config=cfg,
        search=search,
        finetune=finetune,
        out_dir=out,
        calib_size=recipe.calib_size,
        kd_alpha=recipe.kd_alpha,
        resume=args.resume,
        latency=LatencySpec(batch=recipe.latency_batch, device=device) if recipe.latency_batch else None,
        eval_splits=recipe.eval_splits,
        eval_limit=recipe.eval_limit,
        objective=objective,
        objective_options=recipe.objective_options(),
    )
    report = result.report
    report.wall_s = round(time.time() - t0, 1)  # the whole command, data loading included
    report_dict = report.to_dict()
    atomic_write_json(out / "report.json", report_dict)
    extra = {"metrics": report.test, "prune_config": cfg.to_dict(), "method": method.name, "objective": objective}
    if text:  # where the dense model is, for `mhaprune eval` of the encoder metrics
        extra["source_model"] = str(Path(opts["hf"] or opts["checkpoint"]).resolve())
        extra["max_length"] = opts["max_length"]
    save_pruned(result.model, out, extra=extra)
    if text:
        try:
            copy_tokenizer(opts["hf"] or opts["checkpoint"], out)  # the folder tokenizes its own inputs
        except OSError as e:
            raise write_error(out, e) from e
    command = "mhaprune " + " ".join(shlex.quote(a) for a in getattr(args, "argv", ["prune"]))
    source = next((f"{k} {opts[k]}" for k in ("hf", "timm", "checkpoint") if opts[k]), name)
    card = model_card(result.model.arch_name, report_dict, command, meta, source=source)
    atomic_write_text(out / "README.md", card)
    if not args.keep_checkpoints:  # the run is complete: resume checkpoints are dead weight (tens of MB)
        for stage in ("search", "finetune"):
            (out / stage / CHECKPOINT).unlink(missing_ok=True)
            checksum_path(out / stage / CHECKPOINT).unlink(missing_ok=True)
    print_report(report_dict)
    print(f"saved {out}")
    return 0
