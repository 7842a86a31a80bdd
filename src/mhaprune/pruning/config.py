"""``PruneConfig``: every design choice of the method is a named, validated option (so it can be ablated)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field, fields

CONFIG_VERSION = 1  # schema of PruneConfig.to_dict(); bump with a migration in from_dict when fields change
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class ConfigError(ValueError):
    """An invalid pruning option."""


def parse_macs(value, dense_macs: int | None = None) -> int:
    """A MACs target as an absolute count: ``0.7`` (fraction of ``dense_macs``), ``"70%"``, ``"1.2G"``, ``"35M"``,
    ``1_200_000``.
    """
    if isinstance(value, str):
        s = value.strip()
        m = re.fullmatch(r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)", s)
        if not m:
            raise ConfigError(
                f"cannot read MACs target {value!r}; use a fraction like 0.7, a percentage like 70%, or "
                f"a count like 1.2G / 35M"
            )
        num, unit = float(m.group(1)), m.group(2).upper().removesuffix("MACS").removesuffix("MAC")
        if unit == "%":
            value = num / 100
        elif unit in _UNITS:
            value = num * _UNITS[unit] if unit else num
        else:
            raise ConfigError(
                f"unknown unit {m.group(2)!r} in MACs target {value!r}; use K, M, G or T (e.g. 1.2G), % "
                f"or a plain fraction"
            )
    try:
        value = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot read MACs target {value!r}") from e
    if value <= 0:
        raise ConfigError(
            f"target MACs must be > 0, got {value}; give a fraction of the dense MACs (0.7), a percentage (70%) or "
            f"a count (35M)"
        )
    if value <= 1.0:
        if dense_macs is None:
            raise ConfigError("a fractional MACs target needs the dense MACs")
        if value == 1.0:
            raise ConfigError("target MACs of 1.0 (100%) prunes nothing; give a fraction below 1, e.g. 0.7")
        return int(value * dense_macs)
    return int(value)


_TIME = {"MS": 1.0, "S": 1000.0, "US": 1e-3}


def parse_latency(value, dense_ms: float | None = None) -> float:
    """A latency target in milliseconds: ``"20ms"``, ``"0.02s"``, ``"500us"``, or a fraction / percentage of the
    dense model's latency (``0.7``, ``"70%"``)."""
    text = str(value).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)", text)
    unit = m.group(2).upper() if m else None
    if m is None or (unit not in _TIME and unit not in ("", "%")):
        raise ConfigError(
            f"cannot read latency target {value!r}; use a time like 20ms / 0.02s / 500us, or a fraction of the "
            f"dense latency like 0.7 or 70%"
        )
    num = float(m.group(1))
    if unit in _TIME:
        if num <= 0:
            raise ConfigError(f"latency target must be > 0, got {value!r}")
        return num * _TIME[unit]
    frac = num / 100 if unit == "%" else num
    if not 0 < frac < 1:
        raise ConfigError(
            f"latency target {value!r} as a fraction of the dense latency must be between 0 and 1 (e.g. 0.7 or "
            f"70%); for a time give its unit (20ms)"
        )
    if dense_ms is None:
        raise ConfigError("a fractional latency target needs the dense latency")
    return frac * dense_ms


