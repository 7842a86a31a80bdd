"""Model families (FLatten-Swin/Swin, FLatten-PVT/PVT, DeiT/FLatten-DeiT) and the registry."""

from . import deit, flatten_swin, pvt  # noqa: F401  (registers the entry points)
from ._pretrained import pretrained_models, pretrained_path
from ._registry import ModelInfo, UnknownModelError, create_model, list_models, model_info, register_model

__all__ = [
    "ModelInfo",
    "UnknownModelError",
    "create_model",
    "list_models",
    "model_info",
    "pretrained_models",
    "pretrained_path",
    "register_model",
]
