"""Adapters of our attention modules (:mod:`mhaprune.models.attention`): fused ``qkv`` (ViT / Swin / FLatten-Swin)
or ``q`` + ``kv`` (PVT), softmax or FLatten's focused linear attention. The closed-form core MACs live here too:

- softmax (global, windowed, PVT): ``h · N · M · (d_qk + d_v)`` per sequence (``M`` keys; per window for Swin);
- focused linear: ``h · (N · d_qk + n · d_qk · d_v + N · d_qk · d_v)`` (normaliser, KᵀV, Q(KᵀV)), plus the
  depthwise conv, counted as a conv.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.attention import (
    Attention,
    FocusedLinearAttention,
    PvtAttention,
    PvtFocusedLinearAttention,
    WindowAttention,
)
from ._base import Adapter, GateSlot, flat_index, register_adapter, slice_linear


def softmax_core_macs(batch, queries, keys, heads, qk_head_dim, v_head_dim):
    """QKᵀ and AV of softmax attention; ``batch`` counts sequences (images × windows for Swin)."""
    return batch * heads * queries * keys * (qk_head_dim + v_head_dim)


def linear_core_macs(batch, queries, keys, heads, qk_head_dim, v_head_dim):
    """Normaliser, KᵀV and Q(KᵀV) of focused linear attention."""
    return (
        batch * heads * (queries * qk_head_dim + keys * qk_head_dim * v_head_dim + queries * qk_head_dim * v_head_dim)
    )


@register_adapter(Attention, WindowAttention)
class AttentionAdapter(Adapter):
    """Softmax attention with a fused ``qkv`` projection (our ViT / Swin modules and the timm / Hugging Face
    equivalents of :mod:`mhaprune.interop`, which subclass them). Subclasses set ``linear`` (FLatten's focused linear
    attention) and ``reduced`` (PVT's spatial reduction of keys and values)."""

    kind = "attention"
    linear = False
    reduced = False

    def groups(self, m):
        return {"qk": (m.num_heads, m.qk_head_dim), "v": (m.num_heads, m.v_head_dim)}

    def attention_type(self, m):
        return "linear" if self.linear else "softmax"

    def no_weight_decay(self, m):
        names = {"relative_position_bias_table"} if hasattr(m, "relative_position_bias_table") else set()
        return names | ({"scale", "positional_encoding"} if self.linear else set())

    # -------------------------------------------------------------- cost
    def sequences(self, m, args: tuple) -> tuple[int, int, int]:
        """``(sequences, queries, keys)`` of one forward call."""
        B, N = args[0].shape[0], args[0].shape[1]
        if self.reduced and m.sr_ratio > 1:
            H, W, sr = args[1], args[2], m.sr_ratio
            return B, N, (H // sr) * (W // sr)
        return B, N, N

    def geometry(self, m, args):
        B, N, M = self.sequences(m, args)
        return {"batch": B, "queries": N, "keys": M}

    def _core(self, m, B, N, M, qk_dim=None, v_dim=None):
        h = m.num_heads
        dqk = m.qk_head_dim if qk_dim is None else qk_dim / h
        dv = m.v_head_dim if v_dim is None else v_dim / h
        return (linear_core_macs if self.linear else softmax_core_macs)(B, N, M, h, dqk, dv)

    def core_macs(self, m, args):
        return self._core(m, *self.sequences(m, args))

    def macs(self, m, geom, widths):
        B, N, M = geom["batch"], geom["queries"], geom["keys"]
        C, w_qk, w_v = m.dim, widths["qk"], widths["v"]
        if self.reduced:
            proj_in = B * N * C * w_qk + B * M * C * (w_qk + w_v)
        else:
            proj_in = B * N * C * (2 * w_qk + w_v)
        total = proj_in + B * N * w_v * m.proj.out_features + self._core(m, B, N, M, qk_dim=w_qk, v_dim=w_v)
        if self.linear:
            total = total + B * N * w_v * m.kernel_size * m.kernel_size
        return total

    # -------------------------------------------------------------- gates and calibration
    def gate_slots(self, m):
        return (
            GateSlot("q_gate", "qk", "q", owner=True, reweight=True),
            GateSlot("k_gate", "qk", "k", owner=False, reweight=self.linear),
            GateSlot("v_gate", "v", "v", owner=True, reweight=True),
        )

    def reweight_modes(self, m):
        return {"qk": "channel_temp" if self.linear else "head", "v": "channel"}

    def init_strategy(self, m, group):
        return "attention_difference" if group == "qk" and self.linear else "output_difference"

    def kernel_options(self, m):
        return {"focusing_factor": m.focusing_factor} if self.linear else {}

    def output_linear(self, m, group):
        # V channel c of head i reaches only column i·d + c of proj's input (A·V, plus the depthwise conv of FLatten)
        return m.proj if group == "v" else None

    def input_linear(self, m, group):
        return m.qkv if not self.reduced else None  # PVT: Q and K/V come from two projections

    def _rows(self, m):
        """(W_q, b_q, W_k, b_k, W_v, b_v) views of the input projections."""
        a = m.qk_dim
        if not self.reduced:
            w, b = m.qkv.weight, m.qkv.bias
            parts = (slice(0, a), slice(a, 2 * a), slice(2 * a, None))
            return [(w[s], b[s] if b is not None else None) for s in parts]
        wkv, bkv = m.kv.weight, m.kv.bias
        return [
            (m.q.weight, m.q.bias),
            (wkv[:a], bkv[:a] if bkv is not None else None),
            (wkv[a:], bkv[a:] if bkv is not None else None),
        ]

    def channel_weights(self, m, group):
        (wq, _), (wk, _), (wv, _) = self._rows(m)
        h = m.num_heads
        if group == "qk":
            return torch.cat([wq, wk], dim=1).reshape(h, m.qk_head_dim, -1)
        return torch.cat([wv, m.proj.weight.t()], dim=1).reshape(h, m.v_head_dim, -1)

    # -------------------------------------------------------------- fold and slice
    @torch.no_grad()
    def fold(self, m, multipliers):
        if "v" in multipliers:
            g = multipliers["v"].reshape(-1)
            m.proj.weight.mul_(g.to(m.proj.weight.dtype)[None, :])
        if "qk" in multipliers:
            t = multipliers["qk"]
            if self.linear:
                # q and k are both multiplied by t after the division by softplus(scale): fold into scale
                new = F.softplus(m.scale.double()) / t.reshape(1, 1, -1).double()
                m.scale.copy_(torch.log(torch.expm1(new)).to(m.scale.dtype))
            else:
                (wq, bq), _, _ = self._rows(m)
                per_row = t.expand(-1, m.qk_head_dim).reshape(-1).to(wq.dtype)
                wq.mul_(per_row[:, None])
                if bq is not None:
                    bq.mul_(per_row)

    @torch.no_grad()
    def slice(self, m, keep):
        h = m.num_heads
        qk = keep.get("qk", torch.arange(m.qk_head_dim).expand(h, -1))
        v = keep.get("v", torch.arange(m.v_head_dim).expand(h, -1))
        iq, iv = flat_index(qk, m.qk_head_dim), flat_index(v, m.v_head_dim)
        a = m.qk_dim
        if not self.reduced:
            m.qkv = slice_linear(m.qkv, rows=torch.cat([iq, a + iq, 2 * a + iv]))
        else:
            m.q = slice_linear(m.q, rows=iq)
            m.kv = slice_linear(m.kv, rows=torch.cat([iq, a + iv]))
        m.proj = slice_linear(m.proj, cols=iv)
        if self.linear:
            self._slice_focused(m, iq, iv, v)
        m.qk_head_dim, m.v_head_dim = qk.shape[1], v.shape[1]

    @staticmethod
    def _slice_focused(m, iq, iv, v):
        m.scale = nn.Parameter(m.scale.detach()[..., iq].clone())
        m.positional_encoding = nn.Parameter(m.positional_encoding.detach()[..., iq].clone())
        # the official layout shares one kernel per within-head channel across heads; it stays shared while every
        # head keeps the same channels, and is un-shared into one kernel per kept channel otherwise
        shared = m.dwc_shared and bool((v == v[0]).all())
        src = v[0] if shared else (v.reshape(-1) if m.dwc_shared else iv)
        old = m.dwc
        ch = len(src)
        new = nn.Conv2d(
            ch,
            ch,
            old.kernel_size,
            groups=ch,
            padding=old.padding,
            bias=old.bias is not None,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        new.weight.copy_(old.weight[src])
        if old.bias is not None:
            new.bias.copy_(old.bias[src])
        m.dwc = new
        m.dwc_shared = shared


@register_adapter(FocusedLinearAttention)
class FocusedLinearAttentionAdapter(AttentionAdapter):
    """FLatten's focused linear attention (Swin / DeiT layout: fused ``qkv``)."""

    linear = True


@register_adapter(PvtAttention)
class PvtAttentionAdapter(AttentionAdapter):
    """PVT softmax attention: ``q`` + ``kv`` projections, keys and values spatially reduced when ``sr_ratio > 1``."""

    reduced = True


@register_adapter(PvtFocusedLinearAttention)
class PvtFocusedLinearAttentionAdapter(AttentionAdapter):
    """FLatten-PVT: focused linear attention with PVT's ``q`` + ``kv`` layout and spatial reduction."""

    linear = True
    reduced = True
