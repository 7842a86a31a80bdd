"""Our attention modules with the call signatures of timm's and Hugging Face's, and exact converters.

A converted module computes what the original computed (tested to float64 precision) and is called by the host
model's own ``forward`` exactly as the original was, so the rest of the model is untouched. Being our modules, they
store ``num_heads``/``qk_head_dim``/``v_head_dim`` and an explicit ``scale``, carry the gate slots, and are pruned
by the core :class:`~mhaprune.adapters.AttentionAdapter` (Q/K and V widths may then differ).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..models.attention import Attention, WindowAttention


class ExternalModelError(ValueError):
    """A timm / Hugging Face model (or one of its modules) that mhaprune cannot adapt, with the reason."""


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean "may attend" mask (True = keep) or an additive float mask -> an additive float mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask.to(dtype)


class TimmAttention(Attention):
    """timm ``vision_transformer.Attention``: ``forward(x, attn_mask=None, is_causal=False) -> x``."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if is_causal:
            raise NotImplementedError("causal attention is not supported by mhaprune's converted timm Attention")
        return self._attend(*self._split_qkv(self.qkv(x)), bias=additive_mask(attn_mask, x.dtype))


class HFAttention(Attention):
    """Hugging Face ViT / DeiT attention (``q_proj``/``k_proj``/``v_proj``/``o_proj``): returns ``(out, None)``."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        q, k, v = self._split_qkv(self.qkv(hidden_states))
        return self._attend(q, k, v, bias=additive_mask(attention_mask, hidden_states.dtype)), None


class HFWindowAttention(WindowAttention):
    """Hugging Face Swin window attention: ``forward(windows, shift_mask=None) -> (out, None)``."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        return WindowAttention.forward(self, hidden_states, attention_mask), None


class HFBertAttention(Attention):
    """Hugging Face ``BertAttention`` (self-attention + output dense, dropout and post-LayerNorm residual):
    ``forward(hidden_states, attention_mask=None, ...) -> (out, None)``. ``proj`` is the output dense."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        q, k, v = self._split_qkv(self.qkv(hidden_states))
        out = self._attend(q, k, v, bias=additive_mask(attention_mask, hidden_states.dtype))
        return self.LayerNorm(out + hidden_states), None


def fuse_linears(*layers: nn.Linear) -> nn.Linear:
    """One Linear computing the concatenated outputs of ``layers`` (same input)."""
    w = torch.cat([lin.weight.detach() for lin in layers], 0)
    has_bias = any(lin.bias is not None for lin in layers)
    out = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if has_bias:
            out.bias.copy_(
                torch.cat(
                    [lin.bias.detach() if lin.bias is not None else w.new_zeros(lin.out_features) for lin in layers]
                )
            )
    return out


def _place(new: nn.Module, like: nn.Parameter, old: nn.Module) -> nn.Module:
    """Same device, dtype and train/eval mode as the module it replaces."""
    return new.to(device=like.device, dtype=like.dtype).train(old.training)


def _non_persistent_index(m: WindowAttention) -> None:
    """Keep the relative position index out of the state dict, as timm and Hugging Face do."""
    idx = m.relative_position_index
    del m._buffers["relative_position_index"]
    m.register_buffer("relative_position_index", idx, persistent=False)


def from_timm_attention(old: nn.Module) -> TimmAttention:
    for name in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(old, name, nn.Identity()), nn.Identity):
            raise ExternalModelError(
                f"timm Attention with {name} (qk_norm / scale_norm) is not supported: the norm spans the head "
                f"channels, so pruning them changes it"
            )
    if getattr(old, "gate", None) is not None:
        raise ExternalModelError("timm Attention with an output gate (gated=True) is not supported")
    new = TimmAttention(
        old.qkv.in_features,
        old.num_heads,
        qk_head_dim=old.head_dim,
        v_head_dim=old.head_dim,
        scale=float(old.scale),
        attn_drop=old.attn_drop.p,
        fused_attn=bool(old.fused_attn),
    )
    new = _place(new, old.qkv.weight, old)
    new.qkv, new.proj, new.proj_drop = old.qkv, old.proj, old.proj_drop
    return new


def from_timm_window_attention(old: nn.Module) -> WindowAttention:
    head_dim = old.qkv.out_features // (3 * old.num_heads)
    new = WindowAttention(
        old.dim,
        old.window_size,
        old.num_heads,
        qk_head_dim=head_dim,
        v_head_dim=head_dim,
        scale=float(old.scale),
        attn_drop=old.attn_drop.p,
        fused_attn=bool(old.fused_attn),
    )
    new = _place(new, old.qkv.weight, old)
    _non_persistent_index(new)
    new.qkv, new.proj, new.proj_drop = old.qkv, old.proj, old.proj_drop
    new.relative_position_bias_table = old.relative_position_bias_table
    return new


def _hf_common(old: nn.Module) -> dict:
    return dict(
        num_heads=old.num_attention_heads,
        qk_head_dim=old.head_dim,
        v_head_dim=old.head_dim,
        scale=float(old.scaling),
        attn_drop=float(old.attention_dropout),
    )


def from_hf_attention(old: nn.Module) -> HFAttention:
    new = _place(HFAttention(old.q_proj.in_features, **_hf_common(old)), old.q_proj.weight, old)
    new.qkv = fuse_linears(old.q_proj, old.k_proj, old.v_proj)
    new.proj = old.o_proj
    return new


def from_hf_swin_attention(old: nn.Module) -> HFWindowAttention:
    rpb = old.relative_position_bias
    new = _place(HFWindowAttention(old.q_proj.in_features, rpb.window_size, **_hf_common(old)), old.q_proj.weight, old)
    _non_persistent_index(new)
    new.qkv = fuse_linears(old.q_proj, old.k_proj, old.v_proj)
    new.proj = old.o_proj
    new.relative_position_bias_table = rpb.relative_position_bias_table
    return new


def from_hf_bert_attention(old: nn.Module) -> HFBertAttention:
    sa, out = old.self, old.output
    if getattr(old, "is_cross_attention", False) or getattr(sa, "is_causal", False) or getattr(sa, "is_decoder", False):
        raise ExternalModelError(
            "only encoder self-attention (BertModel-style encoders) is supported, not decoder or cross-attention"
        )
    new = HFBertAttention(
        sa.query.in_features,
        sa.num_attention_heads,
        qk_head_dim=sa.attention_head_size,
        v_head_dim=sa.attention_head_size,
        scale=float(getattr(sa, "scaling", sa.attention_head_size**-0.5)),
        attn_drop=sa.dropout.p,
    )
    new = _place(new, sa.query.weight, old)
    new.qkv = fuse_linears(sa.query, sa.key, sa.value)
    new.proj, new.proj_drop, new.LayerNorm = out.dense, out.dropout, out.LayerNorm
    return new
