"""Every registered method through the command line on the embedded default: wall time, MACs, test top-1, and
whether the saved folder reloads to the model the run measured.

    python -m benchmarks.methods_cli                              # oneshot, l1, random (and ours: add it)
    python -m benchmarks.methods_cli --methods ours oneshot l1 random --reuse ours=/tmp/default-run

Each method runs as ``mhaprune prune --method M --out DIR`` (the embedded default: bundled flatten_swin_micro,
Fashion-MNIST, 70% of its MACs; one-shot methods take no search and, by default, no fine-tune). The reload check
loads the folder twice (``mhaprune.load_pruned``), asserts identical outputs on a test batch, and re-evaluates the
test split: its top-1 must equal the run's reported figure exactly and its MACs the reported MACs. ``--reuse M=DIR``
checks a run made earlier with the same command instead of running it again. Writes ``methods_cli.json`` / ``.csv``
(machine, versions, git hash, commands) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.data import build_data
from mhaprune.train import evaluate
from mhaprune.utils import atomic_write_json, run_metadata

from ._io import write_csv


def check_folder(folder: Path) -> dict:
    report = json.loads((folder / "report.json").read_text())
    a, b = mhaprune.load_pruned(folder), mhaprune.load_pruned(folder)
    splits = build_data("fashion-mnist", a.input_size, augment=False)
    x = torch.stack([splits.test[i][0] for i in range(64)])
    with torch.no_grad():
        same = bool(torch.equal(a(x), b(x)))
    top1 = evaluate(a, splits.test)["top1"]
    return {
        "method": report["method"],
        "wall_s": report["wall_s"],
        "prune_s": report.get("prune_s"),
        "search_steps": report["search_steps"],
        "finetune_steps": report.get("finetune_steps", 0),
        "macs_kept": round(report["pruned"]["macs"] / report["dense"]["macs"], 4),
        "test_top1_dense": report["test"]["dense"]["top1"],
        "test_top1": report["test"]["pruned"]["top1"],
        "reload_top1": top1,
        "reload_identical_outputs": same,
        "reload_matches_report": same
        and top1 == report["test"]["pruned"]["top1"]
        and mhaprune.count_macs(a).total == report["pruned"]["macs"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["oneshot", "l1", "random"])
    p.add_argument("--reuse", nargs="*", default=[], metavar="METHOD=DIR", help="check an earlier run's folder")
    p.add_argument("--out", default="benchmarks/results/methods_cli")
    args = p.parse_args(argv)
    reuse = dict(r.split("=", 1) for r in args.reuse)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**run_metadata(), "args": vars(args), "commands": {}}
    rows, work = [], Path(tempfile.mkdtemp(prefix="methods-cli-"))
    for method in args.methods:
        folder = Path(reuse[method]) if method in reuse else work / method
        cmd = ["mhaprune", "prune", "--method", method, "--no-progress", "--out", str(folder)]
        meta["commands"][method] = " ".join(cmd) if method not in reuse else f"(reused {folder})"
        if method not in reuse:
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "mhaprune", *cmd[1:]], check=True)
            print(f"{method}: {time.time() - t0:.0f} s", flush=True)
        rows.append(check_folder(folder))
    atomic_write_json(out / "methods_cli.json", {"meta": meta, "rows": rows})
    write_csv(out / "methods_cli.csv", rows, ("method", "wall_s", "macs_kept", "test_top1", "reload_matches_report"))
    print(json.dumps(rows, indent=1))
    return 0 if all(r["reload_matches_report"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
