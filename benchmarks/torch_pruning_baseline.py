"""The Torch-Pruning baseline (``pip install torch-pruning``): head-dimension pruning of our models' attention (the
same in-head channels of Q, K and V, equal in every head) and MLP hidden channels, with magnitude (L1) or Taylor
importance, the residual stream (embedding width) left alone, bisected on the pruning ratio to a MACs budget.

Limits found: Torch-Pruning cannot give Q/K and V different widths (it prunes the fused ``qkv`` by head dimension).
On ``flatten_swin_micro`` it runs but leaves a broken model: it does not know that FLatten's per-channel ``scale`` and
``positional_encoding`` parameters follow the Q/K channels and that the depthwise conv is shared across heads, so
the pruned model fails at its first forward (``flatten_failure`` returns the error; measured with torch-pruning
1.6.0: "The size of tensor a (26) must match the size of tensor b (27) at non-singleton dimension 2" at ratio 0.3).
On a Hugging Face ``BertModel`` (MiniLM-L6, adapted by ``mhaprune.interop``: fused ``qkv``) it prunes the same
way, the token embeddings and the pooler left alone; Taylor importance needs a classification loss, so text encoders
get magnitude only (``tp-magnitude``). Torch-Pruning finds a model's structure through autograd, so it prunes nothing
of a model whose parameters do not require gradients: ``tp_prune`` prunes a copy that does (measured: in one process,
after a fine-tune had frozen the dense teacher, every later cut kept 100% of the MACs and the bisection stopped with
"could not reach 35%" / "25%").
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from mhaprune.adapters import prunable_modules
from mhaprune.cost import count_macs


def _fused_attention(model: nn.Module, kinds=("softmax", "linear")) -> list[nn.Module]:
    """Attention modules with a fused ``qkv`` projection (the layout Torch-Pruning's head-dim pruning handles)."""
    return [m for _, m, ad in prunable_modules(model) if ad.attention_type(m) in kinds and hasattr(m, "qkv")]


def _refresh(model: nn.Module) -> nn.Module:
    """Torch-Pruning edits the Linear layers; our modules also store their widths."""
    for m in _fused_attention(model):
        m.qk_head_dim = m.v_head_dim = m.qkv.out_features // (3 * m.num_heads)
    for _, m, ad in prunable_modules(model):
        if ad.kind == "mlp" and hasattr(m, "hidden_features"):
            m.hidden_features = m.fc1.out_features
    return model


def tp_prune(model: nn.Module, ratio: float, importance: str = "magnitude", calib: torch.Tensor | None = None):
    """A pruned copy of ``model`` at Torch-Pruning's ``pruning_ratio`` (per layer, head dims and MLP hidden)."""
    import torch_pruning as tp

    # Torch-Pruning traces its dependency graph through autograd: on frozen parameters (a model already used as a
    # distillation teacher, which freezes it in place) it finds no graph and prunes nothing, silently. The copy
    # trains again, whatever the caller's model does.
    model = copy.deepcopy(model).eval().requires_grad_(True)
    x = calib if calib is not None else torch.randn(4, *model.input_size)
    text = isinstance(x, dict)  # a Hugging Face text encoder (adapted): input_ids, attention_mask
    if text and importance == "taylor":
        raise ValueError("Taylor importance needs a classification loss; prune text encoders with tp-magnitude")
    heads = {m.qkv: m.num_heads for m in _fused_attention(model, kinds=("softmax",))}
    imp = tp.importance.MagnitudeImportance(p=1) if importance == "magnitude" else tp.importance.TaylorImportance()
    # the residual stream stays: its roots (patch embedding / token embeddings), the head and BERT's pooler
    ignored = [m for n, m in model.named_modules() if n in ("head", "patch_embed.proj", "embeddings", "pooler")]
    example = {k: v[:1] for k, v in x.items()} if text else x[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(
            model, example, importance=imp, pruning_ratio=ratio, ignored_layers=ignored, num_heads=heads,
            prune_head_dims=True, prune_num_heads=False,
        )  # fmt: skip
        if importance == "taylor":
            model.zero_grad()
            nn.functional.cross_entropy(model(x), model(x).argmax(-1)).backward()
        pruner.step()
    return _refresh(model)


def tp_prune_to(model: nn.Module, budget: float, importance: str = "magnitude", calib=None, iters: int = 8):
    """The least-pruned Torch-Pruning model with MACs ≤ ``budget`` × dense (bisection on the ratio); ``calib``: a
    batch of images, or of a text encoder's inputs (a dict; MACs then at one row of it)."""
    example = {k: v[:1] for k, v in calib.items()} if isinstance(calib, dict) else None
    dense = count_macs(model, example).total
    lo, hi, best = 0.0, 0.99, None
    for _ in range(iters):
        mid = (lo + hi) / 2
        pruned = tp_prune(model, mid, importance, calib)
        if count_macs(pruned, example).total <= budget * dense:
            best, hi = pruned, mid
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"Torch-Pruning could not reach {budget:.0%} of the MACs")
    return best


def flatten_failure(ratio: float = 0.3) -> str | None:
    """What goes wrong when Torch-Pruning prunes ``flatten_swin_micro`` (None if the pruned model runs)."""
    import mhaprune

    model = mhaprune.create_model("flatten_swin_micro")
    try:
        pruned = tp_prune(model, ratio)
        with torch.no_grad():
            pruned(torch.randn(2, *model.input_size))
    except Exception as e:  # noqa: BLE001 - reported as the finding
        return f"{type(e).__name__}: {e}"
    return None
