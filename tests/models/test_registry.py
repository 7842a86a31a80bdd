import pytest
import torch

import mhaprune
from mhaprune.models import UnknownModelError, model_info
from tests.conftest import shared_model

ALL = mhaprune.list_models()


def test_list_models_filters_and_sorts():
    micro = mhaprune.list_models("*micro")
    assert micro == sorted(micro)
    assert set(micro) == {"flatten_swin_micro", "deit_micro", "flatten_deit_micro"}
    for name in (
        "flatten_swin_tiny",
        "flatten_swin_small",
        "flatten_swin_base",
        "flatten_pvt_tiny",
        "flatten_pvt_small",
        "flatten_pvt_medium",
        "flatten_deit_tiny",
        "swin_tiny",
        "swin_small",
        "swin_base",
        "pvt_tiny",
        "pvt_small",
        "pvt_medium",
        "deit_tiny",
        "deit_small",
        "deit_base",
    ):
        assert name in ALL


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="Did you mean: flatten_swin_tiny"):
        mhaprune.create_model("flaten_swin_tiny")


def test_none_kwargs_mean_default_and_args_are_recorded():
    m = mhaprune.create_model("deit_micro", num_classes=None, drop_path_rate=0.0)
    assert m.num_classes == 10
    assert m.model_args == {"drop_path_rate": 0.0}
    assert m.arch_name == "deit_micro"


@pytest.mark.parametrize("name", ALL)
def test_forward_at_default_input(name):
    info = model_info(name)
    m = shared_model(name)
    assert tuple(m.input_size) == info.input_size
    with torch.no_grad():
        y = m(torch.randn(2, *info.input_size))
    assert y.shape == (2, info.num_classes)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", mhaprune.list_models("*micro"))
def test_micro_models_fit_the_spec(name):
    m = mhaprune.create_model(name)
    params = sum(p.numel() for p in m.parameters())
    assert 1e6 <= params <= 3e6
    for mod in m.modules():
        if hasattr(mod, "qk_head_dim"):
            assert mod.num_heads >= 2 and mod.qk_head_dim >= 16 and mod.v_head_dim >= 16


def test_micro_in_chans_and_classes_configurable():
    m = mhaprune.create_model("flatten_swin_micro", in_chans=3, num_classes=7).eval()
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_wrong_input_size_is_a_clear_error():
    m = mhaprune.create_model("deit_micro")
    with pytest.raises(ValueError, match=r"does not match the model's \(1, 28, 28\)"):
        m(torch.randn(1, 1, 32, 32))
