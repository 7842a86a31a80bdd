"""The latency model: tables measured once per device setting and layer, cached atomically, stale ones ignored;
interpolation; the latency target in the search and the plan."""

import copy
import json

import pytest
import torch

import mhaprune
from mhaprune.cost import latency as lat
from mhaprune.pruning import PruneConfig, Pruner
from mhaprune.pruning.config import ConfigError, parse_latency
from mhaprune.pruning.pruner import FEEDBACK_TOLERANCE, next_level


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MHAPRUNE_CACHE", str(tmp_path))
    return tmp_path / "latency"


@pytest.fixture
def timed(monkeypatch):
    """Counts the timed calls (each a real measurement)."""
    calls = []
    real = lat.time_call

    def counting(fn, device="cpu", repeats=15, warmup=3):
        calls.append(1)
        return real(fn, device, repeats=2, warmup=1)

    real_interleaved = lat.time_interleaved

    def counting_interleaved(fns, device="cpu", rounds=15, warmup=2, warm=()):
        calls.append(1)
        return real_interleaved(fns, device, rounds=2, warmup=1, warm=warm)

    monkeypatch.setattr(lat, "time_call", counting)
    monkeypatch.setattr(lat, "time_interleaved", counting_interleaved)
    monkeypatch.setattr(lat, "BUSY_FACTOR", float("inf"))  # counts stay exact: no entry is measured again
    return calls


ALIGNED = 3 * len(lat.ALIGN_CLASSES) * len(lat.ALIGN_FRACTIONS)  # alignment measurements of deit_micro's 3 groups


def _model():
    model = mhaprune.create_model("deit_micro").eval()
    return model, torch.randn(2, *model.input_size)


def _reachable_target(model, x, margin):
    """60% of the dense latency, or ``margin`` x the fastest reachable where noisy tables put that higher."""
    cost = lat.LatencyCost(model, x, batch=4, threads=1, calibrate=True)  # as the pruner builds it (cached)
    floor = cost.min_total({"qk", "v", "hidden"})
    target = max(0.6 * cost.dense_total, margin * floor)
    if target >= 0.9 * cost.dense_total:
        pytest.skip(f"the tables were measured on a busy machine (floor {floor:.2f} of {cost.dense_total:.2f} ms)")
    return f"{target}ms"


def test_tables_are_measured_once_and_cached(cache, timed):
    model, x = _model()
    a = lat.LatencyCost(model, x, batch=4, threads=1)
    n = len(timed)
    # one attention table (6x6), one MLP table (6), the alignment factors (3 classes x 2 widths for each of Q/K, V
    # and the hidden group), the reference (the dense model and the layers in turn): repeated blocks share
    assert n == 36 + 6 + ALIGNED + 1
    files = list(cache.iterdir())
    assert len(files) == 1 and not [f for f in cache.iterdir() if f.name.startswith(".")]  # no temp file left
    b = lat.LatencyCost(model, x, batch=4, threads=1)
    assert len(timed) == n  # nothing measured again
    assert b.total({}) == pytest.approx(a.total({})) and b.dense_total == pytest.approx(a.dense_total)
    assert a.total({}) == pytest.approx(a.dense_total)  # the dense widths predict the measured dense latency


@pytest.mark.parametrize("change", [{"threads": 2}, {"batch": 8}])
def test_another_setting_is_another_table(cache, timed, change):
    model, x = _model()
    lat.LatencyCost(model, x, **{"batch": 4, "threads": 1})
    n = len(timed)
    lat.LatencyCost(model, x, **{"batch": 4, "threads": 1, **change})
    assert len(timed) == 2 * n and len(list(cache.iterdir())) == 2


def test_stale_and_broken_files_are_ignored(cache, timed):
    model, x = _model()
    first = lat.LatencyCost(model, x, batch=4, threads=1)
    n = len(timed)
    data = json.loads(first.path.read_text())
    data["setting"]["torch"] = "0.0.1"  # written by another torch version under this file name
    first.path.write_text(json.dumps(data))
    lat.LatencyCost(model, x, batch=4, threads=1)
    assert len(timed) == 2 * n  # measured again, and the file rewritten for this setting
    assert json.loads(first.path.read_text())["setting"]["torch"] == torch.__version__
    first.path.write_text("{not json")
    lat.LatencyCost(model, x, batch=4, threads=1)
    assert len(timed) == 3 * n


