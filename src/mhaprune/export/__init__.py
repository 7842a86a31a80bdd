"""Saving and loading model folders (safetensors + JSON, no pickle)."""

from .folder import CheckpointError, load_model, load_pruned, read_config, save_model, save_pruned

__all__ = ["CheckpointError", "load_model", "load_pruned", "read_config", "save_model", "save_pruned"]
