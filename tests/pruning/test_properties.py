"""Property tests (hypothesis) for plan validation and the cost model, on random small configurations."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import mhaprune
from mhaprune.cost import count_macs
from mhaprune.pruning import ModelCost, Plan, PlanError, apply_plan, keep_all_plan
from tests.conftest import unfuse

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def small_models(draw):
    """A random small ViT (softmax or focused linear attention) or a two-stage FLatten-Swin."""
    if draw(st.booleans()):
        heads = draw(st.integers(1, 3))
        kw = dict(
            depth=draw(st.integers(1, 2)),
            num_heads=heads,
            embed_dim=heads * draw(st.sampled_from([4, 6, 8])),
            mlp_ratio=draw(st.sampled_from([1.0, 2.0, 3.0])),
            patch_size=draw(st.sampled_from([4, 7])),
            attn_type=draw(st.sampled_from(["S", "L"])),
        )
        return "deit_micro", kw
    h1 = draw(st.integers(1, 2))
    kw = dict(
        img_size=16,
        embed_dim=h1 * draw(st.sampled_from([4, 8])),
        depths=(1, draw(st.integers(1, 2))),
        num_heads=(h1, 2 * h1),
        mlp_ratio=draw(st.sampled_from([1.0, 2.0])),
        attn_type=draw(st.sampled_from(["LS", "LL", "SS"])),
    )
    return "flatten_swin_micro", kw


def _build(spec):
    name, kw = spec
    torch.manual_seed(0)
    return unfuse(mhaprune.create_model(name, **kw)).eval()


@st.composite
def model_and_plan(draw):
    """A model and a random valid plan: for every group a random width and random sorted channels per head."""
    model = _build(draw(small_models()))
    plan = keep_all_plan(model, model.input_size)
    for lp in plan.layers.values():
        for g, (h, d) in lp.shapes.items():
            w = draw(st.integers(1, d))
            lp.keep[g] = [sorted(draw(st.permutations(range(d)))[:w]) for _ in range(h)]
    return model, plan


def _widths(plan: Plan) -> dict[str, dict[str, int]]:
    return {p: {g: len(k[0]) for g, k in lp.keep.items()} for p, lp in plan.layers.items()}


@SETTINGS
@given(model_and_plan())
def test_random_valid_plans_apply_and_cost_what_the_model_says(mp):
    model, plan = mp
    cost = ModelCost(model, model.input_size)
    predicted = cost.total(_widths(plan))
    pruned = apply_plan(copy.deepcopy(model), Plan.from_dict(plan.to_dict()))
    x = torch.randn(2, *model.input_size)
    assert pruned(x).shape == (2, model.num_classes)
    report = count_macs(pruned, model.input_size)
    assert report.total == predicted
    with FlopCounterMode(display=False) as fc:
        pruned(torch.randn(1, *model.input_size))
    assert fc.get_total_flops() // 2 == predicted


_CORRUPTIONS = {
    "out of range": lambda keep, d: keep[0].__setitem__(-1, d),
    "negative": lambda keep, d: keep[0].__setitem__(0, -1),
    "duplicated": lambda keep, d: keep[0].__setitem__(-1, keep[0][0]) if len(keep[0]) > 1 else keep[0].append(d),
    "unequal": lambda keep, d: keep[0].pop() if len(keep[0]) > 1 else keep[0].append((keep[0][0] + 1) % d),
    "empty head": lambda keep, d: keep[0].clear(),
    "unsorted": lambda keep, d: keep[0].reverse() if len(keep[0]) > 1 else keep[0].__setitem__(0, 1.5),
    "missing head": lambda keep, d: keep.pop(),
    "extra head": lambda keep, d: keep.append(list(keep[0])),
}


@SETTINGS
@given(model_and_plan(), st.sampled_from(sorted(_CORRUPTIONS)), st.data())
def test_any_corrupted_plan_is_refused(mp, corruption, data):
    model, plan = mp
    d = copy.deepcopy(plan.to_dict())
    path = data.draw(st.sampled_from(sorted(d["layers"])))
    group = data.draw(st.sampled_from(sorted(d["layers"][path]["keep"])))
    keep = d["layers"][path]["keep"][group]
    _, width = d["layers"][path]["shapes"][group]
    _CORRUPTIONS[corruption](keep, width)
    target = copy.deepcopy(model)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(PlanError):
        apply_plan(target, Plan.from_dict(d))
    after = target.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before), "model was modified"


@SETTINGS
@given(small_models(), st.data())
def test_macs_are_monotone_in_kept_channels_and_never_negative(spec, data):
    model = _build(spec)
    cost = ModelCost(model, model.input_size)
    shapes = {lc.path: lc.shapes for lc in cost.layers}
    lo = {p: {g: data.draw(st.integers(0, d)) for g, (_, d) in gs.items()} for p, gs in shapes.items()}
    hi = {
        p: {g: data.draw(st.integers(w, gs[g][1])) for g, w in ws.items()} for p, ws in lo.items() for gs in [shapes[p]]
    }
    assert 0 <= cost.total(lo) <= cost.total(hi) <= cost.dense_total
    # one more channel in any single group never lowers the cost
    p = data.draw(st.sampled_from(sorted(lo)))
    g = data.draw(st.sampled_from(sorted(lo[p])))
    if lo[p][g] < shapes[p][g][1]:
        up = copy.deepcopy(lo)
        up[p][g] += 1
        assert cost.total(up) >= cost.total(lo)
    zero = {p: dict.fromkeys(gs, 0) for p, gs in shapes.items()}
    assert cost.total(zero) >= 0


@SETTINGS
@given(small_models())
def test_dense_macs_equal_flop_counter_on_random_configs(spec):
    model = _build(spec)
    with FlopCounterMode(display=False) as fc:
        model(torch.randn(1, *model.input_size))
    assert count_macs(model, model.input_size).total == fc.get_total_flops() // 2
    assert ModelCost(model, model.input_size).dense_total == fc.get_total_flops() // 2
