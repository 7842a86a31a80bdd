"""Shared helpers of the benchmark entry points (outputs, calibration draws)."""

from __future__ import annotations

import csv
import importlib
import json
import re
import sys
from pathlib import Path

import torch

from mhaprune.methods import get_method
from mhaprune.pruning import PruneConfig
from mhaprune.train import TrainConfig


def require(*modules: str, extra: str = "bench") -> None:
    """Stop with exit 2 and the install line, before any work, when an optional package a benchmark needs is
    missing (the benchmarks' packages are the ``bench`` extra)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            print(
                f"error: this benchmark needs {module}, which is not installed: pip install 'mhaprune[{extra}]'",
                file=sys.stderr,
            )
            raise SystemExit(2) from None


def cells(rows: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """The rows grouped by (method, budget, stage), sorted: one group per table cell (its rows are the seeds)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["budget"], r["stage"]), []).append(r)
    return sorted(groups.items())


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


RECIPE = Path(__file__).resolve().parents[1] / "configs" / "benchmark-stage.yaml"


def recipe(epochs: float, args, **changes) -> TrainConfig:
    """The benchmarks' search / fine-tune recipe (``configs/benchmark-stage.yaml``) for a stage of ``epochs``: a
    warm-up only for stages longer than half an epoch; ``args`` (a namespace or dict) gives the device and may
    override ``lr`` / ``batch_size``; ``changes`` set other fields."""
    args = args if isinstance(args, dict) else vars(args)
    base = TrainConfig.from_yaml(RECIPE)
    given = {k: args[k] for k in ("lr", "batch_size") if args.get(k) is not None}
    warmup = 0.0 if epochs <= 0.5 else base.warmup_epochs
    return base.replace(**{"epochs": epochs, "warmup_epochs": warmup, "device": args["device"], **given, **changes})


def parse_method(label: str) -> tuple[str, dict]:
    """A benchmark's method label, ``NAME`` or ``NAME[field=value,...]`` with ``PruneConfig`` overrides (the
    validation sweeps of the method work): ``ours[indicator_lr=0.15,patience=0]`` → ``("ours", {"indicator_lr":
    0.15, "patience": 0})``. An unknown method, field or value stops the benchmark before any work."""
    m = re.fullmatch(r"([\w-]+)(?:\[(.*)\])?", label)
    if not m:
        raise SystemExit(f"error: method {label!r} is not NAME or NAME[field=value,...]")
    name, body = m.group(1), m.group(2)
    options = {}
    for item in filter(None, (body or "").split(",")):
        key, _, value = item.partition("=")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()  # a string field (regularizer=squared)
    if not name.startswith("tp-") and name != "dense":
        get_method(name)  # an unknown name fails before any work
        PruneConfig(**options)  # an unknown field / bad value fails too
    return name, options


def trains_while_pruning(method: str) -> bool:
    """Whether a method label (``NAME`` or ``NAME[options]``) trains the weights while it prunes (ours and its
    variants); Torch-Pruning (``tp-*``) and the ``dense`` control do not. The others get a ``full-ft-equal`` row,
    fine-tuned as long as ours trains in all."""
    name = parse_method(method)[0]
    return not name.startswith("tp-") and name != "dense" and get_method(name).trains


def first_n(dataset, n: int | None) -> None:
    """Keep only the first ``n`` images of a split (``None`` / 0: all), for smoke tests."""
    if n:
        dataset.indices = (dataset.indices if dataset.indices is not None else torch.arange(len(dataset)))[:n]


def finish_figure(fig, axes, path: Path) -> None:
    import matplotlib.pyplot as plt

    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # the benchmarks redraw after every row: an open figure per row would pile up


def stage_panels(summary: list[dict], stages: tuple[str, ...], path: Path, x, metric: str, xlabel: str, ylabel: str,
                 control: float | None = None) -> None:
    """One panel per stage present in ``summary`` (rows with ``method``, ``stage``, ``{metric}_mean`` /
    ``{metric}_std``): a line per method over ``x(row)``, with a ± one-std band over the seeds; ``control`` a dashed
    horizontal line (the dense model fine-tuned as long)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in stages if any(r["stage"] == s for r in summary)]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 4), squeeze=False, sharey=True)
    methods = sorted({r["method"] for r in summary if r["method"] != "dense"})
    for ax, stage in zip(axes[0], stages):
        for method in methods:
            pts = sorted((x(r), r[f"{metric}_mean"], r[f"{metric}_std"]) for r in summary
                         if r["method"] == method and r["stage"] == stage)  # fmt: skip
            if pts:
                xs, ys, es = (list(v) for v in zip(*pts))
                (line,) = ax.plot(xs, ys, marker="o", label=method)
                ax.fill_between(xs, [a - b for a, b in zip(ys, es)], [a + b for a, b in zip(ys, es)],
                                color=line.get_color(), alpha=0.2)  # fmt: skip
        if control is not None:
            ax.axhline(control, color="k", ls="--", lw=1, label="dense, fine-tuned as long")
        ax.set_title(stage)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # the benchmarks redraw after every row: an open figure per row would pile up
