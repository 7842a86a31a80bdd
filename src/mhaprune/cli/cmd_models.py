"""``mhaprune models``: list registered models."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. '*micro'")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..models import list_models, model_info
    from ..models._pretrained import pretrained_models

    bundled = set(pretrained_models())
    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    w = max(len(n) for n in names)
    for n in names:
        info = model_info(n)
        size = "x".join(map(str, info.input_size))
        flag = " [bundled weights]" if n in bundled else ""
        print(f"{n:<{w}}  input {size:<11} {info.description.splitlines()[0] if info.description else ''}{flag}")
    return 0
