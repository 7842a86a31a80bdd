import pytest
import torch
import torch.nn.functional as F

from mhaprune.attention import focused_kernel, linear_attention, softmax_attention
from mhaprune.models.attention import Attention, PvtAttention, WindowAttention


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dims", [(16, 16), (8, 24), (24, 8)])  # pruned Q/K narrower or wider than V (padded)
def test_softmax_fused_equals_explicit(with_bias, dims):
    dqk, dv = dims
    q, k = torch.randn(2, 3, 10, dqk, dtype=torch.float64), torch.randn(2, 3, 12, dqk, dtype=torch.float64)
    v = torch.randn(2, 3, 12, dv, dtype=torch.float64)
    bias = torch.randn(1, 3, 10, 12, dtype=torch.float64) if with_bias else None
    a = softmax_attention(q, k, v, 0.3, bias, fused=False)
    b = softmax_attention(q, k, v, 0.3, bias, fused=True)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ref = torch.softmax(q @ k.transpose(-2, -1) * 0.3 + (0 if bias is None else bias), -1) @ v
    torch.testing.assert_close(a, ref, rtol=1e-12, atol=1e-12)
    assert b.shape == (2, 3, 10, dv)
    grads = []
    for fused in (False, True):
        t = [x.clone().requires_grad_() for x in (q, k, v)]
        (softmax_attention(*t, 0.3, bias, fused=fused) ** 2).sum().backward()
        grads.append([x.grad for x in t])
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Attention(48, 3, qk_head_dim=8, v_head_dim=12),
        lambda: WindowAttention(48, 4, 3, qk_head_dim=8, v_head_dim=12),
        lambda: PvtAttention(48, 3, sr_ratio=2, qk_head_dim=8, v_head_dim=12),
        lambda: Attention(48, 3, qk_head_dim=12, v_head_dim=5),
        lambda: WindowAttention(48, 4, 3, qk_head_dim=12, v_head_dim=5),
    ],
)
def test_modules_fused_equals_explicit_float64(make):
    m = make().double().eval()
    x = torch.randn(4, 16, 48, dtype=torch.float64)
    args = (4, 4) if hasattr(m, "sr_ratio") else ()  # PVT takes the feature map's H, W
    if hasattr(m, "window_size"):  # a shift mask per window
        args = (torch.where(torch.rand(2, 16, 16) > 0.5, 0.0, -100.0).double(),)
    m.fused_attn = True
    a = m(x, *args)
    m.fused_attn = False
    b = m(x, *args)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_scale_is_explicit_not_inferred():
    m = Attention(48, 3, qk_head_dim=8, v_head_dim=12, scale=16**-0.5)
    assert m.scale == 0.25 and m.qk_head_dim == 8 and m.v_head_dim == 12
    assert m.qkv.out_features == 3 * (8 + 8 + 12) and m.proj.in_features == 36


def test_focused_kernel_matches_official_form():
    x = F.relu(torch.randn(2, 7, 12, dtype=torch.float64)) + 1e-6
    n = x.norm(dim=-1, keepdim=True)
    ref = (x**3 / (x**3).norm(dim=-1, keepdim=True)) * n
    torch.testing.assert_close(focused_kernel(x, 3), ref)


def test_linear_attention_equals_unnormalised_definition():
    """φ(Q)(φ(K)ᵀV) / (φ(Q) Σ φ(K)ᵀ), up to the official +1e-6 in the denominator."""
    q = torch.rand(1, 2, 9, 4, dtype=torch.float64) + 0.1
    k = torch.rand(1, 2, 9, 4, dtype=torch.float64) + 0.1
    v = torch.randn(1, 2, 9, 5, dtype=torch.float64)
    ref = (q @ (k.transpose(-2, -1) @ v)) / (q @ k.sum(-2, keepdim=True).transpose(-2, -1))
    torch.testing.assert_close(linear_attention(q, k, v), ref, rtol=1e-5, atol=1e-6)