def test_entries_of_other_layers_are_kept_and_not_used(cache, timed):
    model, x = _model()
    lat.LatencyCost(model, x, batch=4, threads=1)
    n = len(timed)
    other = mhaprune.create_model("deit_micro", embed_dim=64, num_heads=2).eval()
    lat.LatencyCost(other, x, batch=4, threads=1)
    m = len(timed)
    assert m > n  # its layers have other widths: measured
    entries = json.loads(next(cache.iterdir()).read_text())["entries"]
    assert len(entries) == 6  # both models' attention, MLP and dense entries in the one file
    lat.LatencyCost(model, x, batch=4, threads=1)
    lat.LatencyCost(other, x, batch=4, threads=1)
    assert len(timed) == m  # neither measured again


def test_unwritable_cache_still_predicts(tmp_path, monkeypatch, timed, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MHAPRUNE_CACHE", str(blocker))  # a file where the folder should be
    model, x = _model()
    cost = lat.LatencyCost(model, x, batch=4, threads=1)
    assert cost.total({}) > 0 and "could not write the latency cache" in caplog.text


def test_fit_scales_recovers_known_scales():
    savings = [{"attention": 10.0, "mlp": 0.0}, {"attention": 0.0, "mlp": 20.0}, {"attention": 15.0, "mlp": 25.0}]
    measured = [0.8 * r["attention"] + 1.5 * r["mlp"] for r in savings]
    assert lat.fit_scales(savings, measured) == pytest.approx({"attention": 0.8, "mlp": 1.5})
    assert lat.fit_scales(savings, [100.0, -5.0, 0.0]) == {"attention": 4.0, "mlp": 0.25}  # clamped, never flipped
    assert lat.fit_scales([{"attention": 0.0}], [3.0]) == {}  # nothing to fit: tables stay as measured


def test_calibration_scales_the_savings_and_keeps_dense_exact(cache, timed):
    model, x = _model()
    raw = lat.LatencyCost(model, x, batch=4, threads=1)
    cal = lat.LatencyCost(model, x, batch=4, threads=1, calibrate=True)
    assert set(cal.scales) == {"attention", "mlp"} and all(0.25 <= v <= 4 for v in cal.scales.values())
    assert cal.total({}) == pytest.approx(cal.dense_total)  # dense widths: the measured dense latency
    half = {lc.path: {g: lc.shapes[g][1] // 2 for g in lc.axes} for lc in cal.layers}
    for lc_raw, lc in zip(raw.layers, cal.layers):
        saving_raw = lc_raw.full - float(lc_raw.latency(half[lc.path]))
        saving = lc.full - float(lc.latency(half[lc.path]))
        # the scaled saving, up to the whole layer (a latency is never negative, however noisy the tables)
        assert saving == pytest.approx(min(lc.full, cal.scales[lc.adapter.kind] * saving_raw))
    n = len(timed)
    again = lat.LatencyCost(model, x, batch=4, threads=1, calibrate=True)
    assert len(timed) == n and again.scales == pytest.approx(cal.scales)  # the calibration is cached too


def test_interpolation_is_exact_on_the_grid_and_linear_between():
    axes = [[1, 4, 8], [2, 6]]
    values = torch.tensor([[1.0, 2.0], [4.0, 7.0], [9.0, 9.5]], dtype=torch.float64)
    for i, a in enumerate(axes[0]):
        for j, b in enumerate(axes[1]):
            assert float(lat.interpolate(axes, values, [a, b])) == pytest.approx(float(values[i, j]))
    assert float(lat.interpolate(axes, values, [6, 2])) == pytest.approx((4 + 9) / 2)
    assert float(lat.interpolate(axes, values, [4, 4])) == pytest.approx((4 + 7) / 2)
    w = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    lat.interpolate([[1, 4, 8]], torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), [w]).backward()
    assert float(w.grad) == pytest.approx((9 - 4) / 4)  # the search's gradient: the segment's slope


@pytest.mark.parametrize(
    "value, dense, expected", [("20ms", None, 20.0), ("0.5s", None, 500.0), ("250us", None, 0.25),
                               (0.7, 10.0, 7.0), ("70%", 10.0, 7.0)]  # fmt: skip
)
def test_parse_latency(value, dense, expected):
    assert parse_latency(value, dense) == pytest.approx(expected)


@pytest.mark.parametrize("value, msg", [("20 parsecs", "cannot read latency target"), (1.5, "between 0 and 1"),
                                        ("0ms", "must be > 0"), ("fast", "cannot read")])  # fmt: skip
def test_parse_latency_errors(value, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_latency(value, 10.0)


@pytest.mark.parametrize("allocation", ["macs", "tables"])
def test_latency_target_plan(cache, timed, allocation):
    model, x = _model()
    target = _reachable_target(model, x, 1.2)
    cfg = PruneConfig(target_latency=target, target_latency_batch=4, target_latency_threads=1, latency_feedback=0,
                      latency_allocation=allocation)  # fmt: skip
    dense = copy.deepcopy(model)
    pruner = Pruner(model, cfg, x)
    pruner.prepare()
    assert pruner.latency_target == pytest.approx(float(target[:-2]))
    # the search's regulariser and the repair count milliseconds ("tables") or MACs ("macs")
    assert (pruner.budget is pruner.latency) == (allocation == "tables")
    assert pruner.regularization_loss().requires_grad
    plan = pruner.plan()
    info = plan.meta["latency"]
    assert info["predicted_ms"] <= info["target_ms"] and info["setting"]["threads"] == 1
    assert info["allocation"] == allocation
    assert info["predicted_ms"] == pytest.approx(pruner.latency.total(plan.widths()), abs=1e-3)
    assert plan.target_macs is None and plan.pruned_macs < plan.dense_macs  # the plan still counts MACs
    if allocation == "macs":
        # the MACs plan at the MACs level the bisection found: what a MACs target of that level plans
        twin = Pruner(dense, PruneConfig(target_macs=info["macs_target"]), x)
        twin.prepare()
        assert twin.plan().widths() == plan.widths()
    assert plan.pruned_macs == mhaprune.count_macs(pruner.convert(plan)).total


def test_unreachable_latency_targets(cache, timed):
    model, x = _model()
    with pytest.raises(ConfigError, match="not below the dense"):
        Pruner(model, PruneConfig(target_latency="10000ms", target_latency_batch=4, target_latency_threads=1), x)
    cost = lat.LatencyCost(model, x, batch=4, threads=1)  # the cached tables the pruner used
    floor = cost.min_total({"qk", "v", "hidden"})
    if floor <= 0:
        pytest.skip(f"the tables were measured on a busy machine (predicted floor {floor:.2f} ms)")
    with pytest.raises(ConfigError, match="fastest reachable"):
        Pruner(model, PruneConfig(target_latency=f"{floor / 2}ms", target_latency_batch=4,
                                  target_latency_threads=1), x)  # fmt: skip


def _feedback_pruner(margin, clock_of, monkeypatch, allocation):
    """A prepared latency-target pruner whose planned models 'run' at ``clock_of(predicted ms, dense ms)`` of the
    tables (beside a dense model at the tables' dense latency); returns it, the clock's readings and the MACs of
    every model timed (with the ``macs`` allocation the uniform plans before the search first)."""
    model, x = _model()
    target = _reachable_target(model, x, margin)  # measures and caches the tables and their calibration
    clock, kept = [], []

    def beside_dense(self, planned):
        modules = dict(planned.named_modules())
        widths = {lc.path: {g: lc.adapter.groups(modules[lc.path])[g][1] for g in lc.axes} for lc in self.layers}
        clock.append(clock_of(self.total(widths), self.dense_total))
        kept.append(self.macs_cost.total(widths))
        return clock[-1], self.dense_total

    monkeypatch.setattr(lat.LatencyCost, "time_beside_dense", beside_dense)
    cfg = PruneConfig(target_latency=target, target_latency_batch=4, target_latency_threads=1,
                      latency_allocation=allocation)  # fmt: skip
    pruner = Pruner(model, cfg, x)
    pruner.prepare()
    return pruner, clock, kept


def _saving(share):
    """A clock on which every plan saves ``share`` of what the tables predict it saves."""
    return lambda ms, dense: dense - share * (dense - ms)


@pytest.mark.parametrize("allocation", ["macs", "tables"])
def test_latency_feedback_replans_until_the_clock_agrees(cache, timed, monkeypatch, allocation):
    """A model that saves 30% less than the tables say: the next plan is made to the tables' savings scaled by the
    measured ones, which lands on the target in one correction."""
    pruner, clock, kept = _feedback_pruner(1.5, _saving(0.7), monkeypatch, allocation)
    goal, ceiling = pruner.latency_target, pruner.latency_target * (1 + FEEDBACK_TOLERANCE)
    plan = pruner.plan()
    info = plan.meta["latency"]
    assert info["target_ms"] == pytest.approx(goal, abs=1e-4)  # the user's target, rounded like the record
    # the first plan (the tables' level) too slow on the clock, the second on target
    corrected = pruner.presearch if allocation == "macs" else info
    assert corrected["feedback_ms"] == pytest.approx(clock[:len(corrected["feedback_ms"])], rel=1e-3)
    assert corrected["feedback_ms"][0] > ceiling and len(corrected["feedback_ms"]) == 2
    assert 0.95 * goal <= corrected["feedback_ms"][1] <= ceiling
    assert corrected["planned_to_ms"] < goal and corrected["measured_ms"] == corrected["feedback_ms"][1]
    assert info["feedback_ms"] == pytest.approx(clock[-len(info["feedback_ms"]):], rel=1e-3)
    assert info["measured_ms"] <= ceiling and plan.pruned_macs == kept[-1]
    if allocation == "macs":
        # the search ran at the level the uniform plan measured on target, the first plan is at that level (then
        # corrected on its own measurement: at equal MACs the searched widths need not run as the uniform ones)
        assert pruner.target == pruner.presearch["macs_target"] == pytest.approx(kept[1])
        assert info["feedback_macs"][0] == pruner.target and info["presearch"] == pruner.presearch
        assert kept[2] == pytest.approx(pruner.target, rel=0.01)
        dense = copy.deepcopy(pruner.latency.dense_model)  # the model before the gates
        twin = Pruner(dense, PruneConfig(target_macs=info["macs_target"]), pruner.example_inputs)
        twin.prepare()
        assert twin.plan().widths() == plan.widths()


@pytest.mark.parametrize("allocation", ["macs", "tables"])
def test_latency_feedback_loosens_a_plan_far_faster_than_the_target(cache, timed, monkeypatch, caplog, allocation):
    """Tables from a busier state of the machine (the model runs at 0.7x what they say): the first plan is far
    faster than needed, so it is planned again to a looser internal target and keeps more channels."""
    with caplog.at_level("WARNING", logger="mhaprune.pruning.pruner"):
        pruner, clock, kept = _feedback_pruner(1.2, lambda ms, dense: 0.7 * ms, monkeypatch, allocation)
        plan = pruner.plan()
    info = plan.meta["latency"]
    corrected = pruner.presearch if allocation == "macs" else info
    assert len(corrected["feedback_ms"]) >= 2 and clock[0] < 0.95 * pruner.latency_target  # far under the target
    assert corrected["planned_to_ms"] > pruner.latency_target
    assert info["measured_ms"] <= pruner.latency_target * (1 + FEEDBACK_TOLERANCE)
    ceiling = pruner.latency_target * (1 + FEEDBACK_TOLERANCE)
    assert corrected["measured_ms"] == pytest.approx(max(c for c in corrected["feedback_ms"] if c <= ceiling))
    assert plan.pruned_macs > kept[0]  # the plan kept is looser than the first one
    assert corrected["tables_error"] == pytest.approx(0.7, rel=1e-3)
    assert "may have been measured on a busy machine" in caplog.text


@pytest.mark.parametrize(
    "tried, hi, expected",
    [
        # one plan 10 ms over the goal, saving 30 of the 40 ms the tables predicted: the tables' plan that saves
        # 40 / 30 x the 40 ms the goal needs
        ([(60.0, 60.0, 70.0)], 99.0, 100 - 40 * 40 / 30),
        # one plan 20 ms under, saving 60 ms where 40 were predicted: a looser plan (73.3), capped at ``hi``
        ([(60.0, 60.0, 40.0)], 70.0, 70.0),
        # one under and one over the goal: the level where the line through them meets it (regula falsi)
        ([(50.0, 50.0, 50.0), (70.0, 70.0, 90.0)], 99.0, 55.0),
        # both under: the savings of the one nearest the goal (40 ms predicted 60 saved, 70 measured)
        ([(30.0, 30.0, 20.0), (40.0, 40.0, 30.0)], 99.0, 100 - 40 * 60 / 70),
    ],
)
def test_next_level(tried, hi, expected):
    assert next_level(tried, 60.0, 100.0, lambda ms: ms, 0.0, hi, 100.0) == pytest.approx(expected)


def test_next_level_where_the_tables_do_not_move():
    """Tables whose prediction does not grow with the level (every level maps back to the one tried): the saving is
    taken in proportion to the level's distance from the dense model's (level 400 of 1000 saved 45 ms where the goal
    needs 40: the next level keeps 40 / 45 of the 600 removed)."""
    tried = [(400.0, 58.0, 55.0)]
    assert next_level(tried, 60.0, 100.0, lambda ms: 400.0, 0.0, 999.0, 1000.0) == pytest.approx(
        1000 - 600 * 40 / 45
    )


def test_a_resumed_search_keeps_the_level_measured_before_it(cache, timed, monkeypatch):
    first, _, _ = _feedback_pruner(1.5, _saving(0.7), monkeypatch, "macs")
    again, _, _ = _feedback_pruner(1.5, _saving(1.0), monkeypatch, "macs")  # the clock of another day
    assert again.target != first.target
    again.load_state_dict(first.state_dict())
    assert again.target == first.target and again.presearch == first.presearch


def test_latency_feedback_must_not_be_negative():
    with pytest.raises(ConfigError, match="latency_feedback must be >= 0"):
        PruneConfig(latency_feedback=-1)


def _scripted(monkeypatch, slow):
    """time_call returning 1 ms, or 100 ms for the calls whose number is in ``slow`` (a busy machine)."""
    calls = []

    def fake(fn, device="cpu", repeats=15, warmup=3):
        fn()
        calls.append(1)
        return 100.0 if len(calls) in slow else 1.0

    def fake_interleaved(fns, device="cpu", rounds=15, warmup=2, warm=()):
        calls.append(1)
        return [[1.0] * rounds for _ in fns]  # the dense model and every layer at 1 ms

    monkeypatch.setattr(lat, "time_call", fake)
    monkeypatch.setattr(lat, "time_interleaved", fake_interleaved)
    return calls


def test_a_table_entry_slower_than_the_whole_layer_is_measured_again(cache, monkeypatch, caplog):
    model, x = _model()
    calls = _scripted(monkeypatch, slow={1})  # the attention table's first entry (1 channel of Q/K and of V)
    cost = lat.LatencyCost(model, x, batch=4, threads=1)
    assert len(calls) == 36 + 1 + 6 + ALIGNED + 1  # the one slow entry measured twice
    attn = cost.layers[0]
    assert float(attn.values.max()) == 1.0 and "busy" not in caplog.text


def test_a_table_that_stays_slow_is_kept_with_a_warning(cache, monkeypatch, caplog):
    model, x = _model()
    _scripted(monkeypatch, slow={1, 37})  # the first entry, and its measurement again
    cost = lat.LatencyCost(model, x, batch=4, threads=1)
    assert float(cost.layers[0].values[0, 0]) == 100.0
    assert "1 of 35 narrower widths measured over 1.5x slower" in caplog.text and "machine is busy" in caplog.text


def test_alignment_penalties_apply_to_concrete_widths_off_the_grid_only():
    model, _ = _model()
    path, module, adapter = next(e for e in mhaprune.adapters.prunable_modules(model) if e[2].kind == "mlp")
    full = adapter.groups(module)["hidden"][1]
    axes = {"hidden": lat.grid_widths(full)}
    values = torch.tensor([float(w) for w in axes["hidden"]], dtype=torch.float64)  # 1 ms per channel
    layer = lat.LayerLatency(path, module, adapter, axes, values, None, {"hidden": {"4": 0.05, "2": 0.1, "1": 0.2}})
    # the penalty is its share of the group's part of the layer: here w - 1 ms (the layer at 1 channel costs 1)
    for w, share in ((24, 0.0), (20, 0.05), (22, 0.1), (23, 0.2), (full, 0.0)):
        assert float(layer.table({"hidden": w})) == pytest.approx(w + share * (w - 1)), w
    assert float(layer.table({"hidden": 1})) == pytest.approx(1.0)  # a grid point: measured, no penalty
    soft = torch.tensor(23.0, requires_grad=True)
    out = layer.table({"hidden": soft})
    # the search's soft widths: the smooth table
    assert float(out.detach()) == pytest.approx(23.0) and out.requires_grad
    assert [lat.align_class(w) for w in (8, 12, 6, 7, 7.5)] == [None, 4, 2, 1, None]


def test_an_alignment_penalty_charges_its_own_group_not_the_whole_layer():
    """An odd V width slows the matmuls over V's channels: with Q/K narrow the penalty stays that of V's part
    (a factor on the whole layer charged Q/K's part too, and over-predicted narrow plans)."""
    model, _ = _model()
    path, module, adapter = next(e for e in mhaprune.adapters.prunable_modules(model) if e[2].kind == "attention")
    shapes = adapter.groups(module)
    axes = {g: lat.grid_widths(shapes[g][1]) for g in ("qk", "v")}
    qk, v = (torch.tensor(axes[g], dtype=torch.float64) for g in ("qk", "v"))
    values = 2 * qk[:, None] + v[None, :]  # Q/K costs 2 ms per channel, V 1 ms
    layer = lat.LayerLatency(path, module, adapter, axes, values, None, {"v": {"1": 0.5}, "qk": {"1": 0.0}})
    for w_qk in (axes["qk"][-1], 4, 1):
        assert float(layer.part({"qk": w_qk, "v": 23}, "v")) == pytest.approx(22.0)
        assert float(layer.table({"qk": w_qk, "v": 23})) == pytest.approx(2 * w_qk + 23 + 0.5 * 22), w_qk
        assert float(layer.table({"qk": w_qk, "v": 24})) == pytest.approx(2 * w_qk + 24), w_qk


def test_time_interleaved_runs_the_calls_in_turn():
    order = []
    times = lat.time_interleaved([lambda: order.append("a"), lambda: order.append("b")], rounds=3, warmup=1, warm={1})
    assert order == ["a", "b"] + ["a", "b", "b"] * 3  # one warm-up round, then b after an untimed call of its own
    assert [len(t) for t in times] == [3, 3] and all(v >= 0 for t in times for v in t)


def test_beside_dense_takes_the_ratio_within_rounds(cache, monkeypatch):
    """The machine slows 2x halfway through (a drifting host): the plan's time over the dense forwards around each
    of its own stays 0.5, which block timings (dense, then the plan, then dense) would not give."""
    model, x = _model()
    cost = lat.LatencyCost(model, x, batch=4, threads=1, repeats=4)
    clock = [10.0, 5.0, 10.0, 5.0, 20.0, 10.0, 20.0, 10.0]  # dense, plan, dense, plan, ... (slower from round 3)
    monkeypatch.setattr(lat, "time_interleaved", lambda fns, device, rounds: [clock[0::2], clock[1::2]])
    ms, dense_ms = cost.time_beside_dense(copy.deepcopy(model))
    # the plan's forwards 5, 5, 10, 10 (median 7.5) over the dense forwards around them: 10, 15, 20, 20 -> ratios
    # 0.5, 1/3, 0.5, 0.5 (median 0.5)
    assert ms == pytest.approx(7.5) and ms / dense_ms == pytest.approx(0.5)


def test_the_reference_sets_the_constant_and_rescales_each_table(cache, monkeypatch):
    """Tables measured while the machine ran 2x slower than when the dense model was timed: the reference (the
    dense model and each layer at full width, timed in turn) puts them on the dense model's clock."""
    model, x = _model()
    calls = _scripted(monkeypatch, slow=set())  # every table entry 1 ms (the slow clock)

    def reference(fns, device="cpu", rounds=15, warmup=2, warm=()):
        calls.append(1)
        assert set(warm) == set(range(1, len(fns)))  # each layer timed right after an untimed call of its own
        return [[20.0] * rounds] + [[0.5] * rounds for _ in fns[1:]]  # dense 20 ms, every layer 0.5 ms

    monkeypatch.setattr(lat, "time_interleaved", reference)
    cost = lat.LatencyCost(model, x, batch=4, threads=1)
    assert cost.dense_total == 20.0 and all(lc.full == 0.5 for lc in cost.layers)
    assert all(float(lc.values.max()) == 0.5 for lc in cost.layers)  # every entry of 1 ms scaled to the reference
    assert cost.const == pytest.approx(20.0 - 0.5 * len(cost.layers)) and cost.total({}) == pytest.approx(20.0)
    n = len(calls)
    again = lat.LatencyCost(model, x, batch=4, threads=1)  # cached: the reference too
    assert len(calls) == n and again.const == pytest.approx(cost.const)


@pytest.mark.parametrize("calibration", [True, False])
def test_the_latency_target_is_calibrated_by_default(cache, timed, calibration):
    model, x = _model()
    cfg = PruneConfig(target_latency=0.99, target_latency_batch=4, target_latency_threads=1,
                      **({} if calibration else {"latency_calibration": False}))  # fmt: skip
    pruner = Pruner(model, cfg, x)
    assert bool(pruner.latency.scales) == calibration  # the savings scaled in place, or the tables as measured
    assert pruner.latency.total({}) == pytest.approx(pruner.latency.dense_total)  # dense widths: dense, either way
