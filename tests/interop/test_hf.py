"""Hugging Face ViT, DeiT, Swin and BERT: the adapter contract, the full method, export and reload."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import transformers

import mhaprune
from mhaprune.cli import main
from mhaprune.cost import count_macs
from mhaprune.export import export_onnx, load_pruned
from mhaprune.interop import ExternalModelError, adapt, from_hf, from_hf_model
from tests.interop.contract import check_contract, out
from tests.pruning.conftest import randomize

VISION = {
    "vit": (transformers.ViTConfig, transformers.ViTForImageClassification, dict(image_size=28, patch_size=4)),
    "deit": (transformers.DeiTConfig, transformers.DeiTForImageClassification, dict(image_size=28, patch_size=4)),
    "swin": (
        transformers.SwinConfig,
        transformers.SwinForImageClassification,
        dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4),
    ),
}
_VIT_DIMS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def vision_model(kind: str):
    cfg_cls, model_cls, kw = VISION[kind]
    dims = {} if kind == "swin" else _VIT_DIMS
    torch.manual_seed(0)
    return model_cls(cfg_cls(num_channels=1, num_labels=10, **dims, **kw)).eval()


def bert_model():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(cfg).eval()


def text_inputs(n=4, length=12):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[1, 7:] = 0
    return {"input_ids": torch.randint(0, 100, (n, length), generator=g), "attention_mask": mask}


@pytest.mark.parametrize("kind", sorted(VISION))
def test_vision_adapter_contract(kind, tmp_path):
    original = randomize(vision_model(kind)).double()
    adapted = from_hf_model(copy.deepcopy(original)).double()
    x = torch.randn(4, *adapted.input_size, dtype=torch.float64)
    check_contract(original, adapted, x, tmp_path, n_attention=4 if kind == "swin" else 2)


def test_bert_adapter_contract_with_padding(tmp_path):
    original = randomize(bert_model()).double()
    adapted = from_hf_model(copy.deepcopy(original)).double()
    check_contract(original, adapted, text_inputs(), tmp_path, n_attention=2)


def test_adapted_model_keeps_the_output_type_and_attention_mask_semantics():
    model = from_hf_model(bert_model())
    inputs = text_inputs()
    res = model(**inputs)
    assert isinstance(res, transformers.modeling_outputs.SequenceClassifierOutput)
    # padded positions do not change the output of a sequence
    ids = inputs["input_ids"].clone()
    ids[1, 7:] = 5
    assert torch.allclose(model(input_ids=ids, attention_mask=inputs["attention_mask"]).logits[1], res.logits[1])


def test_unsupported_model_is_refused():
    with pytest.raises(ExternalModelError, match="no attention or MLP module"):
        adapt(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_from_hf_folder_needs_weights_or_random_init(tmp_path):
    vision_model("vit").save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "model.safetensors").rename(tmp_path / "weights.bak")
    with pytest.raises(ExternalModelError, match="--random-init"):
        from_hf(tmp_path / "vit")
    assert from_hf(tmp_path / "vit", random_init=True).input_size == (1, 28, 28)


# ------------------------------------------------------------------- the full method, export, reload
def test_hf_vit_pruned_to_70_percent_by_the_cli_then_exported_and_reloaded(tmp_path, image_folder, capsys):
    vision_model("vit").save_pretrained(tmp_path / "vit")
    dense = from_hf(tmp_path / "vit")
    run = tmp_path / "run"
    argv = ["prune", "--hf", str(tmp_path / "vit"), "--data", str(image_folder), "--target-macs", "0.7"]
    argv += ["--search-epochs", "2", "--finetune-epochs", "1", "--batch-size", "16", "--calib-size", "8"]
    assert main([*argv, "--threads", "1", "--no-progress", "--out", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["pruned"]["macs"] <= 0.7 * report["dense"]["macs"] + 1
    assert report["dense"]["macs"] == count_macs(dense).total
    pruned = load_pruned(run)
    assert isinstance(pruned, transformers.ViTForImageClassification)
    assert count_macs(pruned).total == report["pruned"]["macs"]
    r = export_onnx(pruned, tmp_path / "vit.onnx")
    assert r["max_abs_diff"] <= 1e-4
    r = export_onnx(dense, tmp_path / "dense.onnx")
    assert r["max_abs_diff"] <= 1e-4
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(out(load_pruned(run), x), out(pruned, x))


def _doc_example() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "interop.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_documented_bert_example_prunes_to_70_percent_and_reloads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_doc_example(), "docs/interop.md", "exec"), scope)
    plan, pruned, reloaded, calib = scope["plan"], scope["pruned"], scope["reloaded"], scope["calib"]
    assert plan.pruned_macs <= 0.7 * plan.dense_macs + 1
    assert count_macs(pruned, calib).total == plan.pruned_macs
    assert sum(p.numel() for p in pruned.parameters()) == plan.pruned_params < plan.dense_params
    attn = pruned.bert.encoder.layer[0].attention
    assert attn.qkv.out_features < 3 * 64 and attn.num_heads == 4
    assert torch.equal(out(reloaded, calib), out(pruned, calib))
    assert isinstance(mhaprune.load_pruned(tmp_path / "bert-pruned"), transformers.BertForSequenceClassification)


def test_pruner_takes_a_plain_hf_model_once_adapted(tmp_path):
    from mhaprune.interop import adapt_if_foreign

    model = bert_model()
    inputs = text_inputs()
    ref = out(model, inputs)
    adapt(bert_model())  # registers the Hugging Face layouts, as any earlier use of interop does
    with pytest.raises(ValueError, match=r"must be converted before pruning .*BertAttention.*interop\.adapt"):
        mhaprune.Pruner(model, mhaprune.PruneConfig(target_macs=0.7), inputs)
    pruner = mhaprune.Pruner(adapt_if_foreign(model), mhaprune.PruneConfig(target_macs=0.7), inputs)
    assert type(model.bert.encoder.layer[0].attention).__name__ == "HFBertAttention"
    pruner.prepare()
    assert torch.equal(out(model, inputs), ref)
    pruned = pruner.convert()
    mhaprune.save_pruned(pruned, tmp_path / "p")
    assert torch.equal(out(mhaprune.load_pruned(tmp_path / "p"), inputs), out(pruned, inputs))


def test_save_pretrained_of_an_adapted_or_pruned_model_fails_clearly(tmp_path):
    from mhaprune.pruning import l1_plan

    model = from_hf_model(vision_model("vit"))
    with pytest.raises(ExternalModelError, match="adapted by mhaprune.*mhaprune.save_pruned"):
        model.save_pretrained(tmp_path / "dense")
    pruned = mhaprune.apply_plan(copy.deepcopy(model), l1_plan(model, model.input_size, 0.7))
    with pytest.raises(ExternalModelError, match="is pruned: save_pretrained"):
        pruned.save_pretrained(tmp_path / "pruned")
    assert not (tmp_path / "dense").exists() and not (tmp_path / "pruned").exists()
    mhaprune.save_pruned(pruned, tmp_path / "ok")  # the way that round-trips
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(out(mhaprune.load_pruned(tmp_path / "ok"), x), out(pruned, x))
