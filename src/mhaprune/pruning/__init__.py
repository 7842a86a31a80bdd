"""Pruning: indicators, similarity weights, head-equal groups, reweight, init, plans and surgery."""

from ..adapters import Adapter, MlpAdapter, get_adapter, prunable_modules, register_adapter
from .baselines import keep_all_plan, l1_plan, random_plan, scored_plan
from .budget import ModelCost, plan_from_rankings, uniform_widths
from .config import ConfigError, PruneConfig, parse_macs
from .oneshot import fisher_plan, fisher_scores, oneshot_prune, rescale_outputs
from .plan import LayerPlan, Plan, PlanError
from .pruner import Pruner, latency_budget
from .surgery import apply_plan

LinearPairMlpAdapter = MlpAdapter  # the one MLP adapter (former name)

__all__ = [
    "Adapter",
    "LinearPairMlpAdapter",
    "MlpAdapter",
    "ConfigError",
    "LayerPlan",
    "ModelCost",
    "Plan",
    "PlanError",
    "PruneConfig",
    "Pruner",
    "apply_plan",
    "fisher_plan",
    "fisher_scores",
    "get_adapter",
    "keep_all_plan",
    "l1_plan",
    "oneshot_prune",
    "random_plan",
    "scored_plan",
    "parse_macs",
    "plan_from_rankings",
    "latency_budget",
    "prunable_modules",
    "register_adapter",
    "rescale_outputs",
    "uniform_widths",
]
