"""A latency model of the device: per-layer lookup tables over kept widths, measured once and cached.

Every prunable module (attention, MLP) is timed alone, on the inputs it receives in a forward of the whole model at
the stated batch, sliced to a grid of kept channels per head: 1, 1/8, 1/4, 1/2, 3/4 and all of each pruned group
(Q/K × V for attention, so a 6 × 6 table; the hidden width for an MLP). Between grid points the latency is
interpolated (multilinear, differentiable in the widths, so the search's regulariser can use it like the MACs).
A concrete width that is not a multiple of 8 runs slower than that smooth table says (SIMD blocking): each group's
penalty per alignment class (4 / 2 / 1 off a multiple of 8) is measured once with the table, as a share of the part
of the layer's latency that depends on that group (the layer at that width minus the layer with the group at one
channel per head), and is added for such widths off the grid: the matmuls over that group's channels slow down, not
the rest of the layer (soft widths in the search use the smooth table).
The rest of the model is one constant: the measured latency of the dense model minus its layers' table values. A
model's predicted latency is ``const + Σ layer(widths)`` (NViT and Kwon et al. budget latency this way). The dense
model and every layer at full width are timed in turn, round after round (the reference), so that the constant and
each table's scale (its values times the layer's reference time over its own full-width value) come from one
stretch of a clock that drifts on shared hosts, not from moments minutes apart.

Tables are cached as JSON under ``$MHAPRUNE_CACHE`` (default ``~/.cache/mhaprune``)/``latency/``, one file per device
setting (the device's name, CPU threads, torch version, dtype, batch), each entry keyed by the layer's signature
(module type, widths, input shapes). A file whose setting differs is never read; an entry for another layer is
ignored; files are written to a temp file and renamed, so a crash never leaves half a table.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..adapters import prunable_modules
from ..utils import atomic_write_text
from ..utils.meta import cpu_model
from ..utils.threads import torch_threads
from .macs import call_model

_logger = logging.getLogger(__name__)

# 2: the calibration stores fractions of dense; 3: the tables' alignment factors; 4: alignment penalties as shares
# of the group's part of the layer (a factor on the whole layer over-charged narrow plans: deit_micro, 28.0 ms
# predicted for a plan that ran at 22.7)
# 5: the dense model timed in turn with every layer at full width (the constant, and each table's scale)
CACHE_VERSION = 5
# widths off a multiple of 8 run slower than the smooth table says (measured on deit_small's MLP, batch 32, AVX-512:
# hidden 704 -> 37.6 ms, 700 -> 43.6, 703 -> 46.7; 768 -> 43.8, 767 -> 53.9): each group's penalty per alignment
# class (the largest of 4 / 2 / 1 dividing the width) is measured at ALIGN_FRACTIONS of its width, off by 4 / 2 / 1
ALIGN, ALIGN_CLASSES, ALIGN_FRACTIONS, ALIGN_MIN_WIDTH = 8, (4, 2, 1), (0.5, 0.75), 16
# a misaligned width costs 0 to 50% more of its group's part (deit MLPs measured 0.1-0.3); a share outside that is
# timing noise amplified where the group's part is small (attention Q/K at full V: up to the old clamp, 2.0)
ALIGN_SHARE_RANGE = (0.0, 0.5)
GRID = (0.125, 0.25, 0.5, 0.75, 1.0)  # fractions of a group's width, plus 1 channel
# a narrower layer measured this much slower than the whole one (plus the slack, for sub-millisecond layers) means
# the machine was busy during that measurement (descheduled threads cost a scheduler quantum, milliseconds): the
# entry is measured again, and a warning says so if it stays that slow
BUSY_FACTOR, BUSY_SLACK_MS = 1.5, 0.05


def cache_root() -> Path:
    return Path(os.environ.get("MHAPRUNE_CACHE") or Path.home() / ".cache" / "mhaprune") / "latency"


def device_name(device: str | torch.device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores)"


@dataclass(frozen=True)
class DeviceSetting:
    """What a latency table depends on besides the layer: the device, threads, software and the call."""

    device: str
    device_name: str
    threads: int
    torch: str
    dtype: str
    batch: int
    version: int = CACHE_VERSION

    @classmethod
    def current(cls, device="cpu", batch: int = 32, dtype: torch.dtype = torch.float32, threads: int | None = None):
        dev = torch.device(device)
        return cls(dev.type, device_name(dev), threads or torch.get_num_threads(), torch.__version__,
                   str(dtype).removeprefix("torch."), batch)  # fmt: skip

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_call(fn, device="cpu", repeats: int = 15, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` after ``warmup`` calls."""
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[len(times) // 2]


@torch.no_grad()
def time_interleaved(fns, device="cpu", rounds: int = 15, warmup: int = 2, warm=()) -> list[list[float]]:
    """Milliseconds of every call of ``fns`` in turn, ``rounds`` times (``[fn][round]``), after ``warmup`` rounds:
    the calls of one round run within seconds of each other, so comparisons within a round survive a machine whose
    speed drifts over minutes (a shared host: here by ±13% within a run). ``warm``: the indices of the functions
    timed right after an untimed call of their own (a small module's caches as its table measured it)."""
    dev = torch.device(device)
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, (fn, row) in enumerate(zip(fns, times)):
            if i in warm:
                fn()
            _sync(dev)
            t = time.perf_counter()
            fn()
            _sync(dev)
            row.append(1e3 * (time.perf_counter() - t))
    return times


def grid_widths(full: int) -> list[int]:
    return sorted({1, *(max(1, round(f * full)) for f in GRID)})


def interpolate(axes: list[list[int]], values: torch.Tensor, point: list) -> torch.Tensor:
    """Multilinear interpolation of ``values`` (one dimension per axis) at ``point`` (floats or 0-d tensors, one per
    axis); linear extrapolation beyond the grid; differentiable in ``point``."""
    index, weight = [], []
    for xs, w in zip(axes, point):
        if len(xs) == 1:
            index.append(0)
            weight.append(None)
            continue
        wf = float(w.detach()) if torch.is_tensor(w) else float(w)
        i = max(0, min(len(xs) - 2, next((j for j in range(len(xs) - 1) if wf < xs[j + 1]), len(xs) - 2)))
        index.append(i)
        weight.append((w - xs[i]) / (xs[i + 1] - xs[i]))
    out = 0.0
    for corner in itertools.product(*[(0,) if t is None else (0, 1) for t in weight]):
        v = values[tuple(i + c for i, c in zip(index, corner))]
        f = 1.0
        for c, t in zip(corner, weight):
            if t is not None:
                f = f * (t if c else 1 - t)
        out = out + f * v
    return out


def align_class(w) -> int | None:
    """The alignment class of a concrete width: ``None`` for a multiple of ``ALIGN`` (or a soft, differentiable
    width), else the largest of 4 / 2 / 1 that divides it."""
    if torch.is_tensor(w):
        if w.requires_grad:
            return None
        w = float(w)
    if float(w) != int(w) or int(w) % ALIGN == 0:
        return None
    return next(c for c in ALIGN_CLASSES if int(w) % c == 0)


class LayerLatency:
    """One prunable module's latency table, with the interface of :class:`~mhaprune.pruning.budget.LayerCost`
    (``macs`` / ``macs_total`` return milliseconds here)."""

    def __init__(self, path: str, module: nn.Module, adapter, axes: dict[str, list[int]], values: torch.Tensor,
                 align: dict[str, dict[str, float]] | None = None,
                 align_share: dict[str, dict[str, float]] | None = None):  # fmt: skip
        self.path, self.module, self.adapter = path, module, adapter
        self.shapes = dict(adapter.groups(module))
        self.axes, self.values = axes, values
        self.align = align or {}  # group -> {alignment class: measured / smooth latency}: kept as the record
        self.align_share = align_share or {}  # group -> {alignment class: penalty / the group's part of the layer}
        self.scale = 1.0  # the in-place calibration of the table's savings (LatencyCost sets it)
        self.full = float(values.flatten()[-1]) if values.numel() else 0.0  # every group at full width

    def rescale(self, full_ms: float) -> None:
        """Put the table on another stretch of the machine's clock: every value times ``full_ms`` over the table's
        full-width value (the alignment penalties are shares, unchanged)."""
        if self.full > 0:
            self.values = self.values * (full_ms / self.full)
            self.full = float(full_ms)

    def smooth(self, per_head: dict[str, float]):
        """The isolated module's latency interpolated between the grid widths (1 and fractions of the width:
        multiples of 8 for groups of 64 channels and more)."""
        point = [per_head.get(g, self.shapes[g][1]) for g in self.axes]
        return interpolate(list(self.axes.values()), self.values, point)

    def part(self, per_head: dict[str, float], group: str):
        """The part of the smooth latency that depends on ``group``: the layer as given minus the layer with that
        group at its narrowest grid width (one channel per head)."""
        return (self.smooth(per_head) - self.smooth({**per_head, group: self.axes[group][0]})).clamp_min(0.0)

    def table(self, per_head: dict[str, float]):
        """The isolated module's latency, uncalibrated: the smooth table plus, for every group whose concrete width
        is off the grid and not a multiple of 8, its alignment class's penalty share times that group's part of the
        layer (soft widths: the smooth table alone)."""
        out = self.smooth(per_head)
        for g, shares in self.align_share.items():
            w = per_head.get(g, self.shapes[g][1])
            c = align_class(w)
            if c is not None and int(w) not in self.axes[g]:
                out = out + shares.get(str(c), 0.0) * self.part(per_head, g)
        return out

    def latency(self, per_head: dict[str, float]):
        """The layer's latency in place: its full-width time less ``scale`` × the table's saving."""
        return (self.full - self.scale * (self.full - self.table(per_head))).clamp_min(0.0)

    macs = latency  # the budget's unit (greedy repair / fill and the regulariser call it ``macs``)

    def macs_total(self, totals: dict):
        return self.latency({g: t / self.shapes[g][0] for g, t in totals.items()})


def _shapes(x):
    if torch.is_tensor(x):
        return [list(x.shape), str(x.dtype)]
    if isinstance(x, (list, tuple)):
        return [_shapes(v) for v in x]
    if isinstance(x, dict):
        return {k: _shapes(v) for k, v in sorted(x.items())}
    return repr(x)


def _signature(module: nn.Module, adapter, args, kwargs, groups) -> str:
    """The layer as the table sees it: type, configuration, groups and input shapes (not the weights' values)."""
    text = json.dumps([type(module).__qualname__, adapter.kind, module.extra_repr(), sorted(groups),
                       sorted(adapter.groups(module).items()), _shapes(args), _shapes(kwargs)])  # fmt: skip
    return hashlib.sha1(text.encode()).hexdigest()


def _inputs(model: nn.Module, example_inputs, entries) -> dict[str, tuple]:
    """The positional and keyword inputs of every prunable module in one forward of ``example_inputs``."""
    seen: dict[str, tuple] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, kw, p=p: seen.setdefault(p, (a, kw)), with_kwargs=True)
             for p, m, _ in entries]  # fmt: skip
    try:
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def repeat_rows(x, n: int):
    """``x`` (a batch, or a dict of batches) with its rows repeated to ``n`` rows."""
    if torch.is_tensor(x):
        reps = -(-n // len(x))
        return x.repeat(reps, *([1] * (x.ndim - 1)))[:n]
    return {k: repeat_rows(v, n) for k, v in x.items()}


CALIBRATION = ({"attention": 0.5}, {"mlp": 0.5}, {"attention": 0.25, "mlp": 0.25})  # kind -> fraction kept


def fit_scales(table_savings: list[dict[str, float]], measured_savings: list[float], lo=0.25, hi=4.0):
    """Least-squares scales ``s_kind`` with ``measured ≈ Σ_kind s_kind · table_saving_kind`` over the calibration
    plans (no intercept: the dense model is exact by construction); kinds without savings keep 1; clamped to
    [lo, hi] so a noisy measurement cannot flip a table."""
    kinds = sorted({k for row in table_savings for k, v in row.items() if abs(v) > 0})
    if not kinds:
        return {}
    a = torch.tensor([[row.get(k, 0.0) for k in kinds] for row in table_savings], dtype=torch.float64)
    b = torch.tensor(measured_savings, dtype=torch.float64).unsqueeze(1)
    sol = torch.linalg.lstsq(a, b).solution.squeeze(1)
    return {k: float(min(hi, max(lo, v))) for k, v in zip(kinds, sol.tolist())}


class LatencyCost:
    """Predicted latency (milliseconds per forward) of ``model`` as a function of the kept widths, with the interface
    of :class:`~mhaprune.pruning.budget.ModelCost` (``layers``, ``const``, ``total``, ``dense_total``), so that the
    search's regulariser and the plan's repair / fill use it where they use MACs.

    Args:
        model: the dense model (plain, before any gates).
        example_inputs: a batch (or a dict of tensors) of the model's inputs; rows are repeated to ``batch``.
        groups: the pruned channel groups (the tables vary these; the others stay at full width).
        batch / dtype / device / threads: the setting the latency is for.
        cache: read and write the cached tables (``False``: measure every table).
        calibrate: scale each kind's table savings (attention, MLP) to the whole model's, fitted on three measured
            whole-model plans (attention at 1/2, MLP at 1/2, both at 1/4 of every group's channels), each timed
            beside the dense model and counted as its measured fraction of dense: modules timed alone do not save
            what they save inside the model (caches, memory traffic, kernel choice).
        macs_cost: the model's :class:`~mhaprune.pruning.budget.ModelCost` (plans built with this budget record
            their MACs from it).
    """

    def __init__(self, model: nn.Module, example_inputs, groups=("qk", "v", "hidden"), batch: int = 32,
                 dtype: torch.dtype = torch.float32, device="cpu", threads: int | None = None, cache: bool = True,
                 repeats: int = 15, macs_cost=None, calibrate: bool = False):  # fmt: skip
        self.setting = DeviceSetting.current(device, batch, dtype, threads)
        self.macs_cost = macs_cost  # the model's ModelCost: plans built on this budget still record their MACs
        self.device, self.dtype, self.repeats = torch.device(device), dtype, repeats
        with torch_threads(threads):
            self._build(model, example_inputs, set(groups), cache, calibrate)

    @property
    def path(self) -> Path:
        return cache_root() / f"{self.setting.key()}.json"

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if data.get("setting") != asdict(self.setting):  # another device, threads or torch: never used
            return {}
        return data.get("entries", {})

    def _save(self, entries: dict) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            current = self._load()  # another process may have added entries meanwhile
            data = {"setting": asdict(self.setting), "entries": {**current, **entries}}
            atomic_write_text(self.path, json.dumps(data))
        except OSError as e:  # a read-only home: the tables still work for this run
            _logger.warning("could not write the latency cache %s (%s); the tables are measured again next time",
                            self.path, e)  # fmt: skip

    def _build(self, model: nn.Module, example_inputs, groups: set[str], cache: bool, calibrate: bool) -> None:
        model = copy.deepcopy(model).eval().to(self.device, self.dtype)
        x = repeat_rows(example_inputs, self.setting.batch)
        x = {k: v.to(self.device) for k, v in x.items()} if isinstance(x, dict) else x.to(self.device, self.dtype)
        self.dense_model, self._x = model, x  # kept to time planned models (``time``)
        entries = prunable_modules(model)
        inputs = _inputs(model, x, entries)
        stored = self._load() if cache else {}
        new: dict = {}
        sigs = []
        self.layers: list[LayerLatency] = []
        for path, module, adapter in entries:
            if path not in inputs:
                continue
            args, kwargs = inputs[path]
            pruned = [g for g in adapter.groups(module) if g in groups]
            sig = _signature(module, adapter, args, kwargs, pruned)
            sigs.append([path, sig])
            entry = stored.get(sig) or new.get(sig)
            if entry is None:
                entry = self._measure(module, adapter, args, kwargs, pruned)
                new[sig] = entry
            axes = {g: list(w) for g, w in entry["axes"].items()}
            values = torch.tensor(entry["ms"], dtype=torch.float64)
            self.layers.append(LayerLatency(path, module, adapter, axes, values, entry.get("align"),
                                            entry.get("align_share")))  # fmt: skip
        whole = [type(model).__qualname__, getattr(model, "arch_name", None), sigs, _shapes(x)]
        dense_key = "model:" + hashlib.sha1(json.dumps(whole).encode()).hexdigest()
        ref = stored.get(dense_key)
        if ref is None:  # the key hashes every layer's signature: a stored reference has one time per layer
            ref = new[dense_key] = self._reference(model, x, inputs)
        for lc, ms in zip(self.layers, ref["layers"]):
            lc.rescale(ms)  # each table on the reference's clock
        self.dense_total = float(ref["ms"])  # measured (or cached): the budget's "dense" value
        self.const = self.dense_total - sum(lc.full for lc in self.layers)
        self.scales: dict[str, float] = {}
        if calibrate and self.layers:
            calib_key = "calibration:" + dense_key.removeprefix("model:")
            entry = stored.get(calib_key)
            if entry is None:
                # each plan timed beside the dense model (one forward each in turn): its fraction of dense holds where
                # the machine's speed drifts between the tables and the calibration (here by up to 1.5x in minutes)
                fractions = []
                for m in self._calibration_models(model):
                    ms, dense_ms = self.time_beside_dense(m)
                    fractions.append(ms / dense_ms)
                entry = {"fraction_of_dense": fractions}
                new[calib_key] = entry
            savings = [self._table_savings(plan) for plan in CALIBRATION]
            self.scales = fit_scales(savings, [self.dense_total * (1 - f) for f in entry["fraction_of_dense"]])
            for lc in self.layers:
                lc.scale = self.scales.get(lc.adapter.kind, 1.0)
        if new and cache:
            self._save(new)
        _logger.info("latency tables: %d layer(s), %d measured, dense %.2f ms (batch %d, %d threads, %s), "
                     "in-place scales %s", len(self.layers), len(new), self.dense_total, self.setting.batch,
                     self.setting.threads, self.setting.device_name, self.scales)  # fmt: skip

    def _reference(self, model: nn.Module, x, inputs: dict) -> dict:
        """The dense model and every layer at full width timed in turn, ``repeats`` rounds (:func:`time_interleaved`;
        each layer right after an untimed call of its own, as its table was measured): ``{"ms": dense, "layers":
        [each layer]}``, medians over the rounds. The constant (dense minus the layers) and each table's scale come
        from one stretch of the machine's clock: with the dense model timed alone, minutes from the tables, the
        constant of deit_small came out 242 / 232 / 517 ms in three builds in a row (11-22% of dense)."""
        modules = dict(model.named_modules())
        fns = [lambda: call_model(model, x)]
        for lc in self.layers:
            args, kwargs = inputs[lc.path]
            fns.append(lambda m=modules[lc.path], a=args, k=kwargs: m(*a, **k))
        times = time_interleaved(fns, self.device, self.repeats, warm=range(1, len(fns)))
        return {"ms": statistics.median(times[0]), "layers": [statistics.median(t) for t in times[1:]]}

    def _plan_widths(self, lc: LayerLatency, fractions: dict[str, float]) -> dict[str, int]:
        f = fractions.get(lc.adapter.kind)
        return {} if f is None else {g: max(1, round(f * lc.shapes[g][1])) for g in lc.axes}

    def _table_savings(self, fractions: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for lc in self.layers:
            saving = lc.full - float(lc.table(self._plan_widths(lc, fractions)))
            out[lc.adapter.kind] = out.get(lc.adapter.kind, 0.0) + saving
        return out

    def _calibration_models(self, model: nn.Module):
        """The dense model with every layer of a kind sliced to the calibration fractions, one plan at a time."""
        for fractions in CALIBRATION:
            yield self.sliced({lc.path: self._plan_widths(lc, fractions) for lc in self.layers}, model)

    def sliced(self, widths: dict[str, dict[str, int]], model: nn.Module | None = None) -> nn.Module:
        """A copy of ``model`` (default: :attr:`dense_model`) with each layer's groups sliced to ``widths`` (per head;
        the first channels of every head: timing needs widths only); groups not named stay at full width."""
        m = copy.deepcopy(self.dense_model if model is None else model)
        modules = dict(m.named_modules())
        for lc in self.layers:
            w = widths.get(lc.path)
            if w:
                lc.adapter.slice(modules[lc.path], self._first_channels(lc.shapes, w))
        return m

    def _first_channels(self, shapes: dict, widths: dict[str, int]) -> dict[str, torch.Tensor]:
        """Keep indices of the first ``widths[g]`` channels of every head of each group (timing needs widths only)."""
        return {g: torch.arange(w, device=self.device).expand(shapes[g][0], -1) for g, w in widths.items()}

    def _measure(self, module, adapter, args, kwargs, pruned: list[str]) -> dict:
        shapes = adapter.groups(module)
        axes = {g: grid_widths(shapes[g][1]) for g in pruned}
        values = torch.zeros([len(w) for w in axes.values()])
        for index in itertools.product(*[range(len(w)) for w in axes.values()]):
            m = copy.deepcopy(module)
            keep = self._first_channels(shapes, {g: axes[g][i] for g, i in zip(axes, index)})
            if keep:
                adapter.slice(m, keep)
            values[index] = time_call(lambda m=m: m(*args, **kwargs), self.device, self.repeats)
        self._recheck(module, adapter, args, kwargs, axes, values)
        ratio, share = self._measure_align(module, adapter, args, kwargs, axes, values)
        return {"axes": axes, "ms": values.tolist(), "align": ratio, "align_share": share}

    def _measure_align(self, module, adapter, args, kwargs, axes: dict, values: torch.Tensor) -> tuple[dict, dict]:
        """Per group wide enough, per alignment class (widths 4 / 2 / 1 off a multiple of 8), measured at
        ``ALIGN_FRACTIONS`` of the width (the other groups at full width): the measured latency over the smooth
        table (geometric mean, the record) and the penalty's share of the group's part of the layer (measured
        minus smooth, over :meth:`LayerLatency.part`; the mean, clamped to ``ALIGN_SHARE_RANGE``)."""
        shapes = adapter.groups(module)
        lc = LayerLatency("", module, adapter, axes, values)
        ratios: dict[str, dict[str, float]] = {}
        shares: dict[str, dict[str, float]] = {}
        lo, hi = ALIGN_SHARE_RANGE
        for g in axes:
            full = shapes[g][1]
            if full < ALIGN_MIN_WIDTH:
                continue
            bases = sorted({max(ALIGN, ALIGN * round(f * full / ALIGN)) for f in ALIGN_FRACTIONS})
            ratios[g], shares[g] = {}, {}
            for c in ALIGN_CLASSES:
                logs, parts = [], []
                for base in bases:
                    w = base - c
                    m = copy.deepcopy(module)
                    adapter.slice(m, self._first_channels(shapes, {g: w}))
                    ms = time_call(lambda m=m: m(*args, **kwargs), self.device, self.repeats)
                    smooth = max(float(lc.smooth({g: w})), 1e-9)
                    logs.append(torch.tensor(ms / smooth).log())
                    parts.append((ms - smooth) / max(float(lc.part({g: w}, g)), 1e-9))
                ratios[g][str(c)] = float(torch.stack(logs).mean().exp())
                shares[g][str(c)] = float(min(hi, max(lo, sum(parts) / len(parts))))
        return ratios, shares

    def _recheck(self, module, adapter, args, kwargs, axes: dict, values: torch.Tensor) -> None:
        """Measure again the entries that came out slower than the unsliced layer by more than ``BUSY_FACTOR``
        (a busy machine, not the widths), keeping the faster of the two measurements; warn about what stays."""
        shapes = adapter.groups(module)
        full = float(values[tuple(len(w) - 1 for w in axes.values())])
        suspect = (values > BUSY_FACTOR * full + BUSY_SLACK_MS).nonzero().tolist()
        for index in suspect:
            m = copy.deepcopy(module)
            adapter.slice(m, self._first_channels(shapes, {g: axes[g][i] for g, i in zip(axes, index)}))
            again = time_call(lambda m=m: m(*args, **kwargs), self.device, self.repeats)
            values[tuple(index)] = min(float(values[tuple(index)]), again)
        still = int((values > BUSY_FACTOR * full + BUSY_SLACK_MS).sum())
        if still:
            _logger.warning(
                "latency table of a %s layer: %d of %d narrower widths measured over %.1fx slower than the whole "
                "layer (%.3f ms), twice: the machine is busy (another job on its cores?), so latency predictions "
                "are unreliable; measure on a quiet machine (delete %s)",
                type(module).__name__, still, values.numel() - 1, BUSY_FACTOR, full, self.path,
            )  # fmt: skip

    def time(self, model: nn.Module) -> float:
        """Measured milliseconds per forward of ``model`` (e.g. :attr:`dense_model` sliced to a plan) at this
        setting (device, dtype, batch, threads), as the tables were measured."""
        with torch_threads(self.setting.threads):
            model = model.eval().to(self.device, self.dtype)
            return time_call(lambda: call_model(model, self._x), self.device, self.repeats)

    def time_beside_dense(self, model: nn.Module) -> tuple[float, float]:
        """``(model's ms, dense model's ms beside it)``: the two run in turn, one forward each, ``repeats`` rounds
        (:func:`time_interleaved`); the model's ms is the median of its forwards, the dense model's that over the
        median ratio of each of the model's forwards to the dense forwards just before and after it. The ratio
        holds where the machine's speed drifts (here by up to 1.5x within minutes, and in bursts of seconds, which
        timing each model in a block of its own left in)."""
        with torch_threads(self.setting.threads):
            dense, model = self.dense_model, model.eval().to(self.device, self.dtype)
            d, m = time_interleaved([lambda: call_model(dense, self._x), lambda: call_model(model, self._x)],
                                    self.device, self.repeats)  # fmt: skip
        around = [(d[i] + d[i + 1]) / 2 for i in range(len(d) - 1)] + [d[-1]]
        ms = statistics.median(m)
        return ms, ms / statistics.median([a / b for a, b in zip(m, around)])

    def total(self, per_head: dict[str, dict[str, int]]) -> float:
        return float(self.const + sum(float(lc.latency(per_head.get(lc.path, {}))) for lc in self.layers))

    def min_total(self, groups: set[str], min_per_head: int = 1) -> float:
        return self.total(
            {lc.path: {g: min(min_per_head, lc.shapes[g][1]) for g in lc.shapes if g in groups} for lc in self.layers}
        )
