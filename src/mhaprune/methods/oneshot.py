"""One-shot post-training pruning in the style of Kwon et al.: Fisher importance of channel masks from the labelled
calibration batch, greedy mask search under the MACs target, least-squares rescaling of the kept channels. No
training."""

from __future__ import annotations

import time

from ..pruning import oneshot_prune
from ._registry import MethodContext, MethodResult, register_method


@register_method(
    "oneshot",
    "post-training (Kwon et al.): Fisher importance from labelled calibration data, greedy search, rescaling",
    needs_labels=True,
    options=("round_to", "min_per_head"),
)
def run_oneshot(model, ctx: MethodContext) -> MethodResult:
    if ctx.calib_targets is None:
        raise ValueError("method oneshot needs labelled calibration data (its Fisher importance uses the labels)")
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
    )
    info = {"prune_s": round(time.time() - t0, 2), "calibration_samples": len(ctx.calib_targets)}
    info["rescale"] = {"layers": len(report["layers"]), "applied": sum(f["applied"] for f in report["layers"].values())}
    return MethodResult(pruned, plan, info)
