"""The benchmark entry points run end to end (tiny settings) and write what they promise."""

import csv
import json
import shutil

import pytest
import torch
from benchmarks import speed

import mhaprune


def test_speed_benchmark_writes_csv_json_plot(tmp_path):
    out = tmp_path / "speed"
    argv = ["--quick", "--models", "deit_micro", "--repeats", "1", "--no-onnx", "--out", str(out)]
    assert speed.main(argv) == 0
    with open(out / "speed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dense = next(r for r in rows if float(r["budget"]) == 1.0)
    pruned = [r for r in rows if 0 < float(r["budget"]) < 1.0]
    assert [r["method"] for r in rows if float(r["budget"]) == 0] == ["floor"]
    assert len([r for r in pruned if r["method"] == "ours"]) == 4  # 2 budgets x (round_to 1, 8)
    assert len([r for r in pruned if r["method"] == "torch-pruning"]) == 2
    for r in pruned:
        assert int(r["macs"]) <= float(r["budget"]) * int(dense["macs"]) + 1
        assert float(r["speedup_torch_b32"]) > 0
    meta = json.loads((out / "speed.json").read_text())["meta"]
    assert meta["git"] is None or len(meta["git"].removesuffix("-dirty")) == 40
    assert "torch" in meta and meta["repeats"] == 1
    assert (out / "speed.png").stat().st_size > 10_000


def test_speed_benchmark_records_a_model_torch_pruning_cannot_prune(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")  # what it raises on swin_tiny

    monkeypatch.setattr(speed, "tp_prune_to", fails)
    out = tmp_path / "speed"
    argv = ["--models", "deit_micro", "--budgets", "0.5", "0.25", "--batches", "2", "--roundings", "1"]
    assert speed.main([*argv, "--repeats", "1", "--no-onnx", "--out", str(out)]) == 0
    rows = json.loads((out / "speed.json").read_text())["rows"]
    (failed,) = [r for r in rows if r["method"] == "torch-pruning"]  # one row, the other budgets not tried
    assert failed["error"] == "ZeroDivisionError: integer division or modulo by zero" and "torch_b2" not in failed
    assert {r["method"] for r in rows} == {"dense", "floor", "ours", "torch-pruning"}


def test_torch_pruning_prunes_a_frozen_model_too():
    """A model frozen as a distillation teacher has no autograd graph for Torch-Pruning to trace; the baseline must
    prune it all the same (it once kept every channel of such a model and failed to reach the budget)."""
    from benchmarks.torch_pruning_baseline import tp_prune_to

    model = mhaprune.create_model("deit_micro").eval()
    x = torch.randn(2, *model.input_size)
    dense = mhaprune.count_macs(model).total
    live = tp_prune_to(model, 0.5, calib=x, iters=4)
    frozen = tp_prune_to(model.requires_grad_(False), 0.5, calib=x, iters=4)
    assert mhaprune.count_macs(frozen).total == mhaprune.count_macs(live).total <= 0.5 * dense
    assert not any(p.requires_grad for p in model.parameters())  # the caller's model is left as it was


def test_torch_pruning_breaks_flatten_as_documented():
    from benchmarks.torch_pruning_baseline import flatten_failure

    assert "must match the size" in flatten_failure()


def test_accuracy_benchmark_smoke(tmp_path):
    from benchmarks import accuracy

    out = tmp_path / "acc"
    argv = [
        "--model",
        "deit_micro",
        "--methods",
        "ours",
        "l1",
        "tp-taylor",
        "oneshot",
        "dense",
        "--budgets",
        "0.5",
        "--seeds",
        "0",
    ]
    argv += ["--train-subset", "128", "--eval-subset", "64", "--search-epochs", "0.5", "--short-epochs", "0.5"]
    argv += ["--full-epochs", "1", "--batch-size", "32", "--calib-size", "8", "--ft-lr", "1e-4", "--out", str(out)]
    assert accuracy.main(argv) == 0
    res = json.loads((out / "accuracy.json").read_text())
    stages = {(r["method"], r["stage"]) for r in res["rows"]}
    assert stages == {
        ("ours", "no-ft"), ("ours", "short-ft"), ("ours", "full-ft"),
        ("l1", "no-ft"), ("l1", "short-ft"), ("l1", "full-ft"), ("l1", "full-ft-equal"),
        ("tp-taylor", "no-ft"), ("tp-taylor", "short-ft"), ("tp-taylor", "full-ft"), ("tp-taylor", "full-ft-equal"),
        ("oneshot", "no-ft"), ("oneshot", "short-ft"), ("oneshot", "full-ft"), ("oneshot", "full-ft-equal"),
        ("dense", "no-ft"), ("dense", "full-ft"),
    }  # fmt: skip
    # equal training: the methods that do not search fine-tune as long as ours' search and full fine-tune together
    assert {r["finetune_epochs"] for r in res["rows"] if r["stage"] == "full-ft-equal"} == {1.5}
    for r in res["rows"]:
        assert r["method"] == "dense" or r["macs"] <= 0.5 * res["dense_macs"] + 1
        assert 0 <= r["test_top1"] <= 100
        assert (r["method"] not in ("dense", "tp-taylor")) == ("prune_s" in r)  # every registered method is timed
        assert (r["method"] == "ours") == ("search_steps" in r)
        assert (r["stage"] == "no-ft") == ("finetune_s" not in r)
    assert (out / "accuracy.png").exists() and (out / "accuracy.csv").exists()
    # a second invocation keeps the finished cells, runs only the new ones and records both runs
    rest = argv[argv.index("--budgets") :]
    assert accuracy.main([*argv[:2], "--methods", "l1", "random", "ours[reweight=false]", *rest]) == 0
    again = json.loads((out / "accuracy.json").read_text())
    assert again["rows"][: len(res["rows"])] == res["rows"]
    added = {(r["method"], r["stage"]) for r in again["rows"][len(res["rows"]) :]}
    assert {m for m, _ in added} == {"random", "ours[reweight=false]"}  # l1 (equal row done) skipped
    # a variant of ours (PruneConfig overrides) searches like ours: no equal-training row of its own
    assert {s for m, s in added if m != "random"} == {"no-ft", "short-ft", "full-ft"}
    with pytest.raises(Exception, match="min_per_head"):  # a bad option stops before any work
        accuracy.main([*argv[:2], "--methods", "ours[min_per_head=0]", *rest])
    assert len(again["runs"]) == 2
    # an interrupted cell resumes stage by stage from its saved cut: ours' full-ft row lost, only it runs again,
    # on the very weights the other stages started from (the search is not repeated)
    cut = out / "cuts" / "ours@0.5#0"
    assert (cut / "model.safetensors").exists()
    kept = [r for r in again["rows"] if (r["method"], r["stage"]) != ("ours", "full-ft")]
    (out / "accuracy.json").write_text(json.dumps({**again, "rows": kept}))
    searched = accuracy._cut
    accuracy._cut = None  # would raise if the cut were computed again
    try:
        assert accuracy.main([*argv[:2], "--methods", "ours", *rest]) == 0
    finally:
        accuracy._cut = searched
    third = json.loads((out / "accuracy.json").read_text())
    assert third["rows"][: len(kept)] == kept
    (new_row,) = third["rows"][len(kept) :]
    (old_row,) = [r for r in again["rows"] if (r["method"], r["stage"]) == ("ours", "full-ft")]
    assert new_row["stage"] == "full-ft" and new_row["search_steps"] == old_row["search_steps"]
    assert new_row["macs"] == old_row["macs"] and new_row["val_top1"] == pytest.approx(old_row["val_top1"])
    # a cell whose cut is gone (another machine, a cleaned --out) is measured again whole: its earlier stages came
    # from a plan that a new search need not repeat, so no row of the old cut stays beside the new cut's rows
    shutil.rmtree(cut)
    kept = [r for r in third["rows"] if (r["method"], r["stage"]) != ("ours", "full-ft")]
    (out / "accuracy.json").write_text(json.dumps({**third, "rows": kept}))
    cuts_made = []
    searched = accuracy._cut
    accuracy._cut = lambda *a: cuts_made.append(a[0]) or searched(*a)
    try:
        assert accuracy.main([*argv[:2], "--methods", "ours", *rest]) == 0
    finally:
        accuracy._cut = searched
    fourth = json.loads((out / "accuracy.json").read_text())
    assert cuts_made == ["ours"] and (cut / "model.safetensors").exists()
    others = [r for r in kept if r["method"] != "ours"]
    assert fourth["rows"][: len(others)] == others  # every other cell untouched
    assert [r["stage"] for r in fourth["rows"][len(others) :]] == ["no-ft", "short-ft", "full-ft"]


def test_cost_benchmark_reports_every_phase_against_a_dense_epoch(tmp_path):
    from benchmarks import cost

    out = tmp_path / "cost"
    argv = ["--model", "deit_micro", "--train-subset", "256", "--batch-size", "32", "--calib-size", "4"]
    argv += ["--dense-epochs", "0.5", "--search-epochs", "0.5", "--finetune-epochs", "0.5", "--out", str(out)]
    assert cost.main(argv) == 0
    res = json.loads((out / "cost.json").read_text())
    rows = {r["phase"]: r for r in res["rows"]}
    assert set(rows) == set(cost.PHASES)
    assert rows["dense-train"]["dense_epochs_equiv"] == pytest.approx(0.5, rel=1e-2)
    for r in rows.values():
        assert r["wall_s"] > 0 and r["rss_peak_mb"] >= r["rss_before_mb"] > 0
        assert r["dense_epochs_equiv"] == pytest.approx(
            r["wall_s"] / rows["dense-train"]["per_epoch_s"], rel=1e-2, abs=2e-3
        )  # 3 decimals
    assert res["meta"]["args"]["model"] == "deit_micro" and "git" in res["meta"]


def test_accuracy_table_is_mean_and_std_over_seeds_of_the_rows():
    import statistics

    from benchmarks.tables import accuracy_table

    rows = [
        {"method": m, "budget": 0.5, "seed": s, "stage": st, "macs": 50, "test_top1": acc, "val_top1": acc - 1}
        | ({"search_steps": 10} if m == "ours" else {})
        for m, base in (("ours", 90.0), ("l1", 89.0))
        for s in range(3)
        for st, acc in (("no-ft", base - s), ("short-ft", base + 0.5 * s), ("full-ft", base + 1))
    ]
    # l1 does not train while it prunes: its equal-training column is its full-ft-equal row (empty until measured),
    # ours' (a search: its rows record search_steps) its full-ft
    partial = accuracy_table({"rows": rows, "dense_macs": 100}).splitlines()
    assert next(line for line in partial if "| l1 |" in line).endswith("| 90.00 ± 0.00 |  |")
    rows += [{"method": "l1", "budget": 0.5, "seed": s, "stage": "full-ft-equal", "macs": 50, "test_top1": 91.5,
              "val_top1": 88.0} for s in range(3)]  # fmt: skip
    rows.append({"method": "dense", "budget": 0.5, "seed": 0, "stage": "full-ft", "macs": 100, "test_top1": 91.0,
                 "val_top1": 90.0})  # fmt: skip
    table = accuracy_table({"rows": rows, "dense_macs": 100}).splitlines()
    assert table[2] == "| 100% | dense, fine-tuned as long (control) | 100% | 1 |  |  | 91.00 | 91.00 |"
    reference = {"method": "dense", "budget": 0.5, "seed": 0, "stage": "no-ft", "macs": 100, "test_top1": 90.9}
    table = accuracy_table({"rows": [*rows, reference], "dense_macs": 100}).splitlines()
    assert table[2] == "| 100% | dense, fine-tuned as long (control) | 100% | 1 | 90.90 |  | 91.00 | 91.00 |"
    ours = next(line for line in table if "| ours |" in line).split(" | ")
    l1 = next(line for line in table if "| l1 |" in line).split(" | ")
    no_ft = [90.0, 89.0, 88.0]
    assert ours[3] == "3" and ours[4] == f"**{statistics.mean(no_ft):.2f} ± {statistics.stdev(no_ft):.2f}**"
    assert ours[2] == "50.0%" and ours[6] == "**91.00 ± 0.00**" and ours[7] == "91.00 ± 0.00 |"
    assert l1[6] == "90.00 ± 0.00" and l1[7] == "**91.50 ± 0.00** |"  # the best at equal training is bold
    val = accuracy_table({"rows": rows, "dense_macs": 100}, "val").splitlines()
    ours_val = next(line for line in val if "| ours |" in line)
    assert val[2].endswith("| 90.00 | 90.00 |") and ours_val.endswith("| **90.00 ± 0.00** | **90.00 ± 0.00** |")


def test_allocation_counts_kept_channels_per_stage():
    from benchmarks.allocation import kept_by_stage

    import mhaprune
    from mhaprune.pruning import keep_all_plan, random_plan

    model = mhaprune.create_model("flatten_swin_micro")
    assert set(kept_by_stage(keep_all_plan(model, model.input_size)).values()) == {1.0}
    plan = random_plan(model, model.input_size, 0.5)
    kept = kept_by_stage(plan)
    lp = plan.layers["layers.0.blocks.0.mlp"], plan.layers["layers.0.blocks.1.mlp"]
    total = sum(lp_.shapes["hidden"][1] for lp_ in lp)
    assert kept["stage 0 hidden"] == round(sum(len(x.keep["hidden"][0]) for x in lp) / total, 3)
    assert len(kept) == 12  # 4 stages x (qk, v, hidden)


def test_search_options_benchmark_uses_only_the_validation_split(tmp_path, monkeypatch):
    from benchmarks import search_options

    seen = []
    real = search_options.evaluate
    monkeypatch.setattr(search_options, "evaluate", lambda m, ds, **kw: seen.append(len(ds)) or real(m, ds, **kw))
    out = tmp_path / "opts"
    argv = ["--model", "deit_micro", "--budgets", "0.5", "--variants", "paper", "log+init-all"]
    argv += ["--train-subset", "128", "--eval-subset", "48", "--search-epochs", "0.5", "--batch-size", "32"]
    assert search_options.main([*argv, "--out", str(out)]) == 0
    res = json.loads((out / "search_options.json").read_text())
    assert [r["variant"] for r in res["rows"]] == ["paper", "log+init-all"]
    assert seen == [48, 48]  # the 48-image validation subset, never the 10,000-image test split
    for r in res["rows"]:
        assert r["macs"] <= 0.5 * mhaprune_dense_macs("deit_micro") + 1
        assert r["options"] == search_options.VARIANTS[r["variant"]]
        assert r["search_steps"] == 2 and 0 <= r["val_top1"] <= 100
        assert all(0 < v <= 1 for v in r["kept"].values())
    # finished cells are kept and skipped
    assert search_options.main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "search_options.json").read_text())["rows"] == res["rows"]


