"""Saving and loading model folders (safetensors + JSON, no pickle), and ONNX export."""

from .card import model_card
from .folder import CheckpointError, build_base, load_model, load_pruned, read_config, save_model, save_pruned
from .onnx import DEFAULT_OPSET, ExportError, export_onnx, onnx_parity

__all__ = [
    "DEFAULT_OPSET",
    "CheckpointError",
    "ExportError",
    "build_base",
    "export_onnx",
    "load_model",
    "load_pruned",
    "model_card",
    "onnx_parity",
    "read_config",
    "save_model",
    "save_pruned",
]
