import copy

import pytest
import torch

import mhaprune
from mhaprune.export import CheckpointError, load_pruned, save_pruned
from mhaprune.pruning import Plan, PlanError, PruneConfig, Pruner, apply_plan, l1_plan, random_plan


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return mhaprune.create_model("flatten_swin_micro").eval()


def test_plan_json_round_trip_and_diff(micro, tmp_path):
    plan = random_plan(micro, micro.input_size, 0.6, seed=1)
    again = Plan.from_json(plan.to_json())
    assert again.to_dict() == plan.to_dict()
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json").to_dict() == plan.to_dict()
    other = l1_plan(micro, micro.input_size, 0.6)
    d = plan.diff(other)
    assert d == {p: g for p, g in d.items() if g}  # only differing layers are listed
    assert plan.diff(again) == {}
    assert "MACs" in plan.summary()


def _corrupt(plan: Plan, fn) -> dict:
    d = copy.deepcopy(plan.to_dict())
    fn(d)
    return d


@pytest.mark.parametrize(
    "edit,msg",
    [
        (lambda d: next(iter(d["layers"].values()))["keep"]["qk"][0].append(15), "unequal numbers"),
        (lambda d: next(iter(d["layers"].values()))["keep"]["qk"][0].__setitem__(0, 99), "out of range"),
        (
            lambda d: next(iter(d["layers"].values()))["keep"]["qk"].__setitem__(
                0, [3, 3, 4][: len(next(iter(d["layers"].values()))["keep"]["qk"][1])]
            ),
            "duplicated|unequal",
        ),
        (lambda d: d.pop("dense"), "malformed plan"),
        (lambda d: d.__setitem__("format", 99), "unsupported plan format"),
    ],
)
def test_malformed_plans_are_rejected(micro, edit, msg):
    plan = random_plan(micro, micro.input_size, 0.6, seed=2)
    with pytest.raises(PlanError, match=msg):
        Plan.from_dict(_corrupt(plan, edit))


def test_plan_for_another_model_is_rejected(micro):
    plan = random_plan(micro, micro.input_size, 0.6, seed=2)
    with pytest.raises(PlanError, match="plan is for flatten_swin_micro"):
        apply_plan(mhaprune.create_model("deit_micro"), plan)
    other = mhaprune.create_model("flatten_swin_micro", embed_dim=64)
    other.arch_name = None
    with pytest.raises(PlanError, match="another model"):
        apply_plan(other, plan)
    pruned = apply_plan(copy.deepcopy(micro), plan)
    with pytest.raises(PlanError, match="already applied|another model"):
        apply_plan(pruned, plan)


def test_save_and_load_pruned_folder_reproduces_outputs(micro, tmp_path):
    x = torch.randn(3, 1, 32, 32)
    model = copy.deepcopy(micro)
    pruner = Pruner(model, PruneConfig(target_macs=0.5), x)
    pruner.prepare()
    pruned = pruner.convert()
    save_pruned(pruned, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pruned(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.eval()(x))
    assert mhaprune.count_macs(loaded).total == pruned.pruning_plan.pruned_macs


def test_save_pruned_needs_a_plan(micro, tmp_path):
    with pytest.raises(CheckpointError, match="no pruning plan"):
        save_pruned(micro, tmp_path / "x")
