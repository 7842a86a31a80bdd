"""Data-free baselines under the same per-head rules: a uniform keep ratio with channels chosen by the L1 norm of
their weights, or at random."""

from __future__ import annotations

from ..pruning import apply_plan, l1_plan, random_plan
from ._registry import MethodContext, MethodResult, register_method

_OPTIONS = ("round_to", "min_per_head", "fill", "same_qk_v_width", "seed")


def _rules(cfg) -> dict:
    return dict(groups=cfg.groups(), round_to=cfg.round_to, min_per_head=cfg.min_per_head, fill=cfg.fill,
                tied=cfg.same_qk_v_width)  # fmt: skip


def _cut(model, plan) -> MethodResult:
    return MethodResult(apply_plan(model, plan), plan)


@register_method(
    "l1", "uniform keep ratio, channels ranked by the L1 norm of their weights (data-free)", options=_OPTIONS
)
def run_l1(model, ctx: MethodContext) -> MethodResult:
    cfg = ctx.cfg
    return _cut(model, l1_plan(model, ctx.calib, cfg.target_macs, **_rules(cfg)))


@register_method("random", "uniform keep ratio, random channels (a control; seeded by --seed)", options=_OPTIONS)
def run_random(model, ctx: MethodContext) -> MethodResult:
    cfg = ctx.cfg
    return _cut(model, random_plan(model, ctx.calib, cfg.target_macs, seed=cfg.seed, **_rules(cfg)))
