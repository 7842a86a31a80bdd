"""The output-difference init: the two-forward path through the consuming Linear equals masking channel by channel."""

import pytest
import torch
import torch.nn as nn

import mhaprune
from mhaprune.pruning import PruneConfig, Pruner
from mhaprune.pruning.gates import ChannelGate, GroupState
from mhaprune.pruning.init import output_difference
from tests.conftest import unfuse

MODELS = {
    "flatten_swin_micro": ({}, (8, 1, 32, 32)),  # focused linear + window softmax attention, Mlp
    "deit_micro": ({}, (8, 1, 28, 28)),  # global softmax attention
    "flatten_pvt_tiny": (  # PVT layout: q + kv, spatial reduction, focused linear attention
        {"img_size": 64, "embed_dims": (16, 32, 32, 32), "num_heads": (1, 2, 2, 2), "depths": (1, 1, 1, 1)},
        (2, 3, 64, 64),
    ),
}


def _counting(module):
    calls = []
    return calls, module.register_forward_hook(lambda *a: calls.append(1))


@pytest.mark.parametrize("name", MODELS)
def test_linear_path_equals_channel_by_channel_masking(name):
    """For every V and MLP-hidden group of our adapters: D from two forwards (plus two checks) == D from h·d + 1."""
    kwargs, shape = MODELS[name]
    model = unfuse(mhaprune.create_model(name, **kwargs)).eval()
    x = torch.randn(*shape)
    pruner = Pruner(model, PruneConfig(target_macs=0.7, attn_init=False), x)
    pruner.prepare()
    inputs, hooks = {}, []
    for lc in pruner.cost.layers:
        hooks.append(
            lc.module.register_forward_pre_hook(
                lambda mod, args, kw, p=lc.path: inputs.__setitem__(p, (args, kw)), with_kwargs=True
            )
        )
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    checked = 0
    for lc in pruner.cost.layers:
        for g, st in pruner.states[lc.path].items():
            linear = lc.adapter.output_linear(lc.module, g)
            if g == "qk":
                assert linear is None  # Q/K reach the output through the softmax / focusing function
                continue
            args, kw = inputs[lc.path]
            calls, h = _counting(lc.module)
            fast = output_difference(lc.module, args, st, "fro", kw, linear)
            n_fast = len(calls)
            slow = output_difference(lc.module, args, st, "fro", kw, None, batched=False)
            h.remove()
            assert n_fast == 4  # all kept (the base), all removed, two checks: not one forward per channel
            assert len(calls) - n_fast == st.heads * st.width + 1
            torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6 * float(slow.max()))
            assert bool(st.frozen) is False and torch.all(st.frozen_mask == 1)
            checked += 1
    assert checked == len(pruner.cost.layers)  # one V group per attention layer, one hidden group per MLP


def test_nonlinear_after_the_linear_takes_the_batched_tail():
    """A LayerNorm after the consuming Linear breaks the two-forward formula: the check sees it, and the masked
    outputs come from the batched tail (one module call for all channels here), so D is still the true output
    change."""

    class NormedMlp(nn.Module):
        def __init__(self, st):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 8).double(), nn.Linear(8, 6).double()
            self.gate, self.norm = ChannelGate(st, "hidden", owner=True, reweight=False), nn.LayerNorm(6).double()

        def forward(self, x):
            return self.norm(x + self.fc2(self.gate(torch.relu(self.fc1(x)))))

    st = GroupState(1, 8, "hidden").double()
    layer, x = NormedMlp(st), torch.randn(10, 6, dtype=torch.float64)
    calls, h = _counting(layer)
    D = output_difference(layer, (x,), st, "fro", None, layer.fc2)
    h.remove()
    assert len(calls) <= 7  # base, all removed, the checks of the formula, 1 batched call, 2 checks of it
    base = layer(x)
    for c in range(8):
        st.frozen.fill_(True)
        st.frozen_mask.fill_(1.0)
        st.frozen_mask[0, c] = 0.0
        expected = torch.linalg.norm(layer(x) - base)
        assert torch.allclose(D[0, c], expected)
    # without the norm the formula holds and the fast answer is the same as masking
    layer.norm = nn.Identity()
    st.frozen.fill_(False)
    fast = output_difference(layer, (x,), st, "fro", None, layer.fc2)
    slow = output_difference(layer, (x,), st, "fro", None, None, batched=False)
    torch.testing.assert_close(fast, slow)


def test_kl_metric_takes_the_batched_tail_and_equals_masking():
    st = GroupState(2, 3, "hidden").double()
    fc = nn.Linear(6, 4).double()
    gate = ChannelGate(st, "hidden", owner=True, reweight=False)
    layer = nn.Sequential(gate, fc)
    x = torch.randn(5, 6, dtype=torch.float64)
    calls, h = _counting(layer)
    D = output_difference(layer, (x,), st, "kl", None, fc)
    n_fast = len(calls)
    slow = output_difference(layer, (x,), st, "kl", None, None, batched=False)
    h.remove()
    assert n_fast == 5 and len(calls) - n_fast == 7  # batched: 2 + 1 + 2 checks; one by one: base + 6 channels
    assert D.shape == (2, 3) and bool((D >= 0).all())
    torch.testing.assert_close(D, slow)


