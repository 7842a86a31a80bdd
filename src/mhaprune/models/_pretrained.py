"""Reference weights shipped inside the package (trained here on Fashion-MNIST; no network access)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def pretrained_models() -> list[str]:
    """Names of the models with bundled reference weights."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "model.safetensors").exists())


def pretrained_path(name: str) -> Path:
    path = WEIGHTS_DIR / name
    if not (path / "model.safetensors").exists():
        have = ", ".join(pretrained_models()) or "none"
        raise ValueError(f"no bundled weights for {name!r} (bundled: {have}); use pretrained=False or --checkpoint")
    return path


def load_pretrained(name: str, **kwargs):
    """The bundled folder, rebuilt with ``kwargs`` over its recorded arguments; weights that do not fit the
    resulting architecture raise a clear error (e.g. another ``embed_dim``), weight-free arguments pass."""
    from ..export.folder import load_model

    return load_model(pretrained_path(name), overrides=kwargs)
