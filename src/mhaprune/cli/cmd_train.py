"""``mhaprune train``: train a registered model (or continue a model folder) with the one engine."""

from __future__ import annotations

import dataclasses
import logging

from ._common import add_data_args

_logger = logging.getLogger(__name__)


def add_train_args(p, defaults_epochs: str = "10") -> None:
    """Optimisation flags shared by train and the fine-tune stage of prune (all default to None = recipe)."""
    o = p.add_argument_group("optimisation (defaults: the recipe, then the built-in values)")
    o.add_argument("--epochs", type=float, metavar="E", help=f"epochs, may be fractional (default {defaults_epochs})")
    o.add_argument("--batch-size", type=int, metavar="N", help="global batch size (default 128)")
    o.add_argument("--lr", type=float, metavar="LR", help="peak learning rate (default 1e-3)")
    o.add_argument("--min-lr", type=float, metavar="LR")
    o.add_argument("--weight-decay", type=float, metavar="WD")
    o.add_argument("--warmup-epochs", type=float, metavar="E")
    o.add_argument("--label-smoothing", type=float, metavar="S")
    o.add_argument("--mixup", type=float, metavar="ALPHA")
    o.add_argument("--cutmix", type=float, metavar="ALPHA")
    o.add_argument("--clip-grad", type=float, metavar="NORM")
    o.add_argument("--ema-decay", type=float, metavar="D")
    o.add_argument("--max-steps", type=int, metavar="N")
    o.add_argument("--no-augment", action="store_true", default=None, help="no flip/translate augmentation")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, metavar="S")
    r.add_argument("--deterministic", action="store_true", default=None)
    r.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 or auto (default)")
    r.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    r.add_argument("--save-every", type=int, metavar="STEPS", help="checkpoint interval in steps (default 500)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    r.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (off anyway when not on a TTY)")


def add_parser(sub):
    p = sub.add_parser("train", help="train a model on Fashion-MNIST or an image folder")
    p.add_argument("-c", "--config", metavar="YAML", help="recipe file; explicit flags win")
    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME")
    m.add_argument("--checkpoint", metavar="DIR", help="start from a model folder instead")
    m.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="builder argument (repeatable)")
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    add_train_args(p)
    p.set_defaults(func=run)


TRAIN_DEFAULTS = dict(
    model=None,
    checkpoint=None,
    data="fashion-mnist",
    data_dir=None,
    fit=None,
    epochs=10.0,
    batch_size=128,
    lr=1e-3,
    min_lr=1e-5,
    weight_decay=0.05,
    warmup_epochs=0.5,
    label_smoothing=0.1,
    mixup=0.0,
    cutmix=0.0,
    clip_grad=5.0,
    ema_decay=None,
    max_steps=None,
    no_augment=False,
    seed=0,
    deterministic=False,
    device="auto",
    threads=None,
    save_every=500,
)


def train_config_from(opts: dict, device: str, progress: bool):
    from ..train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in opts.items() if k in fields and k != "device"}
    return TrainConfig(**kw, device=device, progress=progress)


def run(args) -> int:
    import torch

    from ..data import build_data
    from ..export import save_model
    from ..train import Trainer, evaluate
    from ..utils import atomic_write_json, seed_all
    from ._common import (
        check_classes,
        load_model_arg,
        load_yaml_config,
        parse_model_args,
        pick_device,
        prepare_out_dir,
        resolve,
    )

    opts = resolve(args, TRAIN_DEFAULTS, load_yaml_config(args.config))
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    prepare_out_dir(args.out, args.overwrite, args.resume, create=False)
    seed_all(opts["seed"])  # before the model is built: its initialisation must be reproducible
    model = load_model_arg(opts["model"], opts["checkpoint"], model_args=parse_model_args(args.model_arg))
    device = pick_device(opts["device"])
    splits = build_data(
        opts["data"], model.input_size, opts["data_dir"], augment=not opts["no_augment"], fit=opts["fit"]
    )
    check_classes(model, splits.classes)
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
    save_model(final, out, extra={"metrics": metrics, "train_command": "mhaprune " + " ".join(_argv())})
    print(f"saved {out}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if v is not None))
    return 0


def _argv():
    import sys

    return sys.argv[1:]
