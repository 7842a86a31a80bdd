"""Our dense FLatten-Swin against the official implementation, side by side in one process.

    git clone https://github.com/LeapLabTHU/FLatten-Transformer /tmp/flatten-official
    python -m benchmarks.flatten_official --official /tmp/flatten-official

Builds the official ``FLattenSwinTransformer`` (``models/flatten_swin.py`` of the clone; timm and einops are not
needed: their three helpers it imports come from ``mhaprune.models.layers`` when timm is absent) and ours at the same
configuration — the ``flatten_swin_micro`` layout (32-px, 1 channel, embed 32, depths 2/2/4/2, heads 2/2/4/8,
``attn_type="LLSS"``, window 56) with the softmax stages at the official window (7, clamped to the stage, so no
shift), and copies our weights into the official model key for key: the two must give the same logits (checked,
max |Δ| reported), so the timings compare the same computation. Our model as shipped (softmax window 2, shifted) is
timed too.

Timings, interleaved (ours, official, ours, ...) so that a drifting machine affects both alike, at ``--batch``:
inference (eval, no grad) and a training step (train mode, forward, cross-entropy, backward, AdamW step). Each
figure is the median over ``--rounds`` rounds of the median of ``--repeats`` calls; the ratio ours / official is
computed per round and its median reported. ``--profile`` adds the top operators of one training step of each
(torch.profiler, self CPU time).

Writes ``flatten_official.json`` (machine, versions, git hash, command) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn as nn

import mhaprune
from mhaprune.models import layers as our_layers
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

MICRO = dict(img_size=32, patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depths=[2, 2, 4, 2],
             num_heads=[2, 2, 4, 8], window_size=56, attn_type="LLSS", drop_path_rate=0.1)  # fmt: skip


def _shim_timm() -> None:
    """The official file imports ``DropPath, to_2tuple, trunc_normal_`` from timm and ``rearrange`` from einops."""
    if importlib.util.find_spec("timm") is None:
        timm, models, lay = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
        lay.DropPath, lay.to_2tuple = our_layers.DropPath, our_layers.to_2tuple
        lay.trunc_normal_ = lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0: nn.init.trunc_normal_(t, mean, std, a, b)
        timm.models, models.layers = models, lay
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": lay})
    if importlib.util.find_spec("einops") is None:
        ein = types.ModuleType("einops")
        ein.rearrange = None  # imported, never called by FLattenSwinTransformer
        sys.modules["einops"] = ein


def load_official(root: Path):
    path = root / "models" / "flatten_swin.py" if root.is_dir() else root
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: pass --official <a clone of LeapLabTHU/FLatten-Transformer>")
    _shim_timm()
    spec = importlib.util.spec_from_file_location("flatten_official_swin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quiet(fn, *args, **kwargs):
    """The official modules print on construction and on ``eval()``."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def build_pair(official_module):
    seed_all(0)
    ours = mhaprune.create_model("flatten_swin_micro", softmax_window_size=7)
    official = quiet(official_module.FLattenSwinTransformer, **MICRO)
    missing, unexpected = official.load_state_dict(ours.state_dict(), strict=False)
    buffers = {n for n, _ in official.named_buffers()}
    bad = [k for k in missing if k not in buffers] + [k for k in unexpected if k.rsplit(".", 1)[-1] != "attn_mask"]
    if bad:
        raise SystemExit(f"error: state dicts differ beyond buffers: {bad[:8]}")
    return ours, official


def time_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` after one warm-up call (gradients on: ``cost.latency.time_call`` is no-grad)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def train_step(model, x, y, opt):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def timers(model, x, y):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def infer():
        quiet(model.eval)
        with torch.no_grad():
            model(x)

    def train():
        model.train()
        train_step(model, x, y, opt)

    return {"infer": infer, "train": train}


def profile(model, x, y, top: int) -> list[dict]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    fn = timers(model, x, y)["train"]
    fn()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        fn()
    rows = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2), "calls": e.count} for e in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, type=Path, help="a clone of LeapLabTHU/FLatten-Transformer")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", type=int, default=15, help="top operators per model (0: no profile)")
    p.add_argument("--out", default="benchmarks/results/flatten_official")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    official_module = load_official(args.official)
    ours, official = build_pair(official_module)
    shipped = mhaprune.create_model("flatten_swin_micro")  # its own weights: other window tables (timed only)
    x = torch.randn(args.batch, 1, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    ours.eval(), quiet(official.eval)
    with torch.no_grad():
        diff = (ours(x) - official(x)).abs().max().item()
    print(f"same logits: max |ours - official| = {diff:.2e}", flush=True)
    models = {"ours": ours, "official": official, "ours-shipped": shipped}
    fns = {name: timers(m, x, y) for name, m in models.items()}
    times: dict = {name: {k: [] for k in ("infer", "train")} for name in models}
    t0 = time.time()
    for r in range(args.rounds):
        for kind in ("infer", "train"):
            for name in models:
                times[name][kind].append(time_ms(fns[name][kind], args.repeats))
        print(f"round {r}: " + ", ".join(f"{n} {times[n]['train'][-1]:.0f}/{times[n]['infer'][-1]:.0f} ms"
                                         for n in models), flush=True)  # fmt: skip
    summary = {}
    for name in models:
        for kind in ("infer", "train"):
            ratios = [a / b for a, b in zip(times[name][kind], times["official"][kind])]
            summary[f"{name} {kind}"] = {"median_ms": round(statistics.median(times[name][kind]), 1),
                                         "vs_official": round(statistics.median(ratios), 3),
                                         "rounds_ms": [round(t, 1) for t in times[name][kind]]}  # fmt: skip
    result = {"meta": {**run_metadata(), "args": {**vars(args), "official": str(args.official)},
                       "wall_s": round(time.time() - t0, 1), "config": MICRO},
              "max_abs_logit_diff": diff, "summary": summary}  # fmt: skip
    if args.profile:
        result["profile"] = {name: profile(models[name], x, y, args.profile) for name in ("ours", "official")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "flatten_official.json", result)
    for k, v in summary.items():
        print(f"{k}: {v['median_ms']} ms, {v['vs_official']}x official")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
