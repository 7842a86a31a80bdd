import pytest
import torch

import mhaprune
from tests.conftest import unfuse


def tiny_pvt(attn_type: str, la_sr: str = "1111"):
    return mhaprune.create_model(
        "flatten_pvt_tiny" if attn_type == "LLLL" else "pvt_tiny",
        img_size=64,
        in_chans=1,
        num_classes=10,
        embed_dims=(32, 32, 64, 64),
        num_heads=(2, 2, 2, 2),
        mlp_ratios=(2, 2, 2, 2),
        depths=(1, 1, 1, 1),
        sr_ratios=(4, 2, 1, 1),
        la_sr_ratios=la_sr,
        attn_type=attn_type,
    )


BUILDERS = {
    "deit_micro": lambda: mhaprune.create_model("deit_micro"),
    "flatten_swin_micro": lambda: mhaprune.create_model("flatten_swin_micro"),
    "flatten_deit_micro": lambda: mhaprune.create_model("flatten_deit_micro"),
    "flatten_pvt_tiny_sr": lambda: tiny_pvt("LLLL", "2111"),
    "pvt_tiny": lambda: tiny_pvt("SSSS"),
}


def randomize(model):
    """Non-trivial values for parameters that start at zero (FLatten scale and positional encoding, biases)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".scale", "positional_encoding", "bias", "relative_position_bias_table")):
                p.normal_(0, 0.5)
    return model


@pytest.fixture(params=sorted(BUILDERS))
def model_and_input(request):
    torch.manual_seed(0)
    model = randomize(unfuse(BUILDERS[request.param]())).double().eval()
    x = torch.randn(4, *model.input_size, dtype=torch.float64)
    return request.param, model, x
