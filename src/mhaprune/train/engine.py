"""The one training engine: plain training, pruning search and fine-tuning all run through :class:`Trainer`.

AdamW with a warm-up + cosine schedule, label smoothing, optional mixup/cutmix, gradient clipping, EMA and AMP (CUDA);
loss objects and callbacks compose the variants. Checkpoints (every ``save_every`` steps and at the end of each
epoch) are written atomically and hold only plain containers and tensors, so they load with
``torch.load(weights_only=True)``; ``resume`` continues exactly (model, optimizer, scheduler, RNG, data order, step).
Under ``torchrun`` the engine runs distributed data parallel with the same global batch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..adapters import no_weight_decay
from ..utils import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    checksum_path,
    configure_deterministic_mode,
    run_metadata,
    seed_all,
    verify_checksum,
    write_error,
)
from ..utils import distributed as du
from ..utils.seed import rng_state, set_rng_state
from .losses import ClassificationLoss, as_logits, call, mix_batch
from .objectives import Objective

_logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class TrainingError(RuntimeError):
    """Training cannot go on (diverged loss, unusable checkpoint)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (a batch scheduler, a preemptible machine) stopped a run between two steps, after
    writing a checkpoint. ``signum`` is the signal that asked for the stop."""

    def __init__(self, step: int, checkpoint: Path | None, signum: int = signal.SIGINT):
        self.step, self.checkpoint, self.signum = step, checkpoint, int(signum)
        where = f"checkpoint written to {checkpoint}" if checkpoint else "no run folder, nothing saved"
        name = signal.Signals(self.signum).name
        super().__init__(f"{name} received: interrupted at step {step}; {where}")


def read_checkpoint(path: str | Path) -> dict:
    """Load a training checkpoint without running code (``weights_only=True``); clear errors otherwise."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"no checkpoint at {path}; start without --resume or point it at a run folder")
    if verify_checksum(path) is False:
        raise TrainingError(
            f"checkpoint {path} is corrupt or truncated: its SHA-256 does not match {checksum_path(path).name} "
            f"(written with it). Restore it from a copy, or start the run again (--overwrite instead of --resume)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unpickling/format failure as a user error
        raise TrainingError(f"checkpoint {path} cannot be loaded safely ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise TrainingError(f"{path} is not an mhaprune training checkpoint (no model/optimizer/step entries)")
    return state


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _stop_on_sigint():
    """Turn the first SIGINT or SIGTERM into a request to stop at the next step boundary (a consistent checkpoint);
    a second one aborts at once. Outside the main thread signals cannot be caught and they behave as usual."""
    flag = {"stop": False, "signum": signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"], flag["signum"] = True, signum
        _logger.warning("%s received: stopping after this step (send it again to abort at once)",
                        signal.Signals(signum).name)  # fmt: skip

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _opt(default, **cli):
    """A recipe field with how the CLI shows it (``metavar``; ``cli=False``: no flag)."""
    return field(default=default, metadata=cli)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe of one training stage (plain training, the search, the fine-tune). Frozen and validated
    on construction; :meth:`validate` adds the checks that need the data (batch vs training set, processes).
    The CLI's flags, defaults and help come from these fields and this docstring.

    Args:
        epochs: epochs, may be fractional.
        batch_size: global batch size (over all processes).
        lr: peak learning rate (AdamW).
        min_lr: learning rate at the end of the cosine schedule.
        weight_decay: AdamW weight decay (none on norms, biases, tokens).
        warmup_epochs: linear warm-up, in epochs.
        label_smoothing: label smoothing of the classification loss.
        mixup: mixup alpha (0 = off).
        cutmix: cutmix alpha (0 = off).
        clip_grad: gradient-norm clipping (0 = off).
        ema_decay: EMA of the weights with this decay (e.g. 0.999; default off).
        amp: mixed precision on CUDA.
        seed: seed of every random draw (data order, init, augmentation).
        deterministic: deterministic kernels (slower; bitwise-repeatable runs).
        save_every: checkpoint interval in steps (0 = only at the end of epochs).
        log_every: log a metrics line every this many steps.
        eval_every_epoch: evaluate on the validation split after every epoch.
        max_steps: stop after this many optimizer steps.
        num_workers: data-loader worker processes.
        device: cpu, cuda or cuda:N.
        progress: progress bar (off anyway when not on a TTY).
        extra: free-form entries recorded with the run.
    """

    epochs: float = _opt(10.0, metavar="E")
    batch_size: int = _opt(128, metavar="N")
    lr: float = _opt(1e-3, metavar="LR")
    min_lr: float = _opt(1e-5, metavar="LR")
    weight_decay: float = _opt(0.05, metavar="WD")
    warmup_epochs: float = _opt(0.5, metavar="E")
    label_smoothing: float = _opt(0.1, metavar="S")
    mixup: float = _opt(0.0, metavar="ALPHA")
    cutmix: float = _opt(0.0, metavar="ALPHA")
    clip_grad: float | None = _opt(5.0, metavar="NORM")
    ema_decay: float | None = _opt(None, metavar="D")
    amp: bool = _opt(True, cli=False)
    seed: int = _opt(0, metavar="S")
    deterministic: bool = False
    save_every: int = _opt(500, metavar="STEPS")
    log_every: int = _opt(50, cli=False)
    eval_every_epoch: bool = _opt(True, cli=False)
    max_steps: int | None = _opt(None, metavar="N")
    num_workers: int = _opt(0, cli=False)
    device: str = _opt("cpu", cli=False)
    progress: bool = _opt(True, cli=False)
    extra: dict = field(default_factory=dict, metadata={"cli": False})

    def __post_init__(self):
        problems = []
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(
                f"batch size {self.batch_size} must be a positive multiple of the number of processes; "
                f"use e.g. --batch-size 128"
            )
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        for name in ("epochs", "min_lr", "warmup_epochs", "mixup", "cutmix", "weight_decay", "save_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            problems.append(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.max_steps is not None and self.max_steps < 0:
            problems.append(f"max_steps must be >= 0, got {self.max_steps}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def runs(self) -> bool:
        """Whether the stage takes any step (``epochs > 0`` or ``max_steps`` set)."""
        return self.epochs > 0 or bool(self.max_steps)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` (validated like any new config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> TrainConfig:
        """A recipe from a mapping of field values (``overrides`` win); unknown keys are an error."""
        d = {k.replace("-", "_"): v for k, v in {**d, **overrides}.items()}
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig option(s): {', '.join(sorted(unknown))}; known: "
                f"{', '.join(sorted(cls.__dataclass_fields__))}"
            )
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        """A recipe from a YAML file of field values (e.g. ``configs/benchmark-stage.yaml``)."""
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"recipe {path} must hold a mapping of TrainConfig field: value")
        return cls.from_dict(data, **overrides)

    def validate(self, n_train: int, world: int = 1) -> None:
        """The checks that need the data: the batch fits the processes and the training set; the stage has steps."""
        if self.batch_size < world or self.batch_size % world:
            raise ValueError(
                f"batch size {self.batch_size} must be a positive multiple of the number of processes ({world}); "
                f"use e.g. --batch-size {world * max(1, self.batch_size // world or 16)}"
            )
        if self.batch_size > n_train:
            raise ValueError(
                f"batch size {self.batch_size} is larger than the training set ({n_train} images); "
                f"use --batch-size {n_train} or less"
            )
        if not self.runs:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")


class ModelEma:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)
            else:
                e.copy_(m)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batches(n: int, global_batch: int, epoch: int, seed: int, rank: int, world: int, drop_last: bool = True):
    """Index batches of one epoch: a seeded permutation, identical on every rank, sliced per rank."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    nb = n // global_batch if drop_last else math.ceil(n / global_batch)
    local = global_batch // world
    return [perm[b * global_batch + rank * local : b * global_batch + (rank + 1) * local].tolist() for b in range(nb)]


def collate_of(dataset):
    """The dataset's own ``collate`` (text: dynamic padding), also through ``torch.utils.data.Subset``; ``None``:
    the default collation."""
    while dataset is not None:
        if hasattr(dataset, "collate"):
            return dataset.collate
        dataset = getattr(dataset, "dataset", None)
    return None


def to_device(x, device, non_blocking: bool = False):
    """A tensor batch, or a dict of tensors (text inputs), on ``device``."""
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in x.items()}
    return x.to(device, non_blocking=non_blocking)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, batch_size: int = 256, device: str = "cpu", progress: bool = False, desc: str = "eval"
) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over ``dataset``; sharded and reduced under DDP."""
    from tqdm import tqdm

    model.eval()
    rank, world = du.rank(), (torch.distributed.get_world_size() if du.is_distributed() else 1)
    idx = list(range(rank, len(dataset), world))
    loader = DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_of(dataset))  # fmt: skip
    stats = torch.zeros(4, dtype=torch.float64)  # correct1, correct5, loss_sum, count
    for x, y in tqdm(loader, desc=desc, disable=not (progress and sys.stderr.isatty()), leave=False):
        x, y = to_device(x, device), y.to(device)
        logits = as_logits(call(model, x)).float()
        k = min(5, logits.shape[-1])
        topk = logits.topk(k, dim=-1).indices
        stats[0] += (topk[:, 0] == y).sum().item()
        stats[1] += (topk == y[:, None]).any(dim=-1).sum().item()
        stats[2] += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        stats[3] += len(y)
    stats = du.all_reduce_sum(stats)
    n = max(stats[3].item(), 1)
    return {
        "top1": 100 * stats[0].item() / n,
        "top5": 100 * stats[1].item() / n,
        "loss": stats[2].item() / n,
        "count": int(stats[3].item()),
    }


class Trainer:
    """Train ``model`` on ``train_set`` with ``loss`` (default: label-smoothed CE) and ``callbacks``.

    Args:
        model: the model; moved to ``cfg.device``. Wrapped in DDP when launched by torchrun.
        train_set: a dataset of ``(input, label)``; one with a ``collate`` method (text) batches through it.
        val_set: evaluated after every epoch (``None``: skip).
        cfg: the recipe.
        out_dir: run folder for checkpoints, ``metrics.jsonl`` and ``run.json`` (``None``: nothing written).
        loss: an :class:`~mhaprune.train.objectives.Objective` (``loss(model, inputs, target)``), or a loss object
            ``loss(logits, target, inputs)``.
        callbacks: :class:`Callback` objects.
        param_groups: optional ``fn(model) -> list of param groups`` (e.g. indicators with their own LR).
        num_classes: for mixup/cutmix targets.
    """

    def __init__(
        self,
        model,
        train_set,
        val_set,
        cfg: TrainConfig,
        out_dir=None,
        loss=None,
        callbacks=(),
        param_groups=None,
        num_classes: int | None = None,
    ):
        self.cfg = cfg
        self.rank, self.world, _ = du.init_distributed(cfg.device)
        cfg.validate(len(train_set), self.world)
        if cfg.deterministic:
            configure_deterministic_mode()
        seed_all(cfg.seed, self.rank)
        self.device = cfg.device
        self.model = model.to(self.device)
        self.train_set, self.val_set = train_set, val_set
        self.loss = (loss or ClassificationLoss(cfg.label_smoothing)).to(self.device)
        self.callbacks = list(callbacks)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.num_classes = num_classes or getattr(model, "num_classes", None)
        self.steps_per_epoch = len(train_set) // cfg.batch_size
        total = math.ceil(cfg.epochs * self.steps_per_epoch) if cfg.epochs > 0 else cfg.max_steps
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        groups = param_groups(self.model) if param_groups else self._default_groups()
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        ratio = cfg.min_lr / cfg.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_lambda(s, warmup, self.total_steps, ratio)
        )
        self.use_amp = cfg.amp and str(self.device).startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEma(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.step = 0
        self.history: list[dict] = []
        self._ddp = None

    # ----------------------------------------------------------------- setup
    def _default_groups(self):
        plain = no_weight_decay(self.model)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if name in plain else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def train_model(self) -> nn.Module:
        if self.world > 1 and self._ddp is None:
            self._ddp = nn.parallel.DistributedDataParallel(self.model)
        return self._ddp if self.world > 1 else self.model

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "step": self.step,
            "rng": rng_state(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "config": json.loads(json.dumps(asdict(self.cfg), default=str)),
            "history": self.history,
        }

    def save_checkpoint(self) -> Path | None:
        du.barrier()
        if not (self.is_main and self.out_dir):
            return None
        path = self.out_dir / CHECKPOINT
        atomic_torch_save(self.state_dict(), path)
        return path

    def load_checkpoint(self, path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT
        state = read_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        for cb, s in zip(self.callbacks, state.get("callbacks", [])):
            cb.load_state_dict(s)
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        set_rng_state(state["rng"])
        self._drop_metrics_after(self.step)
        _logger.info("resumed from %s at step %d", path, self.step)

    # ---------------------------------------------------------------- logging
    def _log(self, record: dict) -> None:
        if "val_top1" in record:
            self.history.append(record)
        if self.is_main and self.out_dir:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                with open(self.out_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:  # a full disk: one clear line; the last checkpoint is intact
                raise write_error(self.out_dir / "metrics.jsonl", e) from e

    def _drop_metrics_after(self, step: int) -> None:
        """On resume, forget the metrics logged after the checkpoint (those steps are run again)."""
        path = self.out_dir / "metrics.jsonl" if self.is_main and self.out_dir else None
        if path is None or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if rec.get("step", 0) <= step:
                kept.append(line)
        atomic_write_bytes(path, "".join(k + "\n" for k in kept).encode())

    def write_run_info(self, extra: dict | None = None) -> None:
        if self.is_main and self.out_dir:
            info = {"train_config": asdict(self.cfg), "world_size": self.world, **run_metadata(), **(extra or {})}
            atomic_write_json(self.out_dir / "run.json", json.loads(json.dumps(info, default=str)))

    # ------------------------------------------------------------------- loop
    def _loader(self, epoch: int, start_batch: int):
        batches = _batches(len(self.train_set), self.cfg.batch_size, epoch, self.cfg.seed, self.rank, self.world)
        return DataLoader(
            self.train_set,
            batch_sampler=batches[start_batch:],
            collate_fn=collate_of(self.train_set),  # text: dynamic padding
            num_workers=self.cfg.num_workers,
            generator=torch.Generator().manual_seed(epoch),
        )

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        cfg = self.cfg
        model = self.train_model
        model.train()
        self.loss.train()
        x, y = to_device(x, self.device, True), y.to(self.device, non_blocking=True)
        target = y
        if (cfg.mixup > 0 or cfg.cutmix > 0) and self.num_classes and torch.is_tensor(x):
            x, target = mix_batch(x, y, self.num_classes, cfg.mixup, cfg.cutmix, cfg.label_smoothing)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_amp):
            if isinstance(self.loss, Objective):  # objectives run the model themselves
                loss = self.loss(model, x, target)
            else:
                loss = self.loss(as_logits(call(model, x)), target, x)
            for cb in self.callbacks:
                extra = cb.extra_loss(self)
                if extra is not None:
                    loss = loss + extra
        if not torch.isfinite(loss):
            last = self.out_dir / CHECKPOINT if self.out_dir and (self.out_dir / CHECKPOINT).exists() else None
            raise TrainingError(
                f"loss is {loss.item()} at step {self.step}; training stopped. Last good checkpoint: "
                f"{last or 'none'}. Lower --lr or enable --clip-grad, then --resume."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return loss.item()

    def fit(self, resume: str | Path | None = None) -> dict:
        """Run to ``total_steps``; returns the last validation metrics (or ``{}``)."""
        from tqdm import tqdm

        if resume:
            self.load_checkpoint(resume)
        self.write_run_info()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        show = self.cfg.progress and self.is_main and sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not show, desc="train", dynamic_ncols=True)
        with _stop_on_sigint() as interrupt:
            try:
                metrics = self._loop(bar, interrupt)
            finally:
                bar.close()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return metrics

    def _loop(self, bar, interrupt: dict) -> dict:
        """Steps until ``total_steps``; between two steps, a requested stop checkpoints and raises."""
        t0, metrics, running = time.time(), {}, []
        while self.step < self.total_steps:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            for x, y in self._loader(epoch, start):
                running.append(self._train_step(x, y))
                for cb in self.callbacks:
                    cb.on_step_end(self)
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                    rec = {
                        "step": self.step,
                        "epoch": self.step / self.steps_per_epoch,
                        "loss": sum(running) / len(running),
                        "lr": self.scheduler.get_last_lr()[0],
                        "elapsed_s": round(time.time() - t0, 2),
                    }
                    running = []
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
                    self._log(rec)
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if self.step == self.total_steps or end_of_epoch:
                    if self.val_set is not None and (self.cfg.eval_every_epoch or self.step == self.total_steps):
                        m = evaluate(self.eval_model(), self.val_set, device=self.device)
                        metrics = {
                            "step": self.step,
                            "epoch": self.step / self.steps_per_epoch,
                            "val_top1": m["top1"],
                            "val_top5": m["top5"],
                            "val_loss": m["loss"],
                        }
                        self._log(metrics)
                        _logger.info("step %d: val top-1 %.2f%%", self.step, m["top1"])
                    for cb in self.callbacks:
                        cb.on_epoch_end(self, metrics)
                    self.save_checkpoint()
                elif self.cfg.save_every and self.step % self.cfg.save_every == 0:
                    self.save_checkpoint()
                if self._stop_requested(interrupt):
                    raise Interrupted(self.step, self.save_checkpoint(), interrupt["signum"])
                if self.step >= self.total_steps:
                    break
        return metrics

    def _stop_requested(self, interrupt: dict) -> bool:
        if self.world == 1:
            return interrupt["stop"]
        flag = torch.tensor([float(interrupt["stop"])], device=self.device)
        return bool(du.all_reduce_sum(flag).item() > 0)  # every rank stops at the same step
