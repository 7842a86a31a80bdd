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


def _first_tensor(out) -> torch.Tensor:
    """The module's output tensor: itself, or the first tensor of a tuple / ``ModelOutput`` (Hugging Face layers), in
    its own dtype (no copy)."""
    if torch.is_tensor(out):
        return out
    values = out.values() if isinstance(out, dict) else out
    for v in values:
        if torch.is_tensor(v):
            return v
    raise TypeError(f"cannot find an output tensor in {type(out).__name__} for the output-difference init")


def _main_output(out) -> torch.Tensor:
    """:func:`_first_tensor` in float64 (what the init's output changes are measured in)."""
    return _first_tensor(out).double()


def _output_change(out: torch.Tensor, base: torch.Tensor, metric: str) -> float:
    if metric == "fro":
        return float(torch.linalg.norm((out - base).reshape(-1)))
    return float(F.kl_div(F.log_softmax(out, -1), F.log_softmax(base, -1), log_target=True, reduction="batchmean"))


def _changes(stacked: torch.Tensor, base: torch.Tensor, metric: str) -> torch.Tensor:
    """:func:`_output_change` of every ``stacked[k]`` against ``base`` (float64 results). The Frobenius norm of the
    difference is taken in the outputs' dtype (the difference of two close floats is exact; torch's cascaded
    summation keeps the float32 norm within ~1e-6 relative), without a float64 copy of the stack."""
    if metric == "fro":
        diff = (stacked.contiguous() - base.to(stacked.dtype)).flatten(1)
        return torch.linalg.vector_norm(diff, dim=1).double()
    return torch.tensor([_output_change(s.double(), base, metric) for s in stacked], dtype=torch.float64)


def _masked_output(module, args, kwargs, state, channel: tuple[int, int] | None) -> torch.Tensor:
    state.frozen_mask.fill_(1.0)
    if channel is not None:
        state.frozen_mask[channel] = 0.0
    return _main_output(module(*args, **kwargs))


