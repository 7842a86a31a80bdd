"""Which attention kernels a model's widths allow: the fused ``scaled_dot_product_attention`` paths need the same
Q/K and V width per head (CPU flash and CUDA flash kernels; PyTorch measured here: ``d_qk ≠ d_v`` runs
``_scaled_dot_product_attention_math``), and on CUDA in fp16 / bf16 head widths that are multiples of 8 (the flash,
memory-efficient and cuDNN backends; FlashAttention-2 also needs ``d_qk = d_v``). Our softmax modules pad the
narrower side to the wider for the fused call (exact), so a plan with ``d_qk ≠ d_v`` keeps its fused kernel but
pays the wider width in the attention matmuls: the MACs it saved there do not show up in time."""

from __future__ import annotations

import torch
import torch.nn as nn

HALF = (torch.float16, torch.bfloat16)


def _softmax_modules(model: nn.Module):
    for name, m in model.named_modules():
        if hasattr(m, "fused_attn") and hasattr(m, "qk_head_dim") and hasattr(m, "v_head_dim"):
            yield name, m


def _listed(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def kernel_notes(model: nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Warnings (one line each) for the softmax attention layers whose widths keep the fused SDPA kernels of
    ``device`` / ``dtype`` off their fast paths; empty when every layer can use them."""
    device_type = torch.device(device).type
    uneven, odd, total = [], [], 0
    for name, m in _softmax_modules(model):
        if not m.fused_attn:  # the explicit path (FLOP counting, ONNX): no fused kernel to lose
            continue
        total += 1
        if m.qk_head_dim != m.v_head_dim:
            uneven.append(f"{name} ({m.qk_head_dim}/{m.v_head_dim})")
        if device_type == "cuda" and dtype in HALF and max(m.qk_head_dim, m.v_head_dim) % 8:
            odd.append(f"{name} ({m.qk_head_dim}/{m.v_head_dim})")
    notes = []
    if uneven:
        notes.append(
            f"{len(uneven)} of {total} softmax attention layers keep different Q/K and V widths per head (d_qk/d_v: "
            f"{_listed(uneven)}): the fused attention kernels need one width, so these layers run padded to the "
            f"wider and their attention matmuls do not get faster; prune with --same-qk-v-width "
            f"(PruneConfig(same_qk_v_width=True)) for one width per layer"
        )
    if odd:
        notes.append(
            f"{len(odd)} of {total} softmax attention layers have head widths that are not multiples of 8 "
            f"({_listed(odd)}): in {str(dtype).removeprefix('torch.')} on CUDA the flash, memory-efficient and cuDNN "
            f"attention backends need multiples of 8 and these layers fall back to the math kernel; prune with "
            f"--round-to 8"
        )
    return notes
