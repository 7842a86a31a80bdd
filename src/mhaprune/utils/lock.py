"""One run per output: a lock file in the run folder (or beside an output file) that names the process holding it.

``RunLock(path).acquire()`` creates ``path/.mhaprune.lock`` (a folder) or ``path.lock`` (a file) with
``O_CREAT | O_EXCL`` — one step, so two processes cannot both get it — holding the owner's pid, host, command and
start time. A second run fails at once with :class:`LockedError` naming that process; a lock whose process is gone
(killed, crashed, the machine rebooted) is stale and taken over, with a warning. Locks are released when the
command ends (:func:`release_all`) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

_logger = logging.getLogger(__name__)
LOCK_NAME = ".mhaprune.lock"
_HELD: list[RunLock] = []


class LockedError(RuntimeError):
    """Another live process holds the output's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, target: str | os.PathLike):
        target = Path(target)
        self.target = target
        self.path = target / LOCK_NAME if target.is_dir() else target.with_name(target.name + ".lock")

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def check(self) -> None:
        """Raise :class:`LockedError` if a live process holds the lock (without taking it)."""
        owner = self._owner() if self.path.exists() else None
        if owner is not None:
            same_host = owner.get("host") == socket.gethostname()
            if not same_host or _alive(int(owner.get("pid", -1))):
                raise LockedError(self._message(owner, same_host))

    def _message(self, owner: dict, same_host: bool) -> str:
        where = "" if same_host else f" on {owner.get('host')}"
        return (
            f"{self.target} is in use by process {owner.get('pid')}{where} ({owner.get('command')}, started "
            f"{owner.get('started')}); wait for it to end or choose another output"
        )

    def acquire(self) -> RunLock:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(["mhaprune", *sys.argv[1:]])}  # fmt: skip
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # being written this instant, or garbage: look again
                    time.sleep(0.05)
                    owner = self._owner()
                same_host = owner is not None and owner.get("host") == socket.gethostname()
                if owner is not None and (not same_host or _alive(int(owner.get("pid", -1)))):
                    raise LockedError(self._message(owner, same_host)) from None
                _logger.warning("%s: taking over the stale lock of process %s (no longer running)", self.target,
                                owner.get("pid") if owner else "?")  # fmt: skip
                self.path.unlink(missing_ok=True)
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(info, f)
            except OSError as e:  # a full disk: no lock left behind
                self.path.unlink(missing_ok=True)
                from .io import write_error

                raise write_error(self.path, e) from e
            _HELD.append(self)
            return self
        raise LockedError(f"{self.target}: could not take its lock {self.path}; remove it if no run is active")

    def release(self) -> None:
        owner = self._owner()
        if owner is not None and owner.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        if self in _HELD:
            _HELD.remove(self)


def release_all() -> None:
    """Release every lock this process holds (the end of a command)."""
    for lock in list(_HELD):
        lock.release()


atexit.register(release_all)
