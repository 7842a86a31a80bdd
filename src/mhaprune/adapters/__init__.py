"""Adapters: one per module layout, registered by module class. They own all knowledge of a layout (groups, gate
slots, cost, init strategy, reweight modes, surgery, parameters without weight decay); the cost model, the pruner,
the training engine and the interop layer ask them instead of testing classes. See ``docs/architecture.md``."""

from ._base import (
    Adapter,
    GateSlot,
    flat_index,
    get_adapter,
    no_weight_decay,
    prunable_modules,
    register_adapter,
    register_conversion,
    slice_linear,
    unconverted_modules,
)
from .attention import (
    AttentionAdapter,
    FocusedLinearAttentionAdapter,
    PvtAttentionAdapter,
    PvtFocusedLinearAttentionAdapter,
    linear_core_macs,
    softmax_core_macs,
)
from .mlp import MlpAdapter

__all__ = [
    "Adapter",
    "AttentionAdapter",
    "FocusedLinearAttentionAdapter",
    "GateSlot",
    "MlpAdapter",
    "PvtAttentionAdapter",
    "PvtFocusedLinearAttentionAdapter",
    "flat_index",
    "get_adapter",
    "linear_core_macs",
    "no_weight_decay",
    "prunable_modules",
    "register_adapter",
    "register_conversion",
    "slice_linear",
    "softmax_core_macs",
    "unconverted_modules",
]
