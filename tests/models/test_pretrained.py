from pathlib import Path

import pytest
import torch

import mhaprune
from mhaprune.data import FASHION_MNIST_DIR, build_data
from mhaprune.models._pretrained import pretrained_models, pretrained_path
from mhaprune.train import evaluate

HAVE_DATA = (Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").exists()


def test_reference_weights_are_bundled():
    assert {"flatten_swin_micro", "deit_micro"} <= set(pretrained_models())
    for name in pretrained_models():
        folder = pretrained_path(name)
        assert (folder / "model.safetensors").stat().st_size < 20 * 2**20
        assert (folder / "TRAINING.md").exists() and (folder / "train_log.jsonl").exists()


def test_pretrained_loads_without_network_and_checks_arguments():
    m = mhaprune.create_model("flatten_swin_micro", pretrained=True)
    assert m.arch_name == "flatten_swin_micro" and not m.training
    fresh = mhaprune.create_model("flatten_swin_micro")
    assert any(not torch.equal(a, b) for a, b in zip(m.state_dict().values(), fresh.state_dict().values()))
    assert mhaprune.create_model("flatten_swin_micro", pretrained=True, drop_path_rate=0.0) is not None
    with pytest.raises(ValueError, match="do not fit the architecture"):
        mhaprune.create_model("flatten_swin_micro", pretrained=True, embed_dim=64)
    with pytest.raises(ValueError, match="no bundled weights for 'deit_tiny'"):
        mhaprune.create_model("deit_tiny", pretrained=True)


@pytest.mark.skipif(not HAVE_DATA, reason="Debian package dataset-fashion-mnist not installed (CI installs it)")
@pytest.mark.parametrize("name,top1", [("flatten_swin_micro", 91.0), ("deit_micro", 88.4)])
def test_bundled_references_reach_their_recorded_test_accuracy(name, top1):
    m = mhaprune.create_model(name, pretrained=True)
    test = build_data("fashion-mnist", m.input_size, augment=False).test
    assert evaluate(m, test)["top1"] >= top1
