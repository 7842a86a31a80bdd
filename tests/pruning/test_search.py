"""The search through the one engine: the regulariser drives MACs to the target, the plan meets it, and a killed
search resumes to the same indicators."""

import pytest
import torch
from torch.utils.data import TensorDataset

import mhaprune
from mhaprune.pipeline import PruningCallback
from mhaprune.pruning import PruneConfig, Pruner
from mhaprune.train import Callback, TrainConfig, Trainer


class Crash(Callback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, trainer):
        if trainer.step == self.at:
            raise RuntimeError("simulated crash")


def synthetic(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x[:, 0, :14].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :14].mean((1, 2)) > 0).long()
    return TensorDataset(x, y)


def search(out=None, max_steps=40, resume=None, crash_at=None, **options):
    torch.manual_seed(0)
    model = mhaprune.create_model("deit_micro", depth=2, drop_path_rate=0.0)
    data = synthetic()
    cfg = PruneConfig(**{"target_macs": 0.6, "patience": 0, "indicator_lr": 0.2, "similarity_every": 5, **options})
    pruner = Pruner(model, cfg, data.tensors[0][:16])
    pruner.prepare()
    cfg = TrainConfig(
        epochs=0,
        max_steps=max_steps,
        batch_size=32,
        lr=1e-3,
        warmup_epochs=0,
        save_every=10,
        progress=False,
        log_every=5,
    )
    callbacks = [PruningCallback(pruner)] + ([Crash(crash_at)] if crash_at else [])
    trainer = Trainer(
        model,
        data,
        None,
        cfg,
        out_dir=out,
        callbacks=callbacks,
        param_groups=lambda m: pruner.param_groups(m, cfg.weight_decay, cfg.lr),
        num_classes=10,
    )
    trainer.fit(resume=resume)
    return pruner, trainer


def test_search_reaches_target_and_plan_meets_it():
    pruner, _ = search(max_steps=40)
    assert pruner.current_macs() < pruner.cost.dense_total
    plan = pruner.plan()
    assert plan.pruned_macs <= pruner.target
    assert pruner.step_count == 40


def test_search_resumes_exactly(tmp_path):
    full, _ = search(out=tmp_path / "a", max_steps=30)
    with pytest.raises(RuntimeError, match="simulated crash"):
        search(out=tmp_path / "b", max_steps=30, crash_at=17)  # last checkpoint: step 10
    resumed, _ = search(out=tmp_path / "b", max_steps=30, resume=tmp_path / "b")
    a = {k: v for k, v in full.model.state_dict().items()}
    b = {k: v for k, v in resumed.model.state_dict().items()}
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed.step_count == full.step_count == 30
    assert (resumed.reached_at_step, resumed.frozen_at_step) == (full.reached_at_step, full.frozen_at_step)


def test_search_records_when_it_reached_the_target_and_froze():
    """``reached_at_step``: the first step whose masks met the target; ``frozen_at_step``: when patience froze them,
    at least ``patience`` steps later; without patience nothing freezes."""
    pruner, _ = search(max_steps=40, patience=5)
    assert pruner.reached_at_step is not None and pruner.frozen_at_step is not None
    assert pruner.frozen_at_step >= pruner.reached_at_step + 4
    assert pruner.frozen and pruner.current_macs() <= pruner.target
    free, _ = search(max_steps=40)
    assert free.reached_at_step is not None and free.frozen_at_step is None and not free.frozen


def _weights(pruner):
    """The model's own weights (not the indicators, reweight parameters or gate buffers)."""
    return {k: v.clone() for k, v in pruner.model.state_dict().items() if "_gate" not in k}


def test_weight_lr_scale_scales_the_weight_updates_only():
    torch.manual_seed(0)  # as in ``search``
    before = dict(mhaprune.create_model("deit_micro", depth=2, drop_path_rate=0.0).state_dict())
    deltas, indicators = {}, {}
    for scale in (1.0, 0.5, 0.0):
        pruner, _ = search(max_steps=1, weight_lr_scale=scale)
        after = _weights(pruner)
        assert sorted(after) == sorted(before)
        deltas[scale] = {k: after[k] - before[k] for k in before if after[k].is_floating_point()}
        indicators[scale] = torch.cat([st.indicator.detach().reshape(-1) for _, _, st in pruner._all_states()])
    moved = [k for k, d in deltas[1.0].items() if d.abs().max() > 0]
    assert any(k.endswith("qkv.weight") for k in moved) and any(k.endswith("fc1.weight") for k in moved)
    for k in deltas[1.0]:  # Adam's first step and the decoupled decay are both proportional to the LR
        torch.testing.assert_close(
            deltas[0.5][k], 0.5 * deltas[1.0][k], rtol=1e-4, atol=2e-7, msg=k
        )  # float32 rounding near 1
        assert torch.equal(deltas[0.0][k], torch.zeros_like(deltas[0.0][k])), k  # frozen: a pure mask search
    torch.testing.assert_close(indicators[0.0], indicators[1.0])  # the indicators learn as before
