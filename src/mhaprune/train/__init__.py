"""Training: one engine, loss objects and callbacks."""

from .callbacks import Callback
from .engine import (
    CHECKPOINT,
    Interrupted,
    ModelEma,
    TrainConfig,
    Trainer,
    TrainingError,
    collate_of,
    evaluate,
    read_checkpoint,
    to_device,
)
from .losses import ClassificationLoss, DistillationLoss, as_logits, call, mix_batch
from .metrics import compare_encoders, embeddings, encoder_metrics
from .objectives import (
    Objective,
    ObjectiveError,
    encode,
    get_objective,
    list_objectives,
    make_objective,
    register_objective,
)

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
    "Objective",
    "ObjectiveError",
    "as_logits",
    "call",
    "collate_of",
    "compare_encoders",
    "embeddings",
    "encode",
    "encoder_metrics",
    "evaluate",
    "get_objective",
    "list_objectives",
    "make_objective",
    "mix_batch",
    "read_checkpoint",
    "register_objective",
    "to_device",
]
