"""Reference weights shipped inside the package (trained here on Fashion-MNIST; no network access).

A bundled model is a dense model folder; :func:`pretrained_path` resolves a name to it, and
:func:`load_pretrained` builds the registered architecture with the folder's recorded arguments and loads the weights
through the folder format alone (no plan replay: bundled weights are dense).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..formats.folder import CheckpointError, load_state_strict, read_config, read_weights

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def pretrained_models() -> list[str]:
    """Names of the models with bundled reference weights."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "model.safetensors").exists())


def pretrained_path(name: str) -> Path:
    """The folder of ``name``'s bundled weights (a dense model folder: ``config.json`` + ``model.safetensors``)."""
    path = WEIGHTS_DIR / name
    if not (path / "model.safetensors").exists():
        have = ", ".join(pretrained_models()) or "none"
        raise ValueError(f"no bundled weights for {name!r} (bundled: {have}); use pretrained=False or --checkpoint")
    return path


def load_pretrained(build, name: str, **kwargs) -> nn.Module:
    """The bundled weights of ``name`` in the architecture ``build(**recorded args, **kwargs)`` (``kwargs`` may
    change weight-free arguments such as ``drop_path_rate``; weights that do not fit raise a clear error)."""
    folder = pretrained_path(name)
    cfg = read_config(folder)
    if cfg.get("plan") is not None:
        raise CheckpointError(f"bundled folder {folder} holds a pruned model; bundled weights must be dense")
    try:
        model = build(**{**cfg.get("model_args", {}), **kwargs})
    except TypeError as e:
        raise CheckpointError(f"{folder}: model arguments do not fit {name} ({e})") from e
    load_state_strict(model, read_weights(folder), str(folder / "model.safetensors"))
    model.checkpoint_config = cfg
    return model.eval()
