"""The exactness rules of method.md §4: prepared == original, masked == sliced, all-keep == original,
apply_plan == convert, analytic MACs == FlopCounterMode/2 after pruning, reweight folding is exact."""

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mhaprune.adapters import prunable_modules
from mhaprune.cost import count_macs
from mhaprune.pruning import Plan, PruneConfig, Pruner, apply_plan, keep_all_plan, random_plan


def flop_counter_macs(model, input_size):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_size, dtype=torch.float64))
    return counter.get_total_flops() // 2


def scramble(pruner, seed=1):
    """Random indicators and reweight parameters (as after some search)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for states in pruner.states.values():
            for st in states.values():
                st.indicator.copy_(torch.randn(st.indicator.shape, generator=g, dtype=st.indicator.dtype) * 2)
                if st.reweight is not None:
                    base = 1.0 if st.reweight_mode == "channel" else 0.0
                    st.reweight.copy_(base + 0.3 * torch.randn(st.reweight.shape, generator=g, dtype=st.reweight.dtype))


def test_prepared_equals_original_bitwise(model_and_input):
    _, model, x = model_and_input
    ref = model(x)
    Pruner(model, PruneConfig(target_macs=0.6), x).prepare()
    assert torch.equal(model(x), ref)


def test_masked_equals_sliced_for_random_plans(model_and_input):
    _, model, x = model_and_input
    fresh = copy.deepcopy(model)
    pruner = Pruner(model, PruneConfig(target_macs=0.5), x)
    pruner.prepare()
    scramble(pruner)
    plan = random_plan(fresh, model.input_size, 0.5, seed=3)
    pruner.set_masks(plan)
    masked = model(x)
    n_before = sum(p.numel() for p in model.parameters())
    pruned = pruner.convert(plan)
    torch.testing.assert_close(pruned(x), masked, rtol=1e-9, atol=1e-10)
    assert sum(p.numel() for p in pruned.parameters()) < n_before
    assert not [m for m in pruned.modules() if type(m).__name__ in ("ChannelGate", "GroupState")]


def test_fold_reweight_is_exact(model_and_input):
    _, model, x = model_and_input
    pruner = Pruner(model, PruneConfig(target_macs=0.5), x)
    pruner.prepare()
    scramble(pruner)
    plan = pruner.plan()
    pruner.set_masks(plan)
    before = model(x)
    pruner.fold_reweight()
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-12)


def test_all_keep_convert_equals_original(model_and_input):
    _, model, x = model_and_input
    ref_out, ref_sd = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    plan = keep_all_plan(model, model.input_size)
    assert plan.pruned_macs == plan.dense_macs
    pruner = Pruner(model, PruneConfig(target_macs=0.5), x)
    pruner.prepare()
    pruned = pruner.convert(plan)
    sd = pruned.state_dict()
    assert sorted(sd) == sorted(ref_sd)
    for k, v in ref_sd.items():
        assert sd[k].shape == v.shape
        torch.testing.assert_close(sd[k], v, rtol=0, atol=1e-12)
    torch.testing.assert_close(pruned(x), ref_out, rtol=1e-12, atol=1e-12)


def test_apply_plan_on_fresh_model_equals_convert(model_and_input):
    _, model, x = model_and_input
    fresh = copy.deepcopy(model)
    pruner = Pruner(model, PruneConfig(target_macs=0.6, reweight=False), x)
    pruner.prepare()
    scramble(pruner)
    plan = pruner.plan()
    converted = pruner.convert(plan)
    replayed = apply_plan(fresh, Plan.from_json(plan.to_json()))
    a, b = converted.state_dict(), replayed.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    torch.testing.assert_close(converted(x), replayed(x), rtol=0, atol=0)


@pytest.mark.parametrize("target", [0.7, 0.35])
def test_converted_model_invariants(model_and_input, target):
    name, model, x = model_and_input
    pruner = Pruner(model, PruneConfig(target_macs=target), x)
    pruner.prepare()
    scramble(pruner, seed=7)
    plan = pruner.plan()
    pruned = pruner.convert()
    macs = count_macs(pruned).total
    assert macs == plan.pruned_macs <= pruner.target
    assert macs == flop_counter_macs(pruned, pruned.input_size)
    for _, m, _ in prunable_modules(pruned):
        if hasattr(m, "qk_head_dim"):
            h = m.num_heads
            assert m.qk_head_dim >= 1 and m.v_head_dim >= 1
            assert m.proj.in_features == h * m.v_head_dim
            q_rows = m.qkv.out_features if hasattr(m, "qkv") else m.q.out_features
            assert (
                q_rows == h * (2 * m.qk_head_dim + m.v_head_dim) if hasattr(m, "qkv") else q_rows == h * m.qk_head_dim
            )
    for lp in plan.layers.values():
        for heads in lp.keep.values():
            assert len({len(k) for k in heads}) == 1 and len(heads[0]) >= 1


def test_plan_and_convert_right_after_prepare(model_and_input):
    _, model, x = model_and_input
    pruner = Pruner(model, PruneConfig(target_macs=0.4), x)
    pruner.prepare()
    plan = pruner.plan()
    assert plan.pruned_macs <= pruner.target
    assert count_macs(pruner.convert(plan)).total == plan.pruned_macs
