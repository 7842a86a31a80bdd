"""Markdown tables from committed benchmark results (so that every number in a README comes from a results file).

python -m benchmarks.tables accuracy benchmarks/results/table_b/deit_micro/accuracy.json      # Table B, test split
python -m benchmarks.tables accuracy-val benchmarks/results/table_b/deit_micro/accuracy.json  # the same on validation
python -m benchmarks.tables cost benchmarks/results/cost/cost.json
python -m benchmarks.tables minilm benchmarks/results/minilm/minilm.json        # Table A, test split
python -m benchmarks.tables minilm-val benchmarks/results/minilm/minilm.json    # the same on validation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STAGES = ("no-ft", "short-ft", "full-ft")


def _cell(vals: list[float], digits: int = 2) -> str:
    """``mean ± std`` (sample std) of a cell's seeds; the mean alone for one seed; empty for none."""
    if not vals:
        return ""
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _equal_training(rows: list[dict]) -> list[dict]:
    """A method's rows at equal training: ``full-ft`` for a method that trains while it prunes (ours and its
    variants: their rows record ``search_steps``), else ``full-ft-equal`` (fine-tuned as long as ours' search and
    fine-tune together; empty until measured)."""
    stage = "full-ft" if any(r.get("search_steps") for r in rows) else "full-ft-equal"
    return [r for r in rows if r["stage"] == stage]


def accuracy_table(result: dict, split: str = "test") -> str:
    """Table B: one row per (budget, method), one column per stage and one at equal training: top-1 (%) on
    ``split``, mean ± std over the seeds (their number in the n column). Per budget the best mean of each column
    is bold (the dense control excluded)."""
    rows, key = result["rows"], f"{split}_top1"
    dense_macs = result["dense_macs"]
    cols = (*STAGES, "equal training")
    out = [f"| MACs budget | method | MACs kept | n | {' | '.join(cols)} |", "|---|---|---|---|" + "---|" * len(cols)]

    dense = [r for r in rows if r["method"] == "dense" and r["stage"] == "full-ft"]
    if dense:  # no-ft: the reference itself
        ref = _cell([r[key] for r in rows if r["method"] == "dense" and r["stage"] == "no-ft"])
        ft = _cell([r[key] for r in dense])
        cells = " | ".join((ref, "", ft, ft))
        out.append(f"| 100% | dense, fine-tuned as long (control) | 100% | {len(dense)} | {cells} |")
    for b in sorted({r["budget"] for r in rows if r["method"] != "dense"}, reverse=True):
        at = {m: [r for r in rows if r["budget"] == b and r["method"] == m]
              for m in sorted({r["method"] for r in rows if r["budget"] == b and r["method"] != "dense"})}  # fmt: skip
        columns = {m: [[r[key] for r in sel if r["stage"] == s] for s in STAGES] + [[r[key] for r in
                   _equal_training(sel)]] for m, sel in at.items()}  # fmt: skip
        best = [max((sum(v[i]) / len(v[i]) for v in columns.values() if v[i]), default=None) for i in range(len(cols))]
        for m, sel in at.items():
            cells = []
            for i, vals in enumerate(columns[m]):
                text = _cell(vals)
                cells.append(f"**{text}**" if vals and len(at) > 1 and sum(vals) / len(vals) == best[i] else text)
            kept = 100 * sel[0]["macs"] / dense_macs
            n = len({r["seed"] for r in sel})
            out.append(f"| {100 * b:.0f}% | {m} | {kept:.1f}% | {n} | " + " | ".join(cells) + " |")
    return "\n".join(out)


MINILM_STAGES = ("no-ft", "short-ft", "full-ft", "full-ft-equal")


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
                cells += [_cell([r[f"{split}_{k}"] for r in st], 3) if st else "" for k in ("cosine", "neighbours")]
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
    p.add_argument("table", choices=("accuracy", "accuracy-val", "cost", "minilm", "minilm-val"))
    p.add_argument("path", type=Path)
    args = p.parse_args(argv)
    result = json.loads(args.path.read_text())
    tables = {"accuracy": accuracy_table, "accuracy-val": lambda r: accuracy_table(r, "val"), "cost": cost_table,
              "minilm": minilm_table, "minilm-val": lambda r: minilm_table(r, "val")}  # fmt: skip
    print(tables[args.table](result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