def _linear_output_difference(
    module, args, kwargs, state, linear: torch.nn.Linear
) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
    """The module's output with every channel kept, and the Frobenius ``D`` of every channel from that forward and
    one with all channels removed, through the Linear that consumes the group: if channel ``c`` reaches only input
    column ``c`` of ``linear``, affinely, and nothing nonlinear follows, masking ``c`` changes the output by
    ``Δz_c ⊗ W[:, c]`` (``Δz_c`` the change of that column), so ``D_c = ‖Δz_c‖ · ‖W[:, c]‖`` exactly. ``D`` is
    ``None`` where the layer does not look like that (not called exactly once per forward, other width). Also
    returns the Linear's input and output with every channel kept and removed (for :func:`_tail_output_difference`),
    or ``None``."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = linear.register_forward_hook(lambda mod, a, out: seen.append((a[0].detach(), out.detach())))
    try:
        base = _masked_output(module, args, kwargs, state, None)
        state.frozen_mask.fill_(0.0)
        module(*args, **kwargs)
    finally:
        hook.remove()
    width = state.heads * state.width
    if len(seen) != 2 or seen[0][0].shape[-1] != width or linear.weight.shape[1] != width:
        return base, None, None
    dz = (seen[0][0].double() - seen[1][0].double()).reshape(-1, width)
    D = (dz.norm(dim=0) * linear.weight.detach().double().norm(dim=0)).reshape(state.heads, state.width)
    return base, D, (seen[0], seen[1])


def _tail_module(module, args, kwargs, linear):
    """The smallest submodule of ``module`` that contains ``linear`` and returns the module's own output tensor
    (e.g. ``BertOutput`` inside ``BertLayer``), with the arguments it was called with; ``module`` itself if none."""
    ancestors = [m for m in module.modules() if m is not module and any(c is linear for c in m.modules())]
    calls: dict[int, tuple] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, kw, out: calls.__setitem__(id(mod), (a, kw, out)), with_kwargs=True)
        for m in ancestors
    ]
    try:
        out = module(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    main = _first_tensor(out)
    best = (module, args, kwargs)
    for m in ancestors:  # outermost first: keep the innermost that still returns the module's output
        got = calls.get(id(m))
        if got is not None and torch.is_tensor(got[2]) and got[2] is main:
            best = (m, got[0], got[1])
    return best


def _tail_output_difference(
    module, args, kwargs, state, linear: torch.nn.Linear, base: torch.Tensor, metric: str, io, budget: float = 6e7
) -> torch.Tensor | None:
    """``D`` of every channel when the module's output is a nonlinear but batch-broadcasting function of the
    consuming Linear's output ``z`` (e.g. a residual and a LayerNorm after it, as in BERT): masking channel ``c``
    changes ``z`` by exactly ``(x_0[..., c] − x[..., c]) ⊗ W[:, c]`` (``x`` / ``x_0`` the Linear's input with every
    channel kept / removed), so the masked outputs of many channels come from one call in which the Linear returns
    those ``z`` stacked on a new leading dimension. The call is of the smallest submodule that holds the Linear and
    returns the module's output (:func:`_tail_module`), and the Linear's own product is skipped, so a chunk of
    channels costs only the work after the Linear. ``None`` where the output does not come back with that leading
    dimension (something after the Linear does not broadcast)."""
    (x, z), (x0, _) = io
    width = state.heads * state.width
    w = linear.weight.detach()
    chunk = max(1, min(width, int(budget // max(1, z.numel()))))
    D = torch.zeros(width, dtype=torch.float64)
    state.frozen_mask.fill_(1.0)
    tail, t_args, t_kwargs = _tail_module(module, args, kwargs, linear)
    for start in range(0, width, chunk):
        idx = torch.arange(start, min(width, start + chunk), device=x.device)
        delta = (x0[..., idx] - x[..., idx]).movedim(-1, 0).contiguous().unsqueeze(-1)  # (K, ..., 1)
        stacked = torch.addcmul(z.unsqueeze(0), delta, w[:, idx].t().reshape(len(idx), *([1] * (z.ndim - 1)), -1))
        stacked = stacked.contiguous()
        hooks = [
            linear.register_forward_pre_hook(lambda mod, a: (a[0][..., :1, :], *a[1:])),  # its product is replaced
            linear.register_forward_hook(lambda mod, a, out, s=stacked: s),
        ]
        try:
            out = _first_tensor(tail(*t_args, **t_kwargs))
        finally:
            for h in hooks:
                h.remove()
        if out.shape != (len(idx), *base.shape):
            return None
        D[idx.cpu()] = _changes(out, base, metric).cpu()
    return D.reshape(state.heads, state.width)


def _norm_after(module, args, kwargs, state, linear: torch.nn.Linear):
    """``(LayerNorm, its input u with every channel kept)`` when the module's output is ``LayerNorm(z + r)`` with
    ``z`` the output of ``linear`` and ``r`` independent of the group (checked on the forwards with every channel
    kept and removed: the norm's input changes exactly as ``z`` does); ``(None, None)`` when the module returns
    ``z`` itself; ``None`` otherwise."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm) and m.normalized_shape[-1:] == (
        linear.out_features,)]  # fmt: skip
    seen: list = []
    zs: list = []
    hooks = [n.register_forward_hook(lambda mod, a, out: seen.append((mod, a[0].detach(), out))) for n in norms]
    hooks.append(linear.register_forward_hook(lambda mod, a, out: zs.append(out.detach())))
    try:
        state.frozen_mask.fill_(1.0)
        out = _first_tensor(module(*args, **kwargs))
        half, zhalf = len(seen), len(zs)
        state.frozen_mask.fill_(0.0)
        module(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
        state.frozen_mask.fill_(1.0)
    if len(zs) != 2 or zhalf != 1:
        return None
    if out.shape == zs[0].shape and torch.equal(out.detach(), zs[0]) and not torch.equal(zs[0], zs[1]):
        return None, None  # the module returns the Linear's output
    last = [(m, u) for m, u, o in seen[:half] if o is out]
    if len(seen) != 2 * half or len(last) != 1:
        return None
    ln, u = last[0]
    u0 = next(a for m, a, _ in seen[half:] if m is ln)
    dz, du = (zs[1] - zs[0]).double(), (u0 - u).double()
    # float rounding of z + r is relative to u; the result is checked against direct masking anyway
    if du.shape != dz.shape or float((du - dz).norm()) > 1e-4 * float(dz.norm()) + 1e-5 * float(u.double().norm()):
        return None  # the norm's input does not change with the group as z does
    return ln, u


class _NormStats:
    """Per-token statistics of a LayerNorm's input ``u`` for the exact change of its output when ``u`` moves by
    ``Δ``: with ``ū`` the centred input, ``σ`` its deviation (with ``eps``) and ``Δ̄`` the centred change, the new
    variance is ``var + 2 ū·Δ̄ / n + ‖Δ̄‖² / n`` and ``‖γ ⊙ (ū (1/σ' − 1/σ) + Δ̄ / σ')‖²`` needs only ``Σ γ² ū²``,
    ``ū·Δ̄``, ``Σ γ² ū Δ̄``, ``‖Δ̄‖²`` and ``Σ γ² Δ̄²``."""

    def __init__(self, ln: torch.nn.LayerNorm | None, u: torch.Tensor | None, n: int):
        self.n, self.ln = n, ln
        self.g = (ln.weight.detach().double() ** 2 if ln is not None and ln.weight is not None
                  else torch.ones(n, dtype=torch.float64))  # fmt: skip
        if ln is not None:
            uc = u.double().reshape(-1, n)
            self.uc = uc - uc.mean(-1, keepdim=True)
            self.var = (self.uc**2).mean(-1)
            self.sig = (self.var + ln.eps).sqrt()
            self.guu = (self.uc**2 * self.g).sum(-1)

    def change2(self, ud, gud, dd, gdd):
        """Squared norm of each token's output change from ``ū·Δ̄``, ``Σ γ² ū Δ̄``, ``‖Δ̄‖²``, ``Σ γ² Δ̄²`` (shape
        ``(..., T)``); without a norm, ``‖Δ‖²``."""
        if self.ln is None:
            return dd
        sig_new = (self.var + 2 * ud / self.n + dd / self.n + self.ln.eps).clamp_min(1e-30).sqrt()
        k1, k2 = 1 / sig_new - 1 / self.sig, 1 / sig_new
        return (k1**2 * self.guu + 2 * k1 * k2 * gud + k2**2 * gdd).clamp_min(0)


def _layernorm_tail_difference(module, args, kwargs, state, linear: torch.nn.Linear, io) -> torch.Tensor | None:
    """``D`` of every channel, in closed form, when the module's output is ``LayerNorm(z + r)`` (``z`` the consuming
    Linear's output, ``r`` independent of the group), as after BERT's ``output.dense``: masking channel ``c`` moves
    the norm's input at token ``t`` by ``a_tc · w_c`` (``a_tc`` the change of the Linear's input column ``c``,
    ``w_c = W[:, c]``), so the sums :class:`_NormStats` needs come from two matmuls over the tokens and every
    channel's exact ``D_c² = Σ_t ‖Δ_t‖²`` follows without a forward per channel. ``None`` where the output is not
    such a LayerNorm."""
    (x, _), (x0, _) = io
    found = _norm_after(module, args, kwargs, state, linear)
    if found is None or found[0] is None:
        return None
    st = _NormStats(*found, linear.out_features)
    w = linear.weight.detach().double()
    wc = w - w.mean(0, keepdim=True)  # (n, C) centred columns
    a = (x0 - x).double().reshape(-1, w.shape[1])  # (T, C)
    ud, gud = a * (st.uc @ wc), a * ((st.uc * st.g) @ wc)
    dd, gdd = a**2 * (wc**2).sum(0), a**2 * (st.g[:, None] * wc**2).sum(0)
    D = st.change2(ud.T, gud.T, dd.T, gdd.T).sum(-1).sqrt()
    return D.reshape(state.heads, state.width)


def _softmax_qk_difference(module, args, kwargs, state, budget: float = 4e7) -> torch.Tensor | None:
    """``D`` of every Q/K channel of a softmax attention module, head by head: masking channel ``c`` of head ``h``
    removes the rank-one term ``scale · q_c k_cᵀ`` from that head's logits only, so the change of its attention
    output ``Δa = (softmax(logits − scale q_c k_cᵀ) − P) v`` is computed for many channels at once without running
    the other heads, the output projection or the norm: the module's output moves by ``W_o[:, h] Δa`` (through the
    V gate's multipliers), whose norm — directly, or through a ``LayerNorm(z + r)`` after the projection, exactly
    (:class:`_NormStats`) — needs only ``d_v``-sized products per token. ``None`` for other modules (those whose
    Q/K group is not gated at ``q_gate`` / ``k_gate`` around ``_attend``, or with another output path)."""
    needed = ("_attend", "_heads", "q_gate", "k_gate", "v_gate", "proj", "scale", "num_heads")
    if not all(hasattr(module, n) for n in needed) or getattr(module.q_gate, "group", None) is not state:
        return None
    cap: dict = {}
    orig = module._attend

    def spy(q, k, v, bias=None):
        cap.update(q=q.detach(), k=k.detach(), v=v.detach(), bias=bias)
        return orig(q, k, v, bias=bias)

    found = _norm_after(module, args, kwargs, state, module.proj)
    if found is None:
        return None
    module._attend = spy
    try:
        state.frozen_mask.fill_(1.0)
        module(*args, **kwargs)
    finally:
        del module._attend
    q = module._heads(module.q_gate(cap["q"])).double()  # (B, H, N, d): gated as the module gates them
    k = module._heads(module.k_gate(cap["k"])).double()
    v = module._heads(cap["v"]).double()
    B, H, N, d = q.shape
    logits = (q @ k.transpose(-1, -2)) * module.scale
    if cap["bias"] is not None:
        logits = logits + cap["bias"].double()
    P = logits.softmax(-1)
    dv = v.shape[-1]
    mult_v = module.v_gate(torch.ones(1, H * dv, device=v.device, dtype=cap["v"].dtype)).double().reshape(H, dv)
    W = module.proj.weight.detach().double()  # (n, H·dv)
    n = W.shape[0]
    st = _NormStats(*found, n)
    Wc = W - W.mean(0, keepdim=True) if found[0] is not None else W
    D = torch.zeros(H, d, dtype=torch.float64)
    chunk = max(1, min(d, int(budget // max(1, B * N * N))))
    for h in range(H):
        Wh = Wc[:, h * dv : (h + 1) * dv] * mult_v[h]  # (n, dv)
        G1, G2 = Wh.T @ Wh, Wh.T @ (st.g[:, None] * Wh)
        if found[0] is not None:
            pu = (st.uc @ Wh).reshape(B, N, dv)  # ū_t · (W_h Δa) = (W_hᵀ ū_t) · Δa
            pgu = ((st.uc * st.g) @ Wh).reshape(B, N, dv)
        for start in range(0, d, chunk):
            idx = torch.arange(start, min(d, start + chunk), device=q.device)
            term = torch.einsum("bnk,bmk->kbnm", q[:, h][..., idx], k[:, h][..., idx]) * module.scale
            da = ((logits[:, h] - term).softmax(-1) - P[:, h]) @ v[:, h]  # (K, B, N, dv)
            dd = torch.einsum("kbnd,de,kbne->kbn", da, G1, da)
            gdd = torch.einsum("kbnd,de,kbne->kbn", da, G2, da)
            if found[0] is not None:
                ud, gud = (da * pu).sum(-1), (da * pgu).sum(-1)
            else:
                ud = gud = None
            D[h, idx.cpu()] = st.change2(
                None if ud is None else ud.flatten(1), None if gud is None else gud.flatten(1), dd.flatten(1),
                gdd.flatten(1),
            ).sum(-1).sqrt().cpu()  # fmt: skip
    return D


def _tile(value, batch: int, k: int):
    """``value`` repeated ``k`` times along its first dimension if that is the batch (block layout)."""
    if torch.is_tensor(value) and value.ndim and value.shape[0] == batch:
        return value.repeat(k, *([1] * (value.ndim - 1)))
    return value


def _batched_masking(
    module, args, kwargs, state, base: torch.Tensor, metric: str, source=None, budget: float = 2e7
) -> torch.Tensor | None:
    """``D`` of every channel by direct masking, many channels per module call: the inputs are tiled ``K`` times
    along the batch and the group's gates give block ``k`` of the batch the mask without channel ``k`` (each sample
    is computed as alone, so the outputs are those of masking one channel at a time). ``source``, a Linear that
    feeds the gates and does not depend on the masks (the Q/K/V projection), is computed once and its output tiled
    instead of recomputed for every block. ``None`` where the module's batch does not come back tiled."""
    batch = args[0].shape[0] if args and torch.is_tensor(args[0]) and args[0].ndim else None
    if batch is None:
        return None
    width = state.heads * state.width
    cached: list[torch.Tensor] = []
    if source is not None:
        hook = source.register_forward_hook(lambda mod, a, out: cached.append(out.detach()))
        try:
            state.frozen_mask.fill_(1.0)
            module(*args, **kwargs)
        finally:
            hook.remove()
        if len(cached) != 1 or cached[0].shape[0] != batch:
            source, cached = None, []
    per_sample = max(t.numel() // batch for t in (base, *cached))
    chunk = max(1, min(width, int(budget // max(1, per_sample * batch))))
    D = torch.zeros(width, dtype=torch.float64)
    state.frozen_mask.fill_(1.0)
    hooks = []
    try:
        for start in range(0, width, chunk):
            idx = list(range(start, min(width, start + chunk)))
            k = len(idx)
            masks = torch.ones(k, width, device=state.frozen_mask.device, dtype=state.frozen_mask.dtype)
            masks[torch.arange(k), torch.tensor(idx)] = 0.0
            state.variant_masks = masks.reshape(k, state.heads, state.width)
            if source is not None:
                tiled = _tile(cached[0], batch, k)
                hooks = [
                    source.register_forward_pre_hook(lambda mod, a: (a[0][:1], *a[1:])),  # skip the real work
                    source.register_forward_hook(lambda mod, a, out, t=tiled: t),
                ]
            try:
                t_args = tuple(_tile(a, batch, k) for a in args)
                t_kwargs = {n: _tile(v, batch, k) for n, v in kwargs.items()}
                out = _first_tensor(module(*t_args, **t_kwargs))
            finally:
                for h in hooks:
                    h.remove()
                hooks = []
            if out.shape != (k * batch, *base.shape[1:]):
                return None
            D[idx] = _changes(out.unflatten(0, (k, batch)), base, metric).cpu()
    finally:
        state.variant_masks = None
    return D.reshape(state.heads, state.width)


def _agrees(module, args, kwargs, state, base, metric, D, tol) -> bool:
    """``D`` matches direct masking on its largest and a middle channel (relative to the largest ``D``)."""
    order = D.reshape(-1).argsort(descending=True)
    probes = [divmod(int(order[0]), state.width), divmod(int(order[len(order) // 2]), state.width)]
    scale = float(D.max()) or 1.0
    ok = all(
        abs(_output_change(_masked_output(module, args, kwargs, state, ch), base, metric) - float(D[ch])) <= tol * scale
        for ch in probes
    )
    state.frozen_mask.fill_(1.0)
    return ok


@torch.no_grad()
def output_difference(
    module: torch.nn.Module,
    args: tuple,
    state,
    metric: str = "fro",
    kwargs: dict | None = None,
    linear: torch.nn.Linear | None = None,
    check_tol: float = 1e-3,
    source: torch.nn.Linear | None = None,
    batched: bool = True,
) -> torch.Tensor:
    """``D`` ``(h, d)`` of a group by the change of the module's output (called as ``module(*args, **kwargs)``; for
    modules that return a tuple, its first tensor) when each channel is masked.

    With ``metric="fro"`` and ``linear`` (the adapter's :meth:`~mhaprune.adapters.Adapter.output_linear`), every
    ``D_c`` comes from two forwards (the first gives the base output) instead of one per channel (see
    :func:`_linear_output_difference`); the result is checked against direct masking on the largest and a middle
    channel (relative to the largest ``D``, ``check_tol``). Where it disagrees (a norm or residual after the Linear,
    as in BERT), the masked outputs are computed exactly in chunks of channels from one module call each, the Linear
    returning the masked ``z`` stacked (:func:`_tail_output_difference`), checked the same way. Otherwise (or
    without ``linear``) channels are masked directly but many per call (:func:`_batched_masking`, with ``source``
    the projection that feeds the gates, computed once); ``batched=False`` masks one channel per call, the
    reference every faster path is tested against.
    """
    kwargs = kwargs or {}
    was_frozen, old_mask = bool(state.frozen), state.frozen_mask.clone()
    state.frozen.fill_(True)
    try:
        io = None
        if linear is not None:
            base, D, io = _linear_output_difference(module, args, kwargs, state, linear)
            D = D if metric == "fro" else None
        else:
            base, D = _masked_output(module, args, kwargs, state, None), None
        if D is not None and _agrees(module, args, kwargs, state, base, metric, D, check_tol):
            return D
        if linear is None and metric == "fro" and batched:
            D = _softmax_qk_difference(module, args, kwargs, state)
            if D is not None and _agrees(module, args, kwargs, state, base, metric, D, check_tol):
                _logger.debug("%s: softmax Q/K channels head by head, closed-form output", type(module).__name__)
                return D
        if io is not None and metric == "fro" and batched:
            D = _layernorm_tail_difference(module, args, kwargs, state, linear, io)
            if D is not None and _agrees(module, args, kwargs, state, base, metric, D, check_tol):
                _logger.debug("%s: a LayerNorm after the group's Linear; closed-form tail", type(module).__name__)
                return D
        if io is not None:
            _logger.debug("%s: output not affine in the group's channels; batched tail", type(module).__name__)
            D = _tail_output_difference(module, args, kwargs, state, linear, base, metric, io)
            if D is not None and _agrees(module, args, kwargs, state, base, metric, D, check_tol):
                return D
        if batched:
            D = _batched_masking(module, args, kwargs, state, base, metric, source)
            if D is not None and _agrees(module, args, kwargs, state, base, metric, D, check_tol):
                return D
        _logger.debug("%s: masking the group's channels one by one", type(module).__name__)
        D = torch.zeros(state.heads, state.width, dtype=torch.float64)
        for i in range(state.heads):
            for c in range(state.width):
                D[i, c] = _output_change(_masked_output(module, args, kwargs, state, (i, c)), base, metric)
    finally:
        state.frozen.fill_(was_frozen)
        state.frozen_mask.copy_(old_mask)
    return D
