"""Accuracy vs MACs: ours against the baselines, at budgets that separate them, before and after fine-tuning.

    python -m benchmarks.accuracy --quick   # flatten_swin_micro, budgets 0.5/0.25, ours vs uniform-L1 vs random, 1 seed
    python -m benchmarks.accuracy           # budgets 0.7/0.5/0.35/0.25, all methods, 3 seeds (GPU-sized)

Every method starts from the same bundled dense reference, uses the same KD teacher (the dense model), data and
fine-tune recipe; ours adds its search (``--search-epochs``). Stages: right after pruning (no fine-tune), after a short
fine-tune (``--short-epochs``, its own schedule) and after the full fine-tune (``--full-epochs``); methods that do not
train while they prune also get ``full-ft-equal``, fine-tuned for ``--search-epochs`` + ``--full-epochs`` (as long
as ours trains in all), so that no method wins by training longer. ``--ft-lr`` sets the fine-tunes' learning rate
apart from the search's (default 1e-4, chosen on validation: at the search's 5e-4 the dense control lost 0.26 pp;
``benchmarks/results/table_b_recipe``). A control row "dense" fine-tunes the dense model for the full budget.
Accuracies are top-1 on the 5,000-image validation split (used for every decision) and on the 10,000-image test
split (reported only).

Methods: ``ours`` (the full method, library defaults), ``ours-paper`` (the full method with the paper's starting
choices: squared regulariser, attention-difference init on linear-attention Q/K only), ``unconstrained`` (ours
without the equal-per-head adjustment: heads padded to the widest for a deployable model, as reported in MACs),
``l1`` (uniform keep ratio, L1 channel choice), ``random`` (random channels, equal per head), ``ablate-similarity``
/ ``ablate-reweight`` / ``ablate-attn-init`` (ours with one part switched off), ``tp-magnitude`` / ``tp-taylor``
(Torch-Pruning head-dimension pruning; not for FLatten models, see ``benchmarks/torch_pruning_baseline.py``),
``oneshot`` (Kwon et al.-style post-training pruning: Fisher importance from ``--calib-size`` labelled training
images, greedy mask search under the budget, least-squares mask rescaling; ``mhaprune.pruning.oneshot``).

Rows already in ``--out``/accuracy.json are kept and their (method, budget, seed) cells skipped, so a run can be
extended (more methods, seeds) or resumed; every invocation is recorded under ``runs``. Each row carries the wall
time of its pruning step (search or one-shot) and of its fine-tune, for the cost table.

Writes ``accuracy.csv`` / ``accuracy.json`` (machine, versions, git hash, command) and ``accuracy.png`` (one panel
per stage) to ``--out``; rows are appended as runs finish, so an interrupted benchmark keeps what it measured.
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
from mhaprune.data import build_data
from mhaprune.export import load_pruned, save_pruned
from mhaprune.methods import get_method, list_methods
from mhaprune.pipeline import prune
from mhaprune.pruning import PruneConfig
from mhaprune.train import ClassificationLoss, DistillationLoss, Trainer, evaluate
from mhaprune.utils import atomic_write_json, run_metadata, seed_all

from ._io import cells, first_n, parse_method, recipe, require, stage_panels, trains_while_pruning, write_csv
from .torch_pruning_baseline import tp_prune_to

# every registered method (mhaprune.methods), plus Torch-Pruning behind its optional dependency
METHODS = (*list_methods(), "tp-magnitude", "tp-taylor")


def _cut(method: str, model, budget: float, seed: int, splits, args):
    """The pruned model right after pruning and its extra report fields, from the method as the CLI runs it: the
    baselines cut the dense weights; ours (and its variants) returns the search-trained weights with the reweight
    folded in."""
    name, options = parse_method(method)
    info = get_method(name)
    search = recipe(args.search_epochs, args) if info.trains else None
    calib = 64 if info.trains else args.calib_size
    cfg = PruneConfig(target_macs=budget, seed=seed, **options)
    res = prune(copy.deepcopy(model), splits.train, method=name, config=cfg, search=search, calib_size=calib)
    extra = {"prune_s": round(res.report.prune_s, 1)}
    if info.trains:
        extra.update(prune_s=round(res.report.search_s, 1), search_steps=res.report.search_steps)
    if info.needs_labels:
        extra["calibration_samples"] = calib
    return res.model, extra


def _finetune(model, teacher, epochs: float, splits, args):
    if epochs <= 0:
        return model
    loss = DistillationLoss(ClassificationLoss(0.1), teacher, alpha=args.kd_alpha)
    trainer = Trainer(model, splits.train, None, recipe(epochs, args, lr=args.ft_lr), loss=loss)
    trainer.fit()
    return trainer.eval_model()


def _scores(model, splits, args) -> dict:
    v = evaluate(model, splits.val, device=args.device)["top1"]
    t = evaluate(model, splits.test, device=args.device)["top1"]
    return {"val_top1": v, "test_top1": t}


def _last_stage(method: str) -> str:
    return "full-ft" if method == "dense" or trains_while_pruning(method) else "full-ft-equal"


def _cut_folder(method: str, budget: float, seed: int, args) -> Path:
    return Path(args.out) / "cuts" / f"{method}@{budget:g}#{seed}"


def _cut_or_load(method, budget, seed, dense, splits, args) -> tuple[torch.nn.Module, dict, bool]:
    """The pruned model right after pruning, its extra report fields, and whether it was pruned now. A cut that
    carries a plan (every registered method's) is kept under ``--out``/cuts/, so that a stage interrupted later
    resumes from the same weights instead of searching again; Torch-Pruning's cuts are recomputed (deterministic,
    seconds)."""
    folder = _cut_folder(method, budget, seed, args)
    if (folder / "model.safetensors").exists():
        extra = json.loads((folder / "config.json").read_text()).get("benchmark", {})
        return load_pruned(folder, args.device).eval(), extra, False
    seed_all(seed)
    if method == "dense":
        return copy.deepcopy(dense), {}, True
    if method.startswith("tp-"):  # Torch-Pruning: magnitude or Taylor importance, Q/K/V head dims + MLP hidden
        calib = torch.stack([splits.train[i][0] for i in range(64)])
        return tp_prune_to(dense, budget, method.removeprefix("tp-"), calib), {}, True
    cut, extra = _cut(method, dense, budget, seed, splits, args)
    save_pruned(cut, folder, extra={"benchmark": extra})
    return cut, extra, True


def _cut_is_lost(method: str, budget: float, seed: int, args) -> bool:
    """Whether a registered method's cut should be under ``--out``/cuts/ but is not. The dense control and
    Torch-Pruning's cuts are recomputed exactly; a search or a calibration run again may give another plan."""
    if method == "dense" or method.startswith("tp-"):
        return False
    return not (_cut_folder(method, budget, seed, args) / "model.safetensors").exists()


