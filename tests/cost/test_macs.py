import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mhaprune
from mhaprune.cost import count_macs, linear_core_macs, softmax_core_macs
from mhaprune.models.attention import Attention, FocusedLinearAttention, PvtAttention, WindowAttention
from tests.conftest import shared_model, unfuse


def flop_counter_macs(model, input_size) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_size))
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2


@pytest.mark.parametrize("name", mhaprune.list_models())
def test_analytic_equals_flop_counter(name):
    model = shared_model(name)
    r = count_macs(model)
    assert r.total == flop_counter_macs(model, model.input_size)
    assert r.total == sum(r.by_kind.values()) == sum(r.by_module.values())
    assert r.params == sum(p.numel() for p in model.parameters())


def test_fused_path_does_not_change_the_analytic_count():
    fused = mhaprune.create_model("deit_micro")
    assert count_macs(fused).total == count_macs(unfuse(mhaprune.create_model("deit_micro"))).total


def test_one_deit_block_closed_form():
    """MACs of a DeiT-Ti block at 197 tokens, written out by hand."""
    N, C, h = 197, 192, 3
    attn = Attention(C, h, fused_attn=False)
    expected = N * C * 3 * C + h * N * N * (64 + 64) + N * C * C
    r = count_macs(_Wrap(attn), (N, C))
    assert r.total == expected
    assert r.by_kind == {"qkv": N * C * 3 * C, "attn": h * N * N * 128, "proj": N * C * C}


def test_focused_linear_closed_form_with_unequal_head_dims():
    C, h, dqk, dv, res = 64, 4, 8, 12, (6, 6)
    attn = FocusedLinearAttention(C, res, h, qk_head_dim=dqk, v_head_dim=dv, dwc_shared=False)
    N = 36
    core = h * (N * dqk + N * dqk * dv + N * dqk * dv)
    expected = N * C * (2 * h * dqk + h * dv) + core + N * h * dv * 25 + N * h * dv * C
    model = _Wrap(attn)
    assert count_macs(model, (N, C)).total == expected == flop_counter_macs(model, (N, C))
    assert core == linear_core_macs(1, N, N, h, dqk, dv)


@pytest.mark.parametrize(
    "module",
    [
        lambda: WindowAttention(48, 4, 3, qk_head_dim=8, v_head_dim=20, fused_attn=False),
        lambda: PvtAttention(48, 3, sr_ratio=2, qk_head_dim=4, v_head_dim=16, fused_attn=False),
    ],
)
def test_softmax_modules_at_other_widths_match_flop_counter(module):
    m = module()
    if hasattr(m, "sr_ratio"):  # PVT takes the feature map's H, W
        model, size = _WrapHW(m, 8, 8), (64, 48)
        n_keys = 16
    else:
        model, size = _Wrap(m), (16, 48)
        n_keys = 16
    assert count_macs(model, size).total == flop_counter_macs(model, size)
    assert count_macs(model, size).by_kind["attn"] == softmax_core_macs(
        1, 64 if n_keys == 16 and size[0] == 64 else 16, n_keys, 3, m.qk_head_dim, m.v_head_dim
    )


class _Wrap(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn(x)


class _WrapHW(_Wrap):
    def __init__(self, attn, H, W):
        super().__init__(attn)
        self.hw = (H, W)

    def forward(self, x):
        return self.attn(x, *self.hw)
