"""Markdown tables from committed benchmark results (so that every number in a README comes from a results file).

python -m benchmarks.tables accuracy benchmarks/results/accuracy/accuracy.json
python -m benchmarks.tables cost benchmarks/results/cost/cost.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STAGES = ("no-ft", "short-ft", "full-ft")


def _cell(rows: list[dict]) -> str:
    if not rows:
        return ""
    vals = [r["test_top1"] for r in rows]
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.2f}"
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{mean:.2f} ± {std:.2f} (n={len(vals)})"


def accuracy_table(result: dict) -> str:
    """One row per (budget, method), one column per stage: test top-1 (%), mean ± std over seeds."""
    rows = result["rows"]
    dense_macs = result["dense_macs"]
    out = ["| MACs budget | method | MACs kept | " + " | ".join(STAGES) + " |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "dense":
            ft = [x for x in rows if x["method"] == "dense" and x["stage"] == "full-ft"]
            line = f"| 100% | dense, fine-tuned as long (control) | 100% | | | {_cell(ft)} |"
            if line not in out:
                out.append(line)
    budgets = sorted({r["budget"] for r in rows if r["method"] != "dense"}, reverse=True)
    for b in budgets:
        methods = sorted({r["method"] for r in rows if r["budget"] == b and r["method"] != "dense"})
        for m in methods:
            sel = [r for r in rows if r["budget"] == b and r["method"] == m]
            kept = 100 * sel[0]["macs"] / dense_macs
            cells = [_cell([r for r in sel if r["stage"] == s]) for s in STAGES]
            out.append(f"| {100 * b:.0f}% | {m} | {kept:.1f}% | " + " | ".join(cells) + " |")
    return "\n".join(out)


def cost_table(result: dict) -> str:
    out = [
        "| phase | wall time | epochs run | dense-epoch equivalents | per epoch vs dense | peak RSS | added RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        per = f"{r['per_epoch_vs_dense']:.2f}×" if r.get("per_epoch_vs_dense") else ""
        ep = f"{r['epochs']:g}" if r.get("epochs") else ""
        out.append(
            f"| {r['phase']} | {r['wall_s']:.1f} s | {ep} | {r.get('dense_epochs_equiv', 0):.2f} | {per} | "
            f"{r['rss_peak_mb']:.0f} MB | {r['rss_delta_mb']:.0f} MB |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("table", choices=("accuracy", "cost"))
    p.add_argument("path", type=Path)
    args = p.parse_args(argv)
    result = json.loads(args.path.read_text())
    print(accuracy_table(result) if args.table == "accuracy" else cost_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
