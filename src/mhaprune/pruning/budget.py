"""The budget side of the method: analytic MACs of any width assignment (differentiable), and the greedy
repair/fill that turns per-channel rankings into a plan with MACs ≤ target."""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
import torch.nn as nn

from ..adapters import Adapter, prunable_modules
from ..cost import count_macs, input_shape
from .config import ConfigError, parse_macs
from .groups import per_head_width
from .plan import LayerPlan, Plan

_logger = logging.getLogger(__name__)


class LayerCost:
    """One prunable module: its adapter, recorded geometry and group shapes."""

    def __init__(self, path: str, module: nn.Module, adapter: Adapter, geom: dict):
        self.path, self.module, self.adapter, self.geom = path, module, adapter, geom
        self.shapes = dict(adapter.groups(module))

    def macs(self, per_head: dict[str, float]):
        """MACs of the width-dependent parts at ``per_head`` channels per head (floats/tensors allowed)."""
        widths = {g: self.shapes[g][0] * per_head.get(g, self.shapes[g][1]) for g in self.shapes}
        return self.adapter.macs(self.module, self.geom, widths)

    def macs_total(self, totals: dict):
        """Same, from total channels per group (e.g. the sum of a soft mask)."""
        widths = {g: totals.get(g, self.shapes[g][0] * self.shapes[g][1]) for g in self.shapes}
        return self.adapter.macs(self.module, self.geom, widths)


class ModelCost:
    """Analytic MACs of ``model`` as a function of the kept widths of every prunable group.

    ``total = const + Σ_layers layer.macs(widths)``, where ``const`` (patch embedding, merging, head, unaffected
    projections) is the dense count minus the width-dependent parts. Exact: tested against ``count_macs`` of the
    sliced model.
    """

    def __init__(self, model: nn.Module, input_size):
        """``input_size``: ``(C, H, W)`` or example inputs (tensor batch or dict of tensors; see ``count_macs``)."""
        self.inputs = input_size
        self.input_size = input_shape(input_size)
        entries = prunable_modules(model)
        geoms: dict[str, dict] = {}
        hooks = [
            m.register_forward_hook(lambda mod, a, out, p=p, ad=ad: geoms.__setitem__(p, ad.geometry(mod, a)))
            for p, m, ad in entries
        ]
        try:
            report = count_macs(model, self.inputs)
        finally:
            for h in hooks:
                h.remove()
        self.layers = [LayerCost(p, m, ad, geoms[p]) for p, m, ad in entries if p in geoms]
        self.dense_total = report.total
        self.dense_params = report.params
        dense_parts = sum(int(lc.macs({})) for lc in self.layers)
        self.const = self.dense_total - dense_parts

    def total(self, per_head: dict[str, dict[str, int]]) -> int:
        return int(self.const + sum(lc.macs(per_head.get(lc.path, {})) for lc in self.layers))

    def min_total(self, groups: set[str], min_per_head: int = 1) -> int:
        return self.total(
            {lc.path: {g: min(min_per_head, lc.shapes[g][1]) for g in lc.shapes if g in groups} for lc in self.layers}
        )

    def resolve_target(self, target, groups: set[str], min_per_head: int = 1) -> int:
        t = parse_macs(target, self.dense_total)
        if t >= self.dense_total:
            raise ConfigError(
                f"target {t:,} MACs is not below the dense model's {self.dense_total:,}; choose a smaller "
                f"target, e.g. 0.7 for 70%"
            )
        floor = self.min_total(groups, min_per_head)
        if t < floor:
            bare = isinstance(target, (int, float)) or str(target).strip().replace(".", "", 1).isdigit()
            hint = (
                f"; a bare number above 1 is a count of MACs: for {float(target):g}% write {float(target):g}% or "
                f"{float(target) / 100:g}"
                if bare and 1 < float(target) <= 100
                else ""
            )
            raise ConfigError(
                f"target {t:,} MACs is below the smallest reachable model ({floor:,} MACs, "
                f"{100 * floor / self.dense_total:.1f}% of dense, with {min_per_head} channel(s) per head "
                f"in every pruned group); choose a larger target{hint}"
            )
        return t