def mhaprune_dense_macs(name):
    import mhaprune

    return mhaprune.count_macs(mhaprune.create_model(name)).total


def test_minilm_benchmark_equal_training_and_resume(tmp_path, text_encoder):
    """Table A's runner on a tiny text encoder: every stage per method, the equal-training row for methods that do
    not search (their fine-tune gets the search's steps too), variants with options, finished cells skipped."""
    from benchmarks import minilm, tables

    out = tmp_path / "a"
    argv = ["--model-dir", str(text_encoder), "--budgets", "0.6", "--seeds", "0", "--search-steps", "3",
            "--short-steps", "1", "--full-steps", "2", "--train-limit", "64", "--eval-limit", "24", "--calib-size",
            "8", "--batch-size", "8", "--max-length", "16", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert minilm.main([*argv, "--methods", "ours[indicator_lr=0.2]", "l1"]) == 0
    res = json.loads((out / "minilm.json").read_text())
    stages = {(r["method"], r["stage"]): r for r in res["rows"]}
    ours = "ours[indicator_lr=0.2]"
    assert set(stages) == {
        (ours, "no-ft"), (ours, "short-ft"), (ours, "full-ft"),
        ("l1", "no-ft"), ("l1", "short-ft"), ("l1", "full-ft"), ("l1", "full-ft-equal"),
    }  # fmt: skip
    stages = {(m.replace(ours, "ours"), s): r for (m, s), r in stages.items()}
    assert stages[("l1", "full-ft-equal")]["finetune_steps"] == 3 + 2  # the search's steps + the fine-tune's
    assert stages[("ours", "no-ft")]["search_steps"] == 3
    for r in res["rows"]:
        assert r["macs_kept"] <= 0.6 + 1e-6 and -1 <= r["test_cosine"] <= 1 and 0 <= r["val_neighbours"] <= 1
    assert (out / "minilm.png").exists() and (out / "minilm.csv").exists()
    assert minilm.main([*argv, "--methods", "l1", "random"]) == 0  # l1 is done: only random runs
    again = json.loads((out / "minilm.json").read_text())
    assert again["rows"][: len(res["rows"])] == res["rows"]
    assert {r["method"] for r in again["rows"][len(res["rows"]) :]} == {"random"} and len(again["runs"]) == 2
    table = tables.minilm_table(again)
    assert "| 60% | l1 | 1 |" in table and table.count("\n") == 2 + 3 - 1


def test_minilm_benchmark_rejects_bad_variants():
    from benchmarks import minilm

    with pytest.raises(SystemExit, match="NAME"):
        minilm.parse_method("ours[")
    with pytest.raises(Exception, match="indicator_lr"):
        minilm.parse_method("ours[indicator_lr=-1]")
    assert minilm.parse_method("ours[regularizer=squared,patience=0]") == ("ours", {"regularizer": "squared",
                                                                                  "patience": 0})  # fmt: skip


def test_gpu_speed_script_runs_on_the_cpu_and_names_the_sdpa_backend(tmp_path):
    from benchmarks import gpu_speed

    out = tmp_path / "gpu"
    argv = ["--device", "cpu", "--dtype", "float32", "--models", "deit_micro", "--budgets", "0.5", "--batch", "4",
            "--repeats", "1", "--out", str(out)]  # fmt: skip
    assert gpu_speed.main(argv) == 0
    rows = json.loads((out / "gpu_speed.json").read_text())["rows"]
    assert [(r["method"], r["policy"]) for r in rows] == [("dense", "-"), ("ours", "free"), ("ours", "round8"),
                                                           ("ours", "same-width"), ("torch-pruning", "-")]  # fmt: skip
    assert all("scaled_dot_product" in r["sdpa"] for r in rows)  # DeiT attention runs through SDPA
    assert all(1.9 <= r["macs_ratio"] <= 2.2 and r["speedup_eager"] > 0 for r in rows[1:])


def test_gpu_speed_script_says_when_there_is_no_gpu(monkeypatch):
    import torch
    from benchmarks import gpu_speed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device here"):
        gpu_speed.main(["--out", "/nonexistent/never-written"])


def test_speed_benchmark_times_the_batches_policies_and_training_step_asked(tmp_path):
    out = tmp_path / "speed"
    argv = ["--models", "deit_micro", "--budgets", "0.5", "--batches", "2", "4", "--roundings", "1", "16",
            "--same-width", "--train-batch", "4", "--repeats", "1", "--no-onnx", "--no-tp",
            "--out", str(out)]  # fmt: skip
    assert speed.main(argv) == 0
    rows = json.loads((out / "speed.json").read_text())["rows"]
    kinds = [(r["method"], r["round_to"]) for r in rows]
    assert kinds == [("dense", 1), ("floor", 1), ("ours", 1), ("ours-same-width", 1), ("ours", 16),
                     ("ours-same-width", 16)]  # fmt: skip
    dense, floor = rows[0], rows[1]
    assert floor["macs"] < min(r["macs"] for r in rows[2:])  # one channel per head in every group: the least
    for r in rows[1:]:
        for key in ("torch_b2", "torch_b4", "train_b4"):
            assert r[key] > 0 and r[f"speedup_{key}"] == pytest.approx(dense[key] / r[key])
            if r is floor:
                continue
            # the bound: the prunable part's time (dense minus floor) scaled by its MACs, the floor's time added
            r_min, r_frac, f = floor["macs"] / dense["macs"], r["macs"] / dense["macs"], floor[key] / dense[key]
            t = f + (1 - f) * (r_frac - r_min) / (1 - r_min)
            assert r[f"proportional_efficiency_{key}"] == pytest.approx(r_frac / t)
        assert "torch_b32" not in r and r["macs"] <= 0.5 * dense["macs"] + 1


def test_latency_vs_macs_interpolates_the_macs_plans_accuracy_at_a_measured_time_and_never_extrapolates():
    from benchmarks.latency_vs_macs import at_equal_latency

    curve = [(30.0, 88.0), (20.0, 80.0), (25.0, 86.0)]  # (ms, top-1), any order
    assert at_equal_latency(curve, 22.5) == pytest.approx(83.0)
    assert at_equal_latency(curve, 27.0) == pytest.approx(86.8)
    assert at_equal_latency(curve, 30.0) == pytest.approx(88.0)
    assert at_equal_latency(curve, 19.9) is None and at_equal_latency(curve, 31.0) is None


def test_latency_vs_macs_resumes_by_model_budget_and_seed():
    from benchmarks.latency_vs_macs import done

    rows = [{"model": "deit_micro", "budget": 0.5}, {"model": "deit_micro", "budget": 0.5, "seed": 1}]
    assert done(rows, "deit_micro", 0.5, 0) and done(rows, "deit_micro", 0.5, 1)  # no seed recorded: seed 0
    assert not done(rows, "deit_micro", 0.5, 2) and not done(rows, "deit_micro", 0.25, 0)
    assert not done(rows, "flatten_swin_micro", 0.5, 0)


def test_latency_vs_macs_benchmark_searches_to_the_macs_plans_measured_fraction(tmp_path, monkeypatch):
    from benchmarks import latency_vs_macs

    monkeypatch.setenv("MHAPRUNE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lvm"
    argv = ["--models", "deit_micro", "--budgets", "0.5", "--train-subset", "128", "--eval-subset", "48",
            "--search-epochs", "0.5", "--batch-size", "32", "--batch", "4", "--repeats", "3", "--rounds", "2",
            "--out", str(out)]  # fmt: skip
    assert latency_vs_macs.main(argv) == 0
    (row,) = json.loads((out / "latency_vs_macs.json").read_text())["rows"]
    assert row["seed"] == 0
    m = row["macs_plan"]
    assert m["macs"] <= 0.5 * mhaprune_dense_macs("deit_micro") + 1
    assert m["latency_meta"] is None and set(row["latency_plans"]) == {"macs", "tables"}
    for alloc, lat in row["latency_plans"].items():
        # each latency plan was searched to the MACs plan's measured fraction of the dense time, at the benchmark's
        # batch and threads (the fraction taken of the tables' dense latency)
        meta = lat["latency_meta"]
        assert 0 < row["target_fraction"] < 1 and meta["setting"]["batch"] == 4 and meta["setting"]["threads"] == 2
        assert meta.get("allocation", "tables") == alloc
        reachable = latency_vs_macs.REACHABLE_MARGIN * row["tables_floor_fraction"]
        assert row["target_fraction"] == pytest.approx(max(row["measured_fraction"], reachable), abs=1e-4)
        assert meta["target_ms"] == pytest.approx(row["target_fraction"] * meta["dense_ms"], rel=1e-3)
        assert len(meta["clock"]) == len(meta["feedback_ms"]) >= 1  # each plan timed beside the dense model
        # one forward of each in turn, rounds x repeats times
        assert len(row["rounds"]["macs"]) == len(row["rounds"][f"latency_{alloc}"]) == 2 * 3
        assert lat["latency_ratio"] == pytest.approx(lat["measured_ms"] / m["measured_ms"], rel=1e-3)
        assert lat["test_gain"] == pytest.approx(lat["test_top1"] - m["test_top1"], abs=1e-3)
        curve = [(m["measured_ms"], m["val_top1"])] + [(b["measured_ms"], b["val_top1"])
                                                       for b in row["macs_bracket"].values()]  # fmt: skip
        ref = latency_vs_macs.at_equal_latency(curve, lat["measured_ms"])
        assert lat["val_gain_at_equal_latency"] == (None if ref is None else pytest.approx(lat["val_top1"] - ref,
                                                                                           abs=1e-3))  # fmt: skip
    # the MACs plans around the budget (--bracket 0.2), each under its own MACs target
    assert set(row["macs_bracket"]) == {"0.4", "0.6"}
    for b, info in row["macs_bracket"].items():
        assert info["macs"] <= float(b) * mhaprune_dense_macs("deit_micro") + 1
        assert len(row["rounds"][f"macs_{b}"]) == 2 * 3
    assert latency_vs_macs.main(argv) == 0  # finished cells are kept and skipped
    assert json.loads((out / "latency_vs_macs.json").read_text())["rows"] == [row]


def test_latency_model_benchmark_scores_random_plans_against_the_clock_and_beside_dense(tmp_path, monkeypatch):
    import statistics

    from benchmarks import latency_model

    monkeypatch.setenv("MHAPRUNE_CACHE", str(tmp_path / "cache"))  # main() points it at its own folder: restored after
    out = tmp_path / "lm"
    # batch 8: at batch 2 the fixed costs make the fastest reachable model 40-70% of dense (noise), too near a target
    argv = ["--models", "deit_micro", "--plans", "3", "--targets", "0.7", "--batch", "8", "--threads", "1"]
    assert latency_model.main([*argv, "--repeats", "2", "--out", str(out)]) == 0
    res = json.loads((out / "latency_model.json").read_text())
    dense = next(r for r in res["rows"] if r["kind"] == "dense")
    plans = [r for r in res["rows"] if r["kind"] == "random"]
    assert len(plans) == 3 and res["meta"]["args"]["plans"] == 3
    for r in plans:  # the plan's time on the tables' scale: its ratio to the dense model timed beside it
        rel = r["measured_ms"] * dense["predicted_ms"] / r["dense_beside_ms"]
        assert r["measured_on_tables_scale_ms"] == pytest.approx(rel, rel=1e-3, abs=2e-3)
        assert r["error_vs_dense_beside"] == pytest.approx((r["predicted_ms"] - rel) / rel, abs=2e-3)
        meas = r["measured_ms"]
        assert r["error_ratio"] == pytest.approx((r["predicted_ratio_ms"] - meas) / meas, abs=2e-3)
        assert set(r["widths"]) and all(1 <= w for ws in r["widths"].values() for w in ws.values())
        assert 0 < r["macs_kept"] < 1
    tables = json.loads((out / "tables_deit_micro.json").read_text())  # the measurements the predictions used
    assert tables["setting"]["batch"] == 8 and any(k.startswith("model:") for k in tables["entries"])
    (summary,) = res["summary"]
    assert summary["median_abs_error_vs_dense_beside"] == pytest.approx(
        statistics.median(abs(r["error_vs_dense_beside"]) for r in plans), abs=1e-4
    )
    # the target row is judged beside the dense model too, and keeps the feedback's record of how it got there
    (target,) = [r for r in res["rows"] if r["kind"] == "target"]
    assert target["target_ms"] == pytest.approx(0.7 * dense["predicted_ms"], rel=1e-3)
    rel = target["measured_on_tables_scale_ms"]
    assert target["measured_vs_target_beside_dense"] == pytest.approx(rel / target["target_ms"], abs=2e-3)
    fb = target["feedback"]
    assert fb["clock"] and len(fb["feedback_ms"]) == len(fb["clock"]) and fb["planned_to_ms"] > 0
    assert summary["worst_measured_vs_target_beside_dense"] == target["measured_vs_target_beside_dense"]


def test_latency_model_benchmark_keeps_the_version_3_prediction_for_comparison():
    """``ratio_total``: the smooth table times the alignment ratio of each off-grid group, on the whole layer."""
    from types import SimpleNamespace

    from benchmarks import latency_model

    from mhaprune.cost import latency as lat

    model = mhaprune.create_model("deit_micro")
    path, module, adapter = next(e for e in mhaprune.adapters.prunable_modules(model) if e[2].kind == "mlp")
    axes = {"hidden": lat.grid_widths(adapter.groups(module)["hidden"][1])}
    values = torch.tensor([float(w) for w in axes["hidden"]], dtype=torch.float64)
    layer = lat.LayerLatency(path, module, adapter, axes, values, {"hidden": {"1": 1.2}}, {"hidden": {"1": 0.3}})
    cost = SimpleNamespace(const=5.0, layers=[layer])
    assert latency_model.ratio_total(cost, {path: {"hidden": 23}}) == pytest.approx(5 + 23 * 1.2)
    assert latency_model.ratio_total(cost, {path: {"hidden": 24}}) == pytest.approx(5 + 24)
    assert float(layer.table({"hidden": 23})) == pytest.approx(23 + 0.3 * 22)  # the tables' own penalty


def test_latency_rescore_reproducibility_compares_the_same_plans_only():
    from benchmarks.latency_rescore import reproducibility

    w = [{"blocks.0.mlp": {"hidden": 7}}, {"blocks.0.mlp": {"hidden": 9}}]
    a = [{"widths": w[0], "measured_ms": 10.0, "dense_beside_ms": 20.0},
         {"widths": w[1], "measured_ms": 12.0, "dense_beside_ms": 20.0}]  # fmt: skip
    # a machine 1.5x slower in the second run: own times differ by 50% and 65%, fractions of dense by 0% and 10%
    b = [{"widths": w[0], "measured_ms": 15.0, "dense_beside_ms": 30.0},
         {"widths": w[1], "measured_ms": 19.8, "dense_beside_ms": 30.0}]  # fmt: skip
    rep = reproducibility(a, b)
    assert rep["median_own"] == pytest.approx(0.575) and rep["max_own"] == pytest.approx(0.65)
    assert rep["median_fraction"] == pytest.approx(0.05) and rep["max_fraction"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="not measure the same plans"):
        reproducibility(a, b[::-1])


def test_latency_rescore_savings_scale_is_fitted_on_the_other_plans():
    from benchmarks.latency_rescore import savings_scale_cv

    # plans that save 1.3x what the tables predict (of a 100 ms dense model), one of them off by 10%
    rows = [{"p": p, "measured_on_tables_scale_ms": 100 - 1.3 * (100 - p)} for p in (40, 50, 60, 70, 80, 90)]
    cv = savings_scale_cv(rows, "p", 100.0)
    assert cv["scale"] == pytest.approx(1.3) and cv["beside"] == pytest.approx(0.0, abs=1e-9)
    rows[1]["measured_on_tables_scale_ms"] *= 1.1
    off = savings_scale_cv(rows, "p", 100.0)
    assert 0 < off["beside"] < 0.1 and off["scale"] < 1.3
