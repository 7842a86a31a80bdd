"""Command-line flags generated from the config dataclasses: one home for every option's name, type, default,
choices and help (the field, its metadata and the ``Args:`` entry of the class docstring)."""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Args:`` section of ``cls``'s docstring (``a / b: text`` documents both)."""
    doc = cls.__doc__ or ""
    if "Args:" not in doc:
        return {}
    out, names, buf = {}, [], []
    for line in doc.split("Args:", 1)[1].splitlines():
        m = re.match(r"^ {8}([\w /]+):\s?(.*)$", line)
        if m and not line.startswith(" " * 9):
            for n in names:
                out[n] = " ".join(buf)
            names, buf = [n.strip() for n in m.group(1).split("/")], [m.group(2).strip()]
        elif names and line.strip():
            buf.append(line.strip())
    for n in names:
        out[n] = " ".join(buf)

    def plain(text: str) -> str:
        text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text)  # Sphinx roles
        return re.sub(r"``([^`]*)``", r"\1", text).replace("%", "%%")

    return {k: plain(v) for k, v in out.items()}


def _scalar(tp):
    """The scalar type of a (possibly optional) annotation."""
    if isinstance(tp, str):
        tp = eval(tp, {"float": float, "int": int, "str": str, "bool": bool, "dict": dict})  # noqa: S307 - annotations
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return str if len(args) > 1 else args[0]
    return tp


def cli_fields(cls: type, skip=(), only=None) -> list[dataclasses.Field]:
    return [
        f
        for f in dataclasses.fields(cls)
        if f.metadata.get("cli", True) and f.name not in skip and (only is None or f.name in only)
    ]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(group, cls: type, base=None, skip=(), only=None) -> None:
    """One flag per field of ``cls`` (defaults from ``base``, an instance, or the field defaults). Every flag's
    argparse default is ``None`` ("not given") so that a YAML recipe can fill in before the defaults do. Booleans
    that default to on get ``--no-NAME``, the others ``--NAME``."""
    docs = field_docs(cls)
    for f in cli_fields(cls, skip, only):
        default = getattr(base, f.name) if base is not None else f.default
        text = docs.get(f.name, "")
        tp = _scalar(f.type)
        if tp is bool:
            on = bool(default)
            state = "on by default; this flag turns it off" if on else "off by default"
            group.add_argument(
                flag(("no_" if on else "") + f.name),
                dest=f.name,
                action="store_const",
                const=not on,
                default=None,
                help=f"{text} ({state})",
            )
            continue
        kw = {"metavar": f.metadata.get("metavar", f.name.upper())}
        if "choices" in f.metadata:
            kw = {"choices": f.metadata["choices"]}
        if tp in (int, float):
            kw["type"] = tp
        shown = "" if default is None else f" (default {default})"
        group.add_argument(flag(f.name), dest=f.name, default=None, help=f"{text}{shown}".strip(), **kw)


def config_values(cls: type, opts: dict, base=None) -> dict:
    """The ``cls`` keyword arguments that ``opts`` (resolved flags) set; the rest come from ``base`` / defaults."""
    out = dataclasses.asdict(base) if base is not None else {}
    for f in cli_fields(cls):
        if opts.get(f.name) is not None:
            out[f.name] = opts[f.name]
    return out


def config_defaults(cls: type, base=None, skip=()) -> dict:
    """``{field: default}`` of the CLI fields (from ``base`` or the field defaults): what an unset flag means."""
    return {f.name: (getattr(base, f.name) if base is not None else f.default) for f in cli_fields(cls, skip)}
