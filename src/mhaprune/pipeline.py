"""The whole pipeline for scripts and the CLI: a registered method prunes (calibrate → init → search → convert for
ours; one shot for the others) → KD fine-tune → evaluate → latency, returned with a typed :class:`PruneReport`.

This module wires :mod:`mhaprune.methods` (which choose what to keep) to :mod:`mhaprune.train` (which fine-tunes);
it is the same for every method.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .cost import call_model, count_macs, kernel_notes
from .cost.latency import repeat_rows, time_call
from .interop import adapt_if_foreign
from .methods import MethodContext, get_method, method_config
from .methods.ours import PruningCallback  # noqa: F401  (re-exported: the search callback for your own loops)
from .pruning import ConfigError, ModelCost, Plan, PruneConfig
from .train import (
    Objective,
    TrainConfig,
    Trainer,
    collate_of,
    compare_encoders,
    evaluate,
    get_objective,
    make_objective,
    to_device,
)
from .train.objectives import POOLINGS
from .utils.threads import torch_threads

_logger = logging.getLogger(__name__)

REPORT_VERSION = 1
EVAL_SPLITS = ("full", "val", "none")


@dataclass(frozen=True)
class PruneRecipe:
    """The stages around the method in ``mhaprune prune`` (the defaults are the embedded default run's).

    Args:
        method: the pruning method (listed at the end of ``mhaprune prune --help``).
        search_epochs: search budget of the methods that train, in epochs (0 = one-shot from the initialised
            indicators); one-shot methods take none.
        search_max_steps: stop the search after this many steps (default: its epochs decide).
        finetune_epochs: KD fine-tune epochs (default: 0.6 for the methods that train, 0 for one-shot methods,
            which then run without any training).
        finetune_max_steps: stop the fine-tune after this many steps (default: its epochs decide).
        kd_alpha: weight of the distillation term (0 = hard labels only).
        calib_size: calibration samples drawn (seeded) from the training split.
        latency_batch: batch of the dense-vs-pruned latency measurement (0 = not measured).
        eval_splits: what is evaluated: ``full`` (validation right after pruning and at the end, dense and pruned on
            test), ``val`` (validation only), ``none`` (nothing; a quick prune).
        eval_limit: evaluate on the first this many items of each split (default all).
        objective: what the stages minimise: classification (labels + KD; images' default), logits (distil the
            teacher's logits, no labels) or features (distil the pooled embedding and hidden states, no labels; text
            encoders' default).
        pooling: the features objective's pooled embedding: auto (mean over the tokens under the attention mask for
            text, the class token for images), mean or cls.
        feature_layers: hidden states the features objective matches, as indices into the Hugging Face model's
            hidden_states (comma-separated; -1 = the last layer, 0 = the embeddings), none, or auto (the last layer
            where the model gives hidden states, i.e. Hugging Face models; else the pooled embedding alone).
        hidden_weight: weight of the hidden-state term of the features objective.
    """

    method: str = field(default="ours", metadata={"metavar": "NAME"})
    search_epochs: float = field(default=0.35, metadata={"metavar": "E"})
    search_max_steps: int | None = field(default=None, metadata={"metavar": "N"})
    finetune_epochs: float | None = field(default=None, metadata={"metavar": "E"})
    finetune_max_steps: int | None = field(default=None, metadata={"metavar": "N"})
    kd_alpha: float = field(default=0.5, metadata={"metavar": "A"})
    calib_size: int = field(default=64, metadata={"metavar": "N"})
    latency_batch: int = field(default=32, metadata={"metavar": "N"})
    eval_splits: str = field(default="full", metadata={"choices": EVAL_SPLITS})
    eval_limit: int | None = field(default=None, metadata={"metavar": "N"})
    objective: str | None = field(default=None, metadata={"metavar": "NAME"})
    pooling: str = field(default="auto", metadata={"choices": POOLINGS})
    feature_layers: str = field(default="auto", metadata={"metavar": "I,J"})
    hidden_weight: float = field(default=1.0, metadata={"metavar": "W"})

    def __post_init__(self):
        if self.eval_splits not in EVAL_SPLITS:
            raise ConfigError(f"eval_splits must be one of {EVAL_SPLITS}, got {self.eval_splits!r}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"eval_limit must be >= 1, got {self.eval_limit}")
        for name in ("search_epochs", "kd_alpha", "latency_batch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.finetune_epochs is not None and self.finetune_epochs < 0:
            raise ConfigError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        for name in ("search_max_steps", "finetune_max_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.calib_size < 1:
            raise ConfigError(f"calib_size must be >= 1, got {self.calib_size}")
        get_method(self.method)  # an unknown name fails here, before any work
        if self.objective is not None:
            get_objective(self.objective)
        self.layers()
        if self.hidden_weight < 0:
            raise ConfigError(f"hidden_weight must be >= 0, got {self.hidden_weight}")

    def layers(self) -> tuple[int, ...] | None:
        """:attr:`feature_layers` as indices (``()`` for ``none``, ``None`` for ``auto``)."""
        text = str(self.feature_layers).strip().lower()
        if text == "auto":
            return None
        if text in ("none", ""):
            return ()
        try:
            return tuple(int(t) for t in text.split(","))
        except ValueError:
            raise ConfigError(
                f"feature_layers must be comma-separated layer indices (e.g. -1 or -2,-1) or none, got "
                f"{self.feature_layers!r}"
            ) from None

    def objective_for(self, text: bool) -> str:
        """The objective name: the recipe's, else ``features`` for text encoders and ``classification`` for images."""
        return self.objective or ("features" if text else "classification")

    def objective_options(self) -> dict:
        """The options of the recipe's objective (what :func:`mhaprune.prune` takes as ``objective_options``)."""
        return {"layers": self.layers(), "pooling": self.pooling, "hidden_weight": self.hidden_weight}

    def finetune_budget(self) -> float:
        """The fine-tune epochs this recipe means for its method."""
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        return 0.6 if get_method(self.method).trains else 0.0


# the optimisation recipe of the embedded default run's stages (search: the same without warm-up)
PRUNE_TRAIN = TrainConfig(lr=5e-4, warmup_epochs=0.05, save_every=100)


def calibration_batch(dataset, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images drawn (seeded) from ``dataset`` (use the training split)."""
    return labelled_calibration(dataset, n, seed)[0]


def labelled_calibration(dataset, n: int, seed: int = 0):
    """``n`` samples and their labels drawn (seeded) from ``dataset``; labels ``None`` when the items have none.

    A dataset with a ``collate`` method (text) gives a dict of tensors padded to its ``max_length``, so that the
    cost model counts MACs at that sequence length."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    items = [dataset[int(i)] for i in idx]
    collate = collate_of(dataset)
    if collate is not None:
        x, y = collate(items, pad_to=getattr(collate.__self__, "max_length", None))
        return x, (y if bool((y >= 0).all()) else None)
    x = torch.stack([it[0] for it in items])
    labelled = all(len(it) > 1 and it[1] is not None and int(it[1]) >= 0 for it in items)  # -1: no label
    return x, (torch.tensor([int(it[1]) for it in items]) if labelled else None)


@dataclass(frozen=True)
class LatencySpec:
    """How latency is measured: median seconds per forward of a random ``batch`` (eager, fp32) on ``device`` with
    ``threads`` CPU threads (``None``: torch's current setting), after ``warmup`` calls."""

    batch: int = 32
    repeats: int = 10
    warmup: int = 3
    device: str = "cpu"
    threads: int | None = None


@torch.no_grad()
def measure_latency(
    model: nn.Module, input_size, batch: int = 32, repeats: int = 10, warmup: int = 3, device: str = "cpu"
) -> float:
    """Median seconds per forward of a ``batch`` (eager, fp32): of random images of ``input_size`` ``(C, H, W)``,
    or of example inputs (a dict of tensors, e.g. a text batch), whose rows are repeated to ``batch``."""
    model = model.eval().to(device)
    if isinstance(input_size, dict):
        x = {k: v.to(device) for k, v in repeat_rows(input_size, batch).items()}
    else:
        x = torch.randn(batch, *input_size, device=device)
    return time_call(lambda: call_model(model, x), device, repeats, warmup) / 1e3


@dataclass
class LatencyReport:
    """Dense and pruned latency measured side by side in one process (see :class:`LatencySpec`)."""

    batch: int
    dense_s: float
    pruned_s: float
    speedup: float
    macs_ratio: float
    device: str = "cpu"
    threads: int | None = None


def compare_latency(dense: nn.Module, pruned: nn.Module, input_size, spec: LatencySpec) -> LatencyReport:
    """Dense vs pruned latency under ``spec`` (the dense model may be untrained: only its shapes matter)."""
    old = torch.get_num_threads()
    with torch_threads(spec.threads):
        kw = dict(batch=spec.batch, repeats=spec.repeats, warmup=spec.warmup, device=spec.device)
        d, p = measure_latency(dense, input_size, **kw), measure_latency(pruned, input_size, **kw)
    ratio = count_macs(dense, input_size).total / count_macs(pruned, input_size).total
    return LatencyReport(spec.batch, d, p, d / p, ratio, spec.device, spec.threads or old)


@dataclass
class CostSummary:
    macs: int
    params: int
    macs_by_kind: dict[str, int]


@dataclass
class PruneReport:
    """What one prune run measured. :meth:`to_dict` / :meth:`from_dict` give ``report.json``.

    ``after_prune``, ``val`` and ``test`` hold :func:`mhaprune.train.evaluate` results (``val``/``test``:
    ``{"dense": ..., "pruned": ...}`` where measured); times are wall seconds; ``method_info`` is what the method
    reported (e.g. its rescaling fits)."""

    method: str
    dense: CostSummary
    pruned: CostSummary
    target_macs: int
    objective: str = "classification"
    calibrate_s: float = 0.0
    search_s: float = 0.0
    search_steps: int = 0
    prune_s: float = 0.0
    finetune_s: float = 0.0
    finetune_steps: int = 0
    after_prune: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    rescale: dict | None = None
    latency: LatencyReport | None = None
    wall_s: float = 0.0
    method_info: dict = field(default_factory=dict)
    kernel_notes: list = field(default_factory=list)
    latency_target: dict | None = None

    def to_dict(self) -> dict:
        d = {"version": REPORT_VERSION, **asdict(self)}
        return {k: v for k, v in d.items() if v is not None and not (k in ("val", "test") and not v)}

    @classmethod
    def from_dict(cls, d: dict) -> PruneReport:
        d = dict(d)
        version = d.pop("version", 1)
        if version > REPORT_VERSION:
            raise ConfigError(f"report version {version} is newer than this mhaprune reads ({REPORT_VERSION})")
        d.setdefault("method", "ours")
        for key in ("dense", "pruned"):
            d[key] = CostSummary(**d[key])
        if d.get("latency") is not None:
            d["latency"] = LatencyReport(**d["latency"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class PruneResult:
    model: nn.Module
    plan: Plan
    report: PruneReport


def _limited(dataset, n: int | None):
    """The first ``n`` items of ``dataset`` (all when ``n`` is ``None`` or the split is smaller)."""
    if dataset is None or n is None or n >= len(dataset):
        return dataset
    return torch.utils.data.Subset(dataset, range(n))


def _summary(model: nn.Module, input_size) -> CostSummary:
    r = count_macs(model, input_size)
    return CostSummary(r.total, r.params, r.by_kind)


def _objectives(objective, options: dict, teacher: nn.Module, kd_alpha: float):
    """``stage(recipe) -> Objective`` for the search and the fine-tune (the recipe gives the label smoothing)."""
    if isinstance(objective, Objective):
        return lambda recipe: objective

    def stage(recipe: TrainConfig | None) -> Objective:
        smoothing = recipe.label_smoothing if recipe is not None else 0.0
        return make_objective(objective, teacher, kd_alpha=kd_alpha, label_smoothing=smoothing, **options)

    return stage


def prune(
    model: nn.Module,
    train_set,
    val_set=None,
    test_set=None,
    *,
    method: str = "ours",
    config: PruneConfig | None = None,
    target_macs: float | int | str | None = None,
    search: TrainConfig | None = None,
    finetune: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    calib_size: int = 64,
    kd_alpha: float = 0.5,
    teacher: nn.Module | None = None,
    resume: bool = False,
    latency: LatencySpec | None = None,
    eval_splits: str = "full",
    eval_limit: int | None = None,
    objective: str | Objective = "classification",
    objective_options: dict | None = None,
) -> PruneResult:
    """Prune ``model`` (in place) with a registered ``method`` and fine-tune it with distillation from the dense
    model.

    Args:
        model: a dense model built by :func:`mhaprune.create_model`, loaded from a folder, or a timm / Hugging Face
            model adapted by :mod:`mhaprune.interop` (plain ones are adapted here).
        train_set / val_set / test_set: datasets of ``(input, label)``; the test set is only reported.
        method: a name from :func:`mhaprune.methods.list_methods` (``ours``, ``oneshot``, ``l1``, ``random``...).
        config: pruning options (default :class:`PruneConfig`); the method's own overrides are applied on top.
        target_macs: shorthand for ``config.target_macs`` (a fraction, ``"70%"``, or a count such as ``"1.2G"``).
        search: recipe of the search stage of methods that train (``None``: no search steps, i.e. the
            initialised indicators decide); ignored by one-shot methods.
        finetune: recipe of the KD fine-tune (``None``: none).
        out_dir: run folder; the stages checkpoint into ``search/`` and ``finetune/`` there.
        calib_size: samples of the calibration batch (drawn from ``train_set`` with ``config.seed``).
        kd_alpha: weight of the distillation term (0: hard labels only).
        teacher: KD teacher (default: a frozen copy of the dense model).
        resume: continue the stages from their checkpoints in ``out_dir``.
        latency: measure dense vs pruned latency this way (``None``: not measured).
        eval_splits: ``full`` (validation after pruning and at the end; dense and pruned on test), ``val``
            (validation only) or ``none``.
        eval_limit: evaluate on the first this many items of each split (``None``: all).
        objective: what the search, the one-shot importance and the fine-tune minimise: ``classification``
            (labels + KD), ``logits`` or ``features`` (no labels; see :mod:`mhaprune.train.objectives`), or an
            :class:`~mhaprune.train.Objective`. Label-free objectives are evaluated with the encoder metrics
            (cosine retention and neighbour agreement against the dense model) instead of accuracy.
        objective_options: options of a named objective (e.g. ``{"layers": (-1,), "pooling": "mean"}``).

    Returns:
        the pruned plain model, its plan and a :class:`PruneReport`.

    Example:
        >>> import mhaprune
        >>> from torch.utils.data import TensorDataset
        >>> import torch
        >>> data = TensorDataset(torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,)))
        >>> res = mhaprune.prune(mhaprune.create_model("flatten_swin_micro"), data, method="l1", target_macs=0.5)
        >>> res.report.pruned.macs <= res.report.target_macs
        True
    """
    t_start = time.time()
    if eval_splits not in EVAL_SPLITS:
        raise ConfigError(f"eval_splits must be one of {EVAL_SPLITS}, got {eval_splits!r}")
    val_set = _limited(val_set, eval_limit) if eval_splits != "none" else None
    test_set = _limited(test_set, eval_limit) if eval_splits == "full" else None
    info = get_method(method)
    cfg = config or PruneConfig()
    if target_macs is not None:
        cfg = cfg.replace(target_macs=target_macs)
    cfg = method_config(info, cfg)
    model = adapt_if_foreign(model)  # timm / Hugging Face models: adapted by the caller of Pruner, i.e. here
    device = (search or finetune or TrainConfig()).device
    out = Path(out_dir) if out_dir is not None else None
    x, y = labelled_calibration(train_set, calib_size, cfg.seed)
    # images: the model's (C, H, W); text: one calibration row, padded to the data's max_length (MACs at that length)
    if getattr(model, "input_size", None):
        input_size = tuple(model.input_size)
    else:
        input_size = {k: v[:1] for k, v in x.items()} if isinstance(x, dict) else x[:1]
    dense_cost = _summary(model, input_size)
    dense = copy.deepcopy(model).eval()
    teacher = teacher if teacher is not None else dense
    x = to_device(x, device)
    obj_name = objective.name if isinstance(objective, Objective) else objective
    needs_labels = objective.needs_labels if isinstance(objective, Objective) else get_objective(objective).needs_labels
    if needs_labels and y is None:
        raise ValueError(
            f"objective {obj_name} needs labels and the training data has none; use a label-free objective "
            f"(logits, or features for encoders)"
        )
    if info.needs_labels and y is None:
        raise ValueError(f"method {method} needs labelled calibration data; the training set has no labels")
    stage_objective = _objectives(objective, dict(objective_options or {}), teacher, kd_alpha)
    calib_objective = stage_objective(search)
    calib_objective.check(model, x)  # an objective the model cannot serve fails here, before any work
    ctx = MethodContext(
        cfg=cfg,
        calib=x,
        calib_targets=y.to(device) if y is not None else None,
        train_set=train_set,
        search=search if info.trains else None,
        search_loss=stage_objective(search) if info.trains and search is not None else None,
        objective=calib_objective,
        dense=dense,
        out_dir=out,
        resume=resume,
    )
    t0 = time.time()
    result = info.fn(model.to(device), ctx)
    prune_s = round(time.time() - t0, 2)
    m_info = dict(result.info)

    report = PruneReport(
        method=method,
        dense=dense_cost,
        pruned=dense_cost,
        target_macs=result.plan.target_macs
        or (result.plan.pruned_macs if cfg.target_latency is not None else None)
        or ModelCost(dense, input_size).resolve_target(cfg.target_macs, cfg.groups(), cfg.min_per_head),
        objective=obj_name,
        calibrate_s=m_info.pop("calibrate_s", 0.0),
        search_s=m_info.pop("search_s", 0.0),
        search_steps=m_info.pop("search_steps", 0),
        prune_s=prune_s,
        rescale=m_info.pop("rescale", None),
        method_info=m_info,
    )
    tune_objective = stage_objective(finetune) if finetune is not None and finetune.runs else None
    pruned = _finetune_and_evaluate(result.model, teacher, report, train_set, val_set, test_set, finetune, out,
                                    resume, tune_objective, device, input_size)  # fmt: skip
    report.kernel_notes = kernel_notes(pruned, device)
    for note in report.kernel_notes:
        _logger.warning("%s", note)
    example = input_size if not isinstance(x, dict) else x
    if latency is not None:
        report.latency = compare_latency(dense, pruned, example, latency)
    predicted = result.plan.meta.get("latency")
    if predicted:  # a latency target: measured at the setting it was predicted for
        setting = predicted["setting"]
        spec = LatencySpec(batch=setting["batch"], device=device, threads=setting["threads"])
        same = report.latency is not None and (report.latency.batch, report.latency.threads) == (
            spec.batch, spec.threads) and latency.device == device  # fmt: skip
        measured = report.latency if same else compare_latency(dense, pruned, example, spec)
        report.latency_target = {
            **{k: predicted[k] for k in ("target_ms", "predicted_ms", "dense_ms")},
            "measured_ms": round(1e3 * measured.pruned_s, 4),
            "dense_measured_ms": round(1e3 * measured.dense_s, 4),
            "batch": setting["batch"],
            "threads": setting["threads"],
        }
        _logger.info("latency: target %.2f ms, predicted %.2f ms, measured %.2f ms (batch %d, %d thread(s))",
                     predicted["target_ms"], predicted["predicted_ms"], 1e3 * measured.pruned_s, setting["batch"],
                     setting["threads"])  # fmt: skip
    report.wall_s = round(time.time() - t_start, 1)
    return PruneResult(pruned, result.plan, report)


def _finetune_and_evaluate(pruned, teacher, report, train_set, val_set, test_set, finetune, out, resume, objective,
                           device, input_size):  # fmt: skip
    """Evaluate right after pruning, fine-tune with the objective, then evaluate on validation and test: accuracy
    for classification, the encoder metrics against the dense model for the label-free objectives."""
    progress = finetune.progress if finetune is not None else False
    encoder = report.objective != "classification"

    def score(model, dataset, desc):
        if encoder:
            if model is teacher:
                return {"cosine": 1.0, "neighbours": 1.0, "count": len(dataset)}
            return compare_encoders(teacher, model, dataset, device=device, progress=progress)
        return evaluate(model, dataset, device=device, progress=progress, desc=desc)

    report.after_prune = score(pruned, val_set, "eval val (pruned)") if val_set is not None else {}
    t2 = time.time()
    tuned = finetune is not None and finetune.runs
    if tuned:
        stage = out / "finetune" if out else None
        trainer = Trainer(pruned, train_set, None if encoder else val_set, finetune, out_dir=stage, loss=objective)
        can_resume = resume and stage is not None and (stage / "checkpoint.pt").exists()
        trainer.fit(resume=stage if can_resume else None)
        report.finetune_steps = trainer.step
        pruned = trainer.eval_model()
    report.finetune_s = round(time.time() - t2, 2)
    report.pruned = _summary(pruned, input_size)
    if val_set is not None:  # without a fine-tune the model is the one already evaluated
        report.val = {"pruned": score(pruned, val_set, "eval val (tuned)") if tuned else report.after_prune}
    if test_set is not None:
        report.test = {
            "dense": score(teacher, test_set, "eval test (dense)"),
            "pruned": score(pruned, test_set, "eval test (pruned)"),
        }
    return pruned
