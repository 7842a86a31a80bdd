"""mhaprune: automatic channel pruning for multi-head attention (softmax and focused linear attention)."""

__version__ = "0.1.0"

from .export import load_model, save_model  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "load_model", "save_model"]
