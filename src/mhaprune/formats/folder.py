"""The model folder format: ``config.json`` (architecture, model args, plan, versions) + ``model.safetensors``.

This module reads and writes the files and loads a state dict strictly; rebuilding an architecture from a folder
(registered models, timm / Hugging Face, replaying a plan) is :func:`mhaprune.export.load_model`'s job. Loading never
unpickles: JSON and safetensors only. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .._version import __version__
from ..utils import atomic_write_bytes, atomic_write_json, file_sha256

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1  # of config.json; readers accept this version and older ones


class CheckpointError(ValueError):
    """A model folder is missing, incomplete, corrupt or for another architecture."""


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    # safetensors refuses shared storage; clone every tensor so each entry owns its memory
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def write_folder(model: nn.Module, out_dir: str | Path, config: dict) -> Path:
    """Write ``model``'s weights and ``config`` (plus the format and package versions) as a folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = save(_contiguous_state(model))
    config = {"format_version": FORMAT_VERSION, "mhaprune_version": __version__, **config,
              "weights_sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    atomic_write_bytes(out / WEIGHTS_NAME, data)
    atomic_write_json(out / CONFIG_NAME, json.loads(json.dumps(config, default=list)))
    return out


def read_config(folder: str | Path) -> dict:
    """``config.json`` of a model folder, checked: present, complete, valid JSON, a readable format version."""
    folder = Path(folder)
    if not folder.is_dir():
        hint = (
            f"; {folder} is a file, but a model is a folder (config.json + model.safetensors)"
            if folder.exists()
            else " does not exist"
        )
        raise CheckpointError(
            f"checkpoint folder {folder}{hint}; pass a folder written by mhaprune train, prune or export"
        )
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.exists() or not (folder / WEIGHTS_NAME).exists():
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).exists()]
        raise CheckpointError(
            f"checkpoint folder {folder} is incomplete: missing {', '.join(missing)}. A model folder "
            f"holds {CONFIG_NAME} and {WEIGHTS_NAME} (written by mhaprune train/prune/export)"
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the folder is corrupt") from e
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        raise CheckpointError(f"{cfg_path} has no 'architecture' entry; it is not an mhaprune model folder")
    version = cfg.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path} has format_version {version!r}, written by mhaprune {cfg.get('mhaprune_version', '?')}; "
            f"this mhaprune ({__version__}) reads format {FORMAT_VERSION} and older: upgrade mhaprune "
            f"(pip install -U mhaprune) to load it"
        )
    return cfg


def read_weights(folder: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The folder's weights; with ``sha256`` (``config.json``'s ``weights_sha256``) they must match it (a bit
    flipped anywhere in the file is caught, not only in its header)."""
    path = Path(folder) / WEIGHTS_NAME
    if sha256 is not None:
        if file_sha256(path) != sha256:
            raise CheckpointError(
                f"{path} is corrupt or truncated: its SHA-256 does not match weights_sha256 in {CONFIG_NAME}. "
                f"Restore the folder from a copy or write it again (mhaprune train / prune / save_model)"
            )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e})") from e


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the mismatch instead of a wall of keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(
            f"weights in {source} do not fit the architecture: {'; '.join(parts)}. The checkpoint is "
            f"for another model or configuration"
        )
    model.load_state_dict(state, strict=True)
