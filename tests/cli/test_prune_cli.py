import json
import subprocess
import sys

from mhaprune.cli import main


def test_prune_cli_end_to_end_on_an_image_folder(tmp_path, image_folder, capsys):
    out = tmp_path / "p"
    argv = [
        "prune",
        "--model",
        "deit_micro",
        "--random-init",
        "--data",
        str(image_folder),
        "--target-macs",
        "0.6",
        "--search-epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--batch-size",
        "16",
        "--calib-size",
        "8",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "MACs" in printed and "speedup" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["macs"] <= report["target_macs"] <= 0.6 * report["dense"]["macs"] + 1
    for name in ("config.json", "model.safetensors", "resolved_config.json", "report.json"):
        assert (out / name).exists()
    assert main(["macs", "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == report["pruned"]["macs"]
    assert main(["eval", "--checkpoint", str(out), "--data", str(image_folder), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] > 0


def test_prune_cli_refuses_untrained_model_and_bad_target(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mhaprune", "prune", "--model", "deit_tiny", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "no bundled trained weights" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mhaprune",
            "prune",
            "--model",
            "deit_micro",
            "--random-init",
            "--target-macs",
            "70X",
            "--out",
            str(tmp_path / "y"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "unknown unit" in r.stderr
