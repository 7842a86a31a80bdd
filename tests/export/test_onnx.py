"""ONNX export: ONNX Runtime reproduces PyTorch (≤ 1e-4 max abs) for dense and pruned models, any batch size."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

import mhaprune
from mhaprune.cli import main
from mhaprune.export import DEFAULT_OPSET, export_onnx, save_pruned
from mhaprune.pruning import apply_plan, random_plan


def _pruned(name: str):
    model = mhaprune.create_model(name, pretrained=True).eval()
    return apply_plan(model, random_plan(model, model.input_size, 0.5, seed=0))


@pytest.mark.parametrize("name", ["flatten_swin_micro", "deit_micro"])
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_onnx_runtime_matches_torch(name, pruned, tmp_path):
    model = _pruned(name) if pruned else mhaprune.create_model(name, pretrained=True).eval()
    r = export_onnx(model, tmp_path / "m.onnx")
    assert r["max_abs_diff"] <= 1e-4 and r["opset"] == DEFAULT_OPSET
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == DEFAULT_OPSET
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, *model.input_size)
    (y,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(y) - model(x)).abs().max() <= 1e-4


def test_export_cli_on_a_pruned_folder(tmp_path, capsys):
    save_pruned(_pruned("flatten_swin_micro"), tmp_path / "p")
    out = tmp_path / "p.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "p"), "--onnx", str(out)]) == 0
    assert "ONNX Runtime max abs diff" in capsys.readouterr().out and out.exists()
    assert main(["export", "--checkpoint", str(tmp_path / "p"), "--onnx", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "p.onnx"], "a temp file was left behind"
