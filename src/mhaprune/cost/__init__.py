"""Analytic cost model (MACs) and the FlopCounterMode cross-check."""

from .macs import (
    KINDS,
    MacsReport,
    attention_geometry,
    call_model,
    core_macs,
    count_macs,
    example_inputs,
    input_shape,
    is_linear_attention,
    linear_core_macs,
    linear_macs,
    softmax_core_macs,
    trace_macs,
)

__all__ = [
    "KINDS",
    "attention_geometry",
    "call_model",
    "example_inputs",
    "input_shape",
    "core_macs",
    "is_linear_attention",
    "MacsReport",
    "count_macs",
    "linear_core_macs",
    "linear_macs",
    "softmax_core_macs",
    "trace_macs",
]
