"""Softmax attention kernel with an explicit scale and two equivalent paths."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    fused: bool = False,
) -> torch.Tensor:
    """Compute ``softmax(q kᵀ · scale + bias) v`` per head.

    Args:
        q: queries ``(B, h, N, d_qk)``.
        k: keys ``(B, h, M, d_qk)``.
        v: values ``(B, h, M, d_v)``; ``d_v`` may differ from ``d_qk``.
        scale: the logit scale. Always explicit: after pruning ``d_qk`` no longer determines it.
        bias: additive logit bias broadcastable to ``(B, h, N, M)`` (relative position bias, shift mask).
        dropout_p: attention dropout probability (apply only in training).
        fused: use :func:`torch.nn.functional.scaled_dot_product_attention`. The explicit path is the
            reference and the one that FLOP counters can see.

    Returns:
        ``(B, h, N, d_v)``.
    """
    if fused:
        if bias is not None:
            bias = bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v
