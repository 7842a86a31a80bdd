"""Why a pruned Hugging Face ViT can run slower than its dense model: size, attention path and widths, measured.

For Hugging Face ``ViTForImageClassification`` models of three sizes (random weights: only shapes matter for speed)
it times, in one process, at batch 1 and 32 (eager, fp32, median of repeats): the original model (HF's SDPA
attention), the same model adapted to our attention modules (dense), and L1-pruned to 70% of its MACs with the
default widths and with widths rounded to multiples of 8. Each row gives the time per forward and the speedup of
the pruned models over the adapted dense one, against the MACs ratio.

    python benchmarks/hf_speed.py           # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from mhaprune.cost import count_macs
from mhaprune.interop import from_hf_model
from mhaprune.pipeline import measure_latency
from mhaprune.pruning import PruneConfig, apply_plan, l1_plan
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

SIZES = {  # name: (hidden, layers, heads, mlp, image, patch, channels)
    "tiny (the test's: hidden 32, 2 layers, 28 px)": (32, 2, 4, 64, 28, 4, 1),
    "small (hidden 192, 6 layers, 56 px)": (192, 6, 3, 768, 56, 4, 3),
    "ViT-S/16 (hidden 384, 12 layers, 224 px)": (384, 12, 6, 1536, 224, 16, 3),
}


def build(hidden, layers, heads, mlp, image, patch, channels):
    import transformers

    cfg = transformers.ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                 intermediate_size=mlp, image_size=image, patch_size=patch, num_channels=channels,
                                 num_labels=10)  # fmt: skip
    return transformers.ViTForImageClassification(cfg).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=float, default=0.7)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/hf_speed")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_all(0)
    rows, t0 = [], time.time()
    for name, dims in SIZES.items():
        original = build(*dims)
        size = (dims[6], dims[4], dims[4])
        adapted = from_hf_model(copy.deepcopy(original))
        dense_macs = count_macs(adapted, size).total
        models = {"hf original (sdpa)": original, "adapted dense": adapted}
        for round_to in (1, 8):
            cfg = PruneConfig(target_macs=args.target, round_to=round_to)
            base = copy.deepcopy(adapted)
            plan = l1_plan(base, size, args.target, groups=cfg.groups(), round_to=round_to)
            models[f"pruned {args.target:.0%}, round_to {round_to}"] = apply_plan(base, plan)
        for batch in args.batches:
            times = {k: measure_latency(m, size, batch=batch, repeats=args.repeats) for k, m in models.items()}
            for k, m in models.items():
                macs = count_macs(m, size).total
                rows.append({"model": name, "batch": batch, "variant": k, "ms": round(1e3 * times[k], 3),
                             "macs": macs, "macs_ratio": round(dense_macs / macs, 3),
                             "speedup_vs_adapted": round(times["adapted dense"] / times[k], 3)})  # fmt: skip
                print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**run_metadata(), "command": "python benchmarks/hf_speed.py " + " ".join(argv or sys.argv[1:]),
            "args": vars(args), "wall_s": round(time.time() - t0, 1)}  # fmt: skip
    atomic_write_json(out / "hf_speed.json", json.loads(json.dumps({"meta": meta, "rows": rows})))
    print(f"wrote {out}/hf_speed.json in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
