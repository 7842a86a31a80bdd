"""One-shot post-training pruning in the style of Kwon et al.: Fisher importance of channel masks from the
calibration batch (the gradients of the run's objective: cross-entropy on labels, or a label-free distillation
objective), greedy mask search under the MACs target, least-squares rescaling of the kept channels. No training."""

from __future__ import annotations

import time

from ..pruning import oneshot_prune
from ._registry import MethodContext, MethodResult, register_method


@register_method(
    "oneshot",
    "post-training (Kwon et al.): Fisher importance of the objective on calibration data, greedy search, rescaling",
    options=("round_to", "min_per_head", "same_qk_v_width"),
)
def run_oneshot(model, ctx: MethodContext) -> MethodResult:
    sample_loss = None
    if ctx.objective is not None and not getattr(ctx.objective, "needs_labels", False):
        objective = ctx.objective

        def sample_loss(m, x, i):  # a label-free objective: the teacher's outputs are its targets
            return objective(m, x, None)

    elif ctx.calib_targets is None:
        raise ValueError("method oneshot needs labelled calibration data or a label-free objective (its Fisher "
                         "importance is the gradient of the objective)")  # fmt: skip
    cfg = ctx.cfg
    t0 = time.time()
    pruned, plan, report = oneshot_prune(
        model,
        cfg.target_macs,
        ctx.calib,
        ctx.calib_targets,
        groups=cfg.groups(),
        round_to=cfg.round_to,
        min_per_head=cfg.min_per_head,
        sample_loss=sample_loss,
        tied=cfg.same_qk_v_width,
    )
    n = len(ctx.calib["input_ids"] if isinstance(ctx.calib, dict) else ctx.calib)
    info = {"prune_s": round(time.time() - t0, 2), "calibration_samples": n}
    info["rescale"] = {"layers": len(report["layers"]), "applied": sum(f["applied"] for f in report["layers"].values())}
    return MethodResult(pruned, plan, info)
