"""Callbacks compose variants (pruning search, logging) into the one engine instead of copying loops."""

from __future__ import annotations

import torch


class Callback:
    """No-op base. Override what you need; ``state_dict`` is saved in checkpoints for exact resume."""

    def on_train_begin(self, trainer) -> None:
        pass

    def extra_loss(self, trainer) -> torch.Tensor | None:
        """A term added to the task loss at every step (e.g. a MACs regulariser)."""
        return None

    def on_step_end(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
