"""``mhaprune eval``: top-1/top-5 and loss of a model folder on a dataset split."""

from __future__ import annotations

import json

from ._common import add_data_args, add_threads_arg


def add_parser(sub):
    p = sub.add_parser("eval", help="evaluate a model folder (or a registered model with bundled weights)")
    src = p.add_argument_group("model")
    src.add_argument("--checkpoint", metavar="DIR", help="model folder (config.json + model.safetensors)")
    src.add_argument("--model", metavar="NAME", help="registered model with bundled weights")
    d = add_data_args(p, default="fashion-mnist")
    d.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--batch-size", type=int, default=256, metavar="N")
    p.add_argument("--device", default="auto")
    add_threads_arg(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import build_data
    from ..train import evaluate
    from ._common import UserError, check_classes, load_model_arg, new_head_hint, pick_device, set_threads

    set_threads(args.threads)
    model = load_model_arg(args.model, args.checkpoint, pretrained=True)
    device = pick_device(args.device)
    splits = build_data(
        args.data, model.input_size, args.data_dir, augment=False, fit=args.fit, channels=args.channels
    )
    source = f"--checkpoint {args.checkpoint}" if args.checkpoint else f"--model {args.model} --pretrained"
    check_classes(model, splits.classes, new_head_hint(source, splits.classes))
    ds = {"test": splits.test, "val": splits.val, "train": splits.train}[args.split]
    if ds is None:
        raise UserError(f"{args.data} has no {args.split} split")
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    m = evaluate(model.to(device), ds, batch_size=args.batch_size, device=device, progress=not args.no_progress)
    if args.json:
        print(json.dumps({"split": args.split, **m}))
    else:
        print(
            f"{args.split}: top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  loss {m['loss']:.4f}  ({m['count']} images)"
        )
    return 0
