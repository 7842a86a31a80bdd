"""``Pruner``: prepare → (train) → plan / convert, torch.ao style.

    pruner = Pruner(model, PruneConfig(target_macs=0.7), example_inputs=calibration_batch)
    pruner.prepare()                       # gates in, model unchanged numerically
    for x, y in loader:                    # your loop (or mhaprune's engine with PruningCallback)
        loss = task_loss(model(x), y) + pruner.regularization_loss()
        loss.backward(); optimizer.step(); pruner.step()
    plan = pruner.plan()                   # MACs ≤ target, every head the same width
    pruned = pruner.convert()              # plain nn.Module, reweight folded, no gates

The indicators, similarity weights and reweight parameters live inside the gates, i.e. in the model's state dict, so
checkpoints and resume cover them. Put them in their own optimizer group with :meth:`param_groups`.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn

from ..adapters import no_weight_decay, unconverted_modules
from ..cost import call_model
from .budget import ModelCost, greedy_widths, latency_meta, plan_from_rankings, rank_scores, uniform_widths
from .config import ConfigError, PruneConfig, parse_latency
from .gates import GroupState, TokenMaskWatch, install_gates, reweight_multipliers
from .groups import padded_width
from .init import linear_attention_difference, output_difference, zscore
from .plan import Plan
from .similarity import alpha_from_grams, alpha_from_weights
from .surgery import apply_plan

_logger = logging.getLogger(__name__)

FEEDBACK_SLACK = 0.05  # a latency-target plan measured this much faster than its target is planned again, looser
FEEDBACK_TOLERANCE = 0.02  # ... and one measured up to this much slower is on target (timings jitter by more)


def next_level(tried, goal: float, dense: float, to_level, lo: float, hi: float, dense_level: float) -> float:
    """The latency feedback's next level (a plan's internal latency target in ms with the ``tables`` allocation, its
    MACs target with ``macs``; ``dense_level``: the dense model's) from the plans measured so far, ``tried``:
    ``(level, predicted ms, measured ms)``, all on the tables' scale (``dense``: their dense latency).

    Where one plan measured under the ``goal`` and a tighter one over it, the level where the straight line through
    the two meets the goal (regula falsi between the closest such pair). Otherwise the tables' savings at the plan
    measured nearest the goal are scaled by what it measured to save: the next plan is the one the tables predict at
    ``dense - (dense - goal) * predicted saving / measured saving`` (``to_level`` maps milliseconds to a level).
    The tables mostly err in the savings, not in the dense latency, which is theirs by construction: scaling the
    whole prediction instead (``goal * predicted / measured``) sent a deit_micro plan that ran at 0.71 of its
    prediction to a plan as slow as the dense model (``benchmarks/results/latency_vs_macs``). Where that step does
    not move (the tables' prediction need not grow with the MACs level: widths off a multiple of 8 are charged
    extra), the saving is taken in proportion to the level's distance from the dense model's. The level stays
    within ``[lo, hi]`` and between the bracketing plans."""
    under = [t for t in tried if t[2] <= goal]
    over = [t for t in tried if t[2] > goal]
    a = max(under, key=lambda t: t[0], default=None)  # the loosest plan measured on or under the goal
    b = min(over, key=lambda t: t[0], default=None)  # the tightest plan measured over it
    if a is not None and b is not None and a[0] < b[0]:
        return min(max(a[0] + (goal - a[2]) * (b[0] - a[0]) / (b[2] - a[2]), lo), hi)

    def bounded(x):
        if b is None and a is not None:  # all under the goal: only a looser plan can reach it ...
            x = max(x, a[0])
        elif a is None and b is not None:  # ... all over it: only a tighter one
            x = min(x, b[0])
        return min(max(x, lo), hi)

    level, predicted, measured = min(tried, key=lambda t: abs(t[2] - goal))
    saved_predicted, saved_measured = dense - predicted, dense - measured
    if saved_predicted > 0 and saved_measured > 0:
        new = bounded(to_level(dense - (dense - goal) * saved_predicted / saved_measured))
    else:  # no saving measured (or predicted): scale the whole prediction
        new = bounded(to_level(goal * predicted / measured))
    if abs(new - level) <= 1e-3 * abs(level) and saved_measured > 0:
        new = bounded(dense_level - (dense_level - level) * (dense - goal) / saved_measured)
    return new


def macs_level(predicted, ms: float, lo: int, hi: int) -> int:
    """The largest MACs level in ``[lo, hi]`` whose plan ``predicted(level)`` (ms) is ≤ ``ms`` (bisection); ``lo``
    where none is."""
    if predicted(lo) > ms:
        return lo
    for _ in range(30):
        if hi - lo <= max(1, 1e-4 * hi):
            break
        mid = (lo + hi) // 2
        if predicted(mid) <= ms:
            lo = mid
        else:
            hi = mid
    return int(lo)


def _detached(args: tuple) -> tuple:
    return tuple(a.detach() if torch.is_tensor(a) else a for a in args)


def unpadded_parts(inputs) -> list[tuple[dict, float]] | None:
    """A padded batch of keyword inputs (a 2-D ``attention_mask`` with zeros) split into groups of rows that share
    their real positions, each cut to those positions: ``[(inputs, share of the rows), ...]``; ``None`` for inputs
    without padding (images, or texts of one length). Tensors ``(B, N)`` like the mask are cut, other batched
    tensors only indexed."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if not torch.is_tensor(mask) or mask.ndim != 2 or bool(mask.bool().all()):
        return None
    keep = mask.bool()
    groups: dict[bytes, list[int]] = {}
    for i in range(keep.shape[0]):
        groups.setdefault(keep[i].cpu().numpy().tobytes(), []).append(i)
    parts = []
    for rows in groups.values():
        idx = torch.tensor(rows, device=mask.device)
        pos = keep[rows[0]].nonzero().flatten()
        if pos.numel() == 0:
            continue  # a row without any real token feeds nothing
        part = {}
        for k, v in inputs.items():
            if torch.is_tensor(v) and v.shape[:2] == mask.shape:
                part[k] = v[idx][:, pos]
            elif torch.is_tensor(v) and v.ndim and v.shape[0] == mask.shape[0]:
                part[k] = v[idx]
            else:
                part[k] = v
        parts.append((part, len(rows) / keep.shape[0]))
    return parts