def _stages(method: str, args) -> list[tuple[str, float]]:
    """The stages after the cut, with their fine-tune epochs (``no-ft`` is measured on the cut itself)."""
    stages = [("short-ft", args.short_epochs), ("full-ft", args.full_epochs)]
    if method == "dense":
        return stages[1:]
    if not trains_while_pruning(method):  # equal training: as many epochs as ours' search and full fine-tune together
        stages.append(("full-ft-equal", args.search_epochs + args.full_epochs))
    return stages


def run_one(method, budget, seed, dense, teacher, splits, args, write_row, done_stages=frozenset()):
    """Every stage of one (method, budget, seed) cell that is not in ``done_stages``, each written as it ends."""
    t0 = time.time()
    cut, extra, fresh = _cut_or_load(method, budget, seed, dense, splits, args)
    macs = mhaprune.count_macs(cut).total
    base = {"method": method, "budget": budget, "seed": seed, "macs": macs, **extra}
    if "no-ft" not in done_stages:  # for the dense control: the reference itself, what it must stay within 0.1 pp of
        write_row({**base, "stage": "no-ft", "finetune_epochs": 0.0, **_scores(cut, splits, args)})
    for stage, epochs in _stages(method, args):
        if stage in done_stages:
            continue
        seed_all(seed)
        t1 = time.time()
        tuned = _finetune(copy.deepcopy(cut), teacher, epochs, splits, args)
        ft = {"finetune_s": round(time.time() - t1, 1)}
        write_row({**base, "stage": stage, "finetune_epochs": epochs, **ft, **_scores(tuned, splits, args)})
    print(f"{method} @ {budget:.2f} seed {seed}: {time.time() - t0:.0f} s{'' if fresh else ' (cut resumed)'}",
          flush=True)  # fmt: skip


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (method, budget, stage), rs in cells(rows):
        vals = [r["test_top1"] for r in rs]
        out.append(
            {
                "method": method,
                "budget": budget,
                "stage": stage,
                "seeds": len(rs),
                "macs": rs[0]["macs"],
                "val_top1_mean": statistics.mean(r["val_top1"] for r in rs),
                "test_top1_mean": statistics.mean(vals),
                "test_top1_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            }
        )
    return out


def plot(summary: list[dict], dense_macs: int, path: Path) -> None:
    control = [r["test_top1_mean"] for r in summary if r["method"] == "dense" and r["stage"] == "full-ft"]
    stage_panels(summary, ("no-ft", "short-ft", "full-ft", "full-ft-equal"), path,
                 lambda r: 100 * r["macs"] / dense_macs, "test_top1", "MACs (% of dense)",
                 "test top-1 (%, mean ± std over seeds)", control[0] if control else None)  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default="flatten_swin_micro", help="a model with bundled weights")
    p.add_argument("--budgets", type=float, nargs="+")
    p.add_argument("--methods", nargs="+", help=f"of {', '.join((*METHODS, 'dense'))}; a registered method may carry "
                   "PruneConfig overrides, ours[weight_lr_scale=0.2] (validation sweeps)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--search-epochs", type=float, default=0.35)
    p.add_argument("--short-epochs", type=float, default=0.5)
    p.add_argument("--full-epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, help="default: configs/benchmark-stage.yaml")
    p.add_argument("--lr", type=float, help="default: configs/benchmark-stage.yaml")
    p.add_argument(
        "--ft-lr",
        type=float,
        default=1e-4,
        help="learning rate of the fine-tunes (the search keeps --lr); 1e-4 chosen on validation: the dense control "
        "keeps the reference's accuracy (benchmarks/results/table_b_recipe)",
    )
    p.add_argument("--kd-alpha", type=float, default=0.5)
    p.add_argument("--calib-size", type=int, default=256, help="labelled calibration images of the one-shot baseline")
    p.add_argument("--train-subset", type=int, default=None, help="use only this many training images (smoke tests)")
    p.add_argument("--eval-subset", type=int, default=None, help="evaluate on only this many images (smoke tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="benchmarks/results/accuracy")
    args = p.parse_args(argv)
    require("matplotlib")  # the plots
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = args.budgets or ([0.5, 0.25] if args.quick else [0.7, 0.5, 0.35, 0.25])
    methods = args.methods or (["ours", "l1", "random", "dense"] if args.quick else [*METHODS, "dense"])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    for method in methods:  # an unknown method or option stops here, before any work
        if parse_method(method)[0] not in (*METHODS, "dense"):
            raise SystemExit(f"error: unknown method {method!r}; choose from {', '.join((*METHODS, 'dense'))}")
    dense = mhaprune.create_model(args.model, pretrained=True).to(args.device).eval()
    teacher = copy.deepcopy(dense)  # frozen by the distillation loss; ``dense`` stays trainable for its copies
    splits = build_data("fashion-mnist", dense.input_size, augment=False)
    for ds, n in ((splits.train, args.train_subset), (splits.val, args.eval_subset), (splits.test, args.eval_subset)):
        first_n(ds, n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "accuracy.json").read_text()) if (out / "accuracy.json").exists() else {}
    rows: list[dict] = old.get("rows", [])

    def key(method, budget, seed):
        return method, budget if method != "dense" else None, seed

    done: dict[tuple, set[str]] = {}  # the stages already measured, by (method, budget, seed)
    for r in rows:
        done.setdefault(key(r["method"], r["budget"], r["seed"]), set()).add(r["stage"])
    runs = old.get("runs") or ([old["meta"]] if "meta" in old else [])
    t0 = time.time()
    this_run = {**run_metadata(), "args": vars(args)}

    def write_row(row):
        rows.append(row)
        meta = {**this_run, "wall_s": round(time.time() - t0, 1)}
        dense_macs = mhaprune.count_macs(dense).total
        summary = summarise(rows)
        result = {"runs": [*runs, meta], "dense_macs": dense_macs, "rows": rows, "summary": summary}
        if old.get("notes"):
            result["notes"] = old["notes"]
        atomic_write_json(out / "accuracy.json", result)
        write_csv(out / "accuracy.csv", rows, ("method", "budget", "seed", "stage"))
        plot(summary, dense_macs, out / "accuracy.png")

    for seed in seeds:
        for budget in budgets:
            for method in methods:
                if method == "dense" and budget != budgets[0]:
                    continue
                stages = done.get(key(method, budget, seed), set())
                wanted = {"no-ft", *(s for s, _ in _stages(method, args))}
                if wanted <= stages:
                    print(f"{method} @ {budget:.2f} seed {seed}: already in {out}/accuracy.json, skipped")
                    continue
                if stages and _cut_is_lost(method, budget, seed, args):
                    # the rows measured so far belong to a cut that is gone (another machine, a cleaned --out): a
                    # new search is another plan, so the cell is measured again whole rather than mixing two plans
                    done_before = ", ".join(sorted(stages))
                    print(f"{method} @ {budget:.2f} seed {seed}: its saved cut is missing, so the stages measured "
                          f"before ({done_before}) are replaced: every stage runs on the new cut")  # fmt: skip
                    rows[:] = [r for r in rows if key(r["method"], r["budget"], r["seed"]) != key(method, budget, seed)]
                    stages = set()
                run_one(method, budget, seed, dense, teacher, splits, args, write_row, frozenset(stages))
    print(f"wrote {out}/accuracy.csv, accuracy.json, accuracy.png in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
