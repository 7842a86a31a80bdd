"""The model folder format: ``config.json`` (architecture, model args, plan, version) + ``model.safetensors``.

Loading never unpickles: JSON and safetensors only. Files are written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..utils import atomic_write_bytes, atomic_write_json

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A model folder is missing, incomplete, corrupt or for another architecture."""


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    # safetensors refuses shared storage; clone every tensor so each entry owns its memory
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def save_model(model: nn.Module, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` (built by :func:`mhaprune.create_model`) as a folder; returns the folder.

    ``extra`` entries (e.g. ``plan``, ``metrics``) are merged into ``config.json``.
    """
    from .. import __version__

    arch = getattr(model, "arch_name", None)
    if arch is None:
        raise CheckpointError(
            "model has no arch_name, so it cannot be rebuilt on load: build it with mhaprune.create_model(), "
            "mhaprune.interop.from_timm(name, **kwargs) or mhaprune.interop.from_hf(...) / from_hf_model(model)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "model_args": getattr(model, "model_args", {}),
        "mhaprune_version": __version__,
        **getattr(model, "mhaprune_build", {}),
        **(extra or {}),
    }
    atomic_write_bytes(out / WEIGHTS_NAME, save(_contiguous_state(model)))
    atomic_write_json(out / CONFIG_NAME, json.loads(json.dumps(config, default=list)))
    return out


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint folder {folder} does not exist; pass a folder written by mhaprune train, prune or export"
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
    return cfg


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / WEIGHTS_NAME
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


def build_base(cfg: dict, overrides: dict | None = None) -> nn.Module:
    """The dense, untrained model a folder's config describes: a registered architecture, or a timm / Hugging Face
    model (rebuilt offline from the recorded name and arguments or config, then adapted)."""
    from ..models import create_model

    arch = cfg["architecture"]
    if arch.startswith(("timm:", "hf:")):
        from ..interop import build_from_config

        if overrides:
            cfg = {**cfg, "model_args": {**cfg.get("model_args", {}), **overrides}}
        return build_from_config(cfg)
    return create_model(arch, **{**cfg.get("model_args", {}), **(overrides or {})})


def load_model(folder: str | Path, map_location: str = "cpu", overrides: dict | None = None) -> nn.Module:
    """Rebuild the architecture from ``config.json`` (replaying a pruning plan if present) and load the weights.

    ``overrides`` change builder arguments that leave the weights' shapes alone (e.g. ``drop_path_rate``)."""
    from ..models._registry import UnknownModelError

    folder = Path(folder)
    cfg = read_config(folder)
    try:
        model = build_base(cfg, overrides)
    except (UnknownModelError, ValueError) as e:
        raise CheckpointError(f"{folder}: {e}") from e
    except TypeError as e:
        raise CheckpointError(f"{folder}: model_args in {CONFIG_NAME} do not fit {cfg['architecture']} ({e})") from e
    if cfg.get("plan") is not None:
        from ..pruning import Plan, apply_plan

        apply_plan(model, Plan.from_dict(cfg["plan"]))
    load_state_strict(model, read_weights(folder), str(folder / WEIGHTS_NAME))
    model.checkpoint_config = cfg
    return model.to(map_location).eval()


def save_pruned(model: nn.Module, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Save a pruned model: the folder format plus its plan (``model.pruning_plan``), so that loading rebuilds the
    dense architecture, replays the plan and loads the weights."""
    plan = getattr(model, "pruning_plan", None)
    if plan is None:
        raise CheckpointError("model carries no pruning plan (model.pruning_plan); use save_model for dense models")
    return save_model(model, out_dir, extra={"plan": plan.to_dict(), **(extra or {})})


def load_pruned(folder: str | Path, map_location: str = "cpu") -> nn.Module:
    """Load a folder written by :func:`save_pruned` (or any model folder)."""
    return load_model(folder, map_location)
