import json
import subprocess
import sys

import pytest

from mhaprune.cli import main


def test_macs_prints_published_figure_and_split(capsys):
    assert main(["macs", "--model", "flatten_swin_tiny"]) == 0
    out = capsys.readouterr().out
    assert "4.48 GMACs" in out
    for kind in ("qkv", "attn", "dwc", "proj", "mlp", "merge", "embed", "head"):
        assert f"\n{kind} " in out


def test_macs_json_and_input_size(capsys):
    assert main(["macs", "--model", "deit_micro", "--input-size", "1", "32", "32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["input_size"] == [1, 32, 32] and r["macs"] == sum(r["by_kind"].values())


def test_models_lists_registry(capsys):
    assert main(["models", "*micro"]) == 0
    out = capsys.readouterr().out
    assert "flatten_swin_micro" in out and "deit_micro" in out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["macs", "--model", "flaten_swin_tiny"], "Did you mean: flatten_swin_tiny"),
        (["macs"], "give exactly one of --model NAME or --checkpoint DIR"),
        (["macs", "--model", "deit_micro", "--model-arg", "depth"], "KEY=VALUE"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, msg):
    r = subprocess.run([sys.executable, "-m", "mhaprune", *argv], capture_output=True, text=True)
    assert r.returncode == 2
    assert msg in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--model", "no_such_model"],
        ["train", "--model", "deit_micro", "--batch-size", "100000", "--data-dir", "/nonexistent"],
        ["prune", "--model", "deit_micro", "--random-init", "--target-macs", "70X"],
        ["prune", "--model", "deit_micro", "--random-init", "--target-macs", "2.0G"],
    ],
)
def test_rejected_input_leaves_no_output(tmp_path, argv):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mhaprune", *argv, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
