"""The kernel notes: which plans keep the fused attention kernels off their fast paths."""

import logging

import pytest
import torch
from torch.profiler import profile

import mhaprune
from mhaprune.cost import kernel_notes
from mhaprune.pruning import apply_plan, l1_plan


def _deit(tied: bool, round_to: int = 1):
    model = mhaprune.create_model("deit_micro").eval()
    x = torch.randn(4, *model.input_size)
    plan = l1_plan(model, x, 0.75, uniform=False, tied=tied, round_to=round_to, groups={"qk", "v"})
    return apply_plan(model, plan), x


def test_uneven_widths_are_named_and_even_widths_are_not():
    uneven, _ = _deit(tied=False)
    notes = kernel_notes(uneven)
    assert len(notes) == 1 and "--same-qk-v-width" in notes[0] and "blocks." in notes[0]
    tied, _ = _deit(tied=True)
    assert kernel_notes(tied) == []
    # the explicit path (FLOP counting, ONNX) has no fused kernel to lose
    for m in uneven.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    assert kernel_notes(uneven) == []


def test_half_precision_on_cuda_needs_multiples_of_8():
    tied, _ = _deit(tied=True)
    widths = {m.qk_head_dim for m in tied.modules() if hasattr(m, "fused_attn")}
    assert any(w % 8 for w in widths)  # the case the note is about
    note = kernel_notes(tied, "cuda", torch.float16)
    assert len(note) == 1 and "--round-to 8" in note[0] and "float16" in note[0]
    assert kernel_notes(tied, "cuda", torch.float32) == [] and kernel_notes(tied, "cpu", torch.float16) == []
    rounded, _ = _deit(tied=True, round_to=8)
    assert kernel_notes(rounded, "cuda", torch.bfloat16) == []


def test_the_note_matches_the_kernel_torch_runs():
    """On this PyTorch, unequal Q/K and V widths send SDPA to the math kernel: what the padding avoids."""
    q, k = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    ran = {}
    for dv in (8, 6):
        with profile() as prof:
            torch.nn.functional.scaled_dot_product_attention(q, k, torch.randn(1, 2, 16, dv))
        ran[dv] = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_attention_math" in ran[6]
    assert "aten::_scaled_dot_product_attention_math" not in ran[8]


def test_pipeline_warns_and_reports(caplog):
    model = mhaprune.create_model("deit_micro")
    data = torch.utils.data.TensorDataset(torch.randn(8, *model.input_size), torch.randint(0, 10, (8,)))
    with caplog.at_level(logging.WARNING, logger="mhaprune.pipeline"):
        res = mhaprune.prune(model, data, method="oneshot", target_macs=0.45, eval_splits="none")
    assert res.report.kernel_notes and any("--same-qk-v-width" in r.getMessage() for r in caplog.records)
    cfg = mhaprune.PruneConfig(target_macs=0.45, same_qk_v_width=True)
    tied = mhaprune.prune(mhaprune.create_model("deit_micro"), data, method="oneshot", config=cfg, eval_splits="none")
    assert tied.report.kernel_notes == []


@pytest.mark.parametrize("tied", [False, True])
def test_padded_fused_equals_explicit(tied):
    model, x = _deit(tied)
    with torch.no_grad():
        fused = model(x)
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        torch.testing.assert_close(model(x), fused, rtol=1e-5, atol=1e-5)
