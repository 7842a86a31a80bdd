"""Training: one engine, loss objects and callbacks."""

from .callbacks import Callback
from .engine import CHECKPOINT, Interrupted, ModelEma, TrainConfig, Trainer, TrainingError, evaluate, read_checkpoint
from .losses import ClassificationLoss, DistillationLoss, as_logits, mix_batch

__all__ = [
    "CHECKPOINT",
    "Callback",
    "ClassificationLoss",
    "DistillationLoss",
    "Interrupted",
    "ModelEma",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "as_logits",
    "evaluate",
    "mix_batch",
    "read_checkpoint",
]