TIED = ("qk", "v")  # the groups ``same_qk_v_width`` gives one width per layer


def tied_pair(shapes: dict, groups) -> bool:
    """Whether a layer's Q/K and V groups are both in ``groups`` with the same heads and width (so that they can
    keep one width: ``d_qk = d_v``)."""
    return all(g in groups for g in TIED) and shapes["qk"] == shapes["v"]


def tie_widths(cost: ModelCost, widths: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Q/K and V of every attention layer at the wider of their two widths (the start of a tied repair)."""
    by_path = {lc.path: lc for lc in cost.layers}
    out = copy.deepcopy(widths)
    for p, w in out.items():
        if tied_pair(by_path[p].shapes, w):
            w["qk"] = w["v"] = max(w["qk"], w["v"])
    return out


def greedy_widths(
    cost: ModelCost,
    rankings: dict[str, dict[str, torch.Tensor]],
    widths: dict[str, dict[str, int]],
    target: int,
    step: int = 1,
    min_per_head: int = 1,
    fill: bool = True,
    tied: bool = False,
) -> dict[str, dict[str, int]]:
    """Repair, then fill: remove the cheapest-to-lose channel per head (lowest score lost per MAC saved) until
    MACs ≤ target; then add back the best channels per MAC while MACs stay ≤ target.

    ``rankings[path][group]`` holds each head's channel scores sorted descending ``(h, d)``; ``widths`` the
    starting channels per head. ``tied``: Q/K and V of a layer start at the wider of the two and move together (one
    width per layer). Returns new widths.
    """
    widths = tie_widths(cost, widths) if tied else copy.deepcopy(widths)
    by_path = {lc.path: lc for lc in cost.layers}
    layer_macs = {p: lc.macs(widths.get(p, {})) for p, lc in by_path.items()}
    total = cost.const + sum(layer_macs.values())

    def units(p: str, groups: dict):
        """The groups that move as one: the tied Q/K + V pair, and every other group alone."""
        pair = tied and tied_pair(by_path[p].shapes, groups)
        if pair:
            yield TIED
        yield from ((g,) for g in groups if not (pair and g in TIED))

    def moves(direction: int, step: int = step):
        for p, groups in rankings.items():
            lc = by_path[p]
            for unit in units(p, groups):
                d = widths[p][unit[0]]
                h, full = lc.shapes[unit[0]]
                floor = min(full, max(min_per_head, step))
                nd = min(full, d + step) if direction > 0 else max(floor, d - step)
                if nd == d:
                    continue
                trial = {**widths[p], **{g: nd for g in unit}}
                delta = lc.macs(trial) - layer_macs[p]
                lo, hi = min(d, nd), max(d, nd)
                value = sum(float(groups[g][:, lo:hi].sum()) for g in unit)
                yield p, unit, nd, delta, value

    def take(move):
        nonlocal total
        p, unit, nd, delta, _ = move
        for g in unit:
            widths[p][g] = nd
        layer_macs[p] += delta
        total += delta

    for s in (step, 1) if step > 1 else (step,):
        if s != step and total > target:
            _logger.warning(
                "widths in multiples of %d cannot reach the target (%d channels per head is the floor): some "
                "groups keep finer widths", step, step,
            )  # fmt: skip
        while total > target:
            best = min(moves(-1, s), key=lambda mv: mv[4] / max(-mv[3], 1e-9), default=None)
            if best is None:
                break
            take(best)
    while fill:
        fits = [mv for mv in moves(+1) if total + mv[3] <= target]
        if not fits:
            break
        take(max(fits, key=lambda mv: mv[4] / max(mv[3], 1e-9)))
    return widths


def rank_scores(scores: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """Every head's channel scores sorted descending (the rankings :func:`greedy_widths` takes)."""
    return {p: {g: torch.sort(s, dim=1, descending=True, stable=True).values for g, s in gs.items()}
            for p, gs in scores.items()}  # fmt: skip


def latency_meta(latency, target_ms: float, widths: dict[str, dict[str, int]]) -> dict:
    """A latency plan's record (``plan.meta["latency"]``): the target, the tables' prediction for ``widths``, the
    tables' dense latency and their device setting."""
    return {
        # rounded alike (rounding is monotonic, so a plan under its target stays under it in the record)
        "target_ms": round(target_ms, 4),
        "predicted_ms": round(latency.total(widths), 4),
        "dense_ms": round(latency.dense_total, 4),
        "setting": dataclasses.asdict(latency.setting),
    }


def plan_from_rankings(
    model: nn.Module,
    cost: ModelCost,
    scores: dict[str, dict[str, torch.Tensor]],
    widths: dict[str, dict[str, int]],
    target: int | None,
    step: int = 1,
    min_per_head: int = 1,
    fill: bool = True,
    meta: dict | None = None,
    tied: bool = False,
) -> Plan:
    """Build a plan: every head keeps its top ``widths`` channels by ``scores`` (after repair/fill to ``target``;
    ``tied``: Q/K and V of a layer at one width, see :func:`greedy_widths`)."""
    ranked = rank_scores(scores)
    if target is not None:
        widths = greedy_widths(cost, ranked, widths, target, step, min_per_head, fill, tied)
    elif tied:
        widths = tie_widths(cost, widths)
    layers = {}
    for lc in cost.layers:
        if lc.path not in scores:
            continue
        keep = {}
        for g, s in scores[lc.path].items():
            order = torch.argsort(s, dim=1, descending=True, stable=True)[:, : widths[lc.path][g]]
            keep[g] = torch.sort(order, dim=1).values.tolist()
        layers[lc.path] = LayerPlan(lc.adapter.kind, {g: list(lc.shapes[g]) for g in keep}, keep)
    # a latency budget (cost.latency.LatencyCost) counts milliseconds; the plan still records MACs
    macs = getattr(cost, "macs_cost", None) or cost
    meta = dict(meta or {})
    if macs is not cost:
        meta["latency"] = latency_meta(cost, target, widths)
    plan = Plan(
        layers,
        list(macs.input_size),
        macs.dense_total,
        macs.dense_params,
        macs.total({p: dict(w) for p, w in widths.items()}),
        0,
        target if macs is cost else None,
        getattr(model, "arch_name", None),
        meta,
    )
    plan.pruned_params = plan_params(model, plan)
    return plan


def plan_params(model: nn.Module, plan: Plan) -> int:
    """Parameters of the model after ``plan`` (computed on a detached copy)."""
    from .surgery import apply_plan

    clone = copy.deepcopy(model)
    apply_plan(clone, plan)  # removes any gates first
    return sum(p.numel() for p in clone.parameters())


def uniform_widths(cost: ModelCost, groups: set[str], target: int, min_per_head: int = 1, step: int = 1,
                   tied: bool = False):  # fmt: skip
    """The largest single keep ratio (same in every pruned group) whose MACs are ≤ target (bisection); ``tied``:
    Q/K and V at one width per layer."""

    def widths_at(r):
        w = {
            lc.path: {
                g: max(
                    min(min_per_head, lc.shapes[g][1]),
                    per_head_width(
                        round(r * lc.shapes[g][0] * lc.shapes[g][1]), lc.shapes[g][0], lc.shapes[g][1], step, 1
                    ),
                )
                for g in lc.shapes
                if g in groups
            }
            for lc in cost.layers
        }
        return tie_widths(cost, w) if tied else w

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost.total(widths_at(mid)) <= target:
            lo = mid
        else:
            hi = mid
    return widths_at(lo), lo
