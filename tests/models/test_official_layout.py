"""The FLatten models' state dicts equal the official implementation's, key for key and shape for shape.

The expected lists are built here from the official code's structure (LeapLabTHU/FLatten-Transformer,
models/flatten_swin.py with cfgs/flatten_swin_t.yaml, models/flatten_pvt.py with flatten_pvt_tiny), independently
of our modules, and a state dict of that layout must load with strict=True.
"""

import torch

import mhaprune


def _linear(sd, name, out_f, in_f, bias=True):
    sd[f"{name}.weight"] = (out_f, in_f)
    if bias:
        sd[f"{name}.bias"] = (out_f,)


def _norm(sd, name, dim):
    sd[f"{name}.weight"] = (dim,)
    sd[f"{name}.bias"] = (dim,)


def official_flatten_swin_t():
    """FLatten-Swin-T: embed 96, depths 2-2-6-2, heads 3-6-12-24, window 56 (LLSS), 224 px, patch 4."""
    sd = {"patch_embed.proj.weight": (96, 3, 4, 4), "patch_embed.proj.bias": (96,)}
    _norm(sd, "patch_embed.norm", 96)
    res, window = 56, 56
    for i, (depth, heads, kind) in enumerate(zip((2, 2, 6, 2), (3, 6, 12, 24), "LLSS")):
        C = 96 * 2**i
        r = res // 2**i
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}"
            ws = window if kind == "L" else 7
            shift = 0 if j % 2 == 0 else ws // 2
            if r <= ws:
                ws, shift = r, 0
            _norm(sd, f"{p}.norm1", C)
            _linear(sd, f"{p}.attn.qkv", 3 * C, C)
            _linear(sd, f"{p}.attn.proj", C, C)
            if kind == "L":
                hd = C // heads
                sd[f"{p}.attn.dwc.weight"] = (hd, 1, 5, 5)
                sd[f"{p}.attn.dwc.bias"] = (hd,)
                sd[f"{p}.attn.scale"] = (1, 1, C)
                sd[f"{p}.attn.positional_encoding"] = (1, ws * ws, C)
            else:
                sd[f"{p}.attn.relative_position_bias_table"] = ((2 * ws - 1) ** 2, heads)
                sd[f"{p}.attn.relative_position_index"] = (ws * ws, ws * ws)
            if shift:
                sd[f"{p}.attn_mask"] = ((r // ws) ** 2, ws * ws, ws * ws)
            _norm(sd, f"{p}.norm2", C)
            _linear(sd, f"{p}.mlp.fc1", 4 * C, C)
            _linear(sd, f"{p}.mlp.fc2", C, 4 * C)
        if i < 3:
            _linear(sd, f"layers.{i}.downsample.reduction", 2 * C, 4 * C, bias=False)
            _norm(sd, f"layers.{i}.downsample.norm", 4 * C)
    _norm(sd, "norm", 768)
    _linear(sd, "head", 1000, 768)
    return sd


def official_flatten_pvt_t():
    """FLatten-PVT-T: dims 64-128-320-512, heads 1-2-5-8, mlp 8-8-4-4, depths 2-2-2-2, LLLL, la_sr 1111."""
    sd = {}
    dims, heads, ratios = (64, 128, 320, 512), (1, 2, 5, 8), (8, 8, 4, 4)
    cin, size = 3, 224
    for i in range(4):
        patch = 4 if i == 0 else 2
        img = size if i == 0 else size // 2 ** (i + 1)
        n = (img // patch) ** 2
        D = dims[i]
        sd[f"patch_embed{i + 1}.proj.weight"] = (D, cin, patch, patch)
        sd[f"patch_embed{i + 1}.proj.bias"] = (D,)
        _norm(sd, f"patch_embed{i + 1}.norm", D)
        sd[f"pos_embed{i + 1}"] = (1, n, D)
        for j in range(2):
            p = f"block{i + 1}.{j}"
            _norm(sd, f"{p}.norm1", D)
            _linear(sd, f"{p}.attn.q", D, D)
            _linear(sd, f"{p}.attn.kv", 2 * D, D)
            _linear(sd, f"{p}.attn.proj", D, D)
            hd = D // heads[i]
            sd[f"{p}.attn.dwc.weight"] = (hd, 1, 5, 5)
            sd[f"{p}.attn.dwc.bias"] = (hd,)
            sd[f"{p}.attn.scale"] = (1, 1, D)
            sd[f"{p}.attn.positional_encoding"] = (1, n, D)
            _norm(sd, f"{p}.norm2", D)
            _linear(sd, f"{p}.mlp.fc1", ratios[i] * D, D)
            _linear(sd, f"{p}.mlp.fc2", D, ratios[i] * D)
        cin = D
    _norm(sd, "norm", 512)
    _linear(sd, "head", 1000, 512)
    return sd


def _check(model, expected):
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(expected)
    assert ours == expected
    state = {k: torch.randn(s) if "index" not in k else torch.randint(0, 10, s) for k, s in expected.items()}
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v.to(model.state_dict()[k].dtype))


def test_flatten_swin_tiny_matches_official_layout():
    _check(mhaprune.create_model("flatten_swin_tiny"), official_flatten_swin_t())


def test_flatten_pvt_tiny_matches_official_layout():
    _check(mhaprune.create_model("flatten_pvt_tiny"), official_flatten_pvt_t())
