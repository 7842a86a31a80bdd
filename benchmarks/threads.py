"""Threads on a shared machine: step times of 1 vs all cores' threads, idle and with other busy processes.

Decides the default thread count (:func:`mhaprune.utils.default_threads`). For each background load (0, 1, ...
busy single-thread processes, as another user's job), times an inference forward and a training step of the
embedded default model at batch 32 with every thread count from 1 to the core count, and records what the default
policy picks under that load (and the 1-minute load average, which the policy does not use: it lags).

    python benchmarks/threads.py            # ~4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.utils import atomic_write_json, available_cores, default_threads, run_metadata
from mhaprune.utils.threads import busy_cores

BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\nwhile True:\n    a @ a\n"


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def measure(model_name: str, batch: int, repeats: int) -> dict:
    model = mhaprune.create_model(model_name, pretrained=True)
    x = torch.randn(batch, *model.input_size)
    y = torch.randint(0, model.num_classes, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def infer():
        model.eval()
        with torch.inference_mode():
            model(x)

    def train_step():
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return {"infer_s": _time(infer, repeats), "train_step_s": _time(train_step, max(3, repeats // 2))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="flatten_swin_micro")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settle", type=float, default=5.0, help="seconds for a new load to start")
    p.add_argument("--out", default="benchmarks/results/threads")
    args = p.parse_args(argv)
    cores = available_cores()
    os.environ.pop("OMP_NUM_THREADS", None)
    rows, t0 = [], time.time()
    for load in args.loads:
        procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
        try:
            time.sleep(args.settle if load else 0)
            busy, picked = busy_cores(), default_threads()
            loadavg = os.getloadavg()[0]
            for threads in range(1, cores + 1):
                torch.set_num_threads(threads)
                r = measure(args.model, args.batch, args.repeats)
                row = {"busy_processes": load, "threads": threads, "loadavg_1min": round(loadavg, 2),
                       "busy_measured": busy, "default_picks": picked}  # fmt: skip
                rows.append({**row, **{k: round(v, 4) for k, v in r.items()}})
                print(rows[-1], flush=True)
        finally:
            for pr in procs:
                pr.kill()
                pr.wait()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**run_metadata(), "command": "python benchmarks/threads.py " + " ".join(argv or sys.argv[1:]),
            "args": vars(args), "cores": cores, "wall_s": round(time.time() - t0, 1)}  # fmt: skip
    atomic_write_json(out / "threads.json", json.loads(json.dumps({"meta": meta, "rows": rows})))
    print(f"wrote {out}/threads.json in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
