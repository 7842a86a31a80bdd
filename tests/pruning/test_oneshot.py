"""The one-shot post-training baseline: Fisher importance, mask search and least-squares rescaling."""

import copy

import pytest
import torch
import torch.nn.functional as F

import mhaprune
from mhaprune.pruning import fisher_plan, fisher_scores, oneshot_prune, prunable_modules, rescale_outputs
from mhaprune.pruning.oneshot import output_linear
from tests.conftest import unfuse
from tests.pruning.conftest import randomize


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    return randomize(unfuse(mhaprune.create_model("deit_micro"))).double().eval()


def _batch(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *model.input_size, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def _loss_with_scaled_channel(model, x, y, path, group, head, ch, factor):
    """The loss after multiplying one channel's mask by ``factor`` through the weights (independent of the gates)."""
    m = copy.deepcopy(model)
    mod = m.get_submodule(path)
    with torch.no_grad():
        if group == "hidden":
            mod.fc2.weight[:, ch] *= factor
        elif group == "v":
            mod.proj.weight[:, head * mod.v_head_dim + ch] *= factor
        else:  # the same mask multiplies the channel's query and key
            i = head * mod.qk_head_dim + ch
            for row in (i, mod.qk_dim + i):
                mod.qkv.weight[row] *= factor
                mod.qkv.bias[row] *= factor
    with torch.no_grad():
        return float(F.cross_entropy(m(x), y))


def test_fisher_equals_squared_mask_derivative_by_finite_differences(deit):
    x, y = _batch(deit, 1)
    scores = fisher_scores(deit, x, y)
    eps = 1e-5
    checked = 0
    for path in ("blocks.0.attn", "blocks.0.mlp", "blocks.3.attn", "blocks.3.mlp"):
        for group, fisher in scores[path].items():
            for head, ch in ((0, 0), (fisher.shape[0] - 1, fisher.shape[1] - 1)):
                up = _loss_with_scaled_channel(deit, x, y, path, group, head, ch, 1 + eps)
                down = _loss_with_scaled_channel(deit, x, y, path, group, head, ch, 1 - eps)
                grad = (up - down) / (2 * eps)
                assert float(fisher[head, ch]) == pytest.approx(grad**2, rel=1e-3, abs=1e-12), (path, group)
                checked += 1
    assert checked == 12  # qk, v and hidden, two channels each, in two blocks


def test_fisher_sums_squares_over_samples_and_leaves_model_untouched(deit):
    x, y = _batch(deit, 3)
    before = deit(x)
    flags = [p.requires_grad for p in deit.parameters()]
    both = fisher_scores(deit, x, y)
    parts = [fisher_scores(deit, x[i : i + 1], y[i : i + 1]) for i in range(3)]
    for path, groups in both.items():
        for g, f in groups.items():
            torch.testing.assert_close(f, sum(p[path][g] for p in parts), rtol=1e-5, atol=0)
    assert torch.equal(deit(x), before)
    assert [p.requires_grad for p in deit.parameters()] == flags
    assert not any("gate" in type(m).__name__.lower() for m in deit.modules())
    with pytest.raises(ValueError, match="3 calibration inputs but 2 targets"):
        fisher_scores(deit, x, y[:2])


@pytest.mark.parametrize("name", ["deit_micro", "flatten_swin_micro"])
def test_fisher_plan_meets_target_with_equal_heads(name):
    torch.manual_seed(0)
    model = unfuse(mhaprune.create_model(name)).eval()
    x, y = torch.randn(4, *model.input_size), torch.randint(0, 10, (4,))
    plan = fisher_plan(model, model.input_size, 0.4, x, y)
    cut = mhaprune.apply_plan(copy.deepcopy(model), plan)
    macs = mhaprune.count_macs(cut).total
    assert macs == plan.pruned_macs <= 0.4 * plan.dense_macs
    assert macs > 0.39 * plan.dense_macs  # the greedy fill uses the budget
    for lp in plan.layers.values():
        for keep in lp.keep.values():
            assert len({len(h) for h in keep}) == 1
    assert plan.meta["method"] == "oneshot-fisher"


def _layer_errors(pruned, dense, x):
    """Relative error of every pruned module's output linear against the dense one, measured directly."""
    outs = {"p": {}, "d": {}}
    hooks = []
    for tag, model in (("p", pruned), ("d", dense)):
        for path, m, a in prunable_modules(model):
            lin = output_linear(m, a)
            hooks.append(lin.register_forward_hook(lambda mod, i, o, t=tag, p=path: outs[t].__setitem__(p, o)))
    with torch.no_grad():
        pruned(x), dense(x)
    for h in hooks:
        h.remove()
    return {p: float(((outs["d"][p] - outs["p"][p]) ** 2).sum() / (outs["d"][p] ** 2).sum()) for p in outs["p"]}


def test_rescale_reports_the_errors_it_reaches_and_never_worsens_a_layer(deit):
    x, _ = _batch(deit, 8)
    plan = mhaprune.pruning.l1_plan(deit, deit.input_size, 0.4)
    pruned = mhaprune.apply_plan(copy.deepcopy(deit), plan)
    plain = copy.deepcopy(pruned)
    report = rescale_outputs(pruned, deit, x, batch_size=3)  # batches of 3, 3 and 2
    assert set(report) == set(plan.layers)
    assert any(r["applied"] for r in report.values())
    measured = _layer_errors(pruned, deit, x)
    for path, r in report.items():
        assert r["after"] <= r["before"]
        assert measured[path] == pytest.approx(r["after"], rel=1e-6, abs=1e-12)
    # the first layer's inputs are the dense ones, so its error before rescaling is the unscaled pruned model's
    first = next(iter(report))
    assert report[first]["before"] == pytest.approx(_layer_errors(plain, deit, x)[first], rel=1e-6)


def test_rescale_of_an_unpruned_model_is_exact_and_changes_nothing(deit):
    x, _ = _batch(deit, 4)
    same = copy.deepcopy(deit)
    report = rescale_outputs(same, deit, x)
    assert all(r["before"] < 1e-20 for r in report.values())
    torch.testing.assert_close(same(x), deit(x), rtol=1e-9, atol=1e-9)


def test_oneshot_prune_returns_a_pruned_copy(deit):
    x, y = _batch(deit, 4)
    state = {k: v.clone() for k, v in deit.state_dict().items()}
    pruned, plan, report = oneshot_prune(deit, 0.5, x, y)
    assert all(torch.equal(v, deit.state_dict()[k]) for k, v in state.items())
    assert mhaprune.count_macs(pruned).total == plan.pruned_macs <= 0.5 * plan.dense_macs
    assert set(report["layers"]) == set(plan.layers)
    assert pruned.pruning_plan is plan
