"""Gates: the modules the pruner installs into the models' identity slots during the search.

A :class:`GroupState` holds one channel group's learnable indicators ``m`` (``h × d``), its similarity weights
``α`` and its reweight parameters. Gates multiply activations by the adjusted hard mask (straight-through estimator:
the forward uses the 0/1 mask, the backward copies its gradient to the scores) and, with reweighting on, by the
learnable scales.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .groups import equal_heads_mask


class GroupState(nn.Module):
    """Indicators, similarity weights and reweight parameters of one channel group.

    Args:
        heads: heads of the group (1 for an MLP).
        width: channels per head.
        name: ``"qk"``, ``"v"`` or ``"hidden"``.
        init_logit: initial indicator value.
        threshold: ``"sigmoid"`` or ``"raw"`` (see :class:`PruneConfig`).
        equal_heads: apply the §2.3 adjustment.
        round_to / min_per_head: options of the adjustment.
        reweight: ``None``, ``"head"`` (log-temperature per head), ``"channel_temp"`` (log-temperature per channel)
            or ``"channel"`` (free scale per channel).
        prunable: ``False`` keeps every channel (the group is not pruned) but reweighting may still apply.
        combine: how α enters the score: ``"product"`` ``α·σ(m)`` (the paper) or ``"odds"`` ``σ(m + log α)`` (α
            scales the odds, so a saturated ``σ(m)`` does not hand the ranking to α).
    """

    def __init__(
        self,
        heads: int,
        width: int,
        name: str,
        init_logit: float = 3.0,
        threshold: str = "sigmoid",
        equal_heads: bool = True,
        round_to: int = 1,
        min_per_head: int = 1,
        reweight: str | None = None,
        prunable: bool = True,
        combine: str = "product",
    ):
        super().__init__()
        if combine not in ("product", "odds"):
            raise ValueError(f"combine must be 'product' or 'odds', got {combine!r}")
        self.combine = combine
        self.heads, self.width, self.name = heads, width, name
        self.threshold, self.equal_heads = threshold, equal_heads
        self.round_to, self.min_per_head, self.prunable = round_to, min_per_head, prunable
        self.indicator = nn.Parameter(torch.full((heads, width), float(init_logit)), requires_grad=prunable)
        self.register_buffer("alpha", torch.ones(heads, width))
        self.register_buffer("tiebreak", torch.zeros(heads, width))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("frozen_mask", torch.ones(heads, width))
        self.reweight_mode = reweight
        if reweight == "head":
            self.reweight = nn.Parameter(torch.zeros(heads, 1))  # log-temperature
        elif reweight == "channel_temp":
            self.reweight = nn.Parameter(torch.zeros(heads, width))  # log-temperature
        elif reweight == "channel":
            self.reweight = nn.Parameter(torch.ones(heads, width))
        else:
            self.reweight = None
        # activation Gram matrices per role, accumulated only while ``collect`` is set (not saved)
        self.collect = False
        self.capture = False  # keep the last input of every role (calibration of the init)
        self.captured: dict[str, torch.Tensor] = {}
        self.grams: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}  # per role: (h, d) sum of the rows (centering)
        self.rows: dict[str, int] = {}  # per role: rows accumulated
        # (B, N) mask of the real tokens of the batch being collected (text: its attention_mask; not saved): padded
        # positions feed no output, so they stay out of the similarity statistics
        self.row_mask: torch.Tensor | None = None
        # (K, h, d) masks, one per block of the batch (calibration: K masked variants in one call; not saved)
        self.variant_masks: torch.Tensor | None = None

    # ---------------------------------------------------------------- scores and masks
    def scores(self) -> torch.Tensor:
        """``s = α · σ(m)`` or, ``combine="odds"``, ``σ(m + log α)`` (differentiable in ``m``)."""
        if self.combine == "odds":
            return torch.sigmoid(self.indicator + torch.log(self.alpha))
        return self.alpha * torch.sigmoid(self.indicator)

    def keep_total(self) -> int:
        """How many channels the layer wants to keep (before the per-head adjustment)."""
        if self.threshold == "sigmoid":
            return int((self.scores() > 0.5).sum())
        return int((self.indicator > 0).sum())

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        """The adjusted 0/1 keep-mask ``(h, d)`` (float)."""
        if not self.prunable:
            return torch.ones_like(self.indicator)
        if bool(self.frozen):
            return self.frozen_mask.clone()
        ranking = self.scores() + self.tiebreak
        if self.equal_heads:
            mask = equal_heads_mask(ranking, self.keep_total(), self.round_to, self.min_per_head)
        else:
            mask = (self.scores() > 0.5) if self.threshold == "sigmoid" else (self.indicator > 0)
        return mask.to(self.indicator.dtype)

    def ste_mask(self) -> torch.Tensor:
        """Hard mask in the forward, gradient of the mask copied to the scores in the backward."""
        hard = self.hard_mask()
        if not self.prunable or bool(self.frozen) or not self.indicator.requires_grad:
            return hard
        s = self.scores()
        return hard + (s - s.detach())  # exactly ``hard`` in the forward

    def freeze(self) -> None:
        self.frozen_mask.copy_(self.hard_mask())
        self.frozen.fill_(True)
        self.indicator.requires_grad_(False)

    # ---------------------------------------------------------------- reweight
    def multiplier(self) -> torch.Tensor | None:
        if self.reweight is None:
            return None
        return self.reweight if self.reweight_mode == "channel" else self.reweight.exp()

    # ---------------------------------------------------------------- similarity statistics
    @torch.no_grad()
    def accumulate(self, role: str, x: torch.Tensor) -> None:
        u = x.detach().reshape(-1, self.heads, self.width)
        rows = self.row_mask
        if rows is not None and rows.numel() == u.shape[0]:  # one row per token: drop the padded ones
            u = u[rows.reshape(-1).to(device=u.device, dtype=torch.bool)]
        u = u.transpose(0, 1).double()  # h, rows, d
        g, total = u.transpose(1, 2) @ u, u.sum(1)
        self.grams[role] = self.grams[role] + g if role in self.grams else g
        self.sums[role] = self.sums[role] + total if role in self.sums else total
        self.rows[role] = self.rows.get(role, 0) + u.shape[1]

    def gram_matrices(self, centered: bool = False) -> list[torch.Tensor]:
        """The accumulated ``(h, d, d)`` Gram matrix of every role; ``centered``: of the activations minus their
        mean (covariances, so that the similarity is the correlation of the channels, not of their offsets)."""
        if not centered:
            return list(self.grams.values())
        out = []
        for role, g in self.grams.items():
            n, mean = max(self.rows[role], 1), self.sums[role] / max(self.rows[role], 1)
            out.append(g - n * mean[:, :, None] * mean[:, None, :])
        return out

    def reset_stats(self) -> None:
        self.grams, self.sums, self.rows = {}, {}, {}


class ChannelGate(nn.Module):
    """Multiplies ``(..., h·d)`` activations by the group's mask (and reweight multiplier, if ``reweight``).

    The group state is owned by exactly one gate (registered as a submodule there); a gate that shares it (the
    K gate of a Q/K group) only references it, so parameters appear once in the state dict.
    """

    def __init__(self, state: GroupState, role: str, owner: bool, reweight: bool):
        super().__init__()
        if owner:
            self.state = state
        else:
            self.__dict__["_shared_state"] = state
        self.role, self.apply_reweight = role, reweight

    @property
    def group(self) -> GroupState:
        return self._modules["state"] if "state" in self._modules else self.__dict__["_shared_state"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = self.group
        if st.collect:
            st.accumulate(self.role, x)
        if st.capture:
            st.captured[self.role] = x.detach()
        mult = st.ste_mask()
        if self.apply_reweight:
            r = st.multiplier()
            if r is not None:
                mult = mult * r
        if st.variant_masks is not None:  # the batch is K blocks; block k gets variant mask k
            k = st.variant_masks.shape[0]
            per = (st.variant_masks * mult).reshape(k, *([1] * (x.ndim - 1)), -1).to(x.dtype)
            return (x.unflatten(0, (k, -1)) * per).flatten(0, 1)
        return x * mult.reshape(-1).to(x.dtype)

    def extra_repr(self) -> str:
        st = self.group
        return f"group={st.name}, role={self.role}, heads={st.heads}, width={st.width}, reweight={self.apply_reweight}"


class TokenMaskWatch:
    """A forward pre-hook of the whole model (``with_kwargs``) that hands the batch's ``attention_mask`` (keyword
    inputs of a text encoder) to the group states, so that their statistics skip padded tokens; ``None`` for
    inputs without one (images)."""

    def __init__(self, states: list[GroupState]):
        self.states = states

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        mask = mask if torch.is_tensor(mask) and mask.ndim == 2 else None
        for st in self.states:
            st.row_mask = mask


def install_gates(module: nn.Module, adapter, states: dict[str, GroupState]) -> None:
    """Put a :class:`ChannelGate` into every gate slot the adapter declares for a group in ``states``."""
    for slot in adapter.gate_slots(module):
        if slot.group in states:
            gate = ChannelGate(states[slot.group], slot.role, owner=slot.owner, reweight=slot.reweight)
            adapter.attach_gate(module, slot, gate)


def reweight_multipliers(states: dict[str, GroupState]) -> dict[str, torch.Tensor]:
    """The reweight multiplier of every group that has one (what :meth:`Adapter.fold` folds into the weights)."""
    return {g: st.multiplier() for g, st in states.items() if st.reweight is not None}
