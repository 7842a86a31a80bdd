"""Surgery: apply a :class:`Plan` to a model (in place), leaving plain modules with no masks or hooks."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..adapters import get_adapter
from .plan import LayerPlan, Plan, PlanError


def _module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as e:
        raise PlanError(
            f"plan names layer {path!r}, which this model does not have; the plan is for another model"
        ) from e


def check_layer(model: nn.Module, path: str, lp: LayerPlan):
    m = _module(model, path)
    adapter = get_adapter(m)
    if adapter is None or adapter.kind != lp.kind:
        raise PlanError(
            f"plan layer {path!r} is a {lp.kind} layer, the model has {type(m).__name__} there; the plan is "
            f"for another model"
        )
    shapes = {g: list(s) for g, s in adapter.groups(m).items()}
    for g, s in lp.shapes.items():
        if shapes.get(g) != list(s):
            raise PlanError(
                f"plan layer {path}.{g} was made for shape {s} (heads, width), the model has {shapes.get(g)}; "
                f"the plan is for another model or was already applied"
            )
    lp.validate(path)
    return m, adapter


def apply_plan(model: nn.Module, plan: Plan) -> nn.Module:
    """Slice ``model`` to the kept channels of ``plan``. Modifies the model in place (deepcopy first to keep the
    original) and returns it. Every layer is validated before anything is changed."""
    arch = getattr(model, "arch_name", None)
    if plan.architecture and arch and plan.architecture != arch:
        raise PlanError(f"plan is for {plan.architecture}, the model is {arch}")
    checked = [(check_layer(model, p, lp), lp) for p, lp in plan.layers.items()]
    for (m, adapter), lp in checked:
        adapter.uninstall(m)
        dev = next(m.parameters()).device
        adapter.slice(m, {g: torch.tensor(k, dtype=torch.long, device=dev) for g, k in lp.keep.items()})
    model.pruning_plan = plan
    return model
