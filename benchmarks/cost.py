"""Cost of pruning: wall time and peak memory of each method's pruning step and of the fine-tune, relative to one
epoch of dense training of the same model on the same machine.

    python -m benchmarks.cost                    # flatten_swin_micro at 50% MACs
    python -m benchmarks.cost --model deit_micro --budget 0.25

Every phase runs in a fresh process (one after the other), so its peak resident memory (``ru_maxrss``; on a GPU also
``torch.cuda.max_memory_allocated``) is its own; ``rss_before_mb`` is the peak after loading the model and the data,
``rss_delta_mb`` what the phase added on top. Training phases run for a fraction of an epoch (``--dense-epochs``,
``--finetune-epochs``; the per-step cost is constant) and are reported per epoch. Phases:

- ``dense-train``: plain training of the dense model (cross-entropy, the fine-tune recipe) — the unit of the table;
- ``ours-search``: the full method (calibration, ``--search-epochs`` of search with KD, plan, convert);
- ``oneshot``: the Kwon et al.-style baseline (Fisher importance on ``--calib-size`` images, mask search, rescaling);
- ``l1``: the uniform L1 baseline (weights only);
- ``finetune``: KD fine-tune of the pruned model (the same for every method).

Writes ``cost.csv`` and ``cost.json`` (machine, versions, git hash, command) to ``--out``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import multiprocessing as mp
import resource
import time
from pathlib import Path

import torch

# a phase is "dense-train", "finetune", or a registered method's pruning step ("ours-search", "oneshot", "l1", ...)
PHASES = ("dense-train", "ours-search", "oneshot", "l1", "finetune")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _recipe(epochs: float, args: dict):
    from ._io import recipe

    return recipe(epochs, args, warmup_epochs=0.0, eval_every_epoch=False)


def run_phase(phase: str, args: dict) -> dict:
    """One phase in this (fresh) process; returns its timings and memory."""
    import mhaprune
    from mhaprune.data import build_data
    from mhaprune.methods import get_method, list_methods
    from mhaprune.pipeline import prune
    from mhaprune.pruning import l1_plan
    from mhaprune.train import ClassificationLoss, DistillationLoss, Trainer
    from mhaprune.utils import seed_all

    from ._io import first_n

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    seed_all(0)
    dev = args["device"]
    dense = mhaprune.create_model(args["model"], pretrained=True).to(dev)
    splits = build_data("fashion-mnist", dense.input_size, augment=False)
    first_n(splits.train, args["train_subset"])  # smoke tests
    before = _rss_mb()
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    epochs = None
    if phase == "dense-train":
        epochs = args["dense_epochs"]
        Trainer(dense, splits.train, None, _recipe(epochs, args), loss=ClassificationLoss(0.1)).fit()
    elif phase.removesuffix("-search") in list_methods():  # a registered method's pruning step, as the CLI runs it
        method = phase.removesuffix("-search")
        trains = get_method(method).trains
        search = _recipe(args["search_epochs"], args) if trains else None
        calib = args["calib_size"] if not trains else 64
        prune(dense, splits.train, method=method, target_macs=args["budget"], search=search, calib_size=calib)
        epochs = args["search_epochs"] if trains else None
    elif phase == "finetune":
        pruned = mhaprune.apply_plan(copy.deepcopy(dense), l1_plan(dense, dense.input_size, args["budget"]))
        before, t0 = _rss_mb(), time.perf_counter()
        loss = DistillationLoss(ClassificationLoss(0.1), dense.eval(), alpha=0.5)
        epochs = args["finetune_epochs"]
        Trainer(pruned, splits.train, None, _recipe(epochs, args), loss=loss).fit()
    else:
        raise ValueError(f"unknown phase {phase!r}; choose from {', '.join(PHASES)}")
    wall = time.perf_counter() - t0
    row = {
        "phase": phase,
        "wall_s": round(wall, 2),
        "epochs": epochs,
        "per_epoch_s": round(wall / epochs, 2) if epochs else None,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(_rss_mb(), 1),
    }
    row["rss_delta_mb"] = round(row["rss_peak_mb"] - before, 1)
    if dev.startswith("cuda"):
        row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def main(argv=None) -> int:
    from mhaprune.utils import atomic_write_json, run_metadata

    from ._io import write_csv

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="flatten_swin_micro", help="a model with bundled weights")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--phases", nargs="+", default=list(PHASES), help="dense-train, finetune, or a method (ours-search)")
    p.add_argument("--dense-epochs", type=float, default=0.25)
    p.add_argument("--search-epochs", type=float, default=0.35)
    p.add_argument("--finetune-epochs", type=float, default=0.25)
    p.add_argument("--calib-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, help="default: configs/benchmark-stage.yaml")
    p.add_argument("--lr", type=float, help="default: configs/benchmark-stage.yaml")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--train-subset", type=int, help="use only this many training images (smoke tests)")
    p.add_argument("--out", default="benchmarks/results/cost")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.time()
    meta = {**run_metadata(), "args": vars(args)}  # git state at the start: the code that runs
    for phase in args.phases:
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            row = pool.submit(run_phase, phase, vars(args)).result()
        rows.append(row)
        print(f"{phase}: {row['wall_s']:.1f} s, peak RSS {row['rss_peak_mb']:.0f} MB", flush=True)
    unit = next((r["per_epoch_s"] for r in rows if r["phase"] == "dense-train"), None)
    for r in rows:
        if unit:
            r["dense_epochs_equiv"] = round(r["wall_s"] / unit, 3)
            if r["per_epoch_s"]:
                r["per_epoch_vs_dense"] = round(r["per_epoch_s"] / unit, 3)
    meta["wall_s"] = round(time.time() - t0, 1)
    atomic_write_json(out / "cost.json", {"meta": meta, "rows": rows})
    write_csv(out / "cost.csv", rows, ("phase", "wall_s", "epochs", "per_epoch_s", "dense_epochs_equiv"))
    print(f"wrote {out}/cost.csv, cost.json in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
