"""``mhaprune export``: a model folder (dense or pruned; ours, timm or Hugging Face) to ONNX, checked with ONNX
Runtime."""

from __future__ import annotations

from ._common import add_threads_arg


def add_parser(sub):
    from ..export import DEFAULT_OPSET

    p = sub.add_parser("export", help="export a model folder to ONNX (checked against PyTorch with ONNX Runtime)")
    src = p.add_argument_group("model")
    src.add_argument("--checkpoint", metavar="DIR", help="model folder (config.json + model.safetensors)")
    src.add_argument("--model", metavar="NAME", help="registered model with bundled weights")
    p.add_argument("--onnx", required=True, metavar="FILE", help="output .onnx file")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    add_threads_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..export import export_onnx
    from ._common import UserError, load_model_arg, set_threads

    set_threads(args.threads)

    out = Path(args.onnx)
    if out.suffix != ".onnx":
        raise UserError(f"--onnx {out} should end in .onnx")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise UserError(f"--onnx {out} is a folder; give a file name")
    model = load_model_arg(args.model, args.checkpoint, pretrained=True)
    from ..utils.lock import LockedError, RunLock

    try:
        RunLock(out).acquire()  # one export per file; the exists-check below and the write are then one step
    except LockedError as e:
        raise UserError(str(e)) from e
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    r = export_onnx(model, out, opset=args.opset, check=not args.no_check, tolerance=args.tolerance,
                    overwrite=args.overwrite)  # fmt: skip
    check = f"; ONNX Runtime max abs diff {r['max_abs_diff']:.2e}" if "max_abs_diff" in r else ""
    if r["inputs"] == ["input"]:
        shape = f"dynamic batch, input 'input' {tuple(model.input_size)}"
    else:
        shape = "dynamic batch and sequence, inputs 'input_ids', 'attention_mask'"
    print(f"saved {out} (opset {r['opset']}, {shape}){check}")
    return 0
