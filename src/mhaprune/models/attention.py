"""Attention modules (projections around the kernels of :mod:`mhaprune.attention`).

Every module stores ``num_heads``, ``qk_head_dim``, ``v_head_dim`` and ``scale`` itself and reshapes with those,
never with the width of its input, so the Q/K and V widths may differ (as they do after pruning).

Gate slots (identity by default): ``q_gate`` and ``k_gate`` act on the Q/K channels (``(..., h·d_qk)``), for
focused linear attention after the kernel function and before the all-channel norms; ``v_gate`` acts on the
per-V-channel attention output right before ``proj`` (``(..., h·d_v)``). Each output channel there depends on
exactly one V channel (also through FLatten's depthwise conv), so a channel-wise operation at these points is
equivalent to editing the weights around them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention import focused_kernel, linear_attention, softmax_attention
from .layers import default_scale, relative_position_index, to_2tuple, trunc_normal_


class _HeadsMixin:
    num_heads: int
    qk_head_dim: int
    v_head_dim: int

    def _init_dims(self, dim: int, num_heads: int, qk_head_dim: int | None, v_head_dim: int | None) -> None:
        if qk_head_dim is None or v_head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.qk_head_dim = qk_head_dim or dim // num_heads
        self.v_head_dim = v_head_dim or dim // num_heads
        self.q_gate = nn.Identity()
        self.k_gate = nn.Identity()
        self.v_gate = nn.Identity()

    @property
    def qk_dim(self) -> int:
        return self.num_heads * self.qk_head_dim

    @property
    def v_dim(self) -> int:
        return self.num_heads * self.v_head_dim

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, h·d) -> (B, h, N, d)``."""
        B, N, _ = x.shape
        return x.reshape(B, N, self.num_heads, -1).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, N, d) -> (B, N, h·d)``."""
        B, _, N, _ = x.shape
        return x.transpose(1, 2).reshape(B, N, -1)

    def _split_qkv(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = self.qk_dim
        return qkv[..., :a], qkv[..., a : 2 * a], qkv[..., 2 * a :]

    def _extra(self) -> str:
        return f"num_heads={self.num_heads}, qk_head_dim={self.qk_head_dim}, v_head_dim={self.v_head_dim}"


class _SoftmaxMixin(_HeadsMixin):
    """Scale, dropout and the gated softmax core shared by the softmax attention modules."""

    def _init_softmax(self, dim: int, scale: float | None, attn_drop: float, proj_drop: float, fused_attn: bool):
        self.scale = scale if scale is not None else default_scale(self.qk_head_dim)
        self.fused_attn = fused_attn
        self.attn_drop = attn_drop
        self.proj = nn.Linear(self.v_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias=None) -> torch.Tensor:
        """Gates, heads, softmax kernel, merge, V gate, ``proj``: ``(B, N, ·)`` in, ``(B, N, dim)`` out."""
        q, k, v = self._heads(self.q_gate(q)), self._heads(self.k_gate(k)), self._heads(v)
        p = self.attn_drop if self.training else 0.0
        x = softmax_attention(q, k, v, self.scale, bias=bias, dropout_p=p, fused=self.fused_attn)
        return self.proj_drop(self.proj(self.v_gate(self._merge(x))))


class Attention(_SoftmaxMixin, nn.Module):
    """Global softmax multi-head self-attention with a fused ``qkv`` projection (ViT/DeiT layout)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_head_dim: int | None = None,
        v_head_dim: int | None = None,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused_attn: bool = True,
    ):
        super().__init__()
        self._init_dims(dim, num_heads, qk_head_dim, v_head_dim)
        self.qkv = nn.Linear(dim, 2 * self.qk_dim + self.v_dim, bias=qkv_bias)
        self._init_softmax(dim, scale, attn_drop, proj_drop, fused_attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._attend(*self._split_qkv(self.qkv(x)))

    def extra_repr(self) -> str:
        return f"{self._extra()}, scale={self.scale:.6g}, fused_attn={self.fused_attn}"


class WindowAttention(_SoftmaxMixin, nn.Module):
    """Swin (shifted-)window softmax attention with a per-head relative position bias.

    ``forward`` takes windows ``(B·nW, ws², C)`` and the optional shift mask ``(nW, ws², ws²)``.
    """

    def __init__(
        self,
        dim: int,
        window_size,
        num_heads: int,
        qkv_bias: bool = True,
        qk_head_dim: int | None = None,
        v_head_dim: int | None = None,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused_attn: bool = True,
    ):
        super().__init__()
        self._init_dims(dim, num_heads, qk_head_dim, v_head_dim)
        self.window_size = to_2tuple(window_size)
        Wh, Ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * Wh - 1) * (2 * Ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, 2 * self.qk_dim + self.v_dim, bias=qkv_bias)
        self._init_softmax(dim, scale, attn_drop, proj_drop, fused_attn)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _bias(self, mask: torch.Tensor | None, B_: int) -> torch.Tensor:
        N = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # 1, h, N, N
        if mask is None:
            return bias
        nW = mask.shape[0]
        bias = bias.unsqueeze(1) + mask.unsqueeze(1).unsqueeze(0)  # 1, nW, h, N, N
        return bias.expand(B_ // nW, -1, -1, -1, -1).reshape(B_, self.num_heads, N, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._attend(*self._split_qkv(self.qkv(x)), bias=self._bias(mask, x.shape[0]))

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, {self._extra()}, scale={self.scale:.6g}"


class _FocusedMixin(_HeadsMixin):
    """The FLatten parts: positional encoding on K, softplus ``scale``, focusing kernel and depthwise conv on V."""

    def _init_focused(self, num_tokens: int, focusing_factor: float, kernel_size: int, dwc_shared: bool) -> None:
        self.focusing_factor = focusing_factor
        self.kernel_size = kernel_size
        self.dwc_shared = dwc_shared
        ch = self.v_head_dim if dwc_shared else self.v_dim
        self.dwc = nn.Conv2d(ch, ch, kernel_size=kernel_size, groups=ch, padding=kernel_size // 2)
        self.scale = nn.Parameter(torch.zeros(1, 1, self.qk_dim))
        self.positional_encoding = nn.Parameter(torch.zeros(1, num_tokens, self.qk_dim))

    def _focus(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = k + self.positional_encoding
        scale = F.softplus(self.scale)
        q = (F.relu(q) + 1e-6) / scale
        k = (F.relu(k) + 1e-6) / scale
        q = focused_kernel(self.q_gate(q), self.focusing_factor)
        k = focused_kernel(self.k_gate(k), self.focusing_factor)
        return q, k

    def _dwc(self, v: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Depthwise conv of per-head values ``(B, h, N, d_v)`` -> ``(B, N, h·d_v)``."""
        B, h, N, d = v.shape
        if self.dwc_shared:
            out = self.dwc(v.reshape(B * h, H, W, d).permute(0, 3, 1, 2))
        else:
            out = self.dwc(v.permute(0, 1, 3, 2).reshape(B, h * d, H, W))
        return out.reshape(B, h * d, N).permute(0, 2, 1)

    def _extra_focused(self) -> str:
        return (
            f"{self._extra()}, focusing_factor={self.focusing_factor}, kernel_size={self.kernel_size}, "
            f"dwc_shared={self.dwc_shared}"
        )


class FocusedLinearAttention(_FocusedMixin, nn.Module):
    """FLatten focused linear attention over a fixed token grid, fused ``qkv`` (FLatten-Swin/DeiT layout).

    Args:
        dim: input/output width.
        resolution: the token grid ``(H, W)`` the module attends over (one Swin window covering the stage).
        num_heads: number of heads.
        dwc_shared: the official layout shares one ``d_v``-channel depthwise kernel across heads; ``False`` keeps
            one kernel per head and channel (needed once heads keep different V channels).
    """

    def __init__(
        self,
        dim: int,
        resolution,
        num_heads: int,
        qkv_bias: bool = True,
        qk_head_dim: int | None = None,
        v_head_dim: int | None = None,
        proj_drop: float = 0.0,
        focusing_factor: float = 3,
        kernel_size: int = 5,
        dwc_shared: bool = True,
    ):
        super().__init__()
        self._init_dims(dim, num_heads, qk_head_dim, v_head_dim)
        self.resolution = to_2tuple(resolution)
        self.qkv = nn.Linear(dim, 2 * self.qk_dim + self.v_dim, bias=qkv_bias)
        self.proj = nn.Linear(self.v_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._init_focused(self.resolution[0] * self.resolution[1], focusing_factor, kernel_size, dwc_shared)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._split_qkv(self.qkv(x))
        q, k = self._focus(q, k)
        v = self._heads(v)
        x = self._merge(linear_attention(self._heads(q), self._heads(k), v))
        x = x + self._dwc(v, *self.resolution)
        return self.proj_drop(self.proj(self.v_gate(x)))

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, {self._extra_focused()}"


def _init_sr(module: nn.Module, dim: int, sr_ratio: int) -> None:
    """PVT's key/value spatial reduction (strided conv + LayerNorm); absent when ``sr_ratio == 1``."""
    module.sr_ratio = sr_ratio
    if sr_ratio > 1:
        module.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
        module.norm = nn.LayerNorm(dim)


def _reduce(module: nn.Module, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    if module.sr_ratio == 1:
        return x
    B, N, C = x.shape
    x_ = module.sr(x.permute(0, 2, 1).reshape(B, C, H, W)).reshape(B, C, -1).permute(0, 2, 1)
    return module.norm(x_)


class PvtAttention(_SoftmaxMixin, nn.Module):
    """PVT softmax attention: separate ``q`` and ``kv`` projections, optional spatial reduction of K/V."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_head_dim: int | None = None,
        v_head_dim: int | None = None,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        sr_ratio: int = 1,
        fused_attn: bool = True,
    ):
        super().__init__()
        self._init_dims(dim, num_heads, qk_head_dim, v_head_dim)
        self.q = nn.Linear(dim, self.qk_dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, self.qk_dim + self.v_dim, bias=qkv_bias)
        self._init_softmax(dim, scale, attn_drop, proj_drop, fused_attn)
        _init_sr(self, dim, sr_ratio)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        kv = self.kv(_reduce(self, x, H, W))
        return self._attend(self.q(x), kv[..., : self.qk_dim], kv[..., self.qk_dim :])

    def extra_repr(self) -> str:
        return f"{self._extra()}, sr_ratio={self.sr_ratio}, scale={self.scale:.6g}"


class PvtFocusedLinearAttention(_FocusedMixin, nn.Module):
    """FLatten focused linear attention in the PVT layout (``q`` + ``kv``, optional spatial reduction)."""

    def __init__(
        self,
        dim: int,
        num_patches: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_head_dim: int | None = None,
        v_head_dim: int | None = None,
        proj_drop: float = 0.0,
        sr_ratio: int = 1,
        focusing_factor: float = 3,
        kernel_size: int = 5,
        dwc_shared: bool = True,
    ):
        super().__init__()
        self._init_dims(dim, num_heads, qk_head_dim, v_head_dim)
        self.q = nn.Linear(dim, self.qk_dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, self.qk_dim + self.v_dim, bias=qkv_bias)
        self.proj = nn.Linear(self.v_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        _init_sr(self, dim, sr_ratio)
        self._init_focused(num_patches // (sr_ratio * sr_ratio), focusing_factor, kernel_size, dwc_shared)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        N = x.shape[1]
        q = self.q(x)
        kv = self.kv(_reduce(self, x, H, W))
        k, v = kv[..., : self.qk_dim], kv[..., self.qk_dim :]
        q, k = self._focus(q, k)
        v = self._heads(v)
        x = self._merge(linear_attention(self._heads(q), self._heads(k), v))
        if self.sr_ratio > 1:
            B, h, n, d = v.shape
            v = F.interpolate(v.transpose(-2, -1).reshape(B * h, d, n), size=N, mode="linear")
            v = v.reshape(B, h, d, N).transpose(-2, -1)
        x = x + self._dwc(v, H, W)
        return self.proj_drop(self.proj(self.v_gate(x)))

    def extra_repr(self) -> str:
        return f"{self._extra_focused()}, sr_ratio={self.sr_ratio}"
