"""The method of the paper: learned indicators under a MACs regulariser, trained with the weights during a search
stage (:class:`~mhaprune.pruning.Pruner` driven by the one training engine), then surgery with the reweight folded
in; and the variants the ablations need (one design choice switched off each)."""

from __future__ import annotations

import logging
import time

from ..pruning import Pruner, rescale_outputs
from ..train import Callback, Trainer
from ._registry import MethodContext, MethodResult, register_method

_logger = logging.getLogger(__name__)

# a search that ends within this factor of the target is done (the plan's repair removes the last channels)
SEARCH_SLACK = 1.02

_SEARCH_OPTIONS = (
    "threshold",
    "init_logit",
    "regularizer",
    "reg_weight",
    "indicator_lr",
    "weight_lr_scale",
    "patience",
    "similarity",
    "similarity_source",
    "similarity_every",
    "equal_heads",
    "round_to",
    "reweight",
    "attn_init",
    "attn_init_scope",
    "attn_init_metric",
    "attn_init_kappa",
    "attn_init_rows",
    "init_min",
    "fill",
    "min_per_head",
    "same_qk_v_width",
    "target_latency",
    "target_latency_batch",
    "target_latency_threads",
    "latency_feedback",
    "latency_allocation",
    "rescale",
    "seed",
)


class PruningCallback(Callback):
    """Adds the MACs regulariser to the loss and drives :meth:`Pruner.step`; its state resumes with the run."""

    def __init__(self, pruner: Pruner):
        self.pruner = pruner

    def extra_loss(self, trainer):
        return self.pruner.regularization_loss()

    def on_step_end(self, trainer):
        self.pruner.step()
        if trainer.step % trainer.cfg.log_every == 0:
            trainer._log(
                {
                    "step": trainer.step,
                    "search_macs": self.pruner.current_macs(),
                    "target_macs": self.pruner.target,
                    "frozen": self.pruner.frozen,
                }
            )

    def state_dict(self):
        return self.pruner.state_dict()

    def load_state_dict(self, state):
        self.pruner.load_state_dict(state)


def run_ours(model, ctx: MethodContext) -> MethodResult:
    """Calibrate (similarity weights, data-driven init), search (if the recipe has steps), plan, convert, and
    optionally rescale the kept output columns to the dense model."""
    cfg, info = ctx.cfg, {}
    t0 = time.time()
    pruner = Pruner(model, cfg, ctx.calib)
    pruner.prepare()
    info["calibrate_s"] = round(time.time() - t0, 2)
    t1 = time.time()
    steps = 0
    if ctx.search is not None and ctx.search.runs:
        stage = ctx.out_dir / "search" if ctx.out_dir is not None else None
        trainer = Trainer(
            model,
            ctx.train_set,
            None,
            ctx.search,
            out_dir=stage,
            loss=ctx.search_loss,
            callbacks=[PruningCallback(pruner)],
            param_groups=lambda m: pruner.param_groups(m, ctx.search.weight_decay, ctx.search.lr),
        )
        can_resume = ctx.resume and stage is not None and (stage / "checkpoint.pt").exists()
        trainer.fit(resume=stage if can_resume else None)
        steps = trainer.step
    info["search_s"] = round(time.time() - t1, 2)
    info["search_steps"] = steps
    search_macs = pruner.current_macs()
    info["search_macs"] = search_macs  # of the masks when the search ended (the plan then repairs to the target)
    info["search_reached_target"] = search_macs <= pruner.target
    # when the masks first met the target and when they froze (None: never): the steps after the freeze train the
    # final architecture's weights, those before it train under moving masks
    info["search_reached_at_step"] = pruner.reached_at_step
    info["search_frozen_at_step"] = pruner.frozen_at_step
    if search_macs > SEARCH_SLACK * pruner.target:
        _logger.warning(
            "the search ended with its masks at %.1f%% of the dense %s, above the target %.1f%%, after %d steps: "
            "the plan removes the rest by the indicators' ranking (repair); give the search more steps "
            "(--search-epochs) or a larger --reg-weight for a searched plan",
            100 * search_macs / pruner.budget.dense_total,
            "MACs" if pruner.budget is pruner.cost else "latency",
            100 * pruner.target / pruner.budget.dense_total,
            steps,
        )
    plan = pruner.plan()
    pruned = pruner.convert(plan)
    if cfg.rescale:
        t3 = time.time()
        fits = rescale_outputs(pruned, ctx.dense, ctx.calib, batch_size=ctx.search.batch_size if ctx.search else 64)
        info["rescale"] = {
            "layers": len(fits),
            "applied": sum(f["applied"] for f in fits.values()),
            "s": round(time.time() - t3, 2),
        }
    return MethodResult(pruned, plan, info)


register_method(
    "ours",
    "the paper's method: learned indicators under the MACs target, searched with the weights (--search-epochs)",
    trains=True,
    options=_SEARCH_OPTIONS,
)(run_ours)

# variants: the paper's starting choices, and one design choice switched off each (the ablations)
_VARIANTS = {
    "ours-paper": ("ours with the paper's choices: squared regulariser, init on linear-attention Q/K only",
                   {"regularizer": "squared", "attn_init_scope": "linear"}),
    "unconstrained": ("ours without equal removal per head (heads padded to the widest for deployment)",
                      {"equal_heads": False}),
    "ablate-similarity": ("ours without the channel-similarity weights", {"similarity": False}),
    "ablate-reweight": ("ours without the reweight module", {"reweight": False}),
    "ablate-attn-init": ("ours without the data-driven indicator init (uniform start)", {"attn_init": False}),
}  # fmt: skip
for _name, (_summary, _overrides) in _VARIANTS.items():
    register_method(_name, _summary, trains=True, options=_SEARCH_OPTIONS, overrides=_overrides)(run_ours)
