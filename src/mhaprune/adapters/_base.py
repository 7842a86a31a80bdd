"""The adapter interface and its registry (by module class, looked up along the MRO).

An adapter owns everything mhaprune needs to know about one module layout: its channel groups, where channel gates
go, the cost of the parts that depend on the kept widths (the attention core included), which initialisation
measures each group, its reweight modes, how to fold and slice it, and which of its parameters take no weight decay.
Code outside :mod:`mhaprune.models` and the adapters asks the adapter instead of testing classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

_ADAPTERS: dict[type, Adapter] = {}
# model-level parameters without weight decay when a model does not name them itself (timm's defaults)
_TOKEN_NAMES = frozenset({"pos_embed", "cls_token", "dist_token"})


@dataclass(frozen=True)
class GateSlot:
    """A point where a channel gate goes: ``name`` (the module's identity slot), the ``group`` it masks, the
    ``role`` it plays (``q``, ``k``, ``v``, ``hidden``), whether it owns the group's state, and whether it applies
    the group's reweight multiplier."""

    name: str
    group: str
    role: str
    owner: bool
    reweight: bool


def register_adapter(*classes: type, adapter: Adapter | None = None):
    """Register an adapter for module classes.

    As a class decorator (``@register_adapter(MyAttention)``) it registers an instance of the decorated class; with
    ``adapter=`` it registers that instance (e.g. ``register_adapter(BertLayer, adapter=MlpAdapter(fc1=..., ...))``).
    A later registration for the same class replaces the earlier one.
    """
    if adapter is not None:
        for c in classes:
            _ADAPTERS[c] = adapter
        return adapter

    def wrap(adapter_cls):
        register_adapter(*classes, adapter=adapter_cls())
        return adapter_cls

    return wrap


_CONVERSIONS: dict[type, str] = {}


def register_conversion(*classes: type, how: str) -> None:
    """Mark module classes that are prunable only after conversion (e.g. timm / Hugging Face attention, which
    :func:`mhaprune.interop.adapt` replaces by our modules); ``how`` says what to call."""
    for c in classes:
        _CONVERSIONS[c] = how


def unconverted_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(path, how to convert it)`` of every module of ``model`` that needs a conversion first."""
    return [(n, _CONVERSIONS[type(m)]) for n, m in model.named_modules() if type(m) in _CONVERSIONS]


def get_adapter(module: nn.Module) -> Adapter | None:
    """The adapter registered for ``module``'s class (or the nearest base class), or ``None``."""
    for cls in type(module).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    return None


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module, Adapter]]:
    """``(path, module, adapter)`` of every module of ``model`` that has an adapter, in module order."""
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
    """Base adapter: one instance per module layout. ``groups`` maps group names to ``(heads, width)``."""

    kind = "module"

    # -------------------------------------------------------------- what the module is
    def groups(self, module: nn.Module) -> dict[str, tuple[int, int]]:
        raise NotImplementedError

    def attention_type(self, module: nn.Module) -> str | None:
        """``"softmax"`` or ``"linear"`` for attention modules, ``None`` otherwise."""
        return None

    def no_weight_decay(self, module: nn.Module) -> set[str]:
        """Names (relative to ``module``) of parameters that take no weight decay, beyond every 1-D parameter."""
        return set()

    # -------------------------------------------------------------- cost
    def geometry(self, module: nn.Module, args: tuple) -> dict:
        """What the cost formula needs from one forward call (recorded at batch 1)."""
        raise NotImplementedError

    def macs(self, module: nn.Module, geom: dict, widths: dict):
        """MACs of the parts whose cost depends on the group widths (total channels per group; may be tensors)."""
        raise NotImplementedError

    def core_macs(self, module: nn.Module, args: tuple) -> int | None:
        """MACs of the work no Linear or Conv2d inside the module does (the attention matmuls), at the module's own
        widths, for one forward call with positional ``args``; ``None`` when there is none."""
        return None

    # -------------------------------------------------------------- gates and calibration
    def gate_slots(self, module: nn.Module) -> tuple[GateSlot, ...]:
        """Where channel gates go; :meth:`attach_gate` puts one there."""
        return ()

    def attach_gate(self, module: nn.Module, slot: GateSlot, gate: nn.Module) -> None:
        setattr(module, slot.name, gate)

    def uninstall(self, module: nn.Module) -> None:
        """Remove every gate (back to identity slots)."""
        for slot in self.gate_slots(module):
            setattr(module, slot.name, nn.Identity())

    def reweight_modes(self, module: nn.Module) -> dict[str, str | None]:
        """Reweight multiplier per group: ``"channel"`` (one scale per channel), ``"head"`` (one temperature per
        head), ``"channel_temp"`` (one temperature per channel) or none."""
        return {}

    def init_strategy(self, module: nn.Module, group: str) -> str:
        """How the data-driven indicator init measures a group's channels: ``"attention_difference"`` (the change
        of the attention maps, from the captured Q and K; linear attention) or ``"output_difference"`` (the change
        of the module's output when the channel is masked)."""
        return "output_difference"

    def kernel_options(self, module: nn.Module) -> dict:
        """What the attention-difference init needs of the kernel (e.g. FLatten's ``focusing_factor``)."""
        return {}

    def output_linear(self, module: nn.Module, group: str) -> nn.Linear | None:
        """The Linear that consumes the group's channels (input column ``i·d + c`` = channel ``c`` of head ``i``),
        where each gated channel reaches only its own input column, affinely, and nothing nonlinear follows; lets the
        output-difference init measure every channel from two forwards (verified at run time, see
        :func:`~mhaprune.pruning.init.output_difference`). ``None``: measure channel by channel."""
        return None

    def input_linear(self, module: nn.Module, group: str) -> nn.Linear | None:
        """The Linear whose output feeds the group's gates and does not depend on the masks (called once per
        forward); lets the batched masking of the init compute it once instead of once per masked channel."""
        return None

    def channel_weights(self, module: nn.Module, group: str) -> torch.Tensor:
        """``(h, d, F)``: the weights that belong to each channel (for L1 importance and weight similarity)."""
        raise NotImplementedError

    # -------------------------------------------------------------- surgery
    def fold(self, module: nn.Module, multipliers: dict[str, torch.Tensor]) -> None:
        """Fold reweight multipliers (per group, shaped as the group's reweight) into the weights (exact)."""

    def slice(self, module: nn.Module, keep: dict[str, torch.Tensor]) -> None:
        """Rebuild ``module`` in place with the kept within-head indices ``(h, d')`` of each group."""
        raise NotImplementedError


def no_weight_decay(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model`` that take no weight decay: every parameter of at most one dimension
    (biases, norms), what the model names in its ``no_weight_decay()`` (timm's convention: position embeddings,
    class tokens), and what the adapters of its modules declare (relative position bias tables, FLatten's scale and
    positional encoding). The one rule the training engine and the pruner share."""
    names = {n for n, p in model.named_parameters() if p.ndim <= 1}
    own = getattr(model, "no_weight_decay", None)
    declared = set(own()) if callable(own) else _TOKEN_NAMES
    for n, _ in model.named_parameters():
        if n in declared or n.rsplit(".", 1)[-1] in declared:
            names.add(n)
    for path, module, adapter in prunable_modules(model):
        prefix = f"{path}." if path else ""
        for n, _ in module.named_parameters():
            if n in adapter.no_weight_decay(module):
                names.add(prefix + n)
    return names
