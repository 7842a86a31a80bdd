"""Seeding, atomic file writes, run metadata and distributed helpers."""

from .io import (
    WriteError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    checksum_path,
    file_sha256,
    verify_checksum,
    write_error,
)
from .meta import run_metadata
from .seed import configure_deterministic_mode, seed_all
from .threads import available_cores, default_threads

__all__ = [
    "WriteError",
    "write_error",
    "checksum_path",
    "file_sha256",
    "verify_checksum",
    "atomic_torch_save",
    "available_cores",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "configure_deterministic_mode",
    "default_threads",
    "run_metadata",
    "seed_all",
]
