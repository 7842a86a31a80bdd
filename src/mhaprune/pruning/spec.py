"""Moved: the adapters live in :mod:`mhaprune.adapters` (one home for module knowledge). This shim keeps the old
import path working until 0.3."""

import warnings

from ..adapters import (  # noqa: F401
    Adapter,
    AttentionAdapter,
    MlpAdapter,
    flat_index,
    get_adapter,
    prunable_modules,
    register_adapter,
    slice_linear,
)

LinearPairMlpAdapter = MlpAdapter

warnings.warn(
    "mhaprune.pruning.spec is deprecated and will be removed in 0.3; import from mhaprune.adapters",
    FutureWarning,
    stacklevel=2,
)
