"""Configuration stated once: the CLI's flags, defaults and help come from the config dataclasses; configs are
frozen, validated on construction and versioned."""

from __future__ import annotations

import dataclasses

import pytest

from mhaprune.cli import build_parser
from mhaprune.cli._options import cli_fields, field_docs
from mhaprune.pipeline import PRUNE_TRAIN, PruneRecipe
from mhaprune.pruning import ConfigError, PruneConfig
from mhaprune.train import TrainConfig


def _actions(command: str) -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices[command]._actions}


@pytest.mark.parametrize("cls, base", [(PruneConfig, None), (TrainConfig, PRUNE_TRAIN), (PruneRecipe, None)])
def test_every_config_field_is_a_prune_flag_with_its_default_and_docs(cls, base):
    actions = _actions("prune")
    docs = field_docs(cls)
    for f in cli_fields(cls, skip=("epochs", "max_steps")):  # prune takes those per stage (PruneRecipe)
        a = actions[f.name]
        assert a.default is None  # "not given": a recipe file, then the field's default, fill it in
        default = getattr(base, f.name) if base is not None else f.default
        assert docs[f.name] and docs[f.name].split()[0] in a.help
        if isinstance(default, bool):
            assert a.option_strings == [("--no-" if default else "--") + f.name.replace("_", "-")]
        elif default is not None:
            assert f"(default {default})" in a.help
        if "choices" in f.metadata:
            assert tuple(a.choices) == f.metadata["choices"]


def test_train_flags_show_train_defaults_and_prune_flags_the_prune_recipe():
    train, prune = _actions("train"), _actions("prune")
    assert f"(default {TrainConfig.__dataclass_fields__['lr'].default})" in train["lr"].help
    assert f"(default {PRUNE_TRAIN.lr})" in prune["lr"].help and PRUNE_TRAIN.lr != TrainConfig().lr
    for name in ("epochs", "max_steps"):  # prune takes --search-* / --finetune-* instead, and says so if given
        assert name in train and prune[name].help == "==SUPPRESS=="


def test_train_config_is_frozen_and_validated_on_construction():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert cfg.replace(lr=0.1).lr == 0.1 and cfg.lr == 1e-3
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="must be a positive multiple"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig option"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_prune_config_round_trips_with_its_schema_version():
    cfg = PruneConfig(target_macs=0.5, equal_heads=False)
    d = cfg.to_dict()
    assert d["version"] == 1 and PruneConfig.from_dict(d) == cfg
    old = {k: v for k, v in d.items() if k != "version"}  # saved before configs carried a version
    assert PruneConfig.from_dict(old) == cfg
    with pytest.raises(ConfigError, match="upgrade mhaprune"):
        PruneConfig.from_dict({**d, "version": 99})
    with pytest.raises(ConfigError, match="regularizer must be one of"):
        PruneConfig(regularizer="cubic")


def test_recipe_rejects_an_unknown_method_before_any_work():
    with pytest.raises(ValueError, match="Did you mean: oneshot"):
        PruneRecipe(method="oneshoot")
    assert PruneRecipe(method="l1").finetune_budget() == 0.0 and PruneRecipe().finetune_budget() == 0.6
