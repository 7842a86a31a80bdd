"""One-shot post-training pruning in the style of Kwon et al. (2022) / OPTIN: no search training, no fine-tune.

1. **Importance** (:func:`fisher_scores`): the diagonal Fisher information of a 0/1 keep-mask on every channel,
   ``I_c = Σ_samples (∂L/∂m_c)²`` at ``m = 1``, from a labelled calibration batch of the training split (one
   forward/backward per sample). A Q/K channel's mask multiplies both its query and its key.
2. **Mask search** (:func:`fisher_plan`): the greedy knapsack of :func:`~mhaprune.pruning.budget.greedy_widths`,
   removing the channel (the same number in every head) with the least importance per MAC saved until the MACs
   are ≤ the target, then filling back while they stay ≤ it.
3. **Mask rescaling** (:func:`rescale_outputs`): layer by layer in forward order, the kept input columns of each
   pruned module's output linear (attention ``proj``, MLP ``fc2``) are scaled by the least-squares solution that
   best reconstructs the dense model's output of that linear on the calibration batch (inputs taken from the pruned
   model so far, so errors of earlier layers are corrected too). A layer keeps its weights when the fit does not
   lower its calibration error.

Kwon et al.'s block-diagonal "mask rearrangement" step is not implemented. :func:`oneshot_prune` runs the three
steps and returns the sliced model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..adapters import prunable_modules
from ..cost import call_model
from .baselines import _ALL, scored_plan
from .gates import GroupState, install_gates
from .plan import Plan
from .surgery import apply_plan

_logger = logging.getLogger(__name__)
_INIT = 3.0  # indicator value of the probe gates; every channel is kept at it


def _take(inputs, i: int, j: int):
    if isinstance(inputs, dict):
        return {k: v[i:j] if torch.is_tensor(v) else v for k, v in inputs.items()}
    return inputs[i:j]


def _count(inputs) -> int:
    if isinstance(inputs, dict):
        return len(next(v for v in inputs.values() if torch.is_tensor(v)))
    return len(inputs)


def fisher_scores(
    model: nn.Module,
    inputs,
    targets: torch.Tensor | None,
    groups=_ALL,
    loss_fn: Callable = F.cross_entropy,
    sample_loss: Callable | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{path: {group: (h, d) Fisher importance}}`` of every prunable channel, from ``inputs`` / ``targets``
    (a calibration batch; ``loss_fn(model output, targets)``), or from ``sample_loss(model, inputs of one sample,
    its index)`` (a label-free objective; ``targets`` may then be ``None``). The model is left as it was (probe
    gates removed, parameters' ``requires_grad`` restored)."""
    if sample_loss is None and (targets is None or _count(inputs) != len(targets)):
        raise ValueError(f"{_count(inputs)} calibration inputs but {0 if targets is None else len(targets)} targets")
    entries = prunable_modules(model)
    states: dict[str, dict[str, GroupState]] = {}
    dev = next(model.parameters()).device
    for path, m, adapter in entries:
        sts = {
            g: GroupState(h, d, g, init_logit=_INIT).to(dev) for g, (h, d) in adapter.groups(m).items() if g in groups
        }
        if sts:
            install_gates(m, adapter, sts)
            states[path] = sts
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    fisher = {
        p: {g: torch.zeros(st.heads, st.width, dtype=torch.float64) for g, st in s.items()} for p, s in states.items()
    }
    slope = torch.sigmoid(torch.tensor(_INIT, dtype=torch.float64))
    slope = slope * (1 - slope)  # d sigmoid / d indicator at the probe value: indicator grad = mask grad * slope
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for sts in states.values():
            for st in sts.values():
                st.indicator.requires_grad_(True)
        model.eval()
        for i in range(_count(inputs)):
            x = _take(inputs, i, i + 1)
            if sample_loss is not None:
                loss = sample_loss(model, x, i)
            else:
                loss = loss_fn(call_model(model, x), targets[i : i + 1].to(dev))
            grads = torch.autograd.grad(loss, [st.indicator for s in states.values() for st in s.values()])
            it = iter(grads)
            for p, sts in states.items():
                for g in sts:
                    fisher[p][g] += (next(it).double().cpu() / slope) ** 2
    finally:
        for path, m, adapter in entries:
            if path in states:
                adapter.uninstall(m)
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return {p: {g: f.float() for g, f in gs.items()} for p, gs in fisher.items()}


def fisher_plan(
    model: nn.Module,
    input_size,
    target,
    inputs,
    targets: torch.Tensor | None,
    groups=_ALL,
    round_to: int = 1,
    min_per_head: int = 1,
    loss_fn: Callable = F.cross_entropy,
    sample_loss: Callable | None = None,
    tied: bool = False,
) -> Plan:
    """The plan of steps 1–2: Fisher importance, then the greedy mask search under ``target`` MACs."""
    scores = fisher_scores(model, inputs, targets, groups, loss_fn, sample_loss)
    return scored_plan(
        model,
        input_size,
        target,
        lambda path, module, adapter, group: scores[path][group],
        groups=groups,
        uniform=False,
        round_to=round_to,
        min_per_head=min_per_head,
        tied=tied,
        meta={"method": "oneshot-fisher", "calibration_samples": _count(inputs)},
    )


