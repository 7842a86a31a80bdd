"""At equal measured latency, which plan is more accurate: one searched under a MACs target or one searched under a
latency target? (Issue 22's fourth acceptance line, on the micro models with their bundled weights.)

    python -m benchmarks.latency_vs_macs                                  # flatten_swin_micro and deit_micro at 50%
    python -m benchmarks.latency_vs_macs --models deit_micro --budgets 0.5 0.25

Per model and MACs budget ``B``: ours (the defaults, ``--search-epochs`` of search with KD from the dense model, no
fine-tune) under ``target_macs=B`` gives model M; M is timed beside the dense model as the latency feedback times a
plan (``LatencyCost.time_beside_dense``: one forward of each in turn, the median ratio; batch ``--batch``,
``--threads`` CPU threads, fp32, eager); ours again under ``target_latency`` = M's measured latency as a fraction of
the dense model's (same batch and threads), once per ``--allocations`` entry (``latency_allocation``: ``macs`` and
``tables``), gives the models L. With ``--bracket`` d, ours also runs under ``target_macs`` = B × (1 − d) and
B × (1 + d). At the end the dense model, the MACs plans and the Ls are timed side by side, one forward of each in
turn over ``--rounds`` × ``--repeats`` rounds (medians), so the latencies compared come from one stretch of the
machine; ``*_gain_at_equal_latency`` compares each L with the MACs plans' accuracy interpolated (piecewise linear)
at L's measured time (``None`` where L falls outside the MACs plans' times): a comparison at equal measured latency
even where L misses its target. Accuracy: top-1 on the 5,000-image validation split held out of the training images
(what a decision may use) and on the test split (what is reported). ``--seed`` seeds every search of a cell.
Run it on a quiet machine: the latency target is measured.

Writes ``latency_vs_macs.json`` / ``.csv`` (machine, versions, git hash, command) to ``--out``; finished (model,
budget, seed) cells already there are kept and skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.cost.latency import time_interleaved
from mhaprune.data import build_data
from mhaprune.pipeline import prune
from mhaprune.pruning import PruneConfig
from mhaprune.pruning.pruner import latency_budget
from mhaprune.train import evaluate
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

from ._io import first_n, recipe, write_csv

REACHABLE_MARGIN = 1.05  # a target this far above the tables' fastest reachable model, where the measured one is below


def searched(dense, splits, cfg: PruneConfig, args) -> tuple[torch.nn.Module, dict]:
    seed_all(args.seed)
    t0 = time.time()
    res = prune(copy.deepcopy(dense), splits.train, config=cfg, search=recipe(args.search_epochs, args))
    info = {
        "macs": mhaprune.count_macs(res.model).total,
        "val_top1": evaluate(res.model, splits.val, device=args.device)["top1"],
        "test_top1": evaluate(res.model, splits.test, device=args.device)["top1"],
        "wall_s": round(time.time() - t0, 1),
        "latency_meta": res.plan.meta.get("latency"),
    }
    return res.model.eval(), info


def at_equal_latency(curve: list[tuple[float, float]], ms: float) -> float | None:
    """The MACs plans' accuracy interpolated (piecewise linear in measured ms) at ``ms``; ``None`` outside the
    measured range (no extrapolation)."""
    curve = sorted(curve)
    for (t0, a0), (t1, a1) in zip(curve, curve[1:]):
        if t0 <= ms <= t1:
            return a0 if t1 == t0 else a0 + (a1 - a0) * (ms - t0) / (t1 - t0)
    return None


def done(rows: list[dict], name: str, budget: float, seed: int) -> bool:
    """Whether the (model, budget, seed) cell is among ``rows`` (rows written before seeds were recorded: seed 0)."""
    return any(r["model"] == name and r["budget"] == budget and r.get("seed", 0) == seed for r in rows)


def run_cell(name: str, budget: float, dense, splits, args) -> dict:
    x = torch.randn(args.batch, *dense.input_size)
    m_model, m_info = searched(dense, splits, PruneConfig(target_macs=budget, seed=args.seed), args)
    # MACs plans around the budget, timed with the others: the MACs-target accuracy against measured latency, so
    # that a latency plan that lands off the MACs plan's time is still compared at equal latency
    side = {}
    for b in sorted({round(budget * (1 - args.bracket), 4), round(min(0.99, budget * (1 + args.bracket)), 4)}):
        if args.bracket > 0 and b != budget:
            side[b] = searched(dense, splits, PruneConfig(target_macs=b, seed=args.seed), args)
    # the target: the MACs plan's latency as a fraction of the dense model's, timed as the latency feedback times a
    # plan (LatencyCost.time_beside_dense: one forward of each in turn, the median ratio). Not in milliseconds: this
    # machine's speed drifted by up to 1.5x within minutes, so a time taken now is not the tables' time; the
    # fraction holds (the pruner takes it of the tables' dense latency).
    probe = PruneConfig(target_latency=0.99, target_latency_batch=args.batch, target_latency_threads=args.threads)
    tables, _ = latency_budget(dense, x[:2], probe)
    target_ms, dense_beside = tables.time_beside_dense(copy.deepcopy(m_model))
    measured_fraction = target_ms / dense_beside
    # where the tables cannot reach that fraction (small batches: fixed costs dominate; busy tables), the nearest
    # reachable target is used and the row says so: the two plans are then not at equal latency
    floor = tables.min_total(probe.groups(), probe.min_per_head) / tables.dense_total
    fraction = max(measured_fraction, REACHABLE_MARGIN * floor)
    lat_models, lat_infos = {}, {}
    for alloc in args.allocations:  # each allocation of the same latency target, from the same seed
        cfg = PruneConfig(target_latency=fraction, target_latency_batch=args.batch, latency_allocation=alloc,
                          target_latency_threads=args.threads, seed=args.seed)  # fmt: skip
        lat_models[alloc], lat_infos[alloc] = searched(dense, splits, cfg, args)
    timed = {"dense": dense, "macs": m_model, **{f"macs_{b}": m for b, (m, _) in side.items()},
             **{f"latency_{a}": m for a, m in lat_models.items()}}  # fmt: skip
    # one forward of each model in turn, round after round: a slow stretch of the machine hits every model alike
    fns = [lambda m=m: m(x) for m in timed.values()]
    rounds = dict(zip(timed, time_interleaved(fns, args.device, args.rounds * args.repeats, warmup=2)))
    med = {k: statistics.median(v) for k, v in rounds.items()}
    curves = {s: [(med["macs"], m_info[f"{s}_top1"]), *[(med[f"macs_{b}"], i[f"{s}_top1"])
                                                         for b, (_, i) in side.items()]]
              for s in ("val", "test")}  # fmt: skip

    def equal(s: str, ms: float, top1: float):
        ref = at_equal_latency(curves[s], ms)
        return None if ref is None else round(top1 - ref, 3)

    return {
        "model": name,
        "budget": budget,
        "seed": args.seed,
        "target_ms": round(target_ms, 3),
        "target_fraction": round(fraction, 4),
        "measured_fraction": round(measured_fraction, 4),
        "tables_floor_fraction": round(floor, 4),
        "dense_ms": round(med["dense"], 3),
        "macs_plan": {**m_info, "measured_ms": round(med["macs"], 3)},
        "macs_bracket": {str(b): {**i, "measured_ms": round(med[f"macs_{b}"], 3)} for b, (_, i) in side.items()},
        "latency_plans": {a: {**i, "measured_ms": round(med[f"latency_{a}"], 3),
                              "latency_ratio": round(med[f"latency_{a}"] / med["macs"], 4),
                              "val_gain": round(i["val_top1"] - m_info["val_top1"], 3),
                              "test_gain": round(i["test_top1"] - m_info["test_top1"], 3),
                              # against the MACs plans' accuracy interpolated at this plan's measured time
                              "val_gain_at_equal_latency": equal("val", med[f"latency_{a}"], i["val_top1"]),
                              "test_gain_at_equal_latency": equal("test", med[f"latency_{a}"], i["test_top1"])}
                          for a, i in lat_infos.items()},  # fmt: skip
        "rounds": {k: [round(t, 3) for t in v] for k, v in rounds.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["flatten_swin_micro", "deit_micro"])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5])
    p.add_argument("--allocations", nargs="+", default=["macs", "tables"], choices=["macs", "tables"],
                   help="latency_allocation of the latency-target plans (each searched from the same seed)")
    p.add_argument("--bracket", type=float, default=0.2,
                   help="also search MACs plans at budget x (1 -/+ this), timed with the others, to compare each "
                        "latency plan with the MACs plans' accuracy at its measured time (0: off)")
    p.add_argument("--search-epochs", type=float, default=0.35)
    p.add_argument("--batch", type=int, default=32, help="latency batch")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every timing and the latency target")
    p.add_argument("--repeats", type=int, default=15, help="forwards of each model per round at the end")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved timing at the end")
    p.add_argument("--batch-size", type=int, help="search batch (default: configs/benchmark-stage.yaml)")
    p.add_argument("--lr", type=float, help="default: configs/benchmark-stage.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=None, help="use only this many training images (smoke tests)")
    p.add_argument("--eval-subset", type=int, default=None, help="evaluate on only this many images (smoke tests)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results/latency_vs_macs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "latency_vs_macs.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    rows, runs = old.get("rows", []), old.get("runs", [])
    this_run, t0 = {**run_metadata(), "args": vars(args)}, time.time()
    for name in args.models:
        dense = mhaprune.create_model(name, pretrained=True).to(args.device).eval()
        splits = build_data("fashion-mnist", dense.input_size, augment=False)
        for ds, n in (
            (splits.train, args.train_subset),
            (splits.val, args.eval_subset),
            (splits.test, args.eval_subset),
        ):
            first_n(ds, n)
        for budget in args.budgets:
            if done(rows, name, budget, args.seed):
                print(f"{name} @ {budget:.2f}, seed {args.seed}: already in {path}, skipped")
                continue
            row = run_cell(name, budget, dense, splits, args)
            rows.append(row)
            m = row["macs_plan"]
            for a, lat in row["latency_plans"].items():
                print(f"{name} @ {budget:.2f}: MACs plan {m['measured_ms']:.1f} ms val {m['val_top1']:.2f}%, latency "
                      f"plan ({a}) {lat['measured_ms']:.1f} ms val {lat['val_top1']:.2f}% "
                      f"({lat['latency_ratio']:.3f}x the time; val gain at equal latency "
                      f"{lat['val_gain_at_equal_latency']})", flush=True)  # fmt: skip
            atomic_write_json(path, {"runs": [*runs, {**this_run, "wall_s": round(time.time() - t0, 1)}], "rows": rows})
            flat = [{"model": r["model"], "budget": r["budget"], "seed": r.get("seed", 0), "allocation": a,
                     "target_ms": r["target_ms"], "dense_ms": r["dense_ms"],
                     **{f"macs_{f}": r["macs_plan"][f] for f in ("macs", "measured_ms", "val_top1", "test_top1")},
                     **{f"latency_{f}": lat[f] for f in ("macs", "measured_ms", "val_top1", "test_top1")},
                     "latency_ratio": lat["latency_ratio"], "val_gain": lat["val_gain"], "test_gain": lat["test_gain"],
                     "val_gain_at_equal_latency": lat["val_gain_at_equal_latency"],
                     "test_gain_at_equal_latency": lat["test_gain_at_equal_latency"]}
                    for r in rows for a, lat in r["latency_plans"].items()]  # fmt: skip
            write_csv(out / "latency_vs_macs.csv", flat, ("model", "budget", "seed"))
    print(f"wrote {path} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
