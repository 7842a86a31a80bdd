"""Plans from simple importance rules under the same per-head rules (baselines and one-shot use).

- ``random_plan``: random channels, equal width in every head.
- ``l1_plan``: L1 norm of the weights that belong to each channel (Q and K rows for Q/K; V rows and proj columns for
  V; fc1 rows and fc2 columns for MLP hidden).

``uniform=True`` uses the same keep ratio in every pruned group (the largest whose MACs are ≤ target, then a greedy
fill); ``uniform=False`` lets the greedy repair/fill allocate channels across layers by score per MAC.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .budget import ModelCost, greedy_widths, plan_from_rankings, uniform_widths
from .plan import Plan

_ALL = frozenset({"qk", "v", "hidden"})


def scored_plan(
    model: nn.Module,
    input_size,
    target,
    scorer,
    groups=_ALL,
    uniform: bool = True,
    round_to: int = 1,
    min_per_head: int = 1,
    fill: bool = True,
    meta: dict | None = None,
    tied: bool = False,
) -> Plan:
    """A plan from ``scorer(path, module, adapter, group) -> (h, d) scores`` under the MACs ``target`` (``tied``:
    Q/K and V of every attention layer at one width)."""
    cost = ModelCost(model, input_size)
    t = cost.resolve_target(target, set(groups), min_per_head)
    scores = {}
    for lc in cost.layers:
        sc = {g: scorer(lc.path, lc.module, lc.adapter, g).detach().float().cpu() for g in lc.shapes if g in groups}
        if sc:
            scores[lc.path] = sc
    if uniform:
        widths, _ = uniform_widths(cost, set(groups), t, min_per_head, round_to, tied)
        widths = {p: widths[p] for p in scores}
        ranked = {
            p: {g: torch.sort(s, dim=1, descending=True).values for g, s in gs.items()} for p, gs in scores.items()
        }
        widths = greedy_widths(cost, ranked, widths, t, round_to, min_per_head, fill, tied) if fill else widths
        return plan_from_rankings(model, cost, scores, widths, None, meta=meta, tied=tied).with_target(t)
    full = {p: {g: lc.shapes[g][1] for g in scores[p]} for lc in cost.layers for p in [lc.path] if p in scores}
    return plan_from_rankings(model, cost, scores, full, t, round_to, min_per_head, fill, meta, tied)


def random_plan(model: nn.Module, input_size, target, seed: int = 0, **kwargs) -> Plan:
    """Random channels, the same number in every head."""
    g = torch.Generator().manual_seed(seed)

    def scorer(path, module, adapter, group):
        h, d = adapter.groups(module)[group]
        return torch.rand(h, d, generator=g)

    return scored_plan(model, input_size, target, scorer, meta={"method": "random", "seed": seed}, **kwargs)


def l1_plan(model: nn.Module, input_size, target, **kwargs) -> Plan:
    """Channels ranked by the L1 norm of their weights, the same number in every head."""

    def scorer(path, module, adapter, group):
        return adapter.channel_weights(module, group).abs().sum(-1)

    return scored_plan(model, input_size, target, scorer, meta={"method": "l1"}, **kwargs)


def keep_all_plan(model: nn.Module, input_size) -> Plan:
    """The plan that keeps every channel (convert with it is a no-op)."""
    cost = ModelCost(model, input_size)
    scores = {lc.path: {g: torch.zeros(*lc.shapes[g]) for g in lc.shapes} for lc in cost.layers}
    widths = {lc.path: {g: lc.shapes[g][1] for g in lc.shapes} for lc in cost.layers}
    return plan_from_rankings(model, cost, scores, widths, None, meta={"method": "keep_all"})
