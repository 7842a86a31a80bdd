"""``mhaprune train``: train a registered model (or continue a model folder) with the one engine."""

from __future__ import annotations

import logging

from ._common import add_data_args, add_threads_arg

_logger = logging.getLogger(__name__)


def add_train_args(p, base=None, skip=()) -> None:
    """Optimisation flags from :class:`~mhaprune.train.TrainConfig` (defaults from ``base``, a recipe instance) and
    the run flags shared by train and prune (all default to None = recipe, then the built-in values)."""
    from ..train import TrainConfig
    from ._options import add_config_args

    o = p.add_argument_group("optimisation (defaults: the recipe, then the values shown)")
    add_config_args(o, TrainConfig, base=base, skip=skip)
    o.add_argument("--no-augment", action="store_true", default=None, help="no flip/translate augmentation")
    r = p.add_argument_group("run")
    r.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 or auto (default)")
    add_threads_arg(r)
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    r.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (off anyway when not on a TTY)")


# the command's own options (not recipe fields) and what leaving them out means
RUN_DEFAULTS = dict(model=None, checkpoint=None, data="fashion-mnist", data_dir=None, fit=None, channels=None,
                    no_augment=False, device="auto", threads=None)  # fmt: skip


def train_defaults(base=None, skip=()) -> dict:
    """What every train flag means when neither it nor the recipe file sets it."""
    from ..train import TrainConfig
    from ._options import config_defaults

    return {**RUN_DEFAULTS, **config_defaults(TrainConfig, base, skip)}


def add_parser(sub):
    p = sub.add_parser("train", help="train a model on Fashion-MNIST or an image folder")
    p.add_argument("-c", "--config", metavar="YAML", help="recipe file; explicit flags win")
    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME", help="registered model (randomly initialised unless --pretrained)")
    m.add_argument("--pretrained", action="store_true", help="start --model from its bundled trained weights")
    m.add_argument("--checkpoint", metavar="DIR", help="start from a model folder instead (dense or pruned)")
    m.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="builder argument (repeatable)")
    m.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="replace the classifier head by a fresh one with N outputs (the dataset's class count) and fine-tune; "
        "for a trained or pruned model and your own classes",
    )
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    add_train_args(p)
    p.set_defaults(func=run)


def train_config_from(opts: dict, device: str, progress: bool, base=None):
    """The :class:`~mhaprune.train.TrainConfig` the resolved flags describe (over ``base``)."""
    from ..train import TrainConfig
    from ._options import config_values

    return TrainConfig(**{**config_values(TrainConfig, opts, base), "device": device, "progress": progress})


def run(args) -> int:

    from ..data import build_data
    from ..export import save_model
    from ..interop import replace_head
    from ..train import Trainer, evaluate
    from ..utils import atomic_write_json, seed_all
    from ._common import (
        UserError,
        check_classes,
        elastic_resume,
        load_model_arg,
        load_yaml_config,
        parse_model_args,
        pick_device,
        prepare_out_dir,
        resolve,
        set_threads,
    )

    opts = resolve(args, train_defaults(), load_yaml_config(args.config))
    set_threads(opts["threads"])
    if args.pretrained and not opts["model"]:
        raise UserError("--pretrained goes with --model NAME (its bundled weights); a --checkpoint is trained already")
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be >= 1, got {args.num_classes}")
    elastic_resume(args, args.out)
    prepare_out_dir(args.out, args.overwrite, args.resume, create=False)
    seed_all(opts["seed"])  # before the model is built: its initialisation must be reproducible
    model_args = parse_model_args(args.model_arg)
    model = load_model_arg(opts["model"], opts["checkpoint"], pretrained=args.pretrained, model_args=model_args)
    if args.num_classes is not None:
        replace_head(model, args.num_classes)
    device = pick_device(opts["device"])
    splits = build_data(
        opts["data"], model.input_size, opts["data_dir"], augment=not opts["no_augment"], fit=opts["fit"],
        channels=opts["channels"],
    )  # fmt: skip
    fix = (
        f"pass --num-classes {len(splits.classes)} to give the model a fresh head for them"
        if args.num_classes is None
        else f"--num-classes {args.num_classes} does not match; pass --num-classes {len(splits.classes)}"
    )
    check_classes(model, splits.classes, fix)
    cfg = train_config_from(opts, device, progress=not args.no_progress)
    cfg.validate(len(splits.train))
    out = prepare_out_dir(args.out, args.overwrite, args.resume)
    trainer = Trainer(model, splits.train, splits.val, cfg, out_dir=out, num_classes=len(splits.classes))
    if args.resume:
        trainer.load_checkpoint(out)  # a checkpoint that cannot be used stops here, before anything is written
    atomic_write_json(out / "resolved_config.json", {**opts, "model_args": getattr(model, "model_args", {})})
    val = trainer.fit()
    if not trainer.is_main:
        return 0
    final = trainer.eval_model()
    metrics = {"val_top1": val.get("val_top1")}
    if splits.test is not None:
        t = evaluate(final, splits.test, device=device)
        metrics.update(test_top1=t["top1"], test_top5=t["top5"], test_loss=t["loss"])
    save_model(
        final,
        out,
        extra={"metrics": metrics, "train_command": "mhaprune " + " ".join(getattr(args, "argv", ["train"]))},
    )
    print(f"saved {out}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if v is not None))
    return 0
