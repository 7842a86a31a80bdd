"""The method registry: every pruning method is a function registered by name with what it reads.

A method takes the dense model and a :class:`MethodContext` (options, calibration batch, data and the search recipe)
and returns a :class:`MethodResult`: the pruned plain model and its plan. Everything around it (fine-tune,
evaluation, latency, the report, saving) is the pipeline's, the same for every method. A new method is one file with
one ``@register_method`` function; see ``docs/architecture.md``.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..pruning import ConfigError, Plan, PruneConfig

_logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mhaprune.methods"


class UnknownMethodError(ValueError):
    """A method name the registry does not know."""


@dataclass
class MethodContext:
    """What a method may use. ``cfg`` already carries the method's own overrides.

    Attributes:
        cfg: the pruning options (target, groups, per-head rules and the method's switches).
        calib: the calibration batch (a tensor of inputs, or a dict of tensors for keyword models).
        calib_targets: the labels of the calibration batch, when the data has them.
        train_set: the training data (for methods that train during their search).
        search: the recipe of the search stage, or ``None`` (no search steps).
        search_loss: the objective of the search (task loss with distillation from the dense model).
        objective: the run's objective at the calibration stage (``objective(model, inputs, target) -> loss``; an
            :class:`~mhaprune.train.Objective`), for importance scores; ``None`` where the caller gave none.
        dense: a frozen copy of the dense model (a teacher and a reference for output rescaling).
        out_dir: the method's own folder for checkpoints (``None``: keep nothing).
        resume: continue from the checkpoints in ``out_dir``.
    """

    cfg: PruneConfig
    calib: torch.Tensor | dict
    calib_targets: torch.Tensor | None = None
    train_set: Any = None
    search: Any = None
    search_loss: nn.Module | None = None
    objective: nn.Module | None = None
    dense: nn.Module | None = None
    out_dir: Path | None = None
    resume: bool = False


@dataclass
class MethodResult:
    """The pruned plain model (sliced, no gates), its plan, and what the method reports (timings, steps...)."""

    model: nn.Module
    plan: Plan
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    Attributes:
        name: the name users pass (``--method NAME``, ``mhaprune.prune(method=NAME)``).
        fn: ``fn(model, ctx) -> MethodResult``; prunes ``model`` (it may modify it in place).
        summary: one line for ``mhaprune prune --help``.
        trains: whether the method trains during a search stage (``--search-epochs``); one-shot methods do not.
        needs_labels: whether it needs labelled calibration data.
        options: the :class:`~mhaprune.pruning.PruneConfig` fields it reads (beyond the target and the groups).
        overrides: :class:`~mhaprune.pruning.PruneConfig` values that define this method (a variant of another).
    """

    name: str
    fn: Callable[[nn.Module, MethodContext], MethodResult]
    summary: str
    trains: bool = False
    needs_labels: bool = False
    options: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict)


_METHODS: dict[str, MethodInfo] = {}
_PLUGINS_LOADED = False


def register_method(
    name: str,
    summary: str,
    *,
    trains: bool = False,
    needs_labels: bool = False,
    options: tuple[str, ...] = (),
    overrides: dict | None = None,
):
    """Register ``fn(model, ctx) -> MethodResult`` under ``name`` (a decorator). Third-party packages can also
    expose a module in the ``mhaprune.methods`` entry-point group; it is imported on first lookup."""
    if overrides:
        unknown = set(overrides) - set(PruneConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"method {name!r} overrides unknown PruneConfig option(s): {', '.join(sorted(unknown))}")

    def wrap(fn):
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        _METHODS[name] = MethodInfo(name, fn, summary, trains, needs_labels, tuple(options), dict(overrides or {}))
        return fn

    return wrap


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(ep.value)
        except ImportError as e:
            _logger.warning("method plugin %s (%s) cannot be imported: %s", ep.name, ep.value, e)


def list_methods() -> list[str]:
    """Registered method names, in registration order (ours first)."""
    _load_plugins()
    return list(_METHODS)


def get_method(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of ``name``; unknown names raise with close suggestions."""
    _load_plugins()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownMethodError(f"unknown method {name!r}.{hint} Known: {', '.join(_METHODS)}")
    return _METHODS[name]


def method_config(info: MethodInfo, cfg: PruneConfig) -> PruneConfig:
    """``cfg`` with the method's defining overrides applied; a latency target for a method without a latency
    model is an error."""
    if cfg.target_latency is not None and "target_latency" not in info.options:
        able = [m for m in list_methods() if "target_latency" in get_method(m).options]
        raise ConfigError(
            f"method {info.name} prunes to a MACs target and has no latency model; a latency target works with "
            f"{', '.join(able)} (or give {info.name} --target-macs)"
        )
    return cfg.replace(**info.overrides) if info.overrides else cfg
