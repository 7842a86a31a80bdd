"""Parameter counts and MACs of the full-size models against the published figures (to the published rounding)."""

import pytest

from mhaprune.cost import count_macs
from tests.conftest import shared_model

# name: (params in M, published decimals), (GMACs, decimals)
PUBLISHED = {
    "flatten_swin_tiny": ((29, 0), (4.5, 1)),
    "flatten_swin_small": ((51, 0), (8.7, 1)),
    "flatten_swin_base": ((89, 0), (15.4, 1)),
    "flatten_pvt_tiny": ((12.2, 1), (2.0, 1)),
    "deit_tiny": ((5.7, 1), (1.3, 1)),
    "swin_tiny": ((28, 0), (4.5, 1)),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_and_macs_match_published(name):
    (params, pd), (gmacs, gd) = PUBLISHED[name]
    r = count_macs(shared_model(name))
    assert round(r.params / 1e6, pd) == params
    assert round(r.total / 1e9, gd) == gmacs
