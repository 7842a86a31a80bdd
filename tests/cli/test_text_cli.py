"""A text encoder end to end: `mhaprune prune --hf DIR --text-file F`, the folder it writes (tokenizer, card,
report), reload, `mhaprune eval` of the encoder metrics, ONNX export with dynamic batch and length; and the same
through `mhaprune.prune`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mhaprune
from mhaprune.cli import main
from mhaprune.data import build_text_data, load_tokenizer
from mhaprune.interop import from_hf

SMALL = ["--text-file", "fortunes", "--max-length", "24", "--holdout", "60", "--batch-size", "8", "--calib-size", "8",
         "--threads", "1", "--no-progress", "--target-macs", "0.5"]  # fmt: skip


@pytest.fixture(scope="module")
def pruned_encoder(text_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-run") / "run"
    argv = ["prune", "--hf", str(text_encoder), *SMALL, "--method", "ours", "--search-epochs", "1",
            "--search-max-steps", "4", "--finetune-epochs", "1", "--finetune-max-steps", "3", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_the_run_folder_of_a_text_encoder(pruned_encoder, text_encoder, capsys):
    out = pruned_encoder
    report = json.loads((out / "report.json").read_text())
    assert report["objective"] == "features" and report["pruned"]["macs"] <= 0.5 * report["dense"]["macs"] + 1
    assert report["search_steps"] == 4 and report["finetune_steps"] == 3
    for part in ("after_prune", "test"):
        m = report[part] if part == "after_prune" else report[part]["pruned"]
        assert 0 < m["cosine"] <= 1 and 0 <= m["neighbours"] <= 1 and m["count"] == 60
    assert (out / "tokenizer.json").exists()  # the folder tokenizes its own inputs
    card = (out / "README.md").read_text()
    assert "objective `features`" in card and "cosine retention" in card and f"hf {text_encoder}" in card
    # reload: identical outputs
    model, again = mhaprune.load_pruned(out), mhaprune.load_pruned(out)
    ds = build_text_data("fortunes", load_tokenizer(out), 24, 60, 60).test
    x, _ = ds.collate([ds[i] for i in range(5)])
    with torch.no_grad():
        assert torch.equal(model(**x).last_hidden_state, again(**x).last_hidden_state)
    assert mhaprune.count_macs(model, {k: v[:1] for k, v in x.items()}).total > 0
    # mhaprune eval reproduces the run's test figures (the folder records its source model)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--text-file", "fortunes", "--holdout", "60", "--json",
                 "--threads", "1", "--no-progress"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    assert got["cosine"] == pytest.approx(report["test"]["pruned"]["cosine"], abs=1e-6)
    assert got["neighbours"] == pytest.approx(report["test"]["pruned"]["neighbours"], abs=1e-6)


def test_onnx_export_of_a_pruned_text_encoder_has_dynamic_batch_and_length(pruned_encoder, tmp_path, capsys):
    import onnxruntime as ort

    onnx_file = tmp_path / "enc.onnx"
    assert main(["export", "--checkpoint", str(pruned_encoder), "--onnx", str(onnx_file), "--threads", "1"]) == 0
    assert "input_ids" in capsys.readouterr().out
    model = mhaprune.load_pruned(pruned_encoder)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    ds = build_text_data("fortunes", load_tokenizer(pruned_encoder), 24, 60, 60).test
    for n in (1, 4):  # other batch sizes and lengths than the export's
        x, _ = ds.collate([ds[i] for i in range(n)])
        (y,) = sess.run(None, {k: v.numpy() for k, v in x.items()})
        with torch.no_grad():
            ref = model(**x).last_hidden_state.numpy()
        valid = x["attention_mask"].numpy().astype(bool)
        assert np.abs(y - ref)[valid].max() <= 1e-4


@pytest.mark.parametrize("method", ["oneshot", "l1"])
def test_one_shot_methods_prune_a_text_encoder_without_labels(text_encoder, tmp_path, method):
    out = tmp_path / method
    assert main(["prune", "--hf", str(text_encoder), *SMALL, "--method", method, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["search_steps"] == 0 and report["finetune_steps"] == 0
    assert report["pruned"]["macs"] <= 0.5 * report["dense"]["macs"] + 1


def test_the_python_api_prunes_an_encoder_with_a_label_free_objective(text_encoder):
    from mhaprune.train import TrainConfig

    model = from_hf(text_encoder)
    splits = build_text_data("fortunes", load_tokenizer(text_encoder), 24, 40, 40)
    ft = TrainConfig(epochs=1, max_steps=2, batch_size=8, device="cpu", progress=False)
    res = mhaprune.prune(model, splits.train, splits.val, splits.test, method="l1", target_macs=0.6,
                         objective="features", objective_options={"layers": (-2, -1)}, finetune=ft,
                         calib_size=8)  # fmt: skip
    assert res.report.objective == "features" and res.report.finetune_steps == 2
    assert set(res.report.val["pruned"]) >= {"cosine", "neighbours"}
    assert res.report.pruned.macs <= 0.6 * res.report.dense.macs + 1
    with pytest.raises(ValueError, match="needs labels"):
        mhaprune.prune(from_hf(text_encoder), splits.train, method="l1", target_macs=0.6, objective="classification")
