"""Objectives: what the search, the one-shot importance and the fine-tune minimise, registered by name.

An objective is called ``objective(model, inputs, target) -> loss`` (it runs the model itself, so that it can ask
for what it needs: logits, the pooled embedding, hidden states). ``inputs`` is an image batch or a dict of tensors
(``input_ids`` / ``attention_mask`` of a text encoder); ``target`` holds labels, or ``-1`` where the data has none.

- ``classification``: cross-entropy on the labels, plus distillation from the teacher's logits (weight
  ``kd_alpha``). Needs labels.
- ``logits``: distillation from the teacher's logits only (KL at temperature ``tau``); no labels.
- ``features``: the student's pooled embedding and hidden states matched to the teacher's: ``1 - cos`` of the
  pooled embeddings plus ``hidden_weight`` × the normalised squared error of the hidden states of ``layers``
  (default: the last layer of a Hugging Face model; other models give the pooled embedding alone; padding masked
  out); no labels, no head needed (sentence encoders, backbones). Pooling: the mean over the
  tokens under the attention mask for text, the class token (or the model's own pooling) for images.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import ClassificationLoss, DistillationLoss, call

POOLINGS = ("auto", "mean", "cls")


class ObjectiveError(ValueError):
    """An objective that is unknown or that the model (or the data) cannot serve."""


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "base_model") and hasattr(model.config, "to_dict")


def _pool(tokens: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    if pooling == "auto":
        pooling = "mean" if mask is not None else "cls"
    if pooling == "cls":
        return tokens[:, 0]
    if mask is None:
        return tokens.mean(1)
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


def encode(model: nn.Module, inputs, pooling: str = "auto", layers: tuple[int, ...] = ()):
    """``(pooled (B, D), [hidden states (B, N, D) of layers], attention mask or None)`` of ``model`` on ``inputs``.

    Hugging Face models: the base model's last hidden state pooled (``pooling``), ``layers`` index its
    ``hidden_states`` (0 = embeddings, -1 = the last layer). Our models and timm models: their own pooled features
    (``forward_features`` / ``forward_head(pre_logits=True)``); they give no hidden states here."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if _is_hf(model):
        out = call(model.base_model, inputs, output_hidden_states=bool(layers))
        tokens = out.last_hidden_state
        hidden = [out.hidden_states[i] for i in layers]
        return _pool(tokens, mask, pooling), hidden, mask
    if layers:
        raise ObjectiveError(
            f"{type(model).__name__} gives no hidden states here (only Hugging Face models do); drop the feature "
            f"layers (--feature-layers none) to distil the pooled embedding alone"
        )
    if not hasattr(model, "forward_features"):
        raise ObjectiveError(f"{type(model).__name__} has no forward_features: it cannot give an embedding")
    f = call(model.forward_features, inputs)
    if f.ndim == 3:
        f = model.forward_head(f, pre_logits=True) if hasattr(model, "forward_head") else _pool(f, None, pooling)
    return f, [], None


class Objective(nn.Module):
    """Base class: ``forward(model, inputs, target) -> loss``; the teacher (if any) is frozen and stays in eval."""

    name = ""
    needs_labels = False

    def __init__(self, teacher: nn.Module | None = None):
        super().__init__()
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def check(self, model: nn.Module, inputs) -> None:
        """Raise :class:`ObjectiveError` when ``model`` cannot give what the objective needs (one tiny forward)."""
        with torch.no_grad():
            self._probe(model, _first(inputs, 2))

    def _probe(self, model, inputs) -> None:
        call(model, inputs)


def _first(inputs, n: int):
    return {k: v[:n] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:n]


def _logits(model: nn.Module, inputs) -> torch.Tensor:
    out = call(model, inputs)
    if torch.is_tensor(out):
        return out
    logits = getattr(out, "logits", None)
    if logits is None:
        raise ObjectiveError(
            f"{type(model).__name__} gives no logits (an encoder without a head); use --objective features"
        )
    return logits


class ClassificationObjective(Objective):
    name, needs_labels = "classification", True

    def __init__(self, teacher=None, kd_alpha: float = 0.5, label_smoothing: float = 0.0, tau: float = 1.0):
        super().__init__(teacher)
        base = ClassificationLoss(label_smoothing)
        self.loss = DistillationLoss(base, teacher, kd_alpha, tau) if teacher is not None and kd_alpha > 0 else base

    def forward(self, model, inputs, target):
        return self.loss(_logits(model, inputs), target, inputs)

    def _probe(self, model, inputs):
        _logits(model, inputs)


