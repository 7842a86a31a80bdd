"""Shared helpers of the benchmark entry points (outputs, calibration draws)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from mhaprune.train import TrainConfig


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


def recipe(epochs: float, args) -> TrainConfig:
    """The benchmarks' search / fine-tune recipe: ``args.lr``, batch ``args.batch_size``, label smoothing 0.1, a short
    warm-up only for stages longer than half an epoch, no checkpoints, logs or progress bars."""
    return TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=0.0 if epochs <= 0.5 else 0.05,
        label_smoothing=0.1,
        device=args.device,
        save_every=0,
        log_every=10**9,
        progress=False,
    )


def first_n(dataset, n: int | None) -> None:
    """Keep only the first ``n`` images of a split (``None`` / 0: all), for smoke tests."""
    if n:
        dataset.indices = (dataset.indices if dataset.indices is not None else torch.arange(len(dataset)))[:n]


def finish_figure(fig, axes, path: Path) -> None:
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def labelled_calibration(train, n: int, seed: int):
    """``n`` labelled training images drawn with ``seed`` (the same draw for every method at a seed)."""
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    items = [train[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