@dataclass(frozen=True)
class PruneConfig:
    """Options of the method (``method.md`` §2). MACs are per image; see ``docs`` for every choice.

    Args:
        target_macs: fraction of the dense MACs (``0.7``), a percentage (``"70%"``), or an absolute count
            (``"1.2G"``, ``35e6``).
        target_latency: prune to a latency instead of MACs: ``"20ms"`` (per forward of ``target_latency_batch``
            inputs, fp32, on the search's device with ``target_latency_threads`` CPU threads), or a fraction /
            percentage of the dense latency (``0.7``, ``"70%"``), predicted by a per-layer latency model of the
            device (:mod:`mhaprune.cost.latency`: lookup tables over kept widths, measured once and cached);
            ``target_macs`` is not used.
        latency_allocation: how a latency target spends its budget across layers. ``"macs"`` (default): the
            search and the plan allocate channels by MACs, as a MACs target does, at the MACs level whose uniform
            plan measured on the target before the search (with ``latency_feedback``; without it, the level whose
            plan the latency tables predict on the target, a bisection over the plan's MACs target); ``"tables"``: the
            search's regulariser and the final repair / fill count every layer's milliseconds from the tables
            (layer-wise latency allocation, NViT-style). ``"macs"`` is the default on validation evidence: at equal
            measured latency the ``"tables"`` plans were 0.97-1.26 pp below the MACs plans in three runs on
            deit_micro (``docs/method.md``, latency targets).
        latency_calibration: scale each kind's table savings (attention, MLP) to what three whole-model plans save
            when timed beside the dense model (modules timed alone do not save what they save inside the model);
            measured once with the tables and cached. On by default: median error of the tables over 20 random
            plans, calibrated vs not, 3.9% / 5.9% on deit_small and 12.7% / 33% on flatten_swin_tiny
            (``docs/method.md``, latency targets).
        target_latency_batch: batch size the latency target is for.
        target_latency_threads: CPU threads the latency target is for (default: torch's current setting).
        latency_feedback: rounds of measured correction of a latency-target plan: the planned model is timed beside
            the dense model at the target's setting and, while it runs over 2% slower than the target or over 5%
            faster, planned again (``pruner.next_level``: the tables' savings scaled by the measured ones, then the
            line through a plan under and one over the target). With the ``"macs"`` allocation the same correction
            also sets the search's MACs level before the search, on uniform plans (0: trust the tables alone).
        prune_qk / prune_v / prune_mlp: prune the Q/K, the V and the MLP-hidden channel groups.
        threshold: how many channels a layer keeps: ``"raw"`` counts ``m > 0`` (the similarity weights ``α`` then
            decide which channels of each head are kept); ``"sigmoid"`` counts ``α·σ(m) > 0.5`` (``α`` also moves
            the count; a channel with ``α ≤ 0.5`` can never be kept in this mode).
        init_logit: uniform initial indicator logit (``σ(3) ≈ 0.95``: everything kept at the start).
        regularizer: ``"log"``: ``|log(MACs/T)|`` (default); ``"squared"``: ``(MACs/T - 1)²`` above the target, 0
            below (its push fades as MACs near the target). Default chosen on the validation split
            (``benchmarks/results/search_options``).
        reg_weight: λ of the MACs regulariser.
        indicator_lr: learning rate of the indicators (own optimizer group, no weight decay).
        weight_lr_scale: learning rate of the model's own weights during the search, as a multiple of the search
            recipe's ``lr`` (1: as the recipe; 0: the weights stay as they are and only the indicators and
            reweight parameters learn, a pure mask search).
        patience: the search freezes the masks once MACs ≤ target held this many steps (0: never).
        similarity: channel-similarity weights inside each head (§2.2).
        similarity_source: ``"activation"`` (cosine of activations over a calibration batch) or ``"weight"``.
        similarity_every: recompute the activation similarity every this many steps (0: only at calibration).
        similarity_center: the activation similarity from the channels' correlation (activations minus their
            mean) instead of the cosine of the raw activations, which channels with a large common offset dominate.
        similarity_combine: how α enters the masking score: ``"product"`` ``α·σ(m)`` (the paper) or ``"odds"``
            ``σ(m + log α)``: α scales the indicator's odds, so where ``σ(m)`` saturates (the data-driven init starts
            near ``σ(3)``) the learned indicators still rank the channels of a head and α only tips close calls.
        equal_heads: keep the same number of channels in every head (§2.3). Off: channels are kept independently
            and the deployable model pads every head to the widest one.
        round_to: round the kept channels per head to a multiple of this (8 = hardware friendly; 1 = off).
        same_qk_v_width: Q/K and V of every attention layer keep the same channels per head (``d_qk = d_v``; the
            final plan's repair and fill move both together). PyTorch's flash SDPA backend on GPUs and
            FlashAttention-2 need equal widths; other plans fall back to slower attention kernels there.
        reweight: learnable V-channel scales and Q/K temperatures, folded into the weights at convert (§2.4).
        attn_init: initialise indicators from the attention difference (§2.5).
        attn_init_scope: ``"all"`` (default: linear-attention Q/K by attention difference; softmax Q/K, V and MLP
            by the change of the module output), ``"attention"`` (all attention Q/K), ``"linear"`` (the paper:
            linear-attention Q/K only; the MACs penalty then strips the uniformly started early MLPs first).
            Default chosen on the validation split (``benchmarks/results/search_options``).
        attn_init_metric: ``"fro"`` (Frobenius norm) or ``"kl"`` (row-wise KL) of the attention difference.
        attn_init_kappa: ``m⁰ = init_logit + κ · z(D)``, clamped below at ``init_min``.
        init_min: lowest initial logit (> 0, so that every channel starts kept and ``prepare`` keeps the function).
        attn_init_rows: sampled query rows per map (never materialises N×N for large N).
        fill: after the repair that makes MACs ≤ target (always done for the final plan), add back the best
            channels while MACs stay ≤ target.
        min_per_head: channels every head keeps at least.
        rescale: after the search, scale the kept input columns of every pruned module's output linear (``proj``,
            ``fc2``) by the least-squares fit to the dense model's output of that linear on the calibration batch,
            layer by layer (Kwon et al.'s mask tuning, :func:`~mhaprune.pruning.oneshot.rescale_outputs`; a layer
            keeps its weights where the fit does not lower its error).
        seed: for the random parts (row sampling).
    """

    target_macs: float | int | str = field(default=0.7, metadata={"metavar": "T"})
    target_latency: float | str | None = field(default=None, metadata={"metavar": "T"})
    target_latency_batch: int = field(default=32, metadata={"metavar": "N"})
    target_latency_threads: int | None = field(default=None, metadata={"metavar": "N"})
    latency_feedback: int = field(default=2, metadata={"metavar": "ROUNDS"})
    latency_allocation: str = field(default="macs", metadata={"choices": ("tables", "macs")})
    latency_calibration: bool = True
    prune_qk: bool = True
    prune_v: bool = True
    prune_mlp: bool = True
    threshold: str = field(default="raw", metadata={"choices": ("sigmoid", "raw")})
    init_logit: float = field(default=3.0, metadata={"metavar": "M"})
    regularizer: str = field(default="log", metadata={"choices": ("squared", "log")})
    reg_weight: float = field(default=2.0, metadata={"metavar": "L"})
    indicator_lr: float = field(default=0.3, metadata={"metavar": "LR"})
    weight_lr_scale: float = field(default=1.0, metadata={"metavar": "S"})
    patience: int = field(default=50, metadata={"metavar": "STEPS"})
    similarity: bool = True
    similarity_source: str = field(default="activation", metadata={"choices": ("activation", "weight")})
    similarity_every: int = field(default=50, metadata={"metavar": "STEPS"})
    similarity_center: bool = False
    similarity_combine: str = field(default="product", metadata={"choices": ("product", "odds")})
    equal_heads: bool = True
    round_to: int = field(default=1, metadata={"metavar": "K"})
    same_qk_v_width: bool = False
    reweight: bool = True
    attn_init: bool = True
    attn_init_scope: str = field(default="all", metadata={"choices": ("linear", "attention", "all")})
    attn_init_metric: str = field(default="fro", metadata={"choices": ("fro", "kl")})
    attn_init_kappa: float = field(default=1.0, metadata={"metavar": "K"})
    attn_init_rows: int = field(default=64, metadata={"metavar": "N"})
    init_min: float = field(default=0.25, metadata={"metavar": "M"})
    fill: bool = True
    min_per_head: int = field(default=1, metadata={"metavar": "N"})
    rescale: bool = False
    seed: int = field(default=0, metadata={"cli": False})  # the run's --seed

    def __post_init__(self):
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) not in allowed:
                raise ConfigError(f"{f.name} must be one of {allowed}, got {getattr(self, f.name)!r}")
        if not (self.prune_qk or self.prune_v or self.prune_mlp):
            raise ConfigError(
                "nothing to prune: enable at least one of prune_qk, prune_v, prune_mlp (on the command line, drop "
                "one of --no-prune-qk / --no-prune-v / --no-prune-mlp)"
            )
        if self.round_to < 1 or self.min_per_head < 1:
            raise ConfigError("round_to and min_per_head must be >= 1")
        if self.init_logit <= 0 or self.init_min <= 0:
            raise ConfigError("init_logit and init_min must be > 0 (every channel starts kept)")
        if self.reg_weight < 0 or self.indicator_lr <= 0:
            raise ConfigError("reg_weight must be >= 0 and indicator_lr > 0")
        if self.weight_lr_scale < 0:
            raise ConfigError(f"weight_lr_scale must be >= 0 (0 freezes the weights), got {self.weight_lr_scale}")
        if isinstance(self.target_macs, str):
            parse_macs(self.target_macs, dense_macs=1)  # validates the unit early
        if self.target_latency is not None:
            parse_latency(self.target_latency, dense_ms=1.0)
        threads = self.target_latency_threads
        if self.target_latency_batch < 1 or (threads is not None and threads < 1):
            raise ConfigError("target_latency_batch and target_latency_threads must be >= 1")
        if self.latency_feedback < 0:
            raise ConfigError(f"latency_feedback must be >= 0 rounds, got {self.latency_feedback}")

    def groups(self) -> set[str]:
        """The pruned channel groups: ``qk``, ``v``, ``hidden``."""
        return {g for g, on in (("qk", self.prune_qk), ("v", self.prune_v), ("hidden", self.prune_mlp)) if on}

    def replace(self, **changes) -> PruneConfig:
        """A copy with ``changes`` (validated like any new config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The options plus the schema ``version`` (what :meth:`from_dict` reads back)."""
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        """Read :meth:`to_dict` output; configs saved before versioning (no ``version``) read as version 1."""
        d = dict(d)
        version = d.pop("version", 1)
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ConfigError(
                f"this PruneConfig has schema version {version!r}, newer than this mhaprune reads "
                f"({CONFIG_VERSION}); upgrade mhaprune (pip install -U mhaprune)"
            )
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(
                f"unknown PruneConfig option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        return cls(**d)
