"""mhaprune: automatic channel pruning for multi-head attention (softmax and focused linear attention).

Example:
    >>> import torch, mhaprune
    >>> model = mhaprune.create_model("flatten_swin_micro")
    >>> pruner = mhaprune.Pruner(model, mhaprune.PruneConfig(target_macs=0.7), torch.randn(8, 1, 32, 32))
    >>> _ = pruner.prepare()
    >>> plan = pruner.plan()
    >>> plan.pruned_macs <= pruner.target
    True
"""

from ._version import __version__  # noqa: E402
from .cost import MacsReport, count_macs  # noqa: E402
from .export import load_model, load_pruned, save_model, save_pruned  # noqa: E402
from .interop import replace_head  # noqa: E402
from .methods import list_methods, register_method  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .pipeline import PruneReport, PruneResult, prune  # noqa: E402
from .pruning import Plan, PlanError, PruneConfig, Pruner, apply_plan  # noqa: E402

__all__ = [
    "MacsReport",
    "Plan",
    "PlanError",
    "PruneConfig",
    "PruneReport",
    "PruneResult",
    "Pruner",
    "__version__",
    "apply_plan",
    "count_macs",
    "create_model",
    "list_methods",
    "list_models",
    "load_model",
    "load_pruned",
    "prune",
    "register_method",
    "replace_head",
    "save_model",
    "save_pruned",
]
