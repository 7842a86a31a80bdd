"""Shared output helpers of the benchmark entry points."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, rows: list[dict], first: tuple[str, ...]) -> None:
    """All rows' keys as columns (``first`` ones first), written to a temp file and renamed."""
    fields = sorted(
        {k for r in rows for k in r}, key=lambda k: (k not in first, first.index(k) if k in first else 0, k)
    )
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def finish_figure(fig, axes, path: Path) -> None:
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
