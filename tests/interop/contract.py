"""The adapter contract every interop adapter must meet (used by the timm and Hugging Face test modules)."""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from mhaprune.adapters import prunable_modules
from mhaprune.cost import call_model, count_macs
from mhaprune.export import load_pruned, save_pruned
from mhaprune.pruning import PruneConfig, Pruner, keep_all_plan, random_plan
from mhaprune.train import as_logits
from tests.conftest import unfuse
from tests.pruning.test_equivalence import scramble


def out(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return as_logits(call_model(model, inputs))


def first(inputs):
    return {k: v[:1] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:1]


def flop_counter_macs(model, inputs) -> int:
    """FlopCounterMode / 2 on the explicit attention path (it cannot see inside fused SDPA)."""
    model = unfuse(copy.deepcopy(model))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        call_model(model, first(inputs))
    return fc.get_total_flops() // 2


def check_contract(original, adapted, inputs, tmp_path, n_attention: int):
    """``original``: the library's model (float64, eval); ``adapted``: the same weights after ``adapt`` (float64,
    eval, with arch_name etc.); ``inputs``: a float64 image batch or a dict of text inputs."""
    # converted modules compute what the originals computed
    ref = out(original, inputs)
    torch.testing.assert_close(out(adapted, inputs), ref, rtol=1e-10, atol=1e-12)
    kinds = [a.kind for _, _, a in prunable_modules(adapted)]
    assert kinds.count("attention") == n_attention and kinds.count("mlp") == n_attention
    fresh = copy.deepcopy(adapted)

    # prepared == original (bitwise), masked == sliced (float64) for a random plan
    model = copy.deepcopy(adapted)
    pruner = Pruner(model, PruneConfig(target_macs=0.5), inputs)
    pruner.prepare()
    assert torch.equal(out(model, inputs), out(adapted, inputs))
    scramble(pruner)
    plan = random_plan(fresh, inputs, 0.5, seed=3)
    pruner.set_masks(plan)
    masked = out(model, inputs)
    pruned = pruner.convert(plan)
    torch.testing.assert_close(out(pruned, inputs), masked, rtol=1e-9, atol=1e-10)

    # the model's own forward runs; equal widths per head; analytic MACs == plan == FlopCounterMode / 2
    for _, m, a in prunable_modules(pruned):
        if a.kind == "attention":
            assert m.qkv.out_features == m.num_heads * (2 * m.qk_head_dim + m.v_head_dim)
            assert m.proj.in_features == m.num_heads * m.v_head_dim
    macs = count_macs(pruned, inputs).total
    assert macs == plan.pruned_macs == flop_counter_macs(pruned, inputs) <= 0.5 * plan.dense_macs + 1
    assert count_macs(fresh, inputs).total == flop_counter_macs(fresh, inputs) == plan.dense_macs

    # all-keep convert == original
    model = copy.deepcopy(fresh)
    p2 = Pruner(model, PruneConfig(target_macs=0.5), inputs)
    p2.prepare()
    kept = p2.convert(keep_all_plan(fresh, inputs))
    torch.testing.assert_close(out(kept, inputs), ref, rtol=1e-10, atol=1e-12)

    # save -> reload (rebuilds the base model offline, replays the plan): identical outputs
    pruned = pruned.float()
    save_pruned(pruned, tmp_path / "pruned")
    again = load_pruned(tmp_path / "pruned")
    x32 = (
        {k: v.float() if v.is_floating_point() else v for k, v in inputs.items()}
        if isinstance(inputs, dict)
        else inputs.float()
    )
    assert torch.equal(out(again, x32), out(pruned.eval(), x32))
    return pruned
