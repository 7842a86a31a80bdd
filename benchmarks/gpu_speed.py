"""Throughput of pruned models on a GPU (bf16): width policies vs Torch-Pruning, and which SDPA backend ran.

    python -m benchmarks.gpu_speed                          # on the device machine: cuda, bf16, batch 256
    python -m benchmarks.gpu_speed --device cpu --dtype float32 --models deit_micro --budgets 0.5 --batch 8 \\
        --repeats 2 --out /tmp/gpu_speed                    # a smoke run of the same code on the CPU

For every model (random weights; the speed depends on the widths only) and budget, plans of ours' structure from
``Pruner`` one-shot (indicators initialised on a calibration batch, repaired / filled to the budget) under each width
policy — ``free`` (the per-head widths as found), ``round8`` (``round_to=8``), ``same-width`` (``round_to=8`` and
``same_qk_v_width``: one Q/K / V width per layer, as the flash backend needs) — and, for the models it can prune
(not FLatten), Torch-Pruning at equal MACs. Each model is converted to ``--dtype``; the throughput (rows / s) is
the median of ``--repeats`` timed forwards (synchronised) at ``--batch``, dense and pruned in the same process;
``--compile`` times ``torch.compile`` too. The SDPA backend of each model is read off one profiled forward
(``aten::_scaled_dot_product_{flash,efficient,cudnn}_attention`` / ``..._math``).

Writes ``gpu_speed.json`` / ``.csv`` (machine, versions, git hash, command) to ``--out`` after every model.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.cost import count_macs
from mhaprune.cost.latency import time_call
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

from ._io import write_csv
from .speed import one_shot_plan
from .torch_pruning_baseline import tp_prune_to

MODELS = ["flatten_swin_tiny", "deit_small", "swin_tiny"]
BUDGETS = [0.7, 0.5, 0.35, 0.25]
POLICIES = {"free": dict(round_to=1), "round8": dict(round_to=8), "same-width": dict(round_to=8, same_qk_v_width=True)}


def sdpa_backends(model, x) -> list[str]:
    """The SDPA kernels one forward of ``model`` ran (empty: the model calls no SDPA)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    names = {e.key for e in prof.key_averages()}
    return sorted(n.removeprefix("aten::") for n in names if n.startswith("aten::_scaled_dot_product_"))


def throughput(model, x, args) -> dict:
    device = x.device
    out = {"rows_per_s": x.shape[0] / (time_call(lambda: model(x), device, args.repeats, warmup=3) / 1e3)}
    if args.compile:
        compiled = torch.compile(model)
        out["compiled_rows_per_s"] = x.shape[0] / (time_call(lambda: compiled(x), device, args.repeats, 3) / 1e3)
    return out


def row(name, method, budget, policy, model, dense_macs, x, args, base=None) -> dict:
    macs = count_macs(model.float().cpu()).total
    model = model.to(x.device, x.dtype).eval()
    r = {"model": name, "method": method, "budget": budget, "policy": policy, "macs_ratio": dense_macs / macs,
         **throughput(model, x, args), "sdpa": " ".join(sdpa_backends(model, x))}  # fmt: skip
    if base:
        r["speedup_eager"] = r["rows_per_s"] / base["rows_per_s"]
        if "compiled_rows_per_s" in r:
            r["speedup_compiled"] = r["compiled_rows_per_s"] / base["compiled_rows_per_s"]
        r["speedup_vs_macs"] = r["speedup_eager"] / r["macs_ratio"]
    print(f"{name} {method} {budget} {policy}: {r['rows_per_s']:.0f} rows/s, MACs ratio {r['macs_ratio']:.2f}, "
          f"speedup {r.get('speedup_eager', 1.0):.2f}, sdpa {r['sdpa'] or '-'}", flush=True)  # fmt: skip
    return r


def run_model(name: str, args, rows: list[dict]) -> None:
    seed_all(0)
    dense = mhaprune.create_model(name).eval()
    calib = torch.randn(8, *dense.input_size)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.batch, *dense.input_size, device=args.device, dtype=dtype)
    dense_macs = count_macs(dense).total
    base = row(name, "dense", 1.0, "-", copy.deepcopy(dense), dense_macs, x, args)
    rows.append(base)
    for budget in args.budgets:
        for policy in args.policies:
            pruned = one_shot_plan(dense, budget, calib=calib, **POLICIES[policy])
            rows.append(row(name, "ours", budget, policy, pruned, dense_macs, x, args, base))
        if "flatten" not in name and not args.no_tp:  # Torch-Pruning cannot prune FLatten
            pruned = tp_prune_to(dense, budget, calib=calib)
            rows.append(row(name, "torch-pruning", budget, "-", pruned, dense_macs, x, args, base))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--budgets", type=float, nargs="+", default=BUDGETS)
    p.add_argument("--policies", nargs="+", choices=tuple(POLICIES), default=list(POLICIES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    p.add_argument("--out", default="benchmarks/results/gpu_speed")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; run on the device machine, or pass --device cpu for a smoke run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    t0 = time.time()
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    for name in args.models:
        run_model(name, args, rows)
        meta = {**run_metadata(), "args": vars(args), "device_name": device_name, "wall_s": round(time.time() - t0)}
        atomic_write_json(out / "gpu_speed.json", {"meta": meta, "rows": rows})
        write_csv(out / "gpu_speed.csv", rows, ("model", "method", "budget", "policy"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
