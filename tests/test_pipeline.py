"""The pipeline's options around the search: least-squares rescaling after it; a latency target."""

import pytest
import torch
from torch.utils.data import TensorDataset

import mhaprune
from mhaprune.adapters import prunable_modules
from mhaprune.pipeline import prune
from mhaprune.pruning import PruneConfig
from mhaprune.pruning.config import ConfigError
from mhaprune.pruning.oneshot import output_linear
from mhaprune.pruning.pruner import FEEDBACK_TOLERANCE
from mhaprune.train import TrainConfig


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x[:, 0, :14].mean((1, 2)) > 0).long()
    return TensorDataset(x, y)


def _run(rescale: bool):
    torch.manual_seed(0)
    model = mhaprune.create_model("deit_micro", depth=2, drop_path_rate=0.0)
    search = TrainConfig(epochs=0, max_steps=4, batch_size=32, warmup_epochs=0, progress=False, save_every=0)
    finetune = TrainConfig(epochs=0.0, max_steps=None, batch_size=32, progress=False, save_every=0)
    cfg = PruneConfig(target_macs=0.6, patience=0, indicator_lr=0.5, rescale=rescale)
    return prune(model, _data(), config=cfg, search=search, finetune=finetune, calib_size=48)


def test_rescale_scales_only_the_kept_output_columns():
    plain, scaled = _run(False), _run(True)
    assert (
        plain.plan.to_dict()["layers"] == scaled.plan.to_dict()["layers"]
    )  # the search is the same; only the weights after it differ
    assert plain.report.rescale is None and "rescale" not in plain.report.to_dict()
    lins = {p: output_linear(m, a) for p, m, a in prunable_modules(scaled.model)}
    assert scaled.report.rescale["layers"] == len(lins) and scaled.report.rescale["applied"] >= 1
    a, b = plain.model.state_dict(), scaled.model.state_dict()
    scaled_weights = {
        f"{p}.{n}" for p in lins for n, t in scaled.model.get_submodule(p).named_parameters() if t is lins[p].weight
    }
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and changed <= scaled_weights  # nothing but the output linears' weights moved
    for k in changed:  # ... and each by one factor per input column
        ratio = b[k] / a[k]
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-5, atol=1e-6)


def test_latency_target_is_predicted_and_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("MHAPRUNE_CACHE", str(tmp_path))
    model = mhaprune.create_model("deit_micro")
    data = TensorDataset(torch.randn(8, *model.input_size), torch.randint(0, 10, (8,)))
    cfg = mhaprune.PruneConfig(target_latency="90%", target_latency_batch=16, target_latency_threads=1)
    res = mhaprune.prune(model, data, config=cfg, eval_splits="none")
    lt = res.report.latency_target
    meta = res.plan.meta["latency"]  # planned to the target, or looser where the clock found the plan faster
    assert lt["target_ms"] == pytest.approx(meta["target_ms"]) and lt["measured_ms"] > 0 and lt["batch"] == 16
    assert lt["predicted_ms"] <= max(lt["target_ms"], meta["planned_to_ms"]) * (1 + 1e-4)
    # on target (up to the feedback's tolerance over it), or planned no looser than the target where it stayed slow
    on_target = meta["measured_ms"] <= lt["target_ms"] * (1 + FEEDBACK_TOLERANCE)
    assert on_target or meta["planned_to_ms"] <= lt["target_ms"]
    assert res.report.target_macs == res.plan.pruned_macs
    with pytest.raises(ConfigError, match="prunes to a MACs target"):
        mhaprune.prune(mhaprune.create_model("deit_micro"), data, method="l1", config=cfg, eval_splits="none")
