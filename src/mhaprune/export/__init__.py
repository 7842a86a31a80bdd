"""Saving and loading model folders (safetensors + JSON, no pickle)."""

from .folder import CheckpointError, load_model, read_config, save_model

__all__ = ["CheckpointError", "load_model", "read_config", "save_model"]
