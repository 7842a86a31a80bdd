"""Analytic cost model (MACs) and the FlopCounterMode cross-check."""

from ..adapters import linear_core_macs, softmax_core_macs
from .kernels import kernel_notes
from .macs import (
    KINDS,
    MacsReport,
    call_model,
    count_macs,
    example_inputs,
    input_shape,
    linear_macs,
    trace_macs,
)

__all__ = [
    "KINDS",
    "call_model",
    "example_inputs",
    "input_shape",
    "kernel_notes",
    "MacsReport",
    "count_macs",
    "linear_core_macs",
    "linear_macs",
    "softmax_core_macs",
    "trace_macs",
]
