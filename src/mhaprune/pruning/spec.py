"""Adapters: one per module kind, registered by module class. An adapter declares the channel groups of a module
(Q/K, V, MLP hidden), where its gates go, the parameters coupled to each group, its cost as a function of the kept
widths, and how to rebuild it at its new size. Adapters for other libraries register the same way
(:func:`register_adapter`) without touching the core.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cost import attention_geometry, core_macs, is_linear_attention
from ..models.attention import (
    Attention,
    FocusedLinearAttention,
    PvtAttention,
    PvtFocusedLinearAttention,
    WindowAttention,
)
from ..models.layers import Mlp
from .gates import ChannelGate, GroupState

_ADAPTERS: dict[type, Adapter] = {}


def register_adapter(*classes: type):
    """Class decorator: register an adapter instance for the given module classes."""

    def wrap(adapter_cls):
        inst = adapter_cls()
        for c in classes:
            _ADAPTERS[c] = inst
        return adapter_cls

    return wrap


def get_adapter(module: nn.Module) -> Adapter | None:
    for cls in type(module).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    return None


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module, Adapter]]:
    return [(n, m, a) for n, m in model.named_modules() if (a := get_adapter(m)) is not None]


def slice_linear(layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear with the selected output rows and input columns."""
    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def flat_index(keep: torch.Tensor, width: int) -> torch.Tensor:
    """Within-head indices ``(h, d')`` -> global channel indices ``(h·d',)``."""
    h = keep.shape[0]
    return (keep + torch.arange(h, device=keep.device)[:, None] * width).reshape(-1)


class Adapter:
    """Base adapter. ``groups`` maps group names to ``(heads, width)``."""

    kind = "module"

    def groups(self, module: nn.Module) -> dict[str, tuple[int, int]]:
        raise NotImplementedError

    def geometry(self, module: nn.Module, args: tuple) -> dict:
        """What the cost formula needs from one forward call (recorded at batch 1)."""
        raise NotImplementedError

    def macs(self, module: nn.Module, geom: dict, widths: dict):
        """MACs of the parts whose cost depends on the group widths (total channels per group; may be tensors)."""
        raise NotImplementedError

    def reweight_modes(self, module: nn.Module) -> dict[str, str | None]:
        return {}

    def install(self, module: nn.Module, states: dict[str, GroupState]) -> None:
        raise NotImplementedError

    def uninstall(self, module: nn.Module) -> None:
        for slot in self.slots:
            setattr(module, slot, nn.Identity())

    def fold(self, module: nn.Module, states: dict[str, GroupState]) -> None:
        """Fold reweight multipliers into the weights (exact)."""

    def slice(self, module: nn.Module, keep: dict[str, torch.Tensor]) -> None:
        """Rebuild ``module`` in place with the kept within-head indices ``(h, d')`` of each group."""
        raise NotImplementedError

    def channel_weights(self, module: nn.Module, group: str) -> torch.Tensor:
        """``(h, d, F)``: the weights that belong to each channel (for L1 importance and weight similarity)."""
        raise NotImplementedError

    def output_linear(self, module: nn.Module, group: str) -> nn.Linear | None:
        """The Linear that consumes the group's channels (input column ``i·d + c`` = channel ``c`` of head ``i``),
        where each gated channel reaches only its own input column, affinely, and nothing nonlinear follows; lets the
        output-difference init measure every channel from two forwards (verified at run time, see
        :func:`~mhaprune.pruning.init.output_difference`). ``None``: measure channel by channel."""
        return None


@register_adapter(Attention, WindowAttention, FocusedLinearAttention, PvtAttention, PvtFocusedLinearAttention)
class AttentionAdapter(Adapter):
    """Our attention modules: fused ``qkv`` (ViT/Swin/FLatten-Swin) or ``q`` + ``kv`` (PVT layouts)."""

    kind = "attention"
    slots = ("q_gate", "k_gate", "v_gate")

    def groups(self, m):
        return {"qk": (m.num_heads, m.qk_head_dim), "v": (m.num_heads, m.v_head_dim)}

    def geometry(self, m, args):
        B, N, M = attention_geometry(m, args)
        return {"batch": B, "queries": N, "keys": M}

    def macs(self, m, geom, widths):
        B, N, M = geom["batch"], geom["queries"], geom["keys"]
        C, w_qk, w_v = m.dim, widths["qk"], widths["v"]
        if hasattr(m, "qkv"):
            proj_in = B * N * C * (2 * w_qk + w_v)
        else:
            proj_in = B * N * C * w_qk + B * M * C * (w_qk + w_v)
        total = proj_in + B * N * w_v * m.proj.out_features + core_macs(m, B, N, M, qk_dim=w_qk, v_dim=w_v)
        if is_linear_attention(m):
            total = total + B * N * w_v * m.kernel_size * m.kernel_size
        return total

    def reweight_modes(self, m):
        return {"qk": "channel_temp" if is_linear_attention(m) else "head", "v": "channel"}

    def install(self, m, states):
        linear = is_linear_attention(m)
        if "qk" in states:
            m.q_gate = ChannelGate(states["qk"], "q", owner=True, reweight=True)
            m.k_gate = ChannelGate(states["qk"], "k", owner=False, reweight=linear)
        if "v" in states:
            m.v_gate = ChannelGate(states["v"], "v", owner=True, reweight=True)

    # -------------------------------------------------------------- weights per channel
    def _rows(self, m):
        """(W_q, b_q, W_k, b_k, W_v, b_v) views of the input projections."""
        a = m.qk_dim
        if hasattr(m, "qkv"):
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

    def output_linear(self, m, group):
        # V channel c of head i reaches only column i·d + c of proj's input (A·V, plus the depthwise conv of FLatten)
        return m.proj if group == "v" else None

    # -------------------------------------------------------------- fold and slice
    @torch.no_grad()
    def fold(self, m, states):
        if "v" in states and states["v"].reweight is not None:
            g = states["v"].multiplier().reshape(-1)
            m.proj.weight.mul_(g.to(m.proj.weight.dtype)[None, :])
        if "qk" in states and states["qk"].reweight is not None:
            t = states["qk"].multiplier()
            if is_linear_attention(m):
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
        if hasattr(m, "qkv"):
            m.qkv = slice_linear(m.qkv, rows=torch.cat([iq, a + iq, 2 * a + iv]))
        else:
            m.q = slice_linear(m.q, rows=iq)
            m.kv = slice_linear(m.kv, rows=torch.cat([iq, a + iv]))
        m.proj = slice_linear(m.proj, cols=iv)
        if is_linear_attention(m):
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
        m.qk_head_dim, m.v_head_dim = qk.shape[1], v.shape[1]


