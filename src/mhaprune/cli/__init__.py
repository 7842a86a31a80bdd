"""The ``mhaprune`` command line: a thin argparse front end that only wires library calls together."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

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


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop: unwinds like Ctrl-C (temp files removed), exit 143."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit codes: 0 done, 2 bad input, 130 stopped by Ctrl-C, 143 stopped by SIGTERM."""
    from ..utils import distributed as du
    from ..utils.lock import release_all

    main_thread = threading.current_thread() is threading.main_thread()  # signals can be caught there only
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    ok = False
    try:
        code = _main(argv)
        ok = code == 0
        return code
    finally:
        du.shutdown(wait=ok)  # under torchrun; a failed rank does not wait for the others
        release_all()  # the command's output locks
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _has_checkpoint(args) -> bool:
    from pathlib import Path

    out = getattr(args, "out", None)
    if not out or not hasattr(args, "resume"):
        return False
    return any(Path(out).glob("checkpoint.pt")) or any(Path(out).glob("*/checkpoint.pt"))


def _main(argv: list[str] | None) -> int:
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
    except OSError as e:  # a write that failed (a full disk, a vanished or read-only folder): one line, exit 2
        if args.debug:
            raise
        from ..utils import WriteError

        what = e.strerror if isinstance(e, WriteError) else f"{e.strerror or e}" + (
            f": {e.filename}" if e.filename else "")  # fmt: skip
        print(f"mhaprune {args.command}: error: {what}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from ..train import Interrupted

        term = isinstance(e, Terminated) or (isinstance(e, Interrupted) and e.signum == signal.SIGTERM)
        if isinstance(e, Interrupted) and e.checkpoint is not None:
            print(f"mhaprune {args.command}: {e}; rerun the same command with --resume to continue", file=sys.stderr)
        else:
            what = "terminated" if term else "interrupted"
            if _has_checkpoint(args):  # stopped between stages: the finished ones resume from their checkpoints
                what += "; rerun the same command with --resume to continue"
            print(f"mhaprune {args.command}: {what}", file=sys.stderr)
        return 143 if term else 130


__all__ = ["UserError", "build_parser", "main"]
