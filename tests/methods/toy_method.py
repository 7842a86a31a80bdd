"""A toy method in one file, registered by name: keep the first channels of every head (a uniform keep ratio).
It exists to show, and test, that a new method is one file plus its registration."""

import torch

from mhaprune.methods import MethodResult, register_method
from mhaprune.pruning import apply_plan, scored_plan


@register_method("toy-first", "keeps the first channels of every head (test toy)")
def run_toy_first(model, ctx):
    def scorer(path, module, adapter, group):
        h, d = adapter.groups(module)[group]
        return -torch.arange(d, dtype=torch.float32).expand(h, d)  # earlier channels score higher

    plan = scored_plan(model, ctx.calib, ctx.cfg.target_macs, scorer, groups=ctx.cfg.groups(), meta={"method": "toy"})
    return MethodResult(apply_plan(model, plan), plan, {"toy": True})
