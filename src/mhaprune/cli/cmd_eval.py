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
    from ..data import TextDataConfig
    from ._options import add_config_args

    t = p.add_argument_group("text encoders: cosine retention and neighbour agreement against a reference")
    add_config_args(t, TextDataConfig)
    t.add_argument(
        "--reference",
        metavar="DIR",
        help="the dense model to compare with: a Hugging Face folder or a model folder (default: the source the "
        "pruned folder records)",
    )
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
    if getattr(model, "input_size", None) is None:
        return _eval_encoder(args, model, device)
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


def _load_reference(path: str):
    """A dense reference: a model folder written by mhaprune, or a Hugging Face folder."""
    import json
    from pathlib import Path

    from ..export import load_model
    from ..interop import from_hf
    from ._common import UserError

    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists():
        raise UserError(f"--reference {path} holds no config.json; pass a model folder or a Hugging Face folder")
    if "architecture" in json.loads(cfg_file.read_text()):
        return load_model(path)
    return from_hf(path)


def _eval_encoder(args, model, device: str) -> int:
    """Encoder metrics of ``model`` against the dense reference on the held-out texts of ``--text-file``."""
    from ..data import build_text_data, load_tokenizer
    from ..train import compare_encoders
    from ._common import UserError

    if not args.text_file:
        raise UserError("this is a text encoder: pass --text-file SRC (the texts to compare the embeddings on)")
    recorded = getattr(model, "checkpoint_config", None) or {}
    reference = args.reference or recorded.get("source_model")
    if not reference:
        raise UserError("pass --reference DIR: the dense model to compare with (this folder records no source)")
    splits = build_text_data(
        args.text_file, load_tokenizer(args.checkpoint), args.max_length or recorded.get("max_length", 64),
        args.holdout or 500, args.holdout or 500, 0, args.text_column,
        getattr(model.config, "max_position_embeddings", None),
    )  # fmt: skip
    ds = {"test": splits.test, "val": splits.val, "train": splits.train}[args.split]
    dense = _load_reference(reference).to(device)
    m = compare_encoders(dense, model.to(device), ds, device=device, progress=not args.no_progress)
    if args.json:
        print(json.dumps({"split": args.split, "reference": str(reference), **m}))
    else:
        print(
            f"{args.split}: cosine retention {m['cosine']:.4f}  top-{m['k']} neighbour agreement "
            f"{m['neighbours']:.4f}  ({m['count']} texts, against {reference})"
        )
    return 0
