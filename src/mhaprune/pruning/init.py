"""Indicator initialisation from the attention difference (§2.5).

On a calibration batch, for every channel ``c`` of a layer's Q/K group, compare the layer's attention map ``A`` with
the map ``A^(-c)`` computed with channel ``c`` removed; ``D_c = ‖A - A^(-c)‖`` (Frobenius, or row-wise KL). For
focused linear attention ``A`` is the row-normalised ``φ(Q)φ(K)ᵀ`` on sampled query rows (never the full N×N for
large N), recomputing the focusing function (its norms span all channels) without ``c``. For other groups (options)
the difference is measured on the module output. ``m⁰ = init_logit + κ · z(D)``, ``z`` the within-layer z-score.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..attention import focused_kernel

_logger = logging.getLogger(__name__)


def zscore(x: torch.Tensor) -> torch.Tensor:
    std = x.std()
    if not torch.isfinite(std) or std < 1e-12:
        return torch.zeros_like(x)
    return (x - x.mean()) / std


def _map_difference(a: torch.Tensor, b: torch.Tensor, metric: str) -> float:
    if metric == "fro":
        return float(torch.linalg.norm((a - b).reshape(-1)))
    eps = 1e-12
    return float((a * (torch.log(a + eps) - torch.log(b + eps))).sum(-1).mean())


def _row_normalised(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    s = q @ k.transpose(-2, -1)
    return s / s.sum(-1, keepdim=True).clamp_min(1e-30)


@torch.no_grad()
def linear_attention_difference(
    q_pre: torch.Tensor,
    k_pre: torch.Tensor,
    heads: int,
    focusing_factor: float,
    metric: str = "fro",
    rows: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``D`` ``(h, d)`` for a focused-linear-attention layer.

    Args:
        q_pre / k_pre: Q and K features right before the focusing function, ``(B, N, C)`` / ``(B, n, C)`` (what the
            layer's Q/K gates see).
        heads: number of heads.
        focusing_factor: ``p``.
        metric: ``"fro"`` or ``"kl"``.
        rows: sampled query rows per image.
    """
    q_pre, k_pre = q_pre.double(), k_pre.double()
    B, N, C = q_pre.shape
    d = C // heads
    if rows and rows < N:
        idx = torch.randperm(N, generator=generator)[:rows]
        q_pre = q_pre[:, idx]

    def maps(q, k):
        fq = focused_kernel(q, focusing_factor).reshape(B, -1, heads, d).transpose(1, 2)
        fk = focused_kernel(k, focusing_factor).reshape(B, -1, heads, d).transpose(1, 2)
        return fq, fk

    fq, fk = maps(q_pre, k_pre)
    base = _row_normalised(fq, fk)  # B, h, R, n
    D = torch.zeros(heads, d, dtype=torch.float64)
    for c in range(C):
        qm, km = q_pre.clone(), k_pre.clone()
        qm[..., c] = 0
        km[..., c] = 0
        i = c // d
        fq2, fk2 = maps(qm, km)
        D[i, c % d] = _map_difference(base[:, i], _row_normalised(fq2[:, i], fk2[:, i]), metric)
    return D


def _main_output(out) -> torch.Tensor:
    """The module's output tensor: itself, or the first tensor of a tuple / ``ModelOutput`` (Hugging Face layers)."""
    if torch.is_tensor(out):
        return out.double()
    values = out.values() if isinstance(out, dict) else out
    for v in values:
        if torch.is_tensor(v):
            return v.double()
    raise TypeError(f"cannot find an output tensor in {type(out).__name__} for the output-difference init")


def _output_change(out: torch.Tensor, base: torch.Tensor, metric: str) -> float:
    if metric == "fro":
        return float(torch.linalg.norm((out - base).reshape(-1)))
    return float(F.kl_div(F.log_softmax(out, -1), F.log_softmax(base, -1), log_target=True, reduction="batchmean"))


def _masked_output(module, args, kwargs, state, channel: tuple[int, int] | None) -> torch.Tensor:
    state.frozen_mask.fill_(1.0)
    if channel is not None:
        state.frozen_mask[channel] = 0.0
    return _main_output(module(*args, **kwargs))


def _linear_output_difference(
    module, args, kwargs, state, linear: torch.nn.Linear
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The module's output with every channel kept, and the Frobenius ``D`` of every channel from that forward and
    one with all channels removed, through the Linear that consumes the group: if channel ``c`` reaches only input
    column ``c`` of ``linear``, affinely, and nothing nonlinear follows, masking ``c`` changes the output by
    ``Δz_c ⊗ W[:, c]`` (``Δz_c`` the change of that column), so ``D_c = ‖Δz_c‖ · ‖W[:, c]‖`` exactly. ``D`` is
    ``None`` where the layer does not look like that (not called exactly once per forward, other width)."""
    seen: list[torch.Tensor] = []
    hook = linear.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach().double()))
    try:
        base = _masked_output(module, args, kwargs, state, None)
        state.frozen_mask.fill_(0.0)
        module(*args, **kwargs)
    finally:
        hook.remove()
    if len(seen) != 2 or seen[0].shape[-1] != state.heads * state.width or linear.weight.shape[1] != seen[0].shape[-1]:
        return base, None
    dz = (seen[0] - seen[1]).reshape(-1, seen[0].shape[-1])
    return base, (dz.norm(dim=0) * linear.weight.detach().double().norm(dim=0)).reshape(state.heads, state.width)


@torch.no_grad()
def output_difference(
    module: torch.nn.Module,
    args: tuple,
    state,
    metric: str = "fro",
    kwargs: dict | None = None,
    linear: torch.nn.Linear | None = None,
    check_tol: float = 1e-3,
) -> torch.Tensor:
    """``D`` ``(h, d)`` of a group by the change of the module's output (called as ``module(*args, **kwargs)``; for
    modules that return a tuple, its first tensor) when each channel is masked.

    With ``metric="fro"`` and ``linear`` (the adapter's :meth:`~mhaprune.adapters.Adapter.output_linear`), every
    ``D_c`` comes from two forwards (the first gives the base output) instead of one per channel (see
    :func:`_linear_output_difference`); the result is checked against direct masking on the largest and a middle
    channel (relative to the largest ``D``, ``check_tol``) and, where it disagrees (a norm or residual after the
    Linear), measured channel by channel instead.
    """
    kwargs = kwargs or {}
    was_frozen, old_mask = bool(state.frozen), state.frozen_mask.clone()
    state.frozen.fill_(True)
    try:
        if metric == "fro" and linear is not None:
            base, D = _linear_output_difference(module, args, kwargs, state, linear)
        else:
            base, D = _masked_output(module, args, kwargs, state, None), None
        if D is not None:
            order = D.reshape(-1).argsort(descending=True)
            probes = [divmod(int(order[0]), state.width), divmod(int(order[len(order) // 2]), state.width)]
            scale = float(D.max()) or 1.0
            if all(
                abs(_output_change(_masked_output(module, args, kwargs, state, ch), base, metric) - float(D[ch]))
                <= check_tol * scale
                for ch in probes
            ):
                return D
            _logger.debug(
                "%s: output change is not linear in the group's channels; masking one by one", type(module).__name__
            )
        D = torch.zeros(state.heads, state.width, dtype=torch.float64)
        for i in range(state.heads):
            for c in range(state.width):
                D[i, c] = _output_change(_masked_output(module, args, kwargs, state, (i, c)), base, metric)
    finally:
        state.frozen.fill_(was_frozen)
        state.frozen_mask.copy_(old_mask)
    return D
