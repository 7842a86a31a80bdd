"""``mhaprune macs``: parameters and analytic MACs per module kind."""

from __future__ import annotations

import json

from ._common import add_threads_arg


def add_parser(sub):
    p = sub.add_parser("macs", help="count parameters and MACs (analytic, exact) of a model or model folder")
    p.add_argument("--model", metavar="NAME")
    p.add_argument("--checkpoint", metavar="DIR", help="model folder (e.g. a pruned model)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="builder argument (repeatable)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="default: the model's own")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_threads_arg(p)
    p.set_defaults(func=run)


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(int(n))


def run(args) -> int:
    from ..cost import count_macs
    from ._common import UserError, load_model_arg, parse_model_args, set_threads

    set_threads(args.threads)

    model_args = parse_model_args(args.model_arg)
    if args.input_size and args.model:  # rebuild the registered model at that size
        c, h, w = args.input_size
        model_args = {"in_chans": c, "img_size": h if h == w else (h, w), **model_args}
    model = load_model_arg(args.model, args.checkpoint, model_args=model_args)
    if args.input_size and tuple(args.input_size) != tuple(model.input_size):
        raise UserError(
            f"--input-size {tuple(args.input_size)} does not fit the model in {args.checkpoint}, built "
            f"for {tuple(model.input_size)}"
        )
    r = count_macs(model, args.input_size)
    name = args.checkpoint or args.model
    if args.json:
        print(
            json.dumps(
                {
                    "model": name,
                    "input_size": list(r.input_size),
                    "params": r.params,
                    "macs": r.total,
                    "by_kind": r.by_kind,
                }
            )
        )
        return 0
    print(f"{name}  input {'x'.join(map(str, r.input_size))}")
    print(f"params  {r.params:,} ({_fmt(r.params)})")
    print(f"MACs    {r.total:,} ({_fmt(r.total)}MACs per image)")
    print()
    print(r.table())
    return 0
