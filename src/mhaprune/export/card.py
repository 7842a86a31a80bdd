"""The model card of a prune run folder (``README.md``): what was pruned, how, what it measured, how to load it,
and what every file of the folder is."""

from __future__ import annotations


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%"


def _fmt_macs(n: float) -> str:
    return f"{n / 1e9:.3f} G" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _encoder_rows(report: dict) -> list[str]:
    rows = []
    for label, m in (("right after pruning, validation", report.get("after_prune")),
                     ("validation", (report.get("val") or {}).get("pruned")),
                     ("test", (report.get("test") or {}).get("pruned"))):  # fmt: skip
        if m and "cosine" in m:
            rows.append(f"| cosine retention ({label}, {m['count']} items) | 1 | {m['cosine']:.4f} |")
            rows.append(f"| top-{m['k']} neighbour agreement ({label}) | 1 | {m['neighbours']:.4f} |")
    return rows


def model_card(architecture: str, report: dict, command: str, versions: dict | None = None,
               source: str | None = None) -> str:  # fmt: skip
    """Markdown for a prune run's folder from its ``report.json`` contents (a ``PruneReport.to_dict()``);
    ``source`` names the model that was pruned (e.g. the ``--hf`` folder)."""
    d, p = report["dense"], report["pruned"]
    rows = [
        f"| MACs | {_fmt_macs(d['macs'])} | {_fmt_macs(p['macs'])} ({_pct(p['macs'], d['macs'])}; target "
        f"{_pct(report['target_macs'], d['macs'])}) |",
        f"| params | {d['params']:,} | {p['params']:,} ({_pct(p['params'], d['params'])}) |",
    ]
    test = report.get("test", {})
    if test and "top1" in test["pruned"]:
        rows.append(f"| test top-1 | {test['dense']['top1']:.2f}% | {test['pruned']['top1']:.2f}% |")
    if report.get("val") and "top1" in report["val"]["pruned"]:
        rows.append(f"| validation top-1 | | {report['val']['pruned']['top1']:.2f}% |")
    rows += _encoder_rows(report)
    lat = report.get("latency")
    if lat:
        rows.append(
            f"| latency, batch {lat['batch']}, {lat.get('device', 'cpu')}, {lat.get('threads')} threads, eager fp32 | "
            f"{1e3 * lat['dense_s']:.2f} ms | {1e3 * lat['pruned_s']:.2f} ms ({lat['speedup']:.2f}× faster; MACs "
            f"ratio {lat['macs_ratio']:.2f}×) |"
        )
    v = versions or {}
    made = ", ".join(f"{k} {v[k]}" for k in ("mhaprune", "torch", "git") if v.get(k))
    return "\n".join(
        [
            f"# {architecture}, pruned with mhaprune (method `{report.get('method', 'ours')}`)",
            "",
            f"Source model: `{source or architecture}`; objective `{report.get('objective', 'classification')}`.",
            "",
            f"Made by `{command}`" + (f" ({made})." if made else "."),
            f"Search steps: {report.get('search_steps', 0)}; fine-tune steps: {report.get('finetune_steps', 0)}; "
            f"wall time {report.get('wall_s', 0):.0f} s.",
            "",
            "| | dense | pruned |",
            "|---|---|---|",
            *rows,
            "",
            "## Load it",
            "",
            "```python",
            "import mhaprune",
            "",
            'model = mhaprune.load_pruned("THIS_FOLDER")  # the architecture rebuilt, the plan replayed, the weights',
            "```",
            "",
            "or `mhaprune eval --checkpoint THIS_FOLDER`; "
            "`mhaprune export --checkpoint THIS_FOLDER --onnx model.onnx`.",
            "",
            "## Files",
            "",
            "- `config.json`: the architecture, its arguments, the pruning plan (the kept channels per layer and "
            "head; `mhaprune.Plan.from_dict(config[\"plan\"])` for `mhaprune.apply_plan` on a fresh dense model), "
            "the method's options and the format version (what `load_pruned` reads);",
            "- `model.safetensors`: the pruned weights (no pickle);",
            "- `tokenizer.json`, `tokenizer_config.json`, ... (text encoders): the source model's tokenizer, so that "
            "`mhaprune eval --checkpoint THIS_FOLDER --text-file F` and your code tokenize as the run did;",
            "- `report.json`: every figure of the run (MACs, accuracies, timings, latency);",
            "- `resolved_config.json`: every option the run used, with versions and the git hash;",
            "- `search/`, `finetune/`: each stage's `metrics.jsonl` and `run.json`; their resume checkpoints "
            "(`checkpoint.pt`) are removed after a successful run unless `--keep-checkpoints` was given.",
            "",
        ]
    )
