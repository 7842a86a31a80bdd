import pytest
import torch

from mhaprune.utils import seed_all


@pytest.fixture(autouse=True)
def _seed():
    seed_all(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    yield


def unfuse(model):
    """Switch every softmax attention module to the explicit (non-fused) path."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model
