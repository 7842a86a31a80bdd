"""FLatten-PVT and the Pyramid Vision Transformer it derives from.

Key-for-key the layout of the official FLatten implementation (``models/flatten_pvt.py``): per stage
``patch_embed{i}``, ``pos_embed{i}``, ``block{i}``; mean-pooled tokens (no class token); a final ``norm`` that
the official forward does not use (kept so that official checkpoints load strictly). ``attn_type`` gives one
letter per stage: ``L`` focused linear attention (with ``la_sr_ratios``, default no reduction), ``S`` PVT softmax
attention with spatial reduction ``sr_ratios``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from ._registry import register_model
from .attention import PvtAttention, PvtFocusedLinearAttention
from .layers import DropPath, Mlp, PatchEmbed, init_weights, to_2tuple, trunc_normal_


class Block(nn.Module):
    def __init__(
        self,
        dim,
        num_patches,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=False,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        norm_layer=nn.LayerNorm,
        sr_ratio=1,
        focusing_factor=3,
        kernel_size=5,
        attn_type="L",
        fused_attn=True,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        if attn_type == "L":
            self.attn = PvtFocusedLinearAttention(
                dim,
                num_patches,
                num_heads,
                qkv_bias=qkv_bias,
                proj_drop=drop,
                sr_ratio=sr_ratio,
                focusing_factor=focusing_factor,
                kernel_size=kernel_size,
            )
        elif attn_type == "S":
            self.attn = PvtAttention(
                dim,
                num_heads,
                qkv_bias=qkv_bias,
                attn_drop=attn_drop,
                proj_drop=drop,
                sr_ratio=sr_ratio,
                fused_attn=fused_attn,
            )
        else:
            raise ValueError(f"attn_type must be 'L' or 'S', got {attn_type!r}")
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PyramidVisionTransformer(nn.Module):
    """PVT (v1 layout as used by FLatten).

    Args:
        img_size: input size.
        patch_size: patch size of the first stem (later stems use 2).
        in_chans: input channels.
        num_classes: classes of the head.
        embed_dims: width per stage.
        num_heads: heads per stage.
        mlp_ratios: MLP ratio per stage.
        depths: blocks per stage.
        sr_ratios: spatial reduction of softmax (``S``) stages.
        la_sr_ratios: spatial reduction of linear (``L``) stages, one digit per stage.
        attn_type: ``L``/``S`` per stage.
    """

    def __init__(
        self,
        img_size=224,
        patch_size=4,
        in_chans=3,
        num_classes=1000,
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        depths=(2, 2, 2, 2),
        sr_ratios=(8, 4, 2, 1),
        la_sr_ratios="1111",
        focusing_factor=3,
        kernel_size=5,
        attn_type="LLLL",
        fused_attn=True,
    ):
        super().__init__()
        n = len(depths)
        if len(attn_type) != n or set(attn_type) - {"L", "S"}:
            raise ValueError(f"attn_type needs one of 'L'/'S' per stage ({n}), got {attn_type!r}")
        self.num_classes = num_classes
        self.input_size = (in_chans, *to_2tuple(img_size))
        self.depths = tuple(depths)
        self.num_stages = n
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        cur = 0
        for i in range(n):
            size = img_size if i == 0 else img_size // (2 ** (i + 1))
            patch_embed = PatchEmbed(
                size,
                patch_size if i == 0 else 2,
                in_chans if i == 0 else embed_dims[i - 1],
                embed_dims[i],
                nn.LayerNorm,
            )
            num_patches = patch_embed.num_patches
            sr = sr_ratios[i] if attn_type[i] == "S" else int(str(la_sr_ratios)[i])
            block = nn.ModuleList(
                Block(
                    embed_dims[i],
                    num_patches,
                    num_heads[i],
                    mlp_ratios[i],
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    dpr[cur + j],
                    norm_layer,
                    sr,
                    focusing_factor,
                    kernel_size,
                    attn_type[i],
                    fused_attn,
                )
                for j in range(depths[i])
            )
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, num_patches, embed_dims[i])))
            setattr(self, f"pos_drop{i + 1}", nn.Dropout(drop_rate))
            setattr(self, f"block{i + 1}", block)
        self.norm = norm_layer(embed_dims[-1])  # unused by the official forward; kept for strict loading
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        for i in range(n):
            trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        for i in range(self.num_stages):
            patch_embed = getattr(self, f"patch_embed{i + 1}")
            x = patch_embed(x)
            H, W = patch_embed.grid_size
            x = getattr(self, f"pos_drop{i + 1}")(x + getattr(self, f"pos_embed{i + 1}"))
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, H, W)
            if i != self.num_stages - 1:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2)
        return x.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_PVT = dict(patch_size=4, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4))
_IMNET = dict(input_size=(3, 224, 224), num_classes=1000)


def _pvt(default_depths, default_attn_type, **kwargs):
    return PyramidVisionTransformer(**{**_PVT, "depths": default_depths, "attn_type": default_attn_type, **kwargs})


@register_model(**_IMNET)
def flatten_pvt_tiny(**kwargs):
    """FLatten-PVT-T (12.2M params, 2.0G MACs at 224 px)."""
    return _pvt((2, 2, 2, 2), "LLLL", **kwargs)


@register_model(**_IMNET)
def flatten_pvt_small(**kwargs):
    """FLatten-PVT-S (21.7M params, 4.0G MACs at 224 px)."""
    return _pvt((3, 4, 6, 3), "LLLL", **kwargs)


@register_model(**_IMNET)
def flatten_pvt_medium(**kwargs):
    """FLatten-PVT-M (36.0M params, 7.0G MACs at 224 px)."""
    return _pvt((3, 4, 18, 3), "LLLL", **kwargs)


@register_model(**_IMNET)
def pvt_tiny(**kwargs):
    """PVT-T in the FLatten code base's layout (mean pooling, no class token)."""
    return _pvt((2, 2, 2, 2), "SSSS", **kwargs)


@register_model(**_IMNET)
def pvt_small(**kwargs):
    """PVT-S in the FLatten code base's layout (mean pooling, no class token)."""
    return _pvt((3, 4, 6, 3), "SSSS", **kwargs)


@register_model(**_IMNET)
def pvt_medium(**kwargs):
    """PVT-M in the FLatten code base's layout (mean pooling, no class token)."""
    return _pvt((3, 4, 18, 3), "SSSS", **kwargs)
