"""Score variants of the latency model on one ``latency_model`` run's saved tables and plans, and how reproducible
the measurements themselves are between two runs of the same plans.

    python -m benchmarks.latency_rescore benchmarks/results/latency_model/interleaved deit_small
    python -m benchmarks.latency_rescore benchmarks/results/latency_model/interleaved deit_small \\
        --against benchmarks/results/latency_model/share_run

Variants (median |predicted − measured| / measured over the run's random plans, against the plan's own time and
against its fraction of the dense model timed beside it): the library's tables as the run built them (cache version
5: the reference rescale and constant), the tables as measured (no rescale) with the reference's constant, and both
with the constant from the dense model timed alone after the tables (the run's ``dense`` row), as before version 5.
The tables are read from the run's ``tables_<model>.json`` (the cache file); loading them needs the run's device
setting (this machine's name, threads and torch version), else the script says so. ``--against`` another run of the
same plans (``latency_model`` draws them from seed 0): the median relative difference of each plan's measured time
and of its measured fraction of the dense model between the two runs — what a perfect latency model would score.
Last, the tables (calibrated and not) times one whole-model savings scale fitted on half the run's plans and scored on
the other half (``savings_scale_cv``): what a calibration on whole-model plans like these would reach.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

import mhaprune


def random_rows(run: Path, name: str) -> list[dict]:
    rows = json.loads((run / "latency_model.json").read_text())["rows"]
    return [r for r in rows if r["model"] == name and r["kind"] == "random"]


def dense_row(run: Path, name: str) -> dict:
    rows = json.loads((run / "latency_model.json").read_text())["rows"]
    return next(r for r in rows if r["model"] == name and r["kind"] == "dense")


def reproducibility(a: list[dict], b: list[dict]) -> dict:
    """Median (and max) relative difference between two runs' measurements of the same plans: own time and
    fraction of the dense model beside it. Raises ``ValueError`` when the runs measured different plans."""
    if len(a) != len(b) or any(x["widths"] != y["widths"] for x, y in zip(a, b)):
        raise ValueError("the two runs did not measure the same plans (widths differ)")
    own = [abs(y["measured_ms"] / x["measured_ms"] - 1) for x, y in zip(a, b)]
    frac = [abs((y["measured_ms"] / y["dense_beside_ms"]) / (x["measured_ms"] / x["dense_beside_ms"]) - 1)
            for x, y in zip(a, b)]  # fmt: skip
    return {"plans": len(a), "median_own": statistics.median(own), "max_own": max(own),
            "median_fraction": statistics.median(frac), "max_fraction": max(frac)}  # fmt: skip


def score(rows: list[dict], predict, dense_ms: float) -> dict:
    """Median |error| against the own time and against the fraction of dense (on the scale of ``dense_ms``)."""
    own = [(predict(r["widths"]) - r["measured_ms"]) / r["measured_ms"] for r in rows]
    on_scale = [r["measured_ms"] * dense_ms / r["dense_beside_ms"] for r in rows]
    beside = [(predict(r["widths"]) - m) / m for r, m in zip(rows, on_scale)]
    return {"own": statistics.median(map(abs, own)), "too_slow": sum(e > 0 for e in own),
            "beside": statistics.median(map(abs, beside))}  # fmt: skip


def variants(run: Path, name: str, rows: list[dict]) -> dict[str, dict]:
    from mhaprune.cost.latency import DeviceSetting, LatencyCost

    tables = json.loads((run / f"tables_{name}.json").read_text())
    setting = DeviceSetting.current("cpu", tables["setting"]["batch"], torch.float32, tables["setting"]["threads"])
    if tables["setting"] != asdict(setting):
        raise SystemExit(f"the tables were measured for {tables['setting']}, this machine is {asdict(setting)}: "
                         "rescore them on that machine")  # fmt: skip
    dense = dense_row(run, name)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MHAPRUNE_CACHE"] = tmp
        (Path(tmp) / "latency").mkdir()
        shutil.copyfile(run / f"tables_{name}.json", Path(tmp) / "latency" / f"{setting.key()}.json")
        torch.manual_seed(0)
        model = mhaprune.create_model(name).eval()
        cost = LatencyCost(model, torch.randn(1, *model.input_size), batch=setting.batch, threads=setting.threads)
    ref = next(v for k, v in tables["entries"].items() if k.startswith("model:"))
    raw = []
    for lc in cost.layers:  # each layer's table as measured: the cached entry of its signature, before the rescale
        entry = next(v for k, v in tables["entries"].items() if ":" not in k
                     and {g: list(w) for g, w in v["axes"].items()} == lc.axes
                     and torch.allclose(_normalised(v["ms"]), lc.values / lc.full, rtol=1e-6))  # fmt: skip
        layer = copy.copy(lc)
        layer.values = torch.tensor(entry["ms"], dtype=torch.float64)
        layer.full = float(layer.values.flatten()[-1])
        raw.append(layer)

    def total(layers, const):
        return lambda w: const + sum(float(lc.latency(w.get(lc.path, {}))) for lc in layers)

    alone = dense["measured_ms"]
    return {
        "version 5 (reference rescale and constant)": score(rows, cost.total, cost.dense_total),
        "tables as measured, reference constant": score(rows, total(raw, ref["ms"] - sum(lc.full for lc in raw)),
                                                        ref["ms"]),
        "tables as measured, constant from the dense model alone": score(
            rows, total(raw, alone - sum(lc.full for lc in raw)), alone),
        "rescaled tables, constant from the dense model alone": score(
            rows, total(cost.layers, alone - sum(lc.full for lc in cost.layers)), alone),
    }  # fmt: skip


def savings_scale_cv(rows: list[dict], key: str, dense_ms: float) -> dict:
    """One savings scale for the whole model, ``measured ≈ dense - s · (dense - predicted)`` on the tables' scale
    (least squares over the plans' ``measured_on_tables_scale_ms``, predictions from ``key``), fitted on every other
    plan and scored on the rest, both ways (2-fold): the median |error| against the fraction of the dense model of a
    whole-model calibration on plans like these, judged on plans it was not fitted on. Also the scale fitted on all."""

    def fit(part):
        num = sum((dense_ms - r["measured_on_tables_scale_ms"]) * (dense_ms - r[key]) for r in part)
        return num / sum((dense_ms - r[key]) ** 2 for r in part)

    errors = []
    for train, test in ((rows[0::2], rows[1::2]), (rows[1::2], rows[0::2])):
        s = fit(train)
        errors += [abs(dense_ms - s * (dense_ms - r[key]) - r["measured_on_tables_scale_ms"])
                   / r["measured_on_tables_scale_ms"] for r in test]  # fmt: skip
    return {"scale": fit(rows), "beside": statistics.median(errors)}


def _normalised(ms) -> torch.Tensor:
    values = torch.tensor(ms, dtype=torch.float64)
    return values / values.flatten()[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a latency_model output folder")
    p.add_argument("model")
    p.add_argument("--against", type=Path, help="another latency_model run of the same plans")
    args = p.parse_args(argv)
    rows = random_rows(args.run, args.model)
    if args.against:
        try:
            rep = reproducibility(random_rows(args.against, args.model), rows)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{args.model}, {rep['plans']} plans measured in both runs: own time differs by a median of "
              f"{rep['median_own']:.1%} (max {rep['max_own']:.1%}), the fraction of the dense model beside it by "
              f"{rep['median_fraction']:.1%} (max {rep['max_fraction']:.1%})")  # fmt: skip
        return 0
    torch.set_num_threads(1)
    for label, s in variants(args.run, args.model, rows).items():
        print(f"{label:58s} own {s['own']:.1%} ({s['too_slow']} of {len(rows)} too slow), "
              f"beside dense {s['beside']:.1%}")  # fmt: skip
    dense_ms = dense_row(args.run, args.model)["predicted_ms"]
    for key, label in (("predicted_uncalibrated_ms", "uncalibrated"), ("predicted_ms", "calibrated")):
        cv = savings_scale_cv(rows, key, dense_ms)
        print(f"{label} tables x one savings scale fitted on half the plans (2-fold): beside dense {cv['beside']:.1%} "
              f"(scale fitted on all {cv['scale']:.3f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
