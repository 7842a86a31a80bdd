"""Atomic writes: temp file in the destination folder, flush, fsync, rename. Readers never see half a file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch


class WriteError(OSError):
    """A file could not be written (a full disk, a read-only or vanished folder, permissions changed mid-run): the
    message names the file and the cause. Nothing half-written is left; an earlier version of the file stays."""


def write_error(path, e: OSError) -> WriteError:
    """``e`` as a :class:`WriteError` naming ``path`` (what the command line reports in one line, exit 2)."""
    if isinstance(e, WriteError):
        return e
    hints = {28: "free some space or write elsewhere", 122: "free some quota or write elsewhere",
             30: "the file system is read-only; write elsewhere"}  # fmt: skip
    hint = hints.get(e.errno, "check the folder, or write elsewhere")
    err = WriteError(e.errno, f"cannot write {path}: {e.strerror or e} ({hint})")
    err.filename = str(path)
    return err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the permissions a plain ``open`` would give (the umask)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def checksum_path(path: str | os.PathLike) -> Path:
    """The SHA-256 record beside ``path`` (``checkpoint.pt`` -> ``checkpoint.pt.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _accepted(path: Path) -> list[str]:
    try:
        return checksum_path(path).read_text().split()
    except OSError:
        return []


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to memory, then an atomic write, with its SHA-256 recorded beside it. Save only plain
    containers and tensors. The record lists the hashes a reader may accept: before the rename it holds the old
    file's and the new one's, after it the new one's, so a kill at any point leaves the file on disk accepted."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    new = hashlib.sha256(data).hexdigest()
    current = file_sha256(path) if path.exists() else None
    keep = [h for h in _accepted(path) if h == current]
    atomic_write_text(checksum_path(path), "\n".join([*keep, new]) + "\n")
    atomic_write_bytes(path, data)
    atomic_write_text(checksum_path(path), new + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | os.PathLike) -> bool | None:
    """Whether ``path`` matches its SHA-256 record (``None``: no record, nothing to check)."""
    accepted = _accepted(Path(path))
    if not accepted:
        return None
    return file_sha256(path) in accepted