class LogitDistillation(Objective):
    name = "logits"

    def __init__(self, teacher, tau: float = 1.0):
        super().__init__(teacher)
        self.tau = tau

    def forward(self, model, inputs, target=None):
        with torch.no_grad():
            t = _logits(self.teacher, inputs)
        s, T = _logits(model, inputs), self.tau
        return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True) * (
            T * T
        )

    def _probe(self, model, inputs):
        _logits(model, inputs)


class FeatureDistillation(Objective):
    name = "features"

    def __init__(self, teacher, layers: tuple[int, ...] | None = None, pooling: str = "auto",
                 hidden_weight: float = 1.0):  # fmt: skip
        super().__init__(teacher)
        if pooling not in POOLINGS:
            raise ObjectiveError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        # None: the last layer where the model gives hidden states (Hugging Face), else the pooled embedding alone
        self.layers = None if layers is None else tuple(layers)
        self.pooling, self.hidden_weight = pooling, hidden_weight

    def _layers(self, model) -> tuple[int, ...]:
        if not _is_hf(model) or self.hidden_weight == 0:
            return ()
        return (-1,) if self.layers is None else self.layers

    def forward(self, model, inputs, target=None):
        layers = self._layers(model)
        with torch.no_grad():
            t_pool, t_hidden, _ = encode(self.teacher, inputs, self.pooling, layers)
        s_pool, s_hidden, mask = encode(model, inputs, self.pooling, layers)
        loss = (1 - F.cosine_similarity(s_pool, t_pool.to(s_pool.dtype), dim=-1)).mean()
        for hs, ht in zip(s_hidden, t_hidden):
            err, scale = (hs - ht).pow(2).mean(-1), ht.pow(2).mean(-1)
            w = mask.to(err.dtype) if mask is not None else torch.ones_like(err)
            loss = loss + self.hidden_weight * (err * w).sum() / (scale * w).sum().clamp_min(1e-12) / len(layers)
        return loss

    def _probe(self, model, inputs):
        if self.layers and self.hidden_weight > 0 and not _is_hf(model):  # asked for explicitly
            encode(model, inputs, self.pooling, self.layers)  # raises: no hidden states
        encode(model, inputs, self.pooling, self._layers(model))


@dataclass(frozen=True)
class ObjectiveInfo:
    name: str
    summary: str
    needs_labels: bool
    build: Callable[..., Objective]


_OBJECTIVES: dict[str, ObjectiveInfo] = {}


def register_objective(name: str, summary: str, needs_labels: bool = False):
    """Register ``build(teacher, kd_alpha=, label_smoothing=, **options) -> Objective`` under ``name``."""

    def deco(build):
        _OBJECTIVES[name] = ObjectiveInfo(name, summary, needs_labels, build)
        return build

    return deco


def list_objectives() -> list[str]:
    return sorted(_OBJECTIVES)


def get_objective(name: str) -> ObjectiveInfo:
    if name not in _OBJECTIVES:
        close = difflib.get_close_matches(name, list(_OBJECTIVES), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ObjectiveError(f"unknown objective {name!r} (known: {', '.join(list_objectives())}).{hint}")
    return _OBJECTIVES[name]


def make_objective(name: str, teacher: nn.Module | None, kd_alpha: float = 0.5, label_smoothing: float = 0.0,
                   **options) -> Objective:  # fmt: skip
    """The objective ``name`` with ``teacher`` (the dense model) and its options."""
    info = get_objective(name)
    if teacher is None and name != "classification":
        raise ObjectiveError(f"objective {name} distils from a teacher; pass the dense model")
    return info.build(teacher, kd_alpha=kd_alpha, label_smoothing=label_smoothing, **options)


register_objective("classification", "cross-entropy on labels + distillation of the teacher's logits (kd_alpha)",
                   needs_labels=True)(  # fmt: skip
    lambda teacher, kd_alpha=0.5, label_smoothing=0.0, tau=1.0, **_: ClassificationObjective(
        teacher, kd_alpha, label_smoothing, tau
    )
)
register_objective("logits", "distillation of the teacher's logits, no labels")(
    lambda teacher, tau=1.0, **_: LogitDistillation(teacher, tau)
)
register_objective("features", "match the teacher's pooled embedding and hidden states, no labels (encoders)")(
    lambda teacher, layers=None, pooling="auto", hidden_weight=1.0, **_: FeatureDistillation(
        teacher, layers, pooling, hidden_weight
    )
)
