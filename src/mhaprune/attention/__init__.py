"""Attention kernels: pure functions on per-head tensors, each with an explicit scale.

The projection modules that call them live in :mod:`mhaprune.models.attention`.
"""

from .focused_linear import focused_kernel, linear_attention
from .softmax import softmax_attention

__all__ = ["focused_kernel", "linear_attention", "softmax_attention"]
