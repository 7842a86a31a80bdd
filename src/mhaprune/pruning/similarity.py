"""Channel-similarity weights inside each head (§2.2).

For channel ``c`` of a head, ``r_c`` is the mean ``|cos|`` between its activation vector (over the calibration batch
and tokens) and those of the other channels of the same head; ``α_c = 1 - r_c``, normalised to mean 1 within the
head. A channel that others nearly duplicate is worth less. Everything follows from a ``d × d`` Gram matrix per
head.
"""

from __future__ import annotations

import torch


def redundancy_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """``(h, d, d)`` Gram matrices -> ``(h, d)`` mean |cos| to the other channels of the head."""
    h, d, _ = gram.shape
    if d == 1:
        return torch.zeros(h, 1, dtype=gram.dtype, device=gram.device)
    diag = gram.diagonal(dim1=1, dim2=2).clamp_min(1e-30)
    cos = gram / torch.sqrt(diag[:, :, None] * diag[:, None, :])
    dead = diag <= 1e-30  # a channel that never activates duplicates nothing and is duplicated by nothing
    cos = cos.masked_fill(dead[:, :, None] | dead[:, None, :], 0.0)
    return (cos.abs().sum(dim=2) - cos.abs().diagonal(dim1=1, dim2=2)) / (d - 1)


def alpha_from_redundancy(r: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """``α = 1 - r`` normalised to mean 1 within each head."""
    a = (1 - r).clamp_min(floor)
    return a / a.mean(dim=1, keepdim=True)


def alpha_from_grams(grams: list[torch.Tensor]) -> torch.Tensor:
    """α of a group from one or more roles' Gram matrices (Q and K share one score: the sum of both α's,
    renormalised)."""
    total = sum(alpha_from_redundancy(redundancy_from_gram(g)) for g in grams)
    return total / total.mean(dim=1, keepdim=True)


def alpha_from_weights(rows: torch.Tensor) -> torch.Tensor:
    """α from the weights that belong to each channel ``(h, d, F)`` (the 'weight' similarity option)."""
    w = rows.detach().double()
    return alpha_from_grams([w @ w.transpose(1, 2)])