@register_adapter(Mlp)
class MlpAdapter(Adapter):
    """Two-layer MLP: the hidden channels (fc1 rows = fc2 columns); one 'head'."""

    kind = "mlp"
    slots = ("hidden_gate",)

    def groups(self, m):
        return {"hidden": (1, m.hidden_features)}

    def geometry(self, m, args):
        x = args[0]
        return {"tokens": x.numel() // x.shape[-1]}

    def macs(self, m, geom, widths):
        w = widths["hidden"]
        return geom["tokens"] * (m.fc1.in_features * w + w * m.fc2.out_features)

    def install(self, m, states):
        if "hidden" in states:
            m.hidden_gate = ChannelGate(states["hidden"], "hidden", owner=True, reweight=False)

    def channel_weights(self, m, group):
        return torch.cat([m.fc1.weight, m.fc2.weight.t()], dim=1).reshape(1, m.hidden_features, -1)

    def output_linear(self, m, group):
        return m.fc2

    @torch.no_grad()
    def slice(self, m, keep):
        idx = keep["hidden"].reshape(-1)
        m.fc1 = slice_linear(m.fc1, rows=idx)
        m.fc2 = slice_linear(m.fc2, cols=idx)
        m.hidden_features = len(idx)


def _gate_pre_hook(module: nn.Module, args: tuple):
    """Forward pre-hook on the second linear of an MLP: gate its input (the hidden channels)."""
    return (module.mhaprune_gate(args[0]), *args[1:])


class LinearPairMlpAdapter(Adapter):
    """An MLP given by two Linear layers inside a module (``fc1`` rows = ``fc2`` columns = hidden channels), for
    modules we do not own (timm ``Mlp``, Hugging Face ``ViTMLP`` / ``BertLayer``...). The gate goes in as a forward
    pre-hook on ``fc2``, so the host module's ``forward`` is untouched. Subclass with ``fc1``/``fc2`` paths and
    register it for the host classes."""

    kind = "mlp"
    slots = ()
    fc1 = "fc1"
    fc2 = "fc2"

    def _pair(self, m) -> tuple[nn.Linear, nn.Linear]:
        fc1, fc2 = m.get_submodule(self.fc1), m.get_submodule(self.fc2)
        if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)):
            raise TypeError(f"{type(m).__name__}: {self.fc1} and {self.fc2} must be nn.Linear layers")
        return fc1, fc2

    def _set(self, m, path: str, layer: nn.Linear) -> None:
        parent, _, leaf = path.rpartition(".")
        setattr(m.get_submodule(parent) if parent else m, leaf, layer)

    def groups(self, m):
        return {"hidden": (1, self._pair(m)[0].out_features)}

    def geometry(self, m, args):
        x = args[0]
        return {"tokens": x.numel() // x.shape[-1]}

    def macs(self, m, geom, widths):
        fc1, fc2 = self._pair(m)
        w = widths["hidden"]
        return geom["tokens"] * (fc1.in_features * w + w * fc2.out_features)

    def install(self, m, states):
        if "hidden" in states:
            fc2 = self._pair(m)[1]
            fc2.mhaprune_gate = ChannelGate(states["hidden"], "hidden", owner=True, reweight=False)
            fc2.register_forward_pre_hook(_gate_pre_hook)

    def uninstall(self, m):
        fc2 = self._pair(m)[1]
        for key, hook in list(fc2._forward_pre_hooks.items()):
            if hook is _gate_pre_hook:
                del fc2._forward_pre_hooks[key]
        if "mhaprune_gate" in fc2._modules:
            del fc2._modules["mhaprune_gate"]

    def channel_weights(self, m, group):
        fc1, fc2 = self._pair(m)
        return torch.cat([fc1.weight, fc2.weight.t()], dim=1).reshape(1, fc1.out_features, -1)

    def output_linear(self, m, group):
        return self._pair(m)[1]

    @torch.no_grad()
    def slice(self, m, keep):
        idx = keep["hidden"].reshape(-1)
        fc1, fc2 = self._pair(m)
        self._set(m, self.fc1, slice_linear(fc1, rows=idx))
        self._set(m, self.fc2, slice_linear(fc2, cols=idx))