def test_a_tail_that_does_not_broadcast_takes_batched_masking():
    class Reshaping(nn.Module):  # the output is reshaped with the input's batch size after the Linear
        def __init__(self, st):
            super().__init__()
            self.gate, self.fc = ChannelGate(st, "hidden", owner=True, reweight=False), nn.Linear(32, 6).double()

        def forward(self, x):
            return torch.tanh(self.fc(self.gate(x))).reshape(x.shape[0], -1)

    st = GroupState(1, 32, "hidden").double()
    layer, x = Reshaping(st), torch.randn(10, 32, dtype=torch.float64)
    calls, h = _counting(layer)
    D = output_difference(layer, (x,), st, "fro", None, layer.fc)
    n_fast = len(calls)
    slow = output_difference(layer, (x,), st, "fro", None, None, batched=False)
    h.remove()
    torch.testing.assert_close(D, slow)
    assert n_fast <= 10 and len(calls) - n_fast == 32 + 1  # batched: a few calls; one by one: base + 32 channels


def test_bert_layers_take_the_closed_form_paths_with_the_scores_of_masking(caplog):
    """BERT's MLP (``BertLayer``: output.dense, then dropout, residual and LayerNorm) and V (``proj`` then the
    post-LayerNorm) are not affine in their channels: the closed-form LayerNorm tail gives the scores of masking one
    by one; its softmax Q/K, computed head by head through the same closed form, too."""
    transformers = pytest.importorskip("transformers")
    from mhaprune.interop import from_hf_model

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=16)  # fmt: skip
    model = from_hf_model(transformers.BertModel(cfg).eval()).double()  # the one-by-one reference without float32 noise
    ids = torch.randint(1, 60, (6, 12))
    inputs = {"input_ids": ids, "attention_mask": (torch.rand(6, 12) > 0.2).long()}
    pruner = Pruner(model, PruneConfig(target_macs=0.7, attn_init=False), inputs)
    pruner.prepare()
    grabbed = pruner.layer_inputs()
    checked = 0
    for lc in pruner.cost.layers:
        args, kw = grabbed[lc.path]
        for g, st in pruner.states[lc.path].items():
            if not st.prunable:
                continue
            linear, source = lc.adapter.output_linear(lc.module, g), lc.adapter.input_linear(lc.module, g)
            calls, h = _counting(lc.module)
            caplog.clear()
            with caplog.at_level("DEBUG", logger="mhaprune.pruning.init"):
                fast = output_difference(lc.module, args, st, "fro", kw, linear, source=source)
            assert "closed-form" in caplog.text, caplog.text  # not the batched tail or batched masking
            n_fast = len(calls)
            slow = output_difference(lc.module, args, st, "fro", kw, None, batched=False)
            h.remove()
            assert n_fast < st.heads * st.width  # not one call per channel
            torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5 * float(slow.max()))
            checked += 1
    assert checked == 3  # Q/K and V of the attention, the layer's MLP



@pytest.mark.parametrize("arch", ["deit_micro", "flatten_swin_micro"])
def test_softmax_qk_head_by_head_gives_the_scores_of_masking(arch, caplog):
    """Plain softmax attention (output = ``proj``; windows with a relative position bias and the shift mask): the
    head-by-head Q/K path gives the scores of masking one channel at a time."""
    import mhaprune

    torch.manual_seed(0)
    model = mhaprune.create_model(arch, **({"depth": 1} if arch == "deit_micro" else {})).double().eval()
    x = torch.randn(4, *model.input_size, dtype=torch.float64)
    pruner = Pruner(model, PruneConfig(target_macs=0.7, attn_init=False), x)
    pruner.prepare()
    grabbed = pruner.layer_inputs()
    checked = 0
    for lc in pruner.cost.layers:
        if "qk" not in pruner.states[lc.path] or lc.adapter.init_strategy(lc.module, "qk") != "output_difference":
            continue
        st = pruner.states[lc.path]["qk"]
        args, kw = grabbed[lc.path]
        caplog.clear()
        with caplog.at_level("DEBUG", logger="mhaprune.pruning.init"):
            source = lc.adapter.input_linear(lc.module, "qk")
            fast = output_difference(lc.module, args, st, "fro", kw, None, source=source)
        assert "head by head" in caplog.text
        slow = output_difference(lc.module, args, st, "fro", kw, None, batched=False)
        torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-9 * float(slow.max()))
        checked += 1
    assert checked >= 1
