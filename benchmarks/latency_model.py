"""The latency model against the clock: predicted vs measured latency of random plans, and latency-target plans.

    python -m benchmarks.latency_model                       # deit_small and flatten_swin_tiny (random weights)
    python -m benchmarks.latency_model --models deit_micro --plans 5 --targets 0.7   # a quick check

For each model: the per-layer tables of ``mhaprune.cost.latency`` (batch ``--batch``, ``--threads`` CPU threads,
fp32; measured fresh into ``--cache``; uncalibrated, and calibrated in place as a latency target uses them by default
since ``PruneConfig.latency_calibration``), then
``--plans`` random plans — every prunable group of every layer at its own random width per head, uniform in
[1, full] — each predicted by the tables and measured (median of ``--repeats`` forwards of the sliced model),
interleaved with the dense model (one forward each in turn): ``error`` compares the prediction with the plan's own
time, ``error_vs_dense_beside`` with the plan's time scaled by the tables' dense time over the dense time measured
beside it (the measured fraction of dense: what the feedback of a latency target uses, and what survives a machine whose
speed drifts between the tables and the check); ``error_ratio`` is the uncalibrated prediction made as the tables
of cache version 3 made it (the alignment ratio a factor on the whole layer), from the same tables. Then, per
target in ``--targets`` (fractions of the dense latency), ours' plan from its initialised indicators (no search
steps: latency depends on the widths, not on which channels are kept) under ``target_latency``, predicted and
measured, in absolute milliseconds and beside the dense model (``measured_vs_target_beside_dense``: the plan's
measured fraction of dense over the target's, the scale the library's feedback uses), with the feedback's record.
Run it on a quiet machine: a busy one makes every measurement, the tables included, meaningless.

Writes ``latency_model.json`` (with every random plan's widths) / ``.csv`` (machine, versions, git hash, command)
and each model's measured tables (``tables_<model>.json``, the cache file) to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.cost.latency import LatencyCost, align_class, time_call
from mhaprune.pruning import PruneConfig, Pruner, apply_plan
from mhaprune.pruning.budget import plan_from_rankings
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

from ._io import write_csv

# what the latency feedback records in ``plan.meta["latency"]``, kept in each target row: the internal target the
# kept plan was planned to, each round's measurement on the tables' scale, the tables' error and the raw timings
FEEDBACK_KEYS = ("allocation", "planned_to_ms", "measured_ms", "feedback_ms", "tables_error", "clock", "macs_target",
                 "feedback_macs", "presearch")


def random_widths(cost: LatencyCost, rng: random.Random) -> dict:
    return {lc.path: {g: rng.randint(1, lc.shapes[g][1]) for g in lc.axes} for lc in cost.layers}


def ratio_total(cost: LatencyCost, widths: dict) -> float:
    """The uncalibrated prediction as the tables made it before cache version 4: the smooth table times the
    measured alignment ratio of every off-grid group (a factor on the whole layer), for the comparison in one run."""
    total = cost.const
    for lc in cost.layers:
        per_head = widths.get(lc.path, {})
        ms = float(lc.smooth(per_head))
        for g, ratios in lc.align.items():
            w = per_head.get(g, lc.shapes[g][1])
            c = align_class(w)
            if c is not None and int(w) not in lc.axes[g]:
                ms *= ratios.get(str(c), 1.0)
        total += ms
    return total


def measured_ms(model, x, args) -> float:
    model = model.eval()
    return time_call(lambda: model(x), "cpu", repeats=args.repeats)


def run_model(name: str, args, rows: list[dict]) -> None:
    seed_all(0)
    model = mhaprune.create_model(name).eval()
    x = torch.randn(args.batch, *model.input_size)
    t0 = time.time()
    raw = LatencyCost(model, x[:1], batch=args.batch, threads=args.threads, repeats=args.repeats)  # uncalibrated
    table_s = round(time.time() - t0, 1)
    cost = LatencyCost(model, x[:1], batch=args.batch, threads=args.threads, repeats=args.repeats,
                       calibrate=True)  # the same tables (cached), calibrated: the default  # fmt: skip
    dense_again = measured_ms(model, x, args)
    rows.append({"model": name, "kind": "dense", "predicted_ms": round(cost.dense_total, 3),
                 "measured_ms": round(dense_again, 3), "tables_s": table_s, "scales": cost.scales})  # fmt: skip
    rng = random.Random(0)
    scores = {lc.path: {g: torch.rand(*lc.shapes[g]) for g in lc.axes} for lc in cost.layers}
    from mhaprune.pruning import ModelCost

    macs = ModelCost(model, model.input_size)
    for i in range(args.plans):
        widths = random_widths(cost, rng)
        plan = plan_from_rankings(model, macs, scores, widths, None)
        pruned = apply_plan(copy.deepcopy(model), plan)
        pred = cost.total(widths)
        meas, dense_ms = cost.time_beside_dense(pruned)  # forward by forward in turn: survives drift
        rel = meas * cost.dense_total / dense_ms  # the measured fraction of dense, on the tables' scale
        kept = round(plan.pruned_macs / plan.dense_macs, 4)
        ratio = ratio_total(raw, widths)  # the version-3 prediction, for the comparison
        unc = raw.total(widths)  # the uncalibrated tables' prediction
        rows.append({"model": name, "kind": "random", "plan": i, "macs_kept": kept, "predicted_ms": round(pred, 3),
                     "measured_ms": round(meas, 3), "error": round((pred - meas) / meas, 4),
                     "dense_beside_ms": round(dense_ms, 3), "measured_on_tables_scale_ms": round(rel, 3),
                     "error_vs_dense_beside": round((pred - rel) / rel, 4),
                     "predicted_uncalibrated_ms": round(unc, 3), "error_uncalibrated": round((unc - meas) / meas, 4),
                     "error_uncalibrated_vs_dense_beside": round((unc - rel) / rel, 4),
                     "predicted_ratio_ms": round(ratio, 3), "error_ratio": round((ratio - meas) / meas, 4),
                     "error_ratio_vs_dense_beside": round((ratio - rel) / rel, 4),
                     "widths": widths})  # fmt: skip
    # the measured tables themselves, so that another latency model can be scored on exactly these measurements
    shutil.copyfile(raw.path, Path(args.out) / f"tables_{name}.json")
    for target in args.targets:
        cfg = PruneConfig(target_latency=target, target_latency_batch=args.batch, target_latency_threads=args.threads)
        work = copy.deepcopy(model)
        pruner = Pruner(work, cfg, x[:8])
        pruner.prepare()
        plan = pruner.plan()
        pruned = pruner.convert(plan)
        info, meas = plan.meta["latency"], measured_ms(pruned, x, args)
        # judged as the feedback judges it too: the plan's time as a fraction of the dense model timed beside it
        # (on the tables' scale), which a machine whose speed drifts between the tables and this check leaves alone
        beside, dense_ms = raw.time_beside_dense(pruned)
        on_scale = beside * raw.dense_total / dense_ms
        rows.append({"model": name, "kind": "target", "target": target, "target_ms": round(info["target_ms"], 3),
                     "predicted_ms": info["predicted_ms"], "measured_ms": round(meas, 3),
                     "measured_vs_target": round(meas / info["target_ms"], 4),
                     "dense_beside_ms": round(dense_ms, 3), "measured_on_tables_scale_ms": round(on_scale, 3),
                     "measured_vs_target_beside_dense": round(on_scale / info["target_ms"], 4),
                     "macs_kept": round(plan.pruned_macs / plan.dense_macs, 4),
                     "error": round((info["predicted_ms"] - meas) / meas, 4),
                     "error_vs_dense_beside": round((info["predicted_ms"] - on_scale) / on_scale, 4),
                     "feedback": {k: info[k] for k in FEEDBACK_KEYS if k in info}})  # fmt: skip


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        errs = [abs(r["error"]) for r in rows if r["model"] == name and r["kind"] == "random"]
        raw = [abs(r["error_uncalibrated"]) for r in rows if r["model"] == name and r["kind"] == "random"]
        beside = [abs(r["error_vs_dense_beside"]) for r in rows if r["model"] == name and r["kind"] == "random"]
        raw_beside = [abs(r["error_uncalibrated_vs_dense_beside"]) for r in rows
                      if r["model"] == name and r["kind"] == "random"]  # fmt: skip
        ratio = [abs(r["error_ratio"]) for r in rows if r["model"] == name and r["kind"] == "random"]
        ratio_beside = [abs(r["error_ratio_vs_dense_beside"]) for r in rows
                        if r["model"] == name and r["kind"] == "random"]  # fmt: skip
        targets = [r for r in rows if r["model"] == name and r["kind"] == "target"]
        out.append({"model": name, "random_plans": len(errs),
                    "median_abs_error": round(statistics.median(errs), 4) if errs else None,
                    "max_abs_error": round(max(errs), 4) if errs else None,
                    "median_abs_error_uncalibrated": round(statistics.median(raw), 4) if raw else None,
                    "median_abs_error_vs_dense_beside": round(statistics.median(beside), 4) if beside else None,
                    "median_abs_error_uncalibrated_vs_dense_beside":
                        round(statistics.median(raw_beside), 4) if raw_beside else None,
                    "median_abs_error_ratio_factors": round(statistics.median(ratio), 4) if ratio else None,
                    "median_abs_error_ratio_factors_vs_dense_beside":
                        round(statistics.median(ratio_beside), 4) if ratio_beside else None,
                    "worst_measured_vs_target": max((r["measured_vs_target"] for r in targets),
                                                    default=None),
                    "worst_measured_vs_target_beside_dense":
                        max((r["measured_vs_target_beside_dense"] for r in targets), default=None)})  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["deit_small", "flatten_swin_tiny"])
    p.add_argument("--plans", type=int, default=20)
    p.add_argument("--targets", type=float, nargs="*", default=[0.7, 0.5], help="none: random plans only")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--cache", help="latency cache folder (default: a fresh temporary one, so tables are measured)")
    p.add_argument("--out", default="benchmarks/results/latency_model")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MHAPRUNE_CACHE"] = args.cache or tmp
        t0 = time.time()
        for name in args.models:
            run_model(name, args, rows)
            result = {"meta": {**run_metadata(), "args": vars(args), "wall_s": round(time.time() - t0, 1)},
                      "summary": summarise(rows), "rows": rows}  # fmt: skip
            atomic_write_json(out / "latency_model.json", result)
            flat = [{k: v for k, v in r.items() if k not in ("widths", "feedback")} for r in rows]  # in the JSON
            write_csv(out / "latency_model.csv", flat, ("model", "kind", "plan", "target"))
            print(summarise(rows)[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
