"""The ``mhaprune`` command line: a thin argparse front end that only wires library calls together."""

from __future__ import annotations

import argparse
import logging
import sys

from ._common import USER_ERRORS, UserError

_COMMANDS = ("models", "macs", "train", "prune", "eval", "export")


def build_parser() -> argparse.ArgumentParser:
    from . import cmd_eval, cmd_export, cmd_macs, cmd_models, cmd_prune, cmd_train

    p = argparse.ArgumentParser(prog="mhaprune", description="Automatic channel pruning for multi-head attention.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in (cmd_models, cmd_macs, cmd_train, cmd_prune, cmd_eval, cmd_export):
        mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # the command as given, for run records
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"mhaprune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from ..train import Interrupted

        if isinstance(e, Interrupted) and e.checkpoint is not None:
            print(f"mhaprune {args.command}: {e}; rerun the same command with --resume to continue", file=sys.stderr)
        else:
            print(f"mhaprune {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["UserError", "build_parser", "main"]
