"""Closed-form MACs (1 MAC = one fused multiply-add, fvcore's convention) for every model built from our modules.

One forward pass at batch 1 records the token counts each module sees; every Linear, Conv2d and attention core is
then counted by formula, so any width works (pruned models need no change). Elementwise work (norms, softmax,
activations, the focusing function) is not counted, like fvcore and ``torch.utils.flop_counter``. The attention
matmuls are counted explicitly (each module's adapter gives their closed form, see :mod:`mhaprune.adapters`), which
generic counters miss when SDPA is fused.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..adapters import get_adapter

KINDS = ("embed", "qkv", "attn", "dwc", "proj", "mlp", "sr", "merge", "head", "other")

_LEAF_KIND = {
    "qkv": "qkv",
    "q": "qkv",
    "kv": "qkv",
    "fc1": "mlp",
    "fc2": "mlp",
    "dwc": "dwc",
    "sr": "sr",
    "reduction": "merge",
    "head": "head",
}


def linear_macs(tokens, in_features, out_features):
    """MACs of a linear layer applied to ``tokens`` rows (arguments may be tensors, for differentiable costs)."""
    return tokens * in_features * out_features


@dataclass
class MacsReport:
    """Result of :func:`count_macs`: ``total`` MACs per image, split ``by_kind`` and ``by_module``; ``params``."""

    total: int
    by_kind: dict[str, int]
    by_module: dict[str, int] = field(repr=False)
    params: int
    input_size: tuple[int, ...]

    def table(self) -> str:
        lines = [f"{'kind':<8} {'MACs':>14} {'share':>7}"]
        for k in KINDS:
            v = self.by_kind.get(k, 0)
            if v:
                lines.append(f"{k:<8} {v:>14,} {100 * v / self.total:>6.1f}%")
        lines.append(f"{'total':<8} {self.total:>14,} {100.0:>6.1f}%")
        return "\n".join(lines)


def _kind(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    if leaf == "proj":
        return "embed" if parent.startswith("patch_embed") else "proj"
    return _LEAF_KIND.get(leaf, "other")


def example_inputs(model: nn.Module, inputs) -> torch.Tensor | dict:
    """One sample to trace with: ``(C, H, W)`` -> a zero image batch of 1; a tensor batch -> its first row; a dict
    of tensors (e.g. ``input_ids`` and ``attention_mask`` of a text model) -> the first row of each."""
    if isinstance(inputs, dict):
        return {k: v[:1] if torch.is_tensor(v) else v for k, v in inputs.items()}
    if torch.is_tensor(inputs):
        return inputs[:1]
    p = next(iter(model.parameters()))
    return torch.zeros(1, *inputs, device=p.device, dtype=p.dtype)


def call_model(model: nn.Module, inputs):
    """``model(**inputs)`` for a dict (keyword inputs of text models), ``model(inputs)`` otherwise."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def input_shape(inputs) -> tuple[int, ...]:
    """The per-sample shape of ``inputs`` (of the first tensor of a dict)."""
    if isinstance(inputs, dict):
        inputs = next(v for v in inputs.values() if torch.is_tensor(v))
    return tuple(inputs.shape[1:]) if torch.is_tensor(inputs) else tuple(inputs)


def trace_macs(model: nn.Module, input_size) -> dict[str, tuple[str, int]]:
    """Run one forward at batch 1 and return ``{module name: (kind, MACs)}`` for every counted module.

    ``input_size`` is ``(C, H, W)``, or example inputs (a tensor batch or a dict of tensors; the first sample is
    used)."""
    records: dict[str, tuple[str, int]] = OrderedDict()
    hooks = []

    def add(name: str, kind: str, macs: int) -> None:
        old = records.get(name, (kind, 0))[1]
        records[name] = (kind, old + int(macs))

    def add_core(name: str, macs: int | None) -> None:
        if macs is not None:  # the attention matmuls, which no Linear or Conv2d does
            add(name + ".core", "attn", macs)

    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            hooks.append(
                m.register_forward_hook(
                    lambda mod, a, out, n=name: add(
                        n, _kind(n), linear_macs(a[0].numel() // mod.in_features, mod.in_features, mod.out_features)
                    )
                )
            )
        elif isinstance(m, nn.Conv2d):
            hooks.append(
                m.register_forward_hook(
                    lambda mod, a, out, n=name: add(
                        n,
                        _kind(n),
                        out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1],
                    )
                )
            )
        elif (adapter := get_adapter(m)) is not None:
            hooks.append(
                m.register_forward_hook(lambda mod, a, out, n=name, ad=adapter: add_core(n, ad.core_macs(mod, a)))
            )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, example_inputs(model, input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return records


def count_macs(model: nn.Module, input_size=None) -> MacsReport:
    """Analytic MACs per image of ``model`` at ``input_size`` ``(C, H, W)`` (default: the model's own), or per sample
    of example inputs (a tensor batch, or a dict of tensors for models called with keywords such as text encoders).

    Example:
        >>> import mhaprune
        >>> r = mhaprune.count_macs(mhaprune.create_model("flatten_swin_tiny"))
        >>> round(r.total / 1e9, 1)
        4.5
    """
    if input_size is None:
        input_size = model.input_size
    records = trace_macs(model, input_size)
    input_size = input_shape(input_size)
    by_kind = {k: 0 for k in KINDS}
    for kind, macs in records.values():
        by_kind[kind] += macs
    by_kind = {k: v for k, v in by_kind.items() if v}
    params = sum(p.numel() for p in model.parameters())
    return MacsReport(sum(by_kind.values()), by_kind, {k: v for k, (_, v) in records.items()}, params, input_size)
