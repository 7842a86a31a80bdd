"""Pruning methods, registered by name (``mhaprune prune --method NAME``, ``mhaprune.prune(method=NAME)``)."""

# isort: off
from . import ours  # noqa: F401  (registers the methods; ours first in listings)
from . import oneshot, baselines  # noqa: F401

# isort: on
from ._registry import (
    ENTRY_POINT_GROUP,
    MethodContext,
    MethodInfo,
    MethodResult,
    UnknownMethodError,
    get_method,
    list_methods,
    method_config,
    register_method,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "MethodContext",
    "MethodInfo",
    "MethodResult",
    "UnknownMethodError",
    "get_method",
    "list_methods",
    "method_config",
    "register_method",
]
