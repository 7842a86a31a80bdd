"""The method registry: every registered method through the CLI (a folder that reloads with identical outputs),
the Python API with its real signature, a toy method registered in one file, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

import mhaprune
from mhaprune.cli import main
from mhaprune.methods import UnknownMethodError, get_method, list_methods
from mhaprune.pipeline import PruneReport
from tests.methods import toy_method  # noqa: F401  (registers "toy-first")

SMALL = ["--model", "deit_micro", "--random-init", "--model-arg", "depth=1", "--batch-size", "16", "--threads", "1"]


def _prune(tmp_path, image_folder, method, *extra):
    out = tmp_path / method
    argv = ["prune", *SMALL, "--data", str(image_folder), "--method", method, "--target-macs", "0.6"]
    argv += ["--calib-size", "16", "--no-progress", "--latency-batch", "2", "--out", str(out), *extra]
    assert main(argv) == 0
    return out


def _same_outputs(folder, image_folder):
    from mhaprune.data import build_data

    model = mhaprune.load_pruned(folder)
    x = torch.stack([build_data(str(image_folder), model.input_size).val[i][0] for i in range(8)])
    return model, x


@pytest.mark.parametrize("method", ["ours", "oneshot", "l1", "random"])
def test_every_core_method_gives_a_folder_that_reloads_with_identical_outputs(tmp_path, image_folder, method):
    extra = ("--search-epochs", "1", "--finetune-epochs", "0") if method == "ours" else ()
    out = _prune(tmp_path, image_folder, method, *extra)
    report = PruneReport.from_dict(json.loads((out / "report.json").read_text()))
    assert report.method == method and report.pruned.macs <= report.target_macs < report.dense.macs
    assert (report.search_steps > 0) == (method == "ours")  # one-shot methods take no search steps
    assert report.finetune_steps == 0  # one-shot methods default to no fine-tune; ours was told 0 epochs
    assert json.loads((out / "config.json").read_text())["method"] == method
    model, x = _same_outputs(out, image_folder)
    again = mhaprune.load_pruned(out)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert mhaprune.count_macs(model).total == report.pruned.macs
    # what the run saved is the model it measured: the plan replays to the same MACs
    config = json.loads((out / "config.json").read_text())
    assert mhaprune.Plan.from_dict(config["plan"]).pruned_macs == report.pruned.macs
    assert not (out / "plan.json").exists()  # the plan is stored once, in config.json


def test_one_shot_methods_fine_tune_only_when_asked(tmp_path, image_folder):
    out = _prune(tmp_path, image_folder, "l1", "--finetune-epochs", "1")
    report = json.loads((out / "report.json").read_text())
    assert report["finetune_steps"] > 0 and report["search_steps"] == 0


def test_a_method_registered_in_one_file_runs_through_the_cli(tmp_path, image_folder, capsys):
    assert "toy-first" in list_methods()
    out = _prune(tmp_path, image_folder, "toy-first")
    plan = json.loads((out / "config.json").read_text())["plan"]
    for layer in plan["layers"].values():  # the toy's rule: the first channels of every head
        for keep in layer["keep"].values():
            assert all(k == list(range(len(k))) for k in keep)
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "toy-first" and report["method_info"] == {"toy": True}
    model, x = _same_outputs(out, image_folder)
    assert mhaprune.count_macs(model).total == report["pruned"]["macs"] <= report["target_macs"]
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    assert "toy-first" in capsys.readouterr().out


def test_prune_help_lists_every_method_with_its_line():
    r = subprocess.run([sys.executable, "-m", "mhaprune", "prune", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for name in ("ours", "oneshot", "l1", "random", "unconstrained", "ablate-reweight"):
        assert f"  {name} " in r.stdout and get_method(name).summary[:40] in " ".join(r.stdout.split())


def test_python_api_takes_a_method_by_name():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(48, 1, 28, 28), torch.randint(0, 10, (48,)))
    model = mhaprune.create_model("deit_micro", depth=1)
    res = mhaprune.prune(model, data, method="random", target_macs="60%", calib_size=16)
    assert res.report.method == "random" and res.report.pruned.macs <= res.report.target_macs
    assert res.plan.meta["method"] == "random"
    back = PruneReport.from_dict(json.loads(json.dumps(res.report.to_dict())))
    assert back == res.report
    with pytest.raises(UnknownMethodError, match="Did you mean: oneshot"):
        mhaprune.prune(model, data, method="oneshoot")


def test_variants_are_ours_with_one_switch():
    assert get_method("unconstrained").overrides == {"equal_heads": False}
    assert get_method("ablate-attn-init").fn is get_method("ours").fn
    assert all(get_method(m).trains for m in list_methods() if m.startswith(("ours", "ablate", "unconstrained")))
    assert not any(get_method(m).trains for m in ("oneshot", "l1", "random"))


def test_docstring_examples_of_the_api_run():
    import doctest

    import mhaprune.pipeline

    for module in (mhaprune, mhaprune.pipeline):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_a_search_that_ends_above_the_target_warns_and_is_recorded(caplog):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    model = mhaprune.create_model("deit_micro", depth=1)
    with caplog.at_level("WARNING", logger="mhaprune.methods.ours"):
        res = mhaprune.prune(model, data, method="ours", target_macs=0.5, calib_size=8)  # no search steps
    assert res.report.method_info["search_reached_target"] is False
    assert "above the target" in caplog.text and "--search-epochs" in caplog.text
    assert res.report.pruned.macs <= res.report.target_macs  # the repair still meets the budget


def test_evaluation_can_be_limited_or_skipped(tmp_path, image_folder):
    out = _prune(tmp_path, image_folder, "l1", "--eval-splits", "val", "--eval-limit", "10")
    report = json.loads((out / "report.json").read_text())
    assert report["after_prune"]["count"] == 10 and report["val"]["pruned"]["count"] == 10 and "test" not in report
    out = _prune(tmp_path / "none", image_folder, "l1", "--eval-splits", "none")
    report = json.loads((out / "report.json").read_text())
    assert report["after_prune"] == {} and "val" not in report and "test" not in report
    argv = ["eval", "--checkpoint", str(out), "--data", str(image_folder), "--split", "val", "--threads", "1"]
    assert main([*argv, "--json"]) == 0


def test_the_run_folder_explains_itself_and_drops_its_checkpoints(tmp_path, image_folder):
    import os
    import stat

    out = _prune(tmp_path, image_folder, "ours", "--search-epochs", "1", "--finetune-epochs", "1")
    card = (out / "README.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert "method `ours`" in card and "--method ours" in card and "mhaprune.load_pruned" in card
    assert f"{report['pruned']['params']:,}" in card and "latency, batch 2" in card
    for name in ("config.json", "model.safetensors", "report.json", "resolved_config.json"):
        assert f"`{name}`" in card
        mask = os.umask(0)
        os.umask(mask)
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask  # the user's umask, not mkstemp's 0600
    assert not (out / "search" / "checkpoint.pt").exists() and not (out / "finetune" / "checkpoint.pt").exists()
    assert (out / "search" / "metrics.jsonl").exists() or (out / "search" / "run.json").exists()
    kept = _prune(tmp_path / "kept", image_folder, "ours", "--search-epochs", "1", "--finetune-epochs", "1",
                  "--keep-checkpoints")  # fmt: skip
    assert (kept / "search" / "checkpoint.pt").exists() and (kept / "finetune" / "checkpoint.pt").exists()


def test_max_steps_apply_to_the_stage_they_name(tmp_path, image_folder, capsys):
    out = _prune(tmp_path, image_folder, "ours", "--search-epochs", "5", "--search-max-steps", "2",
                 "--finetune-epochs", "5", "--finetune-max-steps", "3")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["search_steps"] == 2 and report["finetune_steps"] == 3
    out = _prune(tmp_path / "b", image_folder, "ours", "--search-epochs", "1", "--finetune-epochs", "0",
                 "--finetune-max-steps", "3")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["search_steps"] > 0 and report["finetune_steps"] == 0  # 0 epochs: no fine-tune, whatever its cap
    argv = ["prune", *SMALL, "--data", str(image_folder), "--max-steps", "2", "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "--search-max-steps and --finetune-max-steps" in capsys.readouterr().err and not (tmp_path / "c").exists()
