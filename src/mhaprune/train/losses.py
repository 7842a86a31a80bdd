"""Loss objects composed into the one training engine (DeiT style: distillation is a loss, not a loop)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def call(model: nn.Module, inputs, **kwargs):
    """``model(**inputs)`` for keyword inputs (text encoders), ``model(inputs)`` otherwise."""
    return model(**inputs, **kwargs) if isinstance(inputs, dict) else model(inputs, **kwargs)


def as_logits(out) -> torch.Tensor:
    """Model output -> logits: a tensor as is, or the ``logits`` of a Hugging Face output object."""
    return out if torch.is_tensor(out) else out.logits


class ClassificationLoss(nn.Module):
    """Cross-entropy with label smoothing; accepts hard labels or soft (mixed) targets."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        if target.ndim == 2:  # soft targets from mixup/cutmix (smoothing already applied there)
            return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


class DistillationLoss(nn.Module):
    """Knowledge distillation from a frozen teacher's soft logits (Hinton et al.).

    ``loss = (1 - alpha) · base(logits, target) + alpha · τ² · KL(softmax(t/τ) ‖ softmax(s/τ))``.
    ``alpha = 0`` is hard-label training only.
    """

    def __init__(self, base: nn.Module, teacher: nn.Module, alpha: float = 0.5, tau: float = 1.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.base, self.alpha, self.tau = base, alpha, tau
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):  # the teacher always stays in eval mode
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        base = self.base(logits, target)
        if self.alpha == 0.0:
            return base
        with torch.no_grad():
            t_logits = as_logits(call(self.teacher, inputs))
        T = self.tau
        kd = F.kl_div(
            F.log_softmax(logits / T, dim=-1),
            F.log_softmax(t_logits / T, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (T * T)
        return (1 - self.alpha) * base + self.alpha * kd


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup: float, cutmix: float, smoothing: float):
    """Mixup (``mixup`` = Beta α) or CutMix (``cutmix`` = Beta α), chosen with equal odds when both are on.

    Returns the mixed inputs and soft targets (with label smoothing applied)."""
    off = smoothing / num_classes
    y1 = torch.full((len(y), num_classes), off, device=x.device).scatter_(1, y[:, None], 1 - smoothing + off)
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(()) < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.arange(len(x) - 1, -1, -1, device=x.device)  # pair each sample with its mirror, as timm does
    if use_cutmix:
        H, W = x.shape[-2:]
        rh, rw = int(H * (1 - lam) ** 0.5), int(W * (1 - lam) ** 0.5)
        cy, cx = int(torch.randint(H, ())), int(torch.randint(W, ()))
        y0, y1_, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, H), max(cx - rw // 2, 0), min(cx + rw // 2, W)
        x = x.clone()
        x[..., y0:y1_, x0:x1] = x[perm][..., y0:y1_, x0:x1]
        lam = 1 - (y1_ - y0) * (x1 - x0) / (H * W)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y1 + (1 - lam) * y1[perm]
