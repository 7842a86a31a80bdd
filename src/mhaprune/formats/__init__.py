"""File formats that every layer may read or write (no model building here): the model folder."""

from .folder import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    CheckpointError,
    load_state_strict,
    read_config,
    read_weights,
    write_folder,
)

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CheckpointError",
    "load_state_strict",
    "read_config",
    "read_weights",
    "write_folder",
]
