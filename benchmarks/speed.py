"""Real speed of pruned models: dense vs pruned, torch eager fp32 (optionally ``torch.compile``) and ONNX Runtime, at
the batches asked (default 1 and 32), and a training step's time (what a user pays in fine-tune).

    python -m benchmarks.speed --quick      # micro models, budgets 0.5 and 0.25 (a few minutes on 2 CPU cores)
    python -m benchmarks.speed              # + full-size flatten_swin_tiny / deit_small (random weights), 4 budgets
    python -m benchmarks.speed --models deit_small --batches 32 256 --repeats 3 --train-batch 32 --no-onnx

Plans have the structure of ours (equal channels per head in every head, Q/K and V pruned separately, MLP hidden)
and come from ``Pruner`` one-shot (indicators initialised on a calibration batch, then repaired/filled to the
budget): speed depends on the kept widths, not on which channels are kept. Each plan is also made with kept channels
rounded to multiples of 8 (``round_to=8``; ``--roundings`` picks the width policies). Every timing is the median of
``--repeats`` forwards after warm-up, dense and pruned measured side by side in the same process; the ratios are
what to compare across machines.

Each model also gets a ``floor`` row: every prunable group at one channel per head, the time that channel pruning
cannot remove (embeddings, norms, residual adds, softmax over the kept heads). Every pruned row carries
``proportional_efficiency_*``: the speedup / MACs ratio its MACs would give if the prunable part's time scaled exactly
with its MACs above that floor (``proportional_efficiency``), the bound to read its measured ``efficiency_*`` against.

Writes ``speed.csv``, ``speed.json`` (with machine, versions, git hash, command) and ``speed.png`` (speedup vs MACs
ratio with the ideal line) to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.cost import count_macs
from mhaprune.cost.latency import time_call
from mhaprune.export import export_onnx
from mhaprune.models._pretrained import pretrained_models
from mhaprune.pipeline import measure_latency
from mhaprune.pruning import ModelCost, PruneConfig, Pruner, apply_plan, plan_from_rankings
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

from ._io import finish_figure, require, write_csv
from .torch_pruning_baseline import tp_prune_to

MICRO = ["flatten_swin_micro", "deit_micro"]
FULL = ["flatten_swin_tiny", "deit_small"]
BUDGETS = [0.7, 0.5, 0.35, 0.25]


def one_shot_plan(model, budget: float, round_to: int, calib: torch.Tensor, **options):
    work = copy.deepcopy(model)
    pruner = Pruner(work, PruneConfig(target_macs=budget, round_to=round_to, **options), calib)
    pruner.prepare()
    return pruner.convert(pruner.plan()).eval()


def floor_model(model, input_size) -> torch.nn.Module:
    """``model`` with every prunable group at one channel per head: what channel pruning cannot remove (embeddings,
    norms, residual adds, softmax over the kept heads, the head) still runs at full cost."""
    macs = ModelCost(model, input_size)
    scores = {lc.path: {g: torch.rand(*shape) for g, shape in lc.shapes.items()} for lc in macs.layers}
    widths = {path: {g: 1 for g in groups} for path, groups in scores.items()}
    return apply_plan(copy.deepcopy(model), plan_from_rankings(model, macs, scores, widths, None)).eval()


def proportional_efficiency(macs_frac: float, floor_macs_frac: float, floor_time_frac: float) -> float:
    """The speedup / MACs ratio of a plan keeping ``macs_frac`` of the MACs if the time of the prunable part scaled
    exactly with its MACs: time = F + (1 − F)(r − r_min) / (1 − r_min), with the floor model (one channel per head)
    at MACs ``r_min`` and time ``F`` (fractions of dense). Below 1 by the share of the time channel pruning cannot
    remove: what no width policy can beat without pruning heads, tokens or the embedding."""
    t = floor_time_frac + (1 - floor_time_frac) * (macs_frac - floor_macs_frac) / (1 - floor_macs_frac)
    return macs_frac / t


def time_onnx(model, input_size, batches, repeats: int) -> dict[int, float]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        export_onnx(model, Path(d) / "m.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(Path(d) / "m.onnx"), opts, providers=["CPUExecutionProvider"])
    out = {}
    for b in batches:
        x = torch.randn(b, *input_size).numpy()
        for _ in range(2):
            sess.run(None, {"input": x})
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            sess.run(None, {"input": x})
            times.append(time.perf_counter() - t)
        out[b] = statistics.median(times)
    return out


def time_train_step(model, input_size, batch: int, repeats: int) -> float:
    """Median seconds of one training step (forward, cross-entropy, backward, SGD update) on random data."""
    work = copy.deepcopy(model).train().requires_grad_(True)  # a converted model may come frozen
    opt = torch.optim.SGD(work.parameters(), lr=1e-4)
    x = torch.randn(batch, *input_size)
    with torch.no_grad():
        classes = work(x[:1]).shape[-1]
    y = torch.randint(0, classes, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            torch.nn.functional.cross_entropy(work(x), y).backward()
        opt.step()

    return time_call(step, "cpu", repeats, warmup=1) / 1e3


def time_compiled(model, input_size, batches, repeats: int) -> dict[int, float]:
    """``torch.compile`` (inductor) forwards; the compile itself is in the warm-up, not in the timing."""
    compiled = torch.compile(copy.deepcopy(model).eval(), dynamic=False)
    out = {}
    with torch.no_grad():
        for b in batches:
            x = torch.randn(b, *input_size)
            out[b] = time_call(lambda x=x: compiled(x), "cpu", repeats, warmup=2) / 1e3
    return out


def measure(model, input_size, batches, repeats: int, onnx: bool, train_batch: int = 0, compile: bool = False) -> dict:
    r = {}
    for b in batches:  # large batches take seconds per forward: fewer warm-ups there
        r[f"torch_b{b}"] = measure_latency(model, input_size, batch=b, repeats=repeats, warmup=2 if b <= 32 else 1)
    if compile:
        r.update({f"compile_b{b}": t for b, t in time_compiled(model, input_size, batches, repeats).items()})
    if onnx:
        r.update({f"onnx_b{b}": t for b, t in time_onnx(model, input_size, batches, repeats).items()})
    if train_batch:
        r[f"train_b{train_batch}"] = time_train_step(model, input_size, train_batch, repeats)
    return r


def run(models, budgets, roundings, batches, repeats: int, onnx: bool, tp: bool, same_width=False, calib_size=16,
        **how) -> list[dict]:  # fmt: skip
    rows = []
    for name in models:
        seed_all(0)
        pretrained = name in pretrained_models()
        dense = mhaprune.create_model(name, pretrained=pretrained).eval()
        size = tuple(dense.input_size)
        calib = torch.randn(calib_size, *size)
        dense_macs = count_macs(dense).total
        base = measure(dense, size, batches, repeats, onnx, **how)
        rows.append(
            {
                "model": name,
                "method": "dense",
                "budget": 1.0,
                "round_to": 1,
                "macs": dense_macs,
                "macs_ratio": 1.0,
                **base,
            }
        )
        print(
            f"{name}: dense {dense_macs / 1e6:.1f} M MACs, "
            + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in base.items())
        )
        lowest = floor_model(dense, size)
        floor = _row(name, 0.0, 1, "floor", lowest, dense_macs, base, size, batches, repeats, onnx, how)
        rows.append(floor)
        _print(floor, base)
        for budget in budgets:
            for rt in roundings:
                for same in (False, True) if same_width else (False,):
                    pruned = one_shot_plan(dense, budget, rt, calib, same_qk_v_width=same)
                    method = "ours-same-width" if same else "ours"
                    rows.append(
                        _row(name, budget, rt, method, pruned, dense_macs, base, size, batches, repeats, onnx, how,
                             floor)  # fmt: skip
                    )
                    _print(rows[-1], base)
        if tp and "flatten" not in name:  # Torch-Pruning cannot prune FLatten (benchmarks/torch_pruning_baseline.py)
            for budget in budgets:
                try:
                    pruned = tp_prune_to(dense, budget, calib=calib)
                except Exception as e:  # e.g. swin_tiny: its dependency graph fails (ZeroDivisionError); recorded
                    rows.append({"model": name, "method": "torch-pruning", "budget": budget, "round_to": 1,
                                 "error": f"{type(e).__name__}: {e}"})  # fmt: skip
                    print(f"  torch-pruning cannot prune {name}: {rows[-1]['error']}")
                    break
                rows.append(_row(name, budget, 1, "torch-pruning", pruned, dense_macs, base, size, batches, repeats,
                                 onnx, how, floor))  # fmt: skip
                _print(rows[-1], base)
    return rows


def _row(name, budget, rt, method, pruned, dense_macs, base, size, batches, repeats, onnx, how, floor=None) -> dict:
    macs = count_macs(pruned).total
    t = measure(pruned, size, batches, repeats, onnx, **how)
    row = {"model": name, "method": method, "budget": budget, "round_to": rt, "macs": macs}
    row["macs_ratio"] = dense_macs / macs
    for k, v in t.items():
        row[k] = v
        row[f"speedup_{k}"] = base[k] / v
        row[f"efficiency_{k}"] = base[k] / v / row["macs_ratio"]
        if floor is not None:  # what the MACs allow once the floor's time is counted
            row[f"proportional_efficiency_{k}"] = proportional_efficiency(
                macs / dense_macs, floor["macs"] / dense_macs, floor[k] / base[k]
            )
    return row


def _print(row: dict, keys) -> None:
    print(
        time.strftime("%H:%M:%S ")
        + f"  {row['method']} {row['budget']:.2f} round_to={row['round_to']}: MACs ratio {row['macs_ratio']:.2f}x; "
        + ", ".join(f"{k} {row['speedup_' + k]:.2f}x" for k in keys)
    )


def plot(rows: list[dict], path: Path, keys: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        top = 1.0
        for name in models:
            kinds = sorted({(r["method"], r["round_to"]) for r in rows if r["method"] not in ("dense", "floor")})
            for (method, rt), marker in zip(kinds, "osDvP^X*"):
                pts = sorted(
                    (r["macs_ratio"], r[f"speedup_{key}"])
                    for r in rows
                    if r["model"] == name and r["method"] == method and r["round_to"] == rt and f"speedup_{key}" in r
                )
                if pts:
                    label = f"{name}, {method}" + (f" (round {rt})" if rt > 1 else "")
                    ax.plot(*zip(*pts), marker=marker, label=label)
                    top = max(top, *(p[0] for p in pts), *(p[1] for p in pts))
        ax.plot([1, top], [1, top], "k--", lw=1, label="ideal (speedup = MACs ratio)")
        ax.set_xlabel("MACs ratio (dense / pruned)")
        ax.set_ylabel("speedup")
        title = key.replace("_b", ", batch ").replace("torch", "torch eager fp32").replace("onnx", "ONNX Runtime")
        ax.set_title(title.replace("compile", "torch.compile").replace("train", "training step"))
        ax.grid(alpha=0.3)
    finish_figure(fig, axes, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="micro models, budgets 0.5 and 0.25")
    p.add_argument("--models", nargs="+", help="override the model list")
    p.add_argument("--repeats", type=int, default=None, help="timed forwards per measurement (median)")
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--no-onnx", action="store_true", help="torch eager only")
    p.add_argument("--no-tp", action="store_true", help="skip the Torch-Pruning models")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="inference batch sizes")
    p.add_argument("--budgets", type=float, nargs="+", help="MACs targets (default: 0.5 0.25 with --quick, else 4)")
    p.add_argument("--roundings", type=int, nargs="+", default=[1, 8], help="round_to values (width policies)")
    p.add_argument("--same-width", action="store_true", help="also ours with one Q/K and V width per layer")
    p.add_argument("--train-batch", type=int, default=0, help="also time a training step at this batch (0: off)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) forwards")
    p.add_argument("--calib", type=int, default=16, help="calibration images of the one-shot plans")
    p.add_argument("--out", default="benchmarks/results/speed", help="results folder")
    args = p.parse_args(argv)
    require("matplotlib", *(() if args.no_onnx else ("onnx", "onnxruntime")))
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or (MICRO if args.quick else MICRO + FULL)
    budgets = args.budgets or ([0.5, 0.25] if args.quick else BUDGETS)
    repeats = args.repeats or (10 if args.quick else 7)
    batches = args.batches
    t0 = time.time()
    how = dict(train_batch=args.train_batch, compile=args.compile, same_width=args.same_width, calib_size=args.calib)
    rows = run(models, budgets, args.roundings, batches, repeats, onnx=not args.no_onnx, tp=not args.no_tp, **how)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = [f"{e}_b{b}" for e in ("torch", "compile", "onnx") for b in batches if any(f"{e}_b{b}" in r for r in rows)]
    keys += [f"train_b{args.train_batch}"] if args.train_batch else []
    write_csv(out / "speed.csv", rows, ("model", "method", "budget", "round_to"))
    meta = {**run_metadata(), "wall_s": round(time.time() - t0, 1), "repeats": repeats, "batches": batches,
            "args": vars(args)}  # fmt: skip
    atomic_write_json(out / "speed.json", json.loads(json.dumps({"meta": meta, "rows": rows})))
    plot(rows, out / "speed.png", keys)
    print(f"wrote {out}/speed.csv, speed.json, speed.png in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
