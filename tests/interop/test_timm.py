"""timm VisionTransformer (DeiT) and SwinTransformer: the adapter contract, the full method, export and reload.

Runs in the timm environment (timm needs torchvision: torch 2.14.1 + torchvision 0.29.1 here); CI runs it there, and
``tests/conftest.py`` leaves this file out where timm is not installed.
"""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from mhaprune.cli import main
from mhaprune.cost import count_macs
from mhaprune.export import export_onnx, load_pruned
from mhaprune.interop import ExternalModelError, from_timm
from tests.interop.contract import check_contract, out
from tests.pruning.conftest import randomize

MODELS = {
    "deit": (
        "deit_tiny_patch16_224",
        dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, depth=2, embed_dim=32, num_heads=4),
    ),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=32, patch_size=2, in_chans=1, num_classes=10, window_size=4, embed_dim=16, depths=(2, 2),
             num_heads=(2, 4)),
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_timm_adapter_contract(kind, tmp_path):
    name, kw = MODELS[kind]
    torch.manual_seed(0)
    original = randomize(timm.create_model(name, **kw)).eval().double()
    adapted = from_timm(name, **kw).eval()
    assert sorted(adapted.state_dict()) == sorted(original.state_dict()), "timm's state-dict keys are kept"
    adapted.load_state_dict(original.state_dict())
    adapted = adapted.double()
    x = torch.randn(4, *adapted.input_size, dtype=torch.float64)
    check_contract(original, adapted, x, tmp_path, n_attention=4 if kind == "swin" else 2)


def test_timm_qk_norm_is_refused():
    with pytest.raises(ExternalModelError, match="qk_norm"):
        from_timm("vit_tiny_patch16_224", img_size=28, patch_size=4, depth=1, qk_norm=True)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_timm_pruned_to_70_percent_by_the_cli_then_exported_and_reloaded(kind, tmp_path, image_folder, capsys):
    name, kw = MODELS[kind]
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(timm.create_model(name, **kw).state_dict(), str(weights))
    run = tmp_path / "run"
    argv = ["prune", "--timm", name, "--pretrained-file", str(weights), "--data", str(image_folder)]
    argv += [x for k, v in kw.items() for x in ("--model-arg", f"{k}={v!r}".replace(" ", ""))]
    argv += ["--target-macs", "0.7", "--search-epochs", "2", "--finetune-epochs", "1", "--batch-size", "16"]
    assert main([*argv, "--calib-size", "8", "--threads", "1", "--no-progress", "--out", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["pruned"]["macs"] <= 0.7 * report["dense"]["macs"] + 1
    pruned = load_pruned(run)
    assert type(pruned).__name__ in ("VisionTransformer", "SwinTransformer")
    assert count_macs(pruned).total == report["pruned"]["macs"]
    assert export_onnx(pruned, tmp_path / "m.onnx")["max_abs_diff"] <= 1e-4
    dense = from_timm(name, weights, **kw)
    assert export_onnx(copy.deepcopy(dense), tmp_path / "d.onnx")["max_abs_diff"] <= 1e-4
    x = torch.randn(3, *pruned.input_size)
    assert torch.equal(out(load_pruned(run), x), out(pruned, x))


def test_pruner_takes_a_plain_timm_model_once_adapted(tmp_path):
    from mhaprune import PruneConfig, Pruner, save_pruned
    from mhaprune.export import CheckpointError
    from mhaprune.interop import adapt_if_foreign

    name, kw = MODELS["deit"]
    model = timm.create_model(name, **kw).eval()
    x = torch.randn(4, 1, 28, 28)
    ref = out(model, x)
    with pytest.raises(ValueError, match=r"must be converted before pruning .*mhaprune\.interop\.adapt\(model\)"):
        Pruner(model, PruneConfig(target_macs=0.7), x)  # the caller adapts (mhaprune.prune and the CLI do)
    pruner = Pruner(adapt_if_foreign(model), PruneConfig(target_macs=0.7), x)
    pruner.prepare()
    assert torch.equal(out(model, x), ref)
    pruned = pruner.convert()
    assert count_macs(pruned, x).total <= 0.7 * count_macs(from_timm(name, **kw), x).total + 1
    with pytest.raises(CheckpointError, match="from_timm"):  # timm models do not record their build arguments
        save_pruned(pruned, tmp_path / "p")


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_timm_head_replaced_for_other_classes_keeps_the_plan_and_reloads(kind, tmp_path):
    import mhaprune

    name, kw = MODELS[kind]
    model = from_timm(name, **kw).eval()
    x = torch.randn(2, *model.input_size)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    pruned = mhaprune.apply_plan(model, mhaprune.pruning.l1_plan(model, model.input_size, 0.7))
    mhaprune.replace_head(pruned, 3)
    assert pruned.num_classes == 3 and pruned.model_args["num_classes"] == 3
    with torch.no_grad():
        assert pruned(x).shape == (2, 3)
        assert pruned.forward_head(pruned.forward_features(x), pre_logits=True).shape == feats.shape
    mhaprune.save_pruned(pruned, tmp_path / "m")
    again = load_pruned(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))
