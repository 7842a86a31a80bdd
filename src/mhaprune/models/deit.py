"""DeiT / ViT (timm ``VisionTransformer`` key layout) and FLatten-DeiT (all focused linear attention).

FLatten-DeiT pools the patch tokens (no class token), because the depthwise conv of focused linear attention
needs the token grid.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .attention import Attention, FocusedLinearAttention
from .layers import DropPath, Mlp, PatchEmbed, init_weights, to_2tuple, trunc_normal_


class Block(nn.Module):
    def __init__(
        self,
        dim,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        attn_type="S",
        grid_size=None,
        focusing_factor=3,
        kernel_size=5,
        fused_attn=True,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if attn_type == "S":
            self.attn = Attention(dim, num_heads, qkv_bias, attn_drop=attn_drop, proj_drop=drop, fused_attn=fused_attn)
        elif attn_type == "L":
            self.attn = FocusedLinearAttention(
                dim,
                grid_size,
                num_heads,
                qkv_bias,
                proj_drop=drop,
                focusing_factor=focusing_factor,
                kernel_size=kernel_size,
            )
        else:
            raise ValueError(f"attn_type must be 'L' or 'S', got {attn_type!r}")
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT/DeiT. ``attn_type="S"``: softmax attention with a class token; ``"L"``: focused linear attention
    with mean-pooled patch tokens."""

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        attn_type="S",
        focusing_factor=3,
        kernel_size=5,
        fused_attn=True,
    ):
        super().__init__()
        if attn_type not in ("S", "L"):
            raise ValueError(f"attn_type must be 'S' or 'L', got {attn_type!r}")
        self.num_classes = num_classes
        self.input_size = (in_chans, *to_2tuple(img_size))
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.has_class_token = attn_type == "S"
        if self.has_class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + int(self.has_class_token), embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                drop_rate,
                attn_drop_rate,
                dpr[i],
                attn_type,
                self.patch_embed.grid_size,
                focusing_factor,
                kernel_size,
                fused_attn,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        if self.has_class_token:
            nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.has_class_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 0] if self.has_class_token else x.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_IMNET = dict(input_size=(3, 224, 224), num_classes=1000)


@register_model(**_IMNET)
def deit_tiny(**kwargs):
    """DeiT-Ti (5.7M params, 1.3G MACs at 224 px)."""
    return VisionTransformer(**{**dict(embed_dim=192, depth=12, num_heads=3), **kwargs})


@register_model(**_IMNET)
def deit_small(**kwargs):
    """DeiT-S (22M params, 4.6G MACs at 224 px)."""
    return VisionTransformer(**{**dict(embed_dim=384, depth=12, num_heads=6), **kwargs})


@register_model(**_IMNET)
def deit_base(**kwargs):
    """DeiT-B (86M params, 17.6G MACs at 224 px)."""
    return VisionTransformer(**{**dict(embed_dim=768, depth=12, num_heads=12), **kwargs})


@register_model(**_IMNET)
def flatten_deit_tiny(**kwargs):
    """FLatten-DeiT-T: DeiT-Ti with focused linear attention in every block."""
    return VisionTransformer(**{**dict(embed_dim=192, depth=12, num_heads=3, attn_type="L"), **kwargs})


_MICRO = dict(
    img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=128, depth=6, num_heads=4, drop_path_rate=0.1
)


@register_model(input_size=(1, 28, 28), num_classes=10)
def deit_micro(**kwargs):
    """DeiT for 28-px grayscale inputs: 7×7 patches of 4 px + class token, 6 blocks of width 128, 4 heads."""
    return VisionTransformer(**{**_MICRO, **kwargs})


@register_model(input_size=(1, 28, 28), num_classes=10)
def flatten_deit_micro(**kwargs):
    """FLatten-DeiT for 28-px grayscale inputs (deit_micro with focused linear attention, mean pooling)."""
    return VisionTransformer(**{**_MICRO, "attn_type": "L", **kwargs})
