"""Score adjustment (§2.3): turn channel scores into keep-masks with the same width in every head."""

from __future__ import annotations

import torch


def per_head_width(keep_total: int, heads: int, width: int, round_to: int = 1, min_per_head: int = 1) -> int:
    """``d' = max(min, round(k / h))``, optionally rounded to a multiple of ``round_to``, at most ``width``."""
    d = max(min_per_head, int(round(keep_total / heads)))
    if round_to > 1:
        d = max(round_to, int(round(d / round_to)) * round_to)
    return max(1, min(width, d))


def topk_mask(scores: torch.Tensor, per_head: int) -> torch.Tensor:
    """Boolean mask ``(h, d)`` keeping the ``per_head`` highest scores of every head (ties: lower index wins)."""
    h, d = scores.shape
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    mask = torch.zeros(h, d, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, order[:, :per_head], True)
    return mask


def equal_heads_mask(scores: torch.Tensor, keep_total: int, round_to: int = 1, min_per_head: int = 1) -> torch.Tensor:
    """The layer keeps ``keep_total`` channels in total: every head keeps its top ``d'`` (§2.3)."""
    h, d = scores.shape
    return topk_mask(scores, per_head_width(keep_total, h, d, round_to, min_per_head))


def padded_width(mask: torch.Tensor) -> int:
    """Width every head needs when channels were kept independently (the widest head; at least 1)."""
    return max(1, int(mask.sum(dim=1).max()))
