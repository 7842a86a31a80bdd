"""A missing optional dependency is a user error: exit 2, the exact `pip install 'mhaprune[...]'` line, nothing
written. Each extra is hidden here (``sys.modules[name] = None`` makes its import fail)."""

from __future__ import annotations

import sys

import pytest

from mhaprune.cli import main


@pytest.mark.parametrize(
    "hidden, extra", [("onnx", "onnx"), ("onnxruntime", "onnx")]
)  # fmt: skip
def test_export_without_the_onnx_extra_exits_2_with_the_install_line(tmp_path, monkeypatch, capsys, hidden, extra):
    monkeypatch.setitem(sys.modules, hidden, None)
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "deit_micro", "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"pip install 'mhaprune[{extra}]'" in err and hidden in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_hf_without_transformers_exits_2_with_the_install_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["prune", "--hf", str(tmp_path / "vit"), "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'mhaprune[hf]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_timm_without_timm_exits_2_with_the_install_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)
    argv = ["prune", "--timm", "deit_tiny_patch16_224", "--random-init", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "pip install 'mhaprune[timm]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bench", ["accuracy", "speed"])
def test_benchmarks_without_matplotlib_exit_2_with_the_install_line(tmp_path, monkeypatch, capsys, bench):
    import importlib

    module = importlib.import_module(f"benchmarks.{bench}")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as e:
        module.main(["--out", str(tmp_path / "res")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "pip install 'mhaprune[bench]'" in err and "matplotlib" in err
    assert not (tmp_path / "res").exists()  # stopped before any work