def _to(inputs, device):
    if isinstance(inputs, dict):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    return inputs.to(device)


class Pruner:
    """Automatic channel pruning of multi-head attention and MLPs under a MACs target.

    Args:
        model: a model built from modules with registered adapters. ``prepare`` and ``convert`` modify it in place
            (deepcopy first to keep the original).
        cfg: the options.
        example_inputs: a calibration batch ``(B, C, H, W)`` from the training data, or a dict of tensors for models
            called with keywords (``input_ids``, ``attention_mask`` of a text encoder); its first sample fixes the
            input size for the cost model, the whole batch calibrates similarity weights and the init.
    """

    def __init__(self, model: nn.Module, cfg: PruneConfig, example_inputs: torch.Tensor | dict):
        self.model, self.cfg = model, cfg
        if isinstance(example_inputs, dict):
            if not any(torch.is_tensor(v) for v in example_inputs.values()):
                raise ValueError("example_inputs as a dict must hold tensors (e.g. input_ids, attention_mask)")
        elif not torch.is_tensor(example_inputs) or example_inputs.ndim < 2:
            raise ValueError(
                "example_inputs must be a batch: a tensor (B, C, H, W) for vision models, or a dict of tensors "
                "(e.g. input_ids and attention_mask) for models called with keywords"
            )
        self.example_inputs = example_inputs
        todo = unconverted_modules(model)
        if todo:
            path, how = todo[0]
            raise ValueError(
                f"{type(model).__name__} holds {len(todo)} module(s) that must be converted before pruning (e.g. "
                f"{path or 'the model'}: {type(model.get_submodule(path)).__name__}); call {how} first "
                f"(mhaprune.prune and the CLI do)"
            )
        self.cost = ModelCost(model, example_inputs)
        if not self.cost.layers:
            raise ValueError(
                f"{type(model).__name__} has no module with a registered adapter, so nothing can be pruned; for a timm "
                f"or Hugging Face model call mhaprune.interop.adapt(model) first (mhaprune.prune and the CLI do), for "
                f"your own module layout register an adapter (docs/architecture.md)"
            )
        self.groups_pruned = cfg.groups()
        # what the budget counts: MACs, or the device's latency model (same interface, in milliseconds). A latency
        # target keeps its model and milliseconds in ``latency`` / ``latency_target``; with ``latency_allocation``
        # "macs" the search and the plan still count MACs (``target``: the MACs level whose uniform plan the tables
        # predict at the latency target, then the level whose uniform plan measured on it, ``_presearch_level``)
        self.budget = self.cost
        self.latency, self.latency_target = None, None
        self.presearch: dict | None = None  # the record of the uniform plans timed before the search (``macs``)
        if cfg.target_latency is not None:
            self.latency, self.latency_target = latency_budget(model, example_inputs, cfg, self.cost)
            if cfg.latency_allocation == "tables":
                self.budget, self.target = self.latency, self.latency_target
            else:
                self.target = self._uniform_level(self.latency_target)
                if cfg.latency_feedback:  # the level measured on target, not the tables' guess
                    self.target = self._presearch_level(self.target)
        else:
            self.target = self.cost.resolve_target(cfg.target_macs, self.groups_pruned, cfg.min_per_head)
        self.states: dict[str, dict[str, GroupState]] = {}
        self.step_count = 0
        self.below_target_steps = 0
        # the search's course: the first step whose masks met the target, the step the masks froze (None: not yet)
        self.reached_at_step: int | None = None
        self.frozen_at_step: int | None = None
        self._collecting = False
        self._token_watch = None  # hook handle while statistics are collected (see _watch_tokens)

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> nn.Module:
        """Install the gates and calibrate (similarity weights, attention-difference init). With every indicator at
        its initial 'keep' value the model computes exactly what it computed before."""
        if self.states:
            raise RuntimeError("prepare() was already called")
        cfg = self.cfg
        for lc in self.cost.layers:
            modes = lc.adapter.reweight_modes(lc.module) if cfg.reweight else {}
            states = {}
            for g, (h, d) in lc.shapes.items():
                prunable = g in self.groups_pruned
                if not prunable and modes.get(g) is None:
                    continue
                st = GroupState(
                    h,
                    d,
                    g,
                    cfg.init_logit,
                    cfg.threshold,
                    cfg.equal_heads,
                    cfg.round_to,
                    cfg.min_per_head,
                    modes.get(g),
                    prunable,
                    cfg.similarity_combine,
                )
                p = next(lc.module.parameters())
                st.to(device=p.device)
                w = lc.adapter.channel_weights(lc.module, g).detach()
                st.tiebreak.copy_(1e-4 * zscore(w.abs().sum(-1).double().reshape(-1)).reshape(h, d).float())
                states[g] = st
            if states:
                install_gates(lc.module, lc.adapter, states)
                self.states[lc.path] = states
        self.calibrate()
        return self.model

    def _all_states(self):
        for path, states in self.states.items():
            for g, st in states.items():
                yield path, g, st

    def _watch_tokens(self, on: bool) -> None:
        """While statistics are collected, a pre-hook on the model hands each batch's ``attention_mask`` to the
        gates (padded tokens stay out of the similarity Gram matrices); removed otherwise, so that the model carries
        no hook of the pruner outside those forwards."""
        if on and self._token_watch is None:
            watch = TokenMaskWatch([st for _, _, st in self._all_states()])
            self._token_watch = self.model.register_forward_pre_hook(watch, with_kwargs=True)
        elif not on and self._token_watch is not None:
            self._token_watch.remove()
            self._token_watch = None
            for _, _, st in self._all_states():
                st.row_mask = None

    @torch.no_grad()
    def calibrate(self) -> None:
        """Similarity weights and indicator init from the calibration batch (eval mode). Padded tokens of a text
        batch count in neither: the similarity statistics skip them (:meth:`_watch_tokens`) and the init sums its
        differences over the batch's texts grouped by their real tokens (:func:`unpadded_parts`), one forward per
        group; without padding, one forward serves both."""
        cfg = self.cfg
        use_act = cfg.similarity and cfg.similarity_source == "activation"
        init_groups = self._init_targets() if cfg.attn_init else {}
        parts = unpadded_parts(self.example_inputs) if init_groups else None
        for _, _, st in self._all_states():
            st.reset_stats()
        was_training = self.model.training
        self.model.eval()
        try:
            if use_act or (init_groups and parts is None):
                inputs = self._statistics_forward(self.example_inputs, use_act, bool(init_groups) and parts is None,
                                                  init_groups)  # fmt: skip
            if cfg.similarity:
                self._update_alpha(from_weights=not use_act)
            if init_groups:
                gen = torch.Generator().manual_seed(cfg.seed)
                if parts is None:
                    D = self._init_differences(init_groups, inputs, gen)
                else:
                    D = {}
                    for part, share in parts:
                        found = self._init_differences(
                            init_groups, self._statistics_forward(part, False, True, init_groups), gen
                        )
                        for key, d in found.items():  # Frobenius norms add in squares, the KL means by share
                            d = d.double()
                            d = d**2 if cfg.attn_init_metric == "fro" else share * d
                            D[key] = D[key] + d if key in D else d
                    if cfg.attn_init_metric == "fro":
                        D = {key: d.sqrt() for key, d in D.items()}
                for (path, g), d in D.items():
                    st = self.states[path][g]
                    m0 = (cfg.init_logit + cfg.attn_init_kappa * zscore(d)).clamp_min(cfg.init_min)
                    st.indicator.data.copy_(m0.to(st.indicator.dtype))
        finally:
            for _, _, st in self._all_states():
                st.captured = {}
            self.model.train(was_training)

    def _statistics_forward(self, inputs, collect: bool, capture: bool, init_groups) -> dict:
        """One forward of ``inputs``: the similarity statistics (``collect``) and the gates' inputs and modules'
        inputs that the init needs (``capture``); returns the recorded module inputs."""
        wanted = set()
        if capture:  # the layers whose init needs their inputs (output difference)
            for lc in self.cost.layers:
                strategies = {lc.adapter.init_strategy(lc.module, g) for g in init_groups.get(lc.path, ())}
                if "output_difference" in strategies:
                    wanted.add(lc.path)
        for _, _, st in self._all_states():
            st.collect, st.capture = collect, capture
        self._watch_tokens(collect)
        try:
            return self._recorded_forward(wanted, inputs)
        finally:
            self._watch_tokens(self._collecting)
            for _, _, st in self._all_states():
                st.collect = st.capture = False

    def _init_differences(self, init_groups, inputs, gen) -> dict[tuple[str, str], torch.Tensor]:
        """``D`` ``(h, d)`` of every group to initialise, from the last captured forward."""
        cfg, out = self.cfg, {}
        for lc in self.cost.layers:
            for g in init_groups.get(lc.path, ()):
                st = self.states[lc.path][g]
                if lc.adapter.init_strategy(lc.module, g) == "attention_difference":
                    out[lc.path, g] = linear_attention_difference(
                        st.captured["q"],
                        st.captured["k"],
                        st.heads,
                        lc.adapter.kernel_options(lc.module)["focusing_factor"],
                        cfg.attn_init_metric,
                        cfg.attn_init_rows,
                        gen,
                    )
                else:
                    args, kwargs = inputs[lc.path]
                    out[lc.path, g] = output_difference(
                        lc.module,
                        args,
                        st,
                        cfg.attn_init_metric,
                        kwargs,
                        lc.adapter.output_linear(lc.module, g),
                        source=lc.adapter.input_linear(lc.module, g),
                    )
        return out

    def _recorded_forward(self, paths, inputs=None) -> dict[str, tuple[tuple, dict]]:
        """One forward of ``inputs`` (default: the calibration batch), recording the inputs of the modules at
        ``paths``."""
        grabbed: dict[str, tuple[tuple, dict]] = {}
        hooks = [
            lc.module.register_forward_pre_hook(
                lambda mod, args, kwargs, p=lc.path: grabbed.__setitem__(p, (_detached(args), kwargs)),
                with_kwargs=True,
            )
            for lc in self.cost.layers
            if lc.path in paths
        ]
        try:
            inputs = self.example_inputs if inputs is None else inputs
            call_model(self.model, _to(inputs, next(self.model.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
        return grabbed

    @torch.no_grad()
    def layer_inputs(self) -> dict[str, tuple[tuple, dict]]:
        """``{path: (args, kwargs)}``: what every prunable module is called with on the calibration batch (one
        forward in eval mode), e.g. to recompute a group's init with
        :func:`~mhaprune.pruning.init.output_difference`."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._recorded_forward({lc.path for lc in self.cost.layers})
        finally:
            self.model.train(was_training)

    def _init_targets(self) -> dict[str, list[str]]:
        scope = self.cfg.attn_init_scope
        out = {}
        for lc in self.cost.layers:
            groups = []
            for g, st in self.states.get(lc.path, {}).items():
                if not st.prunable:
                    continue
                kind = lc.adapter.attention_type(lc.module)
                if g == "qk" and kind is not None and (scope != "linear" or kind == "linear"):
                    groups.append(g)
                elif scope == "all":
                    groups.append(g)
            if groups:
                out[lc.path] = groups
        return out

    @torch.no_grad()
    def _update_alpha(self, from_weights: bool = False) -> None:
        for lc in self.cost.layers:
            for g, st in self.states.get(lc.path, {}).items():
                if not st.prunable:
                    continue
                if from_weights:
                    alpha = alpha_from_weights(lc.adapter.channel_weights(lc.module, g))
                elif st.grams:
                    alpha = alpha_from_grams(st.gram_matrices(centered=self.cfg.similarity_center))
                else:
                    continue
                st.alpha.copy_(alpha.to(st.alpha.dtype))
                st.reset_stats()

    # ------------------------------------------------------------------ search
    def param_groups(
        self, model: nn.Module | None = None, weight_decay: float = 0.05, lr: float | None = None
    ) -> list[dict]:
        """Optimizer groups: indicators (``indicator_lr``, no decay), reweight parameters (no decay), the rest (at
        ``lr · weight_lr_scale`` when ``lr`` is given, else the optimizer's default)."""
        model = model or self.model
        ind = {id(st.indicator) for _, _, st in self._all_states()}
        rw = {id(st.reweight) for _, _, st in self._all_states() if st.reweight is not None}
        groups = {"ind": [], "rw": [], "decay": [], "no_decay": []}
        plain = no_weight_decay(model)
        for name, p in model.named_parameters():
            if not p.requires_grad and id(p) not in ind:
                continue
            if id(p) in ind:
                groups["ind"].append(p)
            elif id(p) in rw:
                groups["rw"].append(p)
            elif name in plain:
                groups["no_decay"].append(p)
            else:
                groups["decay"].append(p)
        weights = {} if lr is None else {"lr": lr * self.cfg.weight_lr_scale}
        return [
            {"params": groups["decay"], "weight_decay": weight_decay, **weights},
            {"params": groups["no_decay"], "weight_decay": 0.0, **weights},
            {"params": groups["rw"], "weight_decay": 0.0},
            {"params": groups["ind"], "weight_decay": 0.0, "lr": self.cfg.indicator_lr},
        ]

    def soft_macs(self) -> torch.Tensor:
        """MACs of the adjusted masks, differentiable through the straight-through estimator."""
        total = torch.tensor(float(self.budget.const))
        for lc in self.budget.layers:
            states = self.states.get(lc.path, {})
            totals = {g: st.ste_mask().sum() for g, st in states.items() if st.prunable}
            total = total + lc.macs_total(totals)
        return total

    def current_macs(self) -> int:
        """Deployable MACs of the current hard masks (heads padded to the widest one when not equal); with a latency
        target allocated by the tables (``latency_allocation="tables"``), their predicted latency in milliseconds."""
        return self.budget.total(self._hard_widths())

    def regularization_loss(self) -> torch.Tensor:
        """``λ · R(MACs(M), T)``; add it to the task loss at every search step."""
        ratio = self.soft_macs() / self.target
        if self.cfg.regularizer == "squared":
            r = torch.relu(ratio - 1) ** 2
        else:
            r = torch.log(ratio).abs()
        return self.cfg.reg_weight * r

    @property
    def frozen(self) -> bool:
        return any(bool(st.frozen) for _, _, st in self._all_states() if st.prunable)

    def step(self) -> None:
        """Call after every optimizer step: similarity refresh, patience bookkeeping, freezing."""
        self.step_count += 1
        if self.frozen:
            return
        every = self.cfg.similarity_every
        if self._collecting:
            self._update_alpha()
            for _, _, st in self._all_states():
                st.collect = False
            self._collecting = False
            self._watch_tokens(False)
        elif (
            self.cfg.similarity
            and self.cfg.similarity_source == "activation"
            and every
            and (self.step_count % every == 0)
        ):
            for _, _, st in self._all_states():
                st.collect = st.prunable
            self._collecting = True
            self._watch_tokens(True)
        if self.current_macs() <= self.target:
            self.below_target_steps += 1
            if self.reached_at_step is None:
                self.reached_at_step = self.step_count
        else:
            self.below_target_steps = 0
        if self.cfg.patience and self.below_target_steps >= self.cfg.patience:
            self.freeze()

    def freeze(self) -> None:
        """Fix the current masks (the search is over); weights may keep training."""
        self.frozen_at_step = self.step_count
        for _, _, st in self._all_states():
            if st.prunable:
                st.freeze()
            st.collect = False
        self._collecting = False
        self._watch_tokens(False)
        _logger.info(
            "masks frozen at step %d (budget %g, target %g)", self.step_count, self.current_macs(), self.target
        )

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "below_target_steps": self.below_target_steps,
            "collecting": self._collecting,
            "reached_at_step": self.reached_at_step,
            "frozen_at_step": self.frozen_at_step,
            # a latency target allocated by MACs: the level measured before the search, which a resumed run keeps
            # (timed again, the clock would give another)
            "target": self.target,
            "presearch": self.presearch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.below_target_steps = int(state["below_target_steps"])
        self.reached_at_step = state.get("reached_at_step")  # absent in checkpoints before these were recorded
        self.frozen_at_step = state.get("frozen_at_step")
        if self.presearch is not None and state.get("presearch") is not None:
            self.target, self.presearch = int(state["target"]), state["presearch"]
        self._collecting = bool(state.get("collecting", False))
        self._watch_tokens(self._collecting)
        for _, _, st in self._all_states():
            st.collect = self._collecting and st.prunable
            if bool(st.frozen):
                st.indicator.requires_grad_(False)

    # ------------------------------------------------------------------ plan and convert
    def _hard_widths(self) -> dict[str, dict[str, int]]:
        out = {}
        for path, states in self.states.items():
            w = {}
            for g, st in states.items():
                if st.prunable:
                    m = st.hard_mask()
                    w[g] = max(1, int(m[0].sum())) if st.equal_heads else padded_width(m)
            out[path] = w
        return out

    def plan(self) -> Plan:
        """The plan of the current masks, repaired (and filled) so that MACs ≤ target. Works at any point after
        :meth:`prepare`, including right after it (one-shot use of the initialised indicators)."""
        if not self.states:
            raise RuntimeError("call prepare() before plan()")
        scores, widths = {}, self._hard_widths()
        for path, states in self.states.items():
            sc = {g: (st.scores() + st.tiebreak).detach().float().cpu() for g, st in states.items() if st.prunable}
            if bool(next(iter(states.values())).frozen):  # frozen masks: kept channels rank first
                sc = {g: s + 10.0 * states[g].frozen_mask.cpu() for g, s in sc.items()}
            if sc:
                scores[path] = sc
        widths = {p: {g: widths[p][g] for g in sc} for p, sc in scores.items()}

        def build(target):
            return plan_from_rankings(
                self.model,
                self.budget,
                scores,
                widths,
                target,
                step=self.cfg.round_to,
                min_per_head=self.cfg.min_per_head,
                fill=self.cfg.fill,
                tied=self.cfg.same_qk_v_width,
                meta={"config": self.cfg.to_dict(), "search_steps": self.step_count},
            )

        if self.latency is None:
            return build(self.target)
        if self.budget is not self.cost:  # a latency target allocated by the tables: plans count milliseconds
            def at_ms(ms):
                plan = build(ms)
                plan.meta["latency"]["allocation"] = "tables"
                return plan

            def attempt(ms):
                plan = at_ms(ms)
                return plan, plan.meta["latency"]["predicted_ms"], self._planned_model(plan)

            if not self.cfg.latency_feedback:
                return at_ms(self.latency_target)
            floor = self.latency.min_total(self.groups_pruned, self.cfg.min_per_head)
            plan, info = self._feedback(self.latency_target, attempt, lambda ms: ms, floor, self.latency.dense_total,
                                        macs=False)  # fmt: skip
            plan.meta["latency"].update(info)
            return plan
        # a latency target allocated by MACs: each plan is the MACs plan of a MACs level
        ranked = rank_scores(scores)

        def predicted(t):
            w = greedy_widths(self.cost, ranked, widths, int(t), self.cfg.round_to, self.cfg.min_per_head,
                              self.cfg.fill, self.cfg.same_qk_v_width)  # fmt: skip
            return self.latency.total(w)

        def at_level(t):
            plan = build(int(t)).with_target(None)  # planned to a latency: no MACs target of the user's
            plan.meta["latency"] = {**latency_meta(self.latency, self.latency_target, plan.widths()),
                                    "allocation": "macs", "macs_target": int(t)}  # fmt: skip
            return plan

        lo, hi = self.cost.min_total(self.groups_pruned, self.cfg.min_per_head), self.cost.dense_total - 1
        if not self.cfg.latency_feedback:  # the largest MACs level whose plan the tables predict on target
            return at_level(macs_level(predicted, self.latency_target, lo, hi))

        def attempt(t):
            plan = at_level(t)
            return plan, plan.meta["latency"]["predicted_ms"], self._planned_model(plan)

        def to_level(ms):
            return macs_level(predicted, ms, lo, hi)

        # first the level the search ran at (set by the measured plans before it, ``_presearch_level``): the plan
        # a MACs target of that level gives
        plan, info = self._feedback(self.target, attempt, to_level, lo, hi, macs=True)
        plan.meta["latency"].update(info, presearch=self.presearch)
        return plan

    def _planned_model(self, plan: Plan) -> nn.Module:
        return apply_plan(copy.deepcopy(self.latency.dense_model), plan)

    def _presearch_level(self, level: int) -> int:
        """The MACs level for the search under a latency target allocated by MACs: uniform plans (one keep ratio in
        every pruned group) timed beside the dense model before the search (at most ``cfg.latency_feedback`` + 1),
        from the tables' level (``level``) on, each next level by :func:`next_level`. The search then runs at the
        MACs level that measured on target, and its plan is the plan a MACs target of that level gives. Planned
        from the tables alone, the search ran at a level that the clock moved afterwards by up to 40% (deit_micro,
        tables error 0.72), so the plan kept was cut or filled from masks searched for another level."""
        cfg, cost, latency = self.cfg, self.cost, self.latency
        lo, hi = cost.min_total(self.groups_pruned, cfg.min_per_head), cost.dense_total - 1

        def attempt(t):
            w, _ = uniform_widths(cost, self.groups_pruned, int(t), cfg.min_per_head, cfg.round_to,
                                  cfg.same_qk_v_width)  # fmt: skip
            return w, latency.total(w), latency.sliced(w)

        _, self.presearch = self._feedback(level, attempt, self._uniform_level, lo, hi, macs=True,
                                           what="the uniform plan before the search")  # fmt: skip
        return int(self.presearch["macs_target"])

    def _uniform_level(self, ms: float) -> int:
        """The MACs of the uniform plan (one keep ratio in every pruned group) that the tables predict at ``ms``,
        within the reachable MACs."""
        cfg = self.cfg
        widths, _ = uniform_widths(self.latency, self.groups_pruned, ms, cfg.min_per_head, cfg.round_to,
                                   cfg.same_qk_v_width)  # fmt: skip
        floor = self.cost.min_total(self.groups_pruned, cfg.min_per_head)
        return max(floor, min(self.cost.total(widths), self.cost.dense_total - 1))

    def _feedback(self, level, attempt, to_level, lo, hi, macs: bool, what: str = "the plan"):
        """The latency feedback: plan at ``level`` (``attempt(level)``: ``(plan, predicted ms, the planned model)``),
        time the planned model beside the dense model and, while it measures off the target (slower by over
        ``FEEDBACK_TOLERANCE``, or faster by over ``FEEDBACK_SLACK``), plan again at :func:`next_level` (at most
        ``cfg.latency_feedback`` times). Each timing counts on the tables' scale, the ratio to the dense model times
        the tables' dense latency: a machine whose speed drifts between the tables' measurement and this one
        (measured here: the dense deit_micro at 29.9 ms in the tables, 41.8-46.7 ms four minutes later) would
        otherwise make the feedback prune for the drift. The
        plan kept is the slowest one measured on target (else the fastest measured): a plan far faster than the
        target costs accuracy for nothing (measured: a deit_micro plan cut to 43% of the dense latency, 48.8% val
        top-1, by a machine that slowed 1.5x between the tables and the timing). Levels are MACs targets with
        ``macs``, else milliseconds. Returns the plan kept and its record."""
        goal, dense = self.latency_target, self.latency.dense_total
        ceiling = (1 + FEEDBACK_TOLERANCE) * goal
        dense_level = self.cost.dense_total if macs else dense
        clock: list[dict] = []

        def timed(at):
            plan, predicted, model = attempt(at)
            ms, dense_ms = self.latency.time_beside_dense(model)
            clock.append({"plan_ms": round(ms, 4), "dense_ms": round(dense_ms, 4)})
            return at, plan, predicted, ms * dense / dense_ms

        tried = [timed(level)]  # (level, plan, predicted, measured)
        for _ in range(self.cfg.latency_feedback):
            measured = tried[-1][3]
            if (1 - FEEDBACK_SLACK) * goal <= measured <= ceiling or (measured > goal and tried[-1][0] <= lo):
                break
            new = next_level([(t[0], t[2], t[3]) for t in tried], goal, dense, to_level, lo, hi, dense_level)
            if any(abs(new - t[0]) <= 1e-3 * abs(t[0]) for t in tried):
                break
            tried.append(timed(new))
        within = [t for t in tried if t[3] <= ceiling]
        level, plan, predicted, measured = max(within, key=lambda t: t[3]) if within else min(tried, key=lambda t: t[3])
        info = {  # every figure rounded alike, so comparisons in the record hold as computed
            "target_ms": round(goal, 4),
            "predicted_ms": round(predicted, 4),
            "planned_to_ms": round(predicted if macs else level, 4),
            "measured_ms": round(measured, 4),
            "feedback_ms": [round(t[3], 4) for t in tried],
            "tables_error": round(tried[0][3] / tried[0][2], 4),
            "clock": clock,
        }
        if macs:
            info.update(macs_target=int(level), feedback_macs=[int(t[0]) for t in tried])
        if not 0.8 <= info["tables_error"] <= 1.25:
            _logger.warning("the latency tables predicted %.2f ms for %s, the model measured the equivalent of "
                            "%.2f ms (timed beside the dense model): the tables (cached in %s) may have been measured "
                            "on a busy machine; delete that file to measure them again on a quiet one",
                            tried[0][2], what, tried[0][3], self.latency.path)  # fmt: skip
        if measured > ceiling:
            _logger.warning("%s measured %.2f ms against the %.2f ms latency target after %d correction(s) (the "
                            "machine may be busy)", what, measured, goal, len(tried) - 1)  # fmt: skip
        return plan, info

    @torch.no_grad()
    def set_masks(self, plan: Plan) -> None:
        """Freeze the gates to the kept channels of ``plan`` (the masked equivalent of ``apply_plan``)."""
        for path, lp in plan.layers.items():
            for g, keep in lp.keep.items():
                st = self.states[path][g]
                mask = torch.zeros_like(st.frozen_mask)
                for i, idx in enumerate(keep):
                    mask[i, idx] = 1.0
                st.frozen_mask.copy_(mask)
                st.frozen.fill_(True)
                st.indicator.requires_grad_(False)

    def fold_reweight(self) -> None:
        """Fold every reweight multiplier into the weights and reset it to 1 (outputs unchanged)."""
        with torch.no_grad():
            for lc in self.cost.layers:
                states = self.states.get(lc.path, {})
                lc.adapter.fold(lc.module, reweight_multipliers(states))
                for st in states.values():
                    if st.reweight is not None:
                        st.reweight.fill_(1.0 if st.reweight_mode == "channel" else 0.0)

    def convert(self, plan: Plan | None = None) -> nn.Module:
        """Fold the reweight module, remove every gate and slice the model to ``plan`` (default: :meth:`plan`).
        Returns the same model object, now a plain ``nn.Module``. Rebuild optimizers afterwards."""
        plan = plan or self.plan()
        self.fold_reweight()
        self._watch_tokens(False)
        for lc in self.cost.layers:
            lc.adapter.uninstall(lc.module)
        self.states = {}
        apply_plan(self.model, plan)
        return self.model


def latency_budget(model: nn.Module, example_inputs, cfg: PruneConfig, macs_cost=None, device=None):
    """``(LatencyCost, target in ms)``: the latency model of ``device`` (default: where the model is) at the
    config's batch and threads (measured once, then cached), and ``cfg.target_latency`` checked against what the
    widths can reach (a :class:`ConfigError` says why not)."""
    from ..cost.latency import LatencyCost

    groups = cfg.groups()
    param = next(model.parameters(), None)
    device = device or (param.device if param is not None else "cpu")
    budget = LatencyCost(model, example_inputs, groups, batch=cfg.target_latency_batch, device=device,
                         threads=cfg.target_latency_threads, macs_cost=macs_cost,
                         calibrate=cfg.latency_calibration)  # fmt: skip
    ms, dense = parse_latency(cfg.target_latency, budget.dense_total), budget.dense_total
    if budget.const < 0:
        _logger.warning(
            "the per-layer latency tables add up to more than the measured dense model (%.2f ms vs %.2f ms): they "
            "were measured on a busy machine, so predictions are unreliable; measure again on a quiet one (delete %s)",
            dense - budget.const, dense, budget.path,
        )  # fmt: skip
    where = f"batch {budget.setting.batch}, {budget.setting.threads} thread(s), {budget.setting.device_name}"
    if ms >= dense:
        raise ConfigError(
            f"latency target {ms:.2f} ms is not below the dense model's {dense:.2f} ms ({where}); choose a smaller "
            f"target, e.g. 0.7 for 70% of it"
        )
    floor = budget.min_total(groups, cfg.min_per_head)
    if ms < floor:
        raise ConfigError(
            f"latency target {ms:.2f} ms is below the fastest reachable model ({floor:.2f} ms predicted, "
            f"{100 * floor / dense:.0f}% of dense, {where}, with {cfg.min_per_head} channel(s) per head in every "
            f"pruned group: the unpruned parts take that long); choose a larger target"
        )
    return budget, ms
