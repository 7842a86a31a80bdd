"""Markdown tables from committed benchmark results (so that every number in a README comes from a results file).

python -m benchmarks.tables accuracy benchmarks/results/accuracy/accuracy.json
python -m benchmarks.tables cost benchmarks/results/cost/cost.json
python -m benchmarks.tables minilm benchmarks/results/minilm/minilm.json        # Table A, test split
python -m benchmarks.tables minilm-val benchmarks/results/minilm/minilm.json    # the same on validation
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


MINILM_STAGES = ("no-ft", "short-ft", "full-ft", "full-ft-equal")


def _mean_std(vals: list[float]) -> str:
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.3f}"
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{mean:.3f} ± {std:.3f}"


def minilm_table(result: dict, split: str = "test") -> str:
    """Table A: one row per (budget, method); per stage the cosine retention and top-10 neighbour agreement on
    ``split``, mean ± std over the seeds (their number in the n column)."""
    rows = result["rows"]
    head = " | ".join(f"{s} cos | {s} nbrs" for s in MINILM_STAGES)
    out = [f"| budget | method | n | {head} |", "|---|---|---|" + "---|" * (2 * len(MINILM_STAGES))]
    for b in sorted({r["budget"] for r in rows}, reverse=True):
        for m in sorted({r["method"] for r in rows if r["budget"] == b}):
            sel = [r for r in rows if r["budget"] == b and r["method"] == m]
            cells = []
            for s in MINILM_STAGES:
                st = [r for r in sel if r["stage"] == s]
                cells += [_mean_std([r[f"{split}_{k}"] for r in st]) if st else "" for k in ("cosine", "neighbours")]
            n = len({r["seed"] for r in sel})
            out.append(f"| {100 * b:.0f}% | {m} | {n} | " + " | ".join(cells) + " |")
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
    p.add_argument("table", choices=("accuracy", "cost", "minilm", "minilm-val"))
    p.add_argument("path", type=Path)
    args = p.parse_args(argv)
    result = json.loads(args.path.read_text())
    tables = {"accuracy": accuracy_table, "cost": cost_table, "minilm": minilm_table,
              "minilm-val": lambda r: minilm_table(r, "val")}  # fmt: skip
    print(tables[args.table](result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
