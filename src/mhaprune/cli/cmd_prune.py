"""``mhaprune prune``: calibrate → init → search → convert → fine-tune (KD) → evaluate → save.

With no arguments it is the embedded default: the bundled ``flatten_swin_micro`` on Fashion-MNIST to 70% of its MACs,
sized to finish in about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from ._common import add_data_args
from .cmd_train import TRAIN_DEFAULTS, add_train_args

DEFAULT_MODEL = "flatten_swin_micro"

# PruneConfig options that the CLI passes through when given (None = PruneConfig's default)
_METHOD_OPTIONS = (
    "indicator_lr",
    "weight_lr_scale",
    "reg_weight",
    "patience",
    "round_to",
    "regularizer",
    "threshold",
    "similarity_source",
    "attn_init_scope",
    "attn_init_metric",
    "rescale",
)

PRUNE_DEFAULTS = {
    **TRAIN_DEFAULTS,
    # the fine-tune recipe (shared by the search for the weights)
    "lr": 5e-4,
    "warmup_epochs": 0.05,
    "no_augment": True,
    "save_every": 100,
    "epochs": None,
    # budget and stages
    "random_init": False,
    "timm": None,
    "hf": None,
    "pretrained_file": None,
    "target_macs": "0.7",
    "search_epochs": 0.35,
    "finetune_epochs": 0.6,
    "kd_alpha": 0.5,
    "calib_size": 64,
    # method options: None = PruneConfig's default
    **dict.fromkeys(_METHOD_OPTIONS),
    **dict.fromkeys(
        ("no_similarity", "no_equal_heads", "no_reweight", "no_attn_init", "no_prune_qk", "no_prune_v", "no_prune_mlp"),
        False,
    ),
}


def add_parser(sub):
    p = sub.add_parser("prune", help="prune a model to a MACs target (no arguments: the embedded default)")
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
    b = p.add_argument_group("budget and stages")
    b.add_argument("--target-macs", metavar="T", help="fraction of dense MACs (0.7), percentage (70%%) or count (1.2G)")
    b.add_argument(
        "--search-epochs",
        type=float,
        metavar="E",
        help="search budget in epochs (default 0.35; 0 = one-shot from the initialised indicators)",
    )
    b.add_argument("--finetune-epochs", type=float, metavar="E", help="KD fine-tune epochs (default 0.6)")
    b.add_argument("--kd-alpha", type=float, metavar="A", help="distillation weight (0 = hard labels only)")
    b.add_argument("--calib-size", type=int, metavar="N", help="calibration images (default 64)")
    meth = p.add_argument_group("method options (see docs/method.md)")
    meth.add_argument("--indicator-lr", type=float, metavar="LR")
    meth.add_argument(
        "--weight-lr-scale", type=float, metavar="S", help="weights' LR during the search, × --lr (0 = frozen)"
    )
    meth.add_argument("--reg-weight", type=float, metavar="L")
    meth.add_argument("--patience", type=int, metavar="STEPS")
    meth.add_argument("--round-to", type=int, metavar="K", help="kept channels per head a multiple of K (e.g. 8)")
    meth.add_argument("--regularizer", choices=("squared", "log"))
    meth.add_argument("--threshold", choices=("sigmoid", "raw"))
    meth.add_argument("--similarity-source", choices=("activation", "weight"))
    meth.add_argument("--attn-init-scope", choices=("linear", "attention", "all"))
    meth.add_argument("--attn-init-metric", choices=("fro", "kl"))
    meth.add_argument(
        "--rescale",
        action="store_true",
        default=None,
        help="after the search, least-squares rescale each pruned layer's kept output columns to the dense model",
    )
    for flag, what in (
        ("similarity", "channel-similarity weights"),
        ("equal-heads", "equal-per-head adjustment"),
        ("reweight", "reweight module"),
        ("attn-init", "attention-difference init"),
        ("prune-qk", "Q/K pruning"),
        ("prune-v", "V pruning"),
        ("prune-mlp", "MLP pruning"),
    ):
        meth.add_argument(f"--no-{flag}", action="store_true", default=None, help=f"switch off the {what}")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/prune-MODEL-TIMESTAMP)")
    add_train_args(p)
    p.set_defaults(func=run)


def _prune_config(opts: dict):
    from ..pruning import PruneConfig

    kw = dict(
        target_macs=opts["target_macs"],
        similarity=not opts["no_similarity"],
        equal_heads=not opts["no_equal_heads"],
        reweight=not opts["no_reweight"],
        attn_init=not opts["no_attn_init"],
        prune_qk=not opts["no_prune_qk"],
        prune_v=not opts["no_prune_v"],
        prune_mlp=not opts["no_prune_mlp"],
        seed=opts["seed"],
    )
    for k in _METHOD_OPTIONS:
        if opts[k] is not None:
            kw[k] = opts[k]
    target = kw["target_macs"]
    try:
        kw["target_macs"] = float(target)
    except (TypeError, ValueError):
        pass
    return PruneConfig(**kw)


def _dense_twin(model):
    """An untrained dense model of the same architecture (for the latency comparison)."""
    from ..export.folder import build_base

    cfg = {"architecture": model.arch_name, "model_args": model.model_args, **getattr(model, "mhaprune_build", {})}
    return build_base(cfg)


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
    if "test" in report:
        td, tp = report["test"]["dense"]["top1"], report["test"]["pruned"]["top1"]
        print(f"{'top-1 (test)':<14}{td:>15.2f}%{tp:>15.2f}%  ({tp - td:+.2f} pp)")
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


def run(args) -> int:
    import torch

    from ..data import build_data
    from ..export import save_pruned
    from ..models._pretrained import pretrained_models
    from ..pipeline import measure_latency, prune
    from ..pruning import ModelCost
    from ..train import CHECKPOINT, read_checkpoint
    from ..utils import atomic_write_json, run_metadata, seed_all
    from ._common import (
        UserError,
        check_classes,
        load_yaml_config,
        parse_model_args,
        pick_device,
        prepare_out_dir,
        resolve,
    )
    from .cmd_train import train_config_from

    t0 = time.time()
    opts = resolve(args, PRUNE_DEFAULTS, load_yaml_config(args.config))
    if opts["epochs"] is not None:
        raise UserError("prune takes --search-epochs and --finetune-epochs, not --epochs")
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    cfg = _prune_config(opts)  # validates the method options before any work
    sources = [k for k in ("model", "checkpoint", "timm", "hf") if opts[k]]
    if len(sources) > 1:
        raise UserError(f"give one model source, not {' and '.join('--' + k for k in sources)}")
    if opts["pretrained_file"] and not opts["timm"]:
        raise UserError("--pretrained-file goes with --timm NAME (weights for the timm model)")
    name = opts["model"] or (None if sources else DEFAULT_MODEL)
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
    label = name or opts["timm"] or ("hf" if opts["hf"] else "checkpoint")
    out_arg = args.out or f"runs/prune-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    markers = ("config.json", "resolved_config.json", "search/checkpoint.pt", "finetune/checkpoint.pt")
    prepare_out_dir(out_arg, args.overwrite, args.resume, markers, create=False)
    seed_all(opts["seed"])
    model = _load_model(opts, name, parse_model_args(args.model_arg))
    if getattr(model, "input_size", None) is None:
        raise UserError(f"{model.arch_name} takes no images; prune text models through the Python API")
    ModelCost(model, model.input_size).resolve_target(cfg.target_macs, cfg.groups(), cfg.min_per_head)
    device = pick_device(opts["device"])
    splits = build_data(
        opts["data"], model.input_size, opts["data_dir"], augment=not opts["no_augment"], fit=opts["fit"]
    )
    check_classes(model, splits.classes)
    progress = not args.no_progress
    search = train_config_from({**opts, "epochs": opts["search_epochs"], "warmup_epochs": 0.0}, device, progress)
    finetune = train_config_from({**opts, "epochs": opts["finetune_epochs"]}, device, progress)
    if search.epochs > 0:
        search.validate(len(splits.train))
    if finetune.epochs > 0:
        finetune.validate(len(splits.train))
    if args.resume:  # a checkpoint that cannot be used stops here, before anything is written
        for stage in ("search", "finetune"):
            if (Path(out_arg) / stage / CHECKPOINT).exists():
                read_checkpoint(Path(out_arg) / stage / CHECKPOINT)
    out = prepare_out_dir(out_arg, args.overwrite, args.resume, markers)
    atomic_write_json(out / "resolved_config.json", {**opts, "prune_config": cfg.to_dict(), **run_metadata()})
    result = prune(
        model,
        cfg,
        splits.train,
        splits.val,
        search,
        finetune,
        test_set=splits.test,
        out_dir=out,
        calib_size=opts["calib_size"],
        kd_alpha=opts["kd_alpha"],
        resume=args.resume,
    )
    report = result.report
    lat_dense = measure_latency(_dense_twin(result.model), result.model.input_size, device=device)
    lat_pruned = measure_latency(result.model, model.input_size, device=device)
    report["latency"] = {
        "batch": 32,
        "dense_s": lat_dense,
        "pruned_s": lat_pruned,
        "speedup": lat_dense / lat_pruned,
        "macs_ratio": report["dense"]["macs"] / report["pruned"]["macs"],
    }
    report["wall_s"] = round(time.time() - t0, 1)
    result.plan.save(out / "plan.json")
    atomic_write_json(out / "report.json", report)
    save_pruned(result.model, out, extra={"metrics": report.get("test", {}), "prune_config": cfg.to_dict()})
    print_report(report)
    print(f"saved {out}")
    return 0
