"""The one MLP adapter: two Linear layers inside a module, ``fc1`` rows = ``fc2`` columns = the hidden channels.

Our :class:`~mhaprune.models.layers.Mlp` carries an identity ``hidden_gate`` slot after its activation; modules we
do not own (timm ``Mlp``, Hugging Face ``ViTMLP`` / ``BertLayer``...) get the gate as a forward pre-hook on ``fc2``,
so the host module's ``forward`` is untouched. Other layouts are one instance away:
``register_adapter(BertLayer, adapter=MlpAdapter(fc1="intermediate.dense", fc2="output.dense"))``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..models.layers import Mlp
from ._base import Adapter, GateSlot, register_adapter, slice_linear

_HOOK_SLOT = "mhaprune_gate"


def _gate_pre_hook(module: nn.Module, args: tuple):
    """Forward pre-hook on the second linear of an MLP: gate its input (the hidden channels)."""
    return (module.mhaprune_gate(args[0]), *args[1:])


class MlpAdapter(Adapter):
    """Hidden channels of a two-Linear MLP; one 'head'. ``fc1`` / ``fc2`` are paths inside the module; ``slot`` names
    an identity gate slot of the module (``None``: a pre-hook on ``fc2``)."""

    kind = "mlp"
    fc1 = "fc1"
    fc2 = "fc2"
    slot: str | None = None

    def __init__(self, fc1: str | None = None, fc2: str | None = None, slot: str | None = None):
        self.fc1 = fc1 or self.fc1
        self.fc2 = fc2 or self.fc2
        self.slot = slot or self.slot

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

    def gate_slots(self, m):
        return (GateSlot(self.slot or _HOOK_SLOT, "hidden", "hidden", owner=True, reweight=False),)

    def attach_gate(self, m, slot, gate):
        if self.slot is not None:
            setattr(m, self.slot, gate)
            return
        fc2 = self._pair(m)[1]
        fc2.mhaprune_gate = gate
        fc2.register_forward_pre_hook(_gate_pre_hook)

    def uninstall(self, m):
        if self.slot is not None:
            setattr(m, self.slot, nn.Identity())
            return
        fc2 = self._pair(m)[1]
        for key, hook in list(fc2._forward_pre_hooks.items()):
            if hook is _gate_pre_hook:
                del fc2._forward_pre_hooks[key]
        if _HOOK_SLOT in fc2._modules:
            del fc2._modules[_HOOK_SLOT]

    def channel_weights(self, m, group):
        fc1, fc2 = self._pair(m)
        return torch.cat([fc1.weight, fc2.weight.t()], dim=1).reshape(1, fc1.out_features, -1)

    def output_linear(self, m, group):
        return self._pair(m)[1]

    def input_linear(self, m, group):
        return self._pair(m)[0]

    @torch.no_grad()
    def slice(self, m, keep):
        idx = keep["hidden"].reshape(-1)
        fc1, fc2 = self._pair(m)
        self._set(m, self.fc1, slice_linear(fc1, rows=idx))
        self._set(m, self.fc2, slice_linear(fc2, cols=idx))
        if hasattr(m, "hidden_features"):
            m.hidden_features = len(idx)


register_adapter(Mlp, adapter=MlpAdapter(slot="hidden_gate"))
