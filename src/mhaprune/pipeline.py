"""The whole pipeline for scripts and the CLI: calibrate → init → search → convert → fine-tune (KD) → evaluate.

This module wires :mod:`mhaprune.pruning` (which knows nothing of training) to :mod:`mhaprune.train`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .cost import count_macs
from .pruning import Plan, PruneConfig, Pruner
from .pruning.oneshot import rescale_outputs
from .train import Callback, ClassificationLoss, DistillationLoss, TrainConfig, Trainer, evaluate

_logger = logging.getLogger(__name__)


class PruningCallback(Callback):
    """Adds the MACs regulariser to the loss and drives :meth:`Pruner.step`; its state resumes with the run."""

    def __init__(self, pruner: Pruner):
        self.pruner = pruner

    def extra_loss(self, trainer):
        return self.pruner.regularization_loss()

    def on_step_end(self, trainer):
        self.pruner.step()
        if trainer.step % trainer.cfg.log_every == 0:
            trainer._log(
                {
                    "step": trainer.step,
                    "search_macs": self.pruner.current_macs(),
                    "target_macs": self.pruner.target,
                    "frozen": self.pruner.frozen,
                }
            )

    def state_dict(self):
        return self.pruner.state_dict()

    def load_state_dict(self, state):
        self.pruner.load_state_dict(state)


def calibration_batch(dataset, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images drawn (seeded) from ``dataset`` (use the training split)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    return torch.stack([dataset[int(i)][0] for i in idx])


@torch.no_grad()
def measure_latency(
    model: nn.Module, input_size, batch: int = 32, repeats: int = 10, warmup: int = 3, device: str = "cpu"
) -> float:
    """Median seconds per forward of a ``batch`` (eager, fp32)."""
    model = model.eval().to(device)
    x = torch.randn(batch, *input_size, device=device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@dataclass
class PruneResult:
    model: nn.Module
    plan: Plan
    report: dict = field(default_factory=dict)


def _with_teacher(cfg: TrainConfig, teacher: nn.Module | None, kd_alpha: float) -> nn.Module:
    base = ClassificationLoss(cfg.label_smoothing)
    return DistillationLoss(base, teacher, alpha=kd_alpha) if teacher is not None and kd_alpha > 0 else base


def _run_stage(
    name: str, model, train_set, val_set, cfg: TrainConfig, out: Path | None, resume: bool, loss, **trainer_kwargs
) -> Trainer:
    """Train one stage in ``out/name`` (checkpoints there), continuing from its checkpoint when ``resume``."""
    stage_dir = out / name if out else None
    trainer = Trainer(model, train_set, val_set, cfg, out_dir=stage_dir, loss=loss, **trainer_kwargs)
    can_resume = resume and stage_dir is not None and (stage_dir / "checkpoint.pt").exists()
    trainer.fit(resume=stage_dir if can_resume else None)
    return trainer


def prune(
    model: nn.Module,
    cfg: PruneConfig,
    train_set,
    val_set,
    search: TrainConfig,
    finetune: TrainConfig,
    test_set=None,
    out_dir: str | Path | None = None,
    calib_size: int = 64,
    kd_alpha: float = 0.5,
    teacher: nn.Module | None = None,
    resume: bool = False,
) -> PruneResult:
    """Prune ``model`` (in place) to ``cfg.target_macs`` and fine-tune it with distillation from the dense model.

    Args:
        model: a dense model built by :func:`mhaprune.create_model` (or loaded from a folder).
        cfg: pruning options.
        train_set / val_set / test_set: datasets of ``(image, label)``; the test set is only reported.
        search: recipe of the search stage (its ``epochs``/``max_steps`` is the search budget; 0 = one-shot).
        finetune: recipe of the fine-tune stage (0 epochs = none).
        out_dir: run folder; the stages checkpoint into ``search/`` and ``finetune/`` there.
        calib_size: images of the calibration batch (similarity weights, init).
        kd_alpha: weight of the distillation term (0: hard labels only).
        teacher: KD teacher (default: a frozen copy of the dense model).
        resume: continue the stages from their checkpoints in ``out_dir``.

    Returns:
        the pruned plain model, its plan and a report (MACs, params, accuracies, timings).
    """
    device = search.device
    out = Path(out_dir) if out_dir is not None else None
    input_size = tuple(model.input_size)
    dense_report = count_macs(model, input_size)
    dense = copy.deepcopy(model).eval() if teacher is None or cfg.rescale else None
    teacher = teacher if teacher is not None else dense
    report: dict = {
        "dense": {"macs": dense_report.total, "params": dense_report.params, "macs_by_kind": dense_report.by_kind}
    }
    t0 = time.time()
    calib = calibration_batch(train_set, calib_size, cfg.seed)
    pruner = Pruner(model.to(device), cfg, calib.to(device))
    pruner.prepare()
    report["calibrate_s"] = round(time.time() - t0, 2)

    t1 = time.time()
    search_steps = 0
    if search.epochs > 0 or search.max_steps:
        trainer = _run_stage(
            "search",
            model,
            train_set,
            None,
            search,
            out,
            resume,
            _with_teacher(search, teacher, kd_alpha),
            callbacks=[PruningCallback(pruner)],
            param_groups=lambda m: pruner.param_groups(m, search.weight_decay, search.lr),
        )
        search_steps = trainer.step
    report["search_s"] = round(time.time() - t1, 2)
    report["search_steps"] = search_steps
    report["target_macs"] = pruner.target
    plan = pruner.plan()
    pruned = pruner.convert(plan)
    if cfg.rescale:
        t3 = time.time()
        fits = rescale_outputs(pruned, dense, calib.to(device), batch_size=search.batch_size)
        report["rescale"] = {
            "layers": len(fits),
            "applied": sum(f["applied"] for f in fits.values()),
            "s": round(time.time() - t3, 2),
        }
    return _finish(pruned, plan, teacher, report, train_set, val_set, test_set, finetune, out, resume, kd_alpha)


def _finish(pruned, plan, teacher, report, train_set, val_set, test_set, finetune, out, resume, kd_alpha):
    """Evaluate right after pruning, fine-tune with distillation, measure and evaluate."""
    device = finetune.device
    input_size = tuple(pruned.input_size)
    report["after_prune"] = evaluate(pruned, val_set, device=device) if val_set is not None else {}
    t2 = time.time()
    if finetune.epochs > 0 or finetune.max_steps:
        trainer = _run_stage(
            "finetune", pruned, train_set, val_set, finetune, out, resume, _with_teacher(finetune, teacher, kd_alpha)
        )
        pruned = trainer.eval_model()
    report["finetune_s"] = round(time.time() - t2, 2)
    r = count_macs(pruned, input_size)
    report["pruned"] = {"macs": r.total, "params": r.params, "macs_by_kind": r.by_kind}
    if val_set is not None:
        report["val"] = {"pruned": evaluate(pruned, val_set, device=device)}
    if test_set is not None:
        report["test"] = {
            "dense": evaluate(teacher, test_set, device=device),
            "pruned": evaluate(pruned, test_set, device=device),
        }
    return PruneResult(pruned, plan, report)
