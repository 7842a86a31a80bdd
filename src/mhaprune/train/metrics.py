"""Encoder metrics: how well a pruned encoder keeps the dense one's embedding space, on held-out items.

- cosine retention: the mean cosine similarity between each item's pooled embedding from the dense and from the
  pruned model;
- neighbour agreement: the mean overlap of each item's ``k`` nearest neighbours (cosine, itself excluded) among
  the held-out items, dense vs pruned (1 = the same neighbours).
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .engine import collate_of
from .objectives import encode


def _to(x, device):
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


@torch.no_grad()
def embeddings(model: nn.Module, dataset, batch_size: int = 64, pooling: str = "auto", device: str = "cpu",
               progress: bool = False, desc: str = "embed") -> torch.Tensor:  # fmt: skip
    """Pooled embeddings ``(N, D)`` of every item of ``dataset`` (in order), in eval mode."""
    from tqdm import tqdm

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_of(dataset))
    out = []
    for x, _ in tqdm(loader, desc=desc, disable=not (progress and sys.stderr.isatty()), leave=False):
        out.append(encode(model, _to(x, device), pooling)[0].float().cpu())
    return torch.cat(out)


def neighbour_sets(emb: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(N, k)`` of each row's ``k`` nearest other rows by cosine similarity."""
    e = F.normalize(emb.float(), dim=-1)
    sim = e @ e.T
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(min(k, len(e) - 1), dim=-1).indices


def encoder_metrics(dense_emb: torch.Tensor, pruned_emb: torch.Tensor, k: int = 10) -> dict:
    """``{"cosine", "neighbours", "k", "count"}`` of two embeddings of the same items."""
    if dense_emb.shape[0] != pruned_emb.shape[0]:
        raise ValueError(f"{dense_emb.shape[0]} dense vs {pruned_emb.shape[0]} pruned embeddings")
    cos = F.cosine_similarity(dense_emb.float(), pruned_emb.float(), dim=-1).mean().item()
    a, b = neighbour_sets(dense_emb, k), neighbour_sets(pruned_emb, k)
    overlap = (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).float().sum(-1) / a.shape[1]
    return {"cosine": cos, "neighbours": overlap.mean().item(), "k": int(a.shape[1]), "count": int(len(a))}


def compare_encoders(dense: nn.Module, pruned: nn.Module, dataset, k: int = 10, **kw) -> dict:
    """:func:`encoder_metrics` of ``pruned`` against ``dense`` on ``dataset``."""
    d = embeddings(dense, dataset, desc="embed (dense)", **kw)
    p = embeddings(pruned, dataset, desc="embed (pruned)", **kw)
    return encoder_metrics(d, p, k)
