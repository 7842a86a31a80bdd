"""FLatten-Swin (Han et al., ICCV 2023) and the Swin Transformer it derives from.

Key-for-key the layout of the official implementation (LeapLabTHU/FLatten-Transformer, ``models/flatten_swin.py``):
``attn_type`` gives one letter per stage, ``L`` for global focused linear attention (one window covering the
stage) and ``S`` for Swin shifted-window softmax attention. ``attn_type="SSSS"`` is the plain Swin Transformer.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .attention import FocusedLinearAttention, WindowAttention
from .layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    init_weights,
    shifted_window_mask,
    to_2tuple,
    window_partition,
    window_reverse,
)


class SwinTransformerBlock(nn.Module):
    """One (shifted-)window block; the attention is focused linear (``"L"``) or softmax (``"S"``)."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer=nn.LayerNorm,
        focusing_factor: float = 3,
        kernel_size: int = 5,
        attn_type: str = "L",
        fused_attn: bool = True,
    ):
        super().__init__()
        if attn_type not in ("L", "S"):
            raise ValueError(f"attn_type must be 'L' or 'S', got {attn_type!r}")
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.window_size = window_size
        self.shift_size = shift_size
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError("shift_size must be in [0, window_size)")
        self.norm1 = norm_layer(dim)
        ws = to_2tuple(self.window_size)
        if attn_type == "L":
            self.attn = FocusedLinearAttention(
                dim,
                ws,
                num_heads,
                qkv_bias=qkv_bias,
                proj_drop=drop,
                focusing_factor=focusing_factor,
                kernel_size=kernel_size,
            )
        else:
            self.attn = WindowAttention(
                dim, ws, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop, fused_attn=fused_attn
            )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        mask = (
            shifted_window_mask(self.input_resolution, self.window_size, self.shift_size) if self.shift_size else None
        )
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.input_resolution
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = self.attn(window_partition(x, self.window_size), mask=self.attn_mask)
        x = window_reverse(windows, self.window_size, H, W)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(B, H * W, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return f"input_resolution={self.input_resolution}, window_size={self.window_size}, shift_size={self.shift_size}"


class PatchMerging(nn.Module):
    """Swin patch merging: 2×2 neighbours concatenated, LayerNorm, linear ``4C -> 2C``."""

    def __init__(self, input_resolution: tuple[int, int], dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.input_resolution
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class BasicLayer(nn.Module):
    """One stage: blocks with alternating shift, then optional patch merging."""

    def __init__(
        self, dim, input_resolution, depth, num_heads, window_size, attn_type, drop_path, downsample, **block_kwargs
    ):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.depth = depth
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                input_resolution,
                num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                drop_path=drop_path[i],
                attn_type=attn_type,
                **block_kwargs,
            )
            for i in range(depth)
        )
        self.downsample = (
            PatchMerging(input_resolution, dim, block_kwargs.get("norm_layer", nn.LayerNorm)) if (downsample) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class FLattenSwinTransformer(nn.Module):
    """FLatten-Swin / Swin Transformer.

    Args:
        img_size: input size.
        patch_size: patch size of the stem.
        in_chans: input channels.
        num_classes: classes of the linear head.
        embed_dim: width of stage 1 (doubles per stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: window of the ``L`` stages (the official 56 covers a whole 224-px stage: global attention).
        softmax_window_size: window of the ``S`` stages (Swin's 7).
        attn_type: one letter per stage, ``L`` (focused linear) or ``S`` (softmax windows).
        focusing_factor: FLatten's ``p``.
        kernel_size: FLatten's depthwise-conv kernel.
        fused_attn: use fused SDPA in the softmax stages.
    """

    def __init__(
        self,
        img_size=224,
        patch_size=4,
        in_chans=3,
        num_classes=1000,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=56,
        softmax_window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        patch_norm=True,
        focusing_factor=3,
        kernel_size=5,
        attn_type="LLSS",
        fused_attn=True,
    ):
        super().__init__()
        if len(attn_type) != len(depths) or set(attn_type) - {"L", "S"}:
            raise ValueError(f"attn_type needs one of 'L'/'S' per stage ({len(depths)}), got {attn_type!r}")
        self.num_classes = num_classes
        self.input_size = (in_chans, *to_2tuple(img_size))
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, nn.LayerNorm if patch_norm else None)
        res = self.patch_embed.grid_size
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(
                BasicLayer(
                    int(embed_dim * 2**i),
                    (res[0] // 2**i, res[1] // 2**i),
                    depth,
                    num_heads[i],
                    window_size if attn_type[i] == "L" else softmax_window_size,
                    attn_type[i],
                    dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    i < self.num_layers - 1,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    focusing_factor=focusing_factor,
                    kernel_size=kernel_size,
                    fused_attn=fused_attn,
                )
            )
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _swin(**kwargs) -> FLattenSwinTransformer:
    return FLattenSwinTransformer(**kwargs)


_IMNET = dict(input_size=(3, 224, 224), num_classes=1000)
_MICRO = dict(input_size=(1, 32, 32), num_classes=10)


@register_model(**_IMNET)
def flatten_swin_tiny(**kwargs):
    """FLatten-Swin-T (29M params, 4.5G MACs at 224 px)."""
    return _swin(**{**dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2), **kwargs})


@register_model(**_IMNET)
def flatten_swin_small(**kwargs):
    """FLatten-Swin-S (51M params, 8.7G MACs at 224 px)."""
    return _swin(**{**dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3), **kwargs})


@register_model(**_IMNET)
def flatten_swin_base(**kwargs):
    """FLatten-Swin-B (89M params, 15.4G MACs at 224 px)."""
    return _swin(
        **{**dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5), **kwargs}
    )


def _plain_swin(**kwargs):
    return _swin(**{**dict(attn_type="SSSS", window_size=7, softmax_window_size=7), **kwargs})


@register_model(**_IMNET)
def swin_tiny(**kwargs):
    """Swin-T (28M params, 4.5G MACs at 224 px)."""
    return _plain_swin(
        **{**dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2), **kwargs}
    )


@register_model(**_IMNET)
def swin_small(**kwargs):
    """Swin-S (50M params, 8.7G MACs at 224 px)."""
    return _plain_swin(
        **{**dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3), **kwargs}
    )


@register_model(**_IMNET)
def swin_base(**kwargs):
    """Swin-B (88M params, 15.4G MACs at 224 px)."""
    return _plain_swin(
        **{**dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5), **kwargs}
    )


@register_model(**_MICRO)
def flatten_swin_micro(**kwargs):
    """FLatten-Swin layout for 32-px inputs: global focused linear attention in stages 1-2 (16², 8² tokens),
    shifted 2×2-window softmax attention in stages 3-4."""
    defaults = dict(
        img_size=32,
        patch_size=2,
        in_chans=1,
        num_classes=10,
        embed_dim=32,
        depths=(2, 2, 4, 2),
        num_heads=(2, 2, 4, 8),
        window_size=56,
        softmax_window_size=2,
        drop_path_rate=0.1,
    )
    return _swin(**{**defaults, **kwargs})
