"""Model registry: ``register_model`` decorator, ``create_model`` and ``list_models`` (timm style)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about an entry point: its builder and default input."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    num_classes: int
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


_MODELS: dict[str, ModelInfo] = {}


class UnknownModelError(ValueError):
    """Raised for a model name the registry does not know."""


def register_model(input_size: tuple[int, int, int], num_classes: int, description: str = ""):
    """Register a model entry point ``fn(**kwargs) -> nn.Module`` under its function name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelInfo(name, fn, tuple(input_size), num_classes, description or (fn.__doc__ or "").strip())
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style ``pattern`` (e.g. ``"*micro"``)."""
    names = sorted(_MODELS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model; unknown names raise with close suggestions."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Run `mhaprune models` to list the registered names.")
    return _MODELS[name]


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered name (see :func:`list_models`).
        pretrained: load the reference weights shipped inside the package (no network access). Only the
            models listed by :func:`mhaprune.models.pretrained_models` have them.
        **kwargs: builder arguments; ``None`` values are dropped so that they mean "model default".

    The returned model carries ``model.model_args`` (the non-default arguments) and ``model.arch_name`` so that
    it can be saved and rebuilt.

    Example:
        >>> import mhaprune
        >>> m = mhaprune.create_model("flatten_swin_micro")
        >>> m.arch_name
        'flatten_swin_micro'
    """
    info = model_info(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if pretrained:
        from ._pretrained import load_pretrained

        return load_pretrained(lambda **kw: _build(info, kw), name, **kwargs)
    return _build(info, kwargs)


def _build(info: ModelInfo, kwargs: dict) -> nn.Module:
    model = info.builder(**kwargs)
    model.arch_name = info.name
    model.model_args = dict(kwargs)
    return model