def output_linear(module: nn.Module, adapter) -> nn.Linear | None:
    """The linear layer whose input columns are a module's V (attention) or hidden (MLP) channels."""
    return adapter.output_linear(module, "v" if "v" in adapter.groups(module) else "hidden")


class _Stop(Exception):
    pass


def _fit_layer(pruned: nn.Module, lin: nn.Linear, inputs, ys: list[torch.Tensor], batch_size: int, damping: float):
    """Least-squares column scales of ``lin`` (in place when they lower the error); its inputs come from ``pruned``
    (the forward stops at ``lin``), its targets ``ys`` from the dense model, one entry per batch."""
    w = lin.weight.double()  # (out, k)
    b = lin.bias.double() if lin.bias is not None else 0.0
    k = w.shape[1]
    gram = torch.zeros(k, k, dtype=torch.float64, device=w.device)
    rhs = torch.zeros(k, dtype=torch.float64, device=w.device)
    total = energy = 0.0
    feats: list[torch.Tensor] = []

    def grab(mod, a):
        feats.append(a[0].flatten(0, -2).double())
        raise _Stop

    h = lin.register_forward_pre_hook(grab)
    try:
        for y, i in zip(ys, range(0, _count(inputs), batch_size), strict=True):
            try:
                call_model(pruned, _take(inputs, i, i + batch_size))
            except _Stop:
                pass
            z, r = feats.pop(), y - b
            gram += z.t() @ z
            rhs += (z * (r @ w)).sum(0)
            total += float((r * r).sum())
            energy += float((y * y).sum())
    finally:
        h.remove()
    gram = gram * (w.t() @ w)

    def err(s):
        return float((total + s @ gram @ s - 2 * rhs @ s) / max(energy, 1e-30))

    reg = damping * gram.diagonal().mean().clamp_min(1e-30)
    s = torch.linalg.solve(gram + reg * torch.eye(k, dtype=torch.float64, device=w.device), rhs)
    before, after = err(torch.ones_like(rhs)), err(s)
    applied = bool(torch.isfinite(s).all()) and after < before
    if applied:
        lin.weight.mul_(s.to(lin.weight.dtype)[None, :])
    return {"before": before, "after": after if applied else before, "applied": applied}


@torch.no_grad()
def rescale_outputs(
    pruned: nn.Module, dense: nn.Module, inputs, batch_size: int = 64, damping: float = 1e-4
) -> dict[str, dict]:
    """Step 3, in place on ``pruned``: per pruned module, scale the output linear's input columns by the least-squares
    fit to ``dense``'s output of the same linear. Returns ``{path: {"before", "after", "applied"}}`` with the
    relative calibration errors ``‖Y − Ŷ‖² / ‖Y‖²``."""
    n = _count(inputs)
    plan = getattr(pruned, "pruning_plan", None)
    paths = set(plan.layers) if plan is not None else None
    entries = [(p, m, output_linear(m, a)) for p, m, a in prunable_modules(pruned) if paths is None or p in paths]
    entries = [(p, m, lin) for p, m, lin in entries if lin is not None]
    dense_lin = {p: output_linear(dense.get_submodule(p), a) for p, _, a in prunable_modules(dense)}
    targets: dict[str, list[torch.Tensor]] = {p: [] for p, _, _ in entries}
    hooks = [
        dense_lin[p].register_forward_hook(lambda mod, a, out, p=p: targets[p].append(out.flatten(0, -2).double()))
        for p, _, _ in entries
    ]
    was = (pruned.training, dense.training)
    pruned.eval(), dense.eval()
    try:
        for i in range(0, n, batch_size):
            call_model(dense, _take(inputs, i, i + batch_size))
    finally:
        for h in hooks:
            h.remove()
    report = {}
    try:
        for path, _, lin in entries:
            report[path] = _fit_layer(pruned, lin, inputs, targets.pop(path), batch_size, damping)
    finally:
        pruned.train(was[0]), dense.train(was[1])
    _logger.info("rescaled %d of %d layers", sum(r["applied"] for r in report.values()), len(report))
    return report


def oneshot_prune(
    model: nn.Module,
    target,
    inputs,
    targets: torch.Tensor | None,
    input_size=None,
    groups=_ALL,
    round_to: int = 1,
    min_per_head: int = 1,
    rescale: bool = True,
    loss_fn: Callable = F.cross_entropy,
    sample_loss: Callable | None = None,
    tied: bool = False,
) -> tuple[nn.Module, Plan, dict]:
    """Kwon-style one-shot pruning of a copy of ``model`` to ``target`` MACs from a labelled calibration batch.

    Returns ``(pruned model, plan, report)``; ``model`` is not modified. ``input_size`` defaults to the model's
    ``input_size`` attribute (or the shape of one calibration sample)."""
    size = input_size or getattr(model, "input_size", None) or _take(inputs, 0, 1)
    plan = fisher_plan(model, size, target, inputs, targets, groups, round_to, min_per_head, loss_fn, sample_loss,
                       tied)  # fmt: skip
    pruned = apply_plan(copy.deepcopy(model), plan)
    report = {"layers": rescale_outputs(pruned, model, inputs) if rescale else {}}
    return pruned, plan, report
