"""Focused linear attention (FLatten, Han et al., ICCV 2023).

``φ(x) = ‖x‖ / ‖x^p‖ · x^p`` applied to ``ReLU(x)``; the attention is
``φ(Q)(φ(K)ᵀ V) / (φ(Q) Σ_j φ(K_j)ᵀ)``, evaluated in the official numerically stable form that averages
over tokens and scales both factors by ``1/√n``.
"""

from __future__ import annotations

import torch


def focused_kernel(x: torch.Tensor, focusing_factor: float) -> torch.Tensor:
    """Apply the focusing function to non-negative features ``x`` (``(..., C)``).

    The norms span the last dimension, i.e. *all* channels of the layer (as in the official code), so
    channels removed by pruning must already be zero here for a masked model to equal a sliced one.
    """
    x_norm = x.norm(dim=-1, keepdim=True)
    x = x**focusing_factor
    return (x / x.norm(dim=-1, keepdim=True)) * x_norm


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Normalised linear attention on kernelised features.

    Args:
        q: ``φ(Q)`` as ``(B, h, N, d_qk)``.
        k: ``φ(K)`` as ``(B, h, n, d_qk)``.
        v: ``(B, h, n, d_v)``.

    Returns:
        ``(B, h, N, d_v)``. Cost: ``N·d_qk`` (normaliser) + ``n·d_qk·d_v`` (KᵀV) + ``N·d_qk·d_v`` (Q(KᵀV))
        multiply-adds per head.
    """
    n = k.shape[-2]
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k.transpose(-2, -1) * (n**-0.5)) @ (v * (n**-0.5))
    return q @ kv * z
