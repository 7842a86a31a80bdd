"""Where each method puts its cuts: kept fraction of every channel group per stage, ours vs the baselines.

    python -m benchmarks.allocation   # ours' plan from the committed default run (70% MACs) vs one-shot and L1 at 70%

Writes ``allocation.json`` (with machine, versions, git hash, command) to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mhaprune
from mhaprune.data import build_data
from mhaprune.pipeline import labelled_calibration
from mhaprune.pruning import Plan, fisher_plan, l1_plan
from mhaprune.utils import atomic_write_json, run_metadata


def kept_by_stage(plan: Plan) -> dict[str, float]:
    """``{"stage S group": kept fraction}``, stage = the second field of the layer path (``layers.S.blocks...``)."""
    acc: dict[str, list[int]] = {}
    for path, lp in plan.layers.items():
        stage = path.split(".")[1] if path.startswith("layers.") else "all"
        for g, keep in lp.keep.items():
            h, d = lp.shapes[g]
            a = acc.setdefault(f"stage {stage} {g}", [0, 0])
            a[0] += sum(len(k) for k in keep)
            a[1] += h * d
    return {k: round(a / b, 3) for k, (a, b) in sorted(acc.items())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours-plan", default="benchmarks/results/default_prune/plan.json")
    p.add_argument("--calib-size", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/accuracy")
    args = p.parse_args(argv)
    meta = {**run_metadata(), "args": vars(args)}
    ours = Plan.load(args.ours_plan)
    model = mhaprune.create_model(ours.architecture, pretrained=True).eval()
    train = build_data("fashion-mnist", model.input_size, augment=False).train
    x, y = labelled_calibration(train, args.calib_size, 0)
    target = ours.pruned_macs / ours.dense_macs
    plans = {
        "ours": ours,
        "oneshot": fisher_plan(model, model.input_size, ours.target_macs, x, y),
        "l1": l1_plan(model, model.input_size, ours.target_macs),
    }
    result = {
        "meta": meta,
        "target_fraction": round(target, 4),
        "kept": {k: kept_by_stage(v) for k, v in plans.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "allocation.json", result)
    for name, kept in result["kept"].items():
        print(f"{name:8s}", "  ".join(f"{k}: {v:.2f}" for k, v in kept.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
