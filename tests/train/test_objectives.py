"""Objectives on tiny random Hugging Face BERT and ViT models (and ours): the prepared model computes what the
original did, every objective gives a finite loss whose gradients reach the indicators, and what each one refuses."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

import mhaprune
from mhaprune.interop import from_hf_model
from mhaprune.train import ObjectiveError, embeddings, encode, encoder_metrics, make_objective
from mhaprune.train.metrics import neighbour_sets


def _bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)  # fmt: skip
    return from_hf_model(transformers.BertModel(cfg).eval())


def _vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=28, patch_size=4, num_channels=1, num_labels=10)  # fmt: skip
    return from_hf_model(transformers.ViTForImageClassification(cfg).eval())


def _text(n=6, length=12):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, 8:] = 0
    return {"input_ids": torch.randint(0, 100, (n, length), generator=g), "attention_mask": mask}


CASES = {
    "bert-features": (_bert, _text, "features", {}),
    "bert-features-mean-last2": (_bert, _text, "features", {"layers": (-2, -1), "pooling": "mean"}),
    "vit-features": (_vit, lambda: torch.randn(6, 1, 28, 28), "features", {}),
    "vit-logits": (_vit, lambda: torch.randn(6, 1, 28, 28), "logits", {}),
    "vit-classification": (_vit, lambda: torch.randn(6, 1, 28, 28), "classification", {}),
    "deit-features": (lambda: mhaprune.create_model("deit_micro", depth=1).eval(), lambda: torch.randn(6, 1, 28, 28),
                      "features", {"layers": ()}),
}  # fmt: skip


def _output(model, x):
    out = model(**x) if isinstance(x, dict) else model(x)
    return out if torch.is_tensor(out) else (out.logits if getattr(out, "logits", None) is not None
                                             else out.last_hidden_state)  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_objective_on_a_prepared_model_is_finite_and_reaches_the_indicators(case):
    build, data, name, options = CASES[case]
    model, x = build(), data()
    teacher = copy.deepcopy(model).eval()
    with torch.no_grad():
        before = _output(model, x)
    pruner = mhaprune.Pruner(model, mhaprune.PruneConfig(target_macs=0.6), x)
    pruner.prepare()
    with torch.no_grad():
        torch.testing.assert_close(_output(model, x), before, rtol=1e-5, atol=1e-5)  # prepared == original
    objective = make_objective(name, teacher if name != "classification" else teacher, **options)
    objective.check(model, x)
    target = torch.randint(0, 10, (6,)) if name == "classification" else None
    model.train()
    loss = objective(model, x, target)
    assert torch.isfinite(loss)
    loss.backward()
    states = [st for sts in pruner.states.values() for st in sts.values()]
    grads = [st.indicator.grad for st in states if st.indicator.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays frozen


def test_feature_distillation_of_a_copy_is_zero():
    model, x = _bert(), _text()
    objective = make_objective("features", copy.deepcopy(model), layers=(-1,))
    loss = objective(model.train(False), x, None)
    assert float(loss.detach()) < 1e-6


def test_mean_pooling_leaves_the_padding_out():
    model, x = _bert(), _text()
    pooled, _, _ = encode(model, x, "mean")
    y = {k: v.clone() for k, v in x.items()}
    y["input_ids"][1, 5:] = 7  # other tokens where row 1 is padded: its pooled embedding must not change
    pooled2, _, _ = encode(model, y, "mean")
    torch.testing.assert_close(pooled2[1], pooled[1])
    tokens = model(**x).last_hidden_state
    torch.testing.assert_close(pooled[1], tokens[1, :5].mean(0))


def test_objectives_refuse_what_the_model_cannot_give():
    bert = _bert()
    with pytest.raises(ObjectiveError, match="gives no logits"):
        make_objective("logits", copy.deepcopy(bert)).check(bert, _text())
    deit = mhaprune.create_model("deit_micro", depth=1)
    with pytest.raises(ObjectiveError, match="gives no hidden states"):
        make_objective("features", copy.deepcopy(deit), layers=(-1,)).check(deit, torch.randn(2, 1, 28, 28))
    with pytest.raises(ObjectiveError, match="Did you mean: features"):
        make_objective("featres", bert)


def test_encoder_metrics_are_one_for_the_same_embeddings_and_fall_for_noise():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(40, 16, generator=g)
    same = encoder_metrics(e, e.clone())
    assert same["cosine"] == pytest.approx(1.0) and same["neighbours"] == 1.0 and same["k"] == 10
    noisy = encoder_metrics(e, e + 2 * torch.randn(40, 16, generator=g))
    assert noisy["cosine"] < 0.8 and noisy["neighbours"] < 0.6
    nb = neighbour_sets(e, 3)
    assert nb.shape == (40, 3) and not (nb == torch.arange(40)[:, None]).any()  # never itself


def test_embeddings_of_a_text_dataset_follow_its_order(text_encoder):
    from mhaprune.data import build_text_data, load_tokenizer
    from mhaprune.interop import from_hf

    model = from_hf(text_encoder)
    ds = build_text_data("fortunes", load_tokenizer(text_encoder), 16, val_size=30, test_size=30).val
    emb = embeddings(model, ds, batch_size=7)
    x, _ = ds.collate([ds[i] for i in range(3)])
    with torch.no_grad():
        torch.testing.assert_close(emb[:3], encode(model, x)[0], rtol=1e-5, atol=1e-6)
