"""Training: one engine, loss objects and callbacks."""

from .callbacks import Callback
from .engine import CHECKPOINT, ModelEma, TrainConfig, Trainer, TrainingError, evaluate
from .losses import ClassificationLoss, DistillationLoss, mix_batch

__all__ = [
    "CHECKPOINT",
    "Callback",
    "ClassificationLoss",
    "DistillationLoss",
    "ModelEma",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "evaluate",
    "mix_batch",
]
