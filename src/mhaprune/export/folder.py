"""Loading and saving whole models as folders: rebuild the architecture a folder's ``config.json`` names (a
registered model, or a timm / Hugging Face model rebuilt offline), replay its pruning plan, load the weights.

The file format itself (reading, writing, strict state loading) is :mod:`mhaprune.formats.folder`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.nn as nn

from ..formats import folder as fmt
from ..formats.folder import CheckpointError, read_config
from ..interop import build_from_config, is_external
from ..models import UnknownModelError, create_model
from ..pruning import Plan, apply_plan

_logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "build_base", "load_model", "load_pruned", "read_config", "save_model", "save_pruned"]


def save_model(model: nn.Module, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` (built by :func:`mhaprune.create_model` or adapted by :mod:`mhaprune.interop`) as a folder;
    returns the folder. ``extra`` entries (e.g. ``metrics``) are merged into ``config.json``; a pruned model's plan
    (``model.pruning_plan``) is stored with it, so the folder reloads whichever of the two saved it."""
    arch = getattr(model, "arch_name", None)
    if arch is None:
        raise CheckpointError(
            "model has no arch_name, so it cannot be rebuilt on load: build it with mhaprune.create_model(), "
            "mhaprune.interop.from_timm(name, **kwargs) or mhaprune.interop.from_hf(...) / from_hf_model(model)"
        )
    config = {
        "architecture": arch,
        "model_args": getattr(model, "model_args", {}),
        **getattr(model, "mhaprune_build", {}),
        **(extra or {}),
    }
    plan = getattr(model, "pruning_plan", None)
    if plan is not None and "plan" not in config:
        config["plan"] = plan.to_dict()
    return fmt.write_folder(model, out_dir, config)


def build_base(cfg: dict, overrides: dict | None = None) -> nn.Module:
    """The dense, untrained model a folder's config describes: a registered architecture, or a timm / Hugging Face
    model (rebuilt offline from the recorded name and arguments or config, then adapted)."""
    arch = cfg["architecture"]
    if is_external(arch):
        if overrides:
            cfg = {**cfg, "model_args": {**cfg.get("model_args", {}), **overrides}}
        return build_from_config(cfg)
    return create_model(arch, **{**cfg.get("model_args", {}), **(overrides or {})})


def load_model(folder: str | Path, map_location: str = "cpu", overrides: dict | None = None) -> nn.Module:
    """Rebuild the architecture from ``config.json`` (replaying a pruning plan if present) and load the weights.

    ``overrides`` change builder arguments that leave the weights' shapes alone (e.g. ``drop_path_rate``)."""
    folder = Path(folder)
    cfg = read_config(folder)
    try:
        model = build_base(cfg, overrides)
    except (UnknownModelError, ValueError) as e:
        raise CheckpointError(f"{folder}: {e}") from e
    except TypeError as e:
        raise CheckpointError(
            f"{folder}: model_args in {fmt.CONFIG_NAME} do not fit {cfg['architecture']} ({e})"
        ) from e
    if cfg.get("plan") is not None:
        apply_plan(model, Plan.from_dict(cfg["plan"]))
    fmt.load_state_strict(model, fmt.read_weights(folder, cfg.get("weights_sha256")), str(folder / fmt.WEIGHTS_NAME))
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
