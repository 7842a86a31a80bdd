"""Each ablation switch changes the behaviour it names."""

import pytest
import torch
import torch.nn as nn

import mhaprune
from mhaprune.pruning import PruneConfig, Pruner
from mhaprune.pruning.config import ConfigError, parse_macs
from mhaprune.pruning.gates import GroupState
from mhaprune.pruning.groups import equal_heads_mask, per_head_width
from tests.conftest import unfuse


@pytest.fixture
def swin():
    torch.manual_seed(0)
    m = unfuse(mhaprune.create_model("flatten_swin_micro")).eval()
    return m, torch.randn(16, 1, 32, 32)


def states(pruner, group):
    return [s[group] for s in pruner.states.values() if group in s]


def test_similarity_weights_switch(swin):
    m, x = swin
    on = Pruner(m, PruneConfig(target_macs=0.7), x)
    on.prepare()
    alphas = [st.alpha for st in states(on, "qk")]
    assert any(not torch.allclose(a, torch.ones_like(a)) for a in alphas)
    for a in alphas:
        torch.testing.assert_close(a.mean(dim=1), torch.ones(a.shape[0]))
    m2 = unfuse(mhaprune.create_model("flatten_swin_micro")).eval()
    off = Pruner(m2, PruneConfig(target_macs=0.7, similarity=False), x)
    off.prepare()
    assert all(torch.equal(st.alpha, torch.ones_like(st.alpha)) for st in states(off, "qk"))


def test_similarity_from_weights_differs_from_activations(swin):
    m, x = swin
    act = Pruner(m, PruneConfig(target_macs=0.7), x)
    act.prepare()
    a_act = states(act, "v")[0].alpha.clone()
    m2 = unfuse(mhaprune.create_model("flatten_swin_micro")).eval()
    m2.load_state_dict({k: v for k, v in m.state_dict().items() if "gate" not in k}, strict=False)
    w = Pruner(m2, PruneConfig(target_macs=0.7, similarity_source="weight"), x)
    w.prepare()
    assert not torch.allclose(states(w, "v")[0].alpha, a_act)


def test_redundant_channel_gets_lower_weight():
    from mhaprune.pruning.similarity import alpha_from_grams

    u = torch.randn(500, 4, dtype=torch.float64)
    u[:, 1] = u[:, 0] + 0.01 * torch.randn(500, dtype=torch.float64)  # channel 1 duplicates channel 0
    alpha = alpha_from_grams([(u.T @ u)[None]])
    assert alpha[0, 0] < alpha[0, 2] and alpha[0, 1] < alpha[0, 3]


def test_centered_similarity_is_the_channels_correlation():
    """``similarity_center``: the Gram matrices become covariances (accumulated over batches), so a constant offset
    of the channels, which dominates the raw cosine, leaves α unchanged."""
    from mhaprune.pruning.similarity import alpha_from_grams

    torch.manual_seed(0)
    u = torch.randn(300, 2, 4, dtype=torch.float64)
    u[:, :, 1] = u[:, :, 0] + 0.3 * torch.randn(300, 2, dtype=torch.float64)
    st = GroupState(2, 4, "v")
    shifted = GroupState(2, 4, "v")
    offset = torch.tensor([5.0, -3.0, 0.0, 8.0], dtype=torch.float64)
    for chunk in u.split(100):  # three batches
        st.accumulate("v", chunk.reshape(100, 8))
        shifted.accumulate("v", (chunk + offset).reshape(100, 8))
    for h in range(2):
        cov = torch.cov(u[:, h].T) * (u.shape[0] - 1)
        torch.testing.assert_close(st.gram_matrices(centered=True)[0][h], cov)
    centered = alpha_from_grams(st.gram_matrices(centered=True))
    torch.testing.assert_close(alpha_from_grams(shifted.gram_matrices(centered=True)), centered)
    assert not torch.allclose(alpha_from_grams(shifted.gram_matrices()), centered, atol=1e-2)
    assert centered[0, 0] < centered[0, 2] and centered[0, 1] < centered[0, 3]


def test_odds_combine_keeps_the_indicators_ranking_where_the_sigmoid_saturates():
    """``similarity_combine="odds"`` scores ``σ(m + log α)``: with indicators near ``σ(3)`` (the init) the product
    ``α·σ(m)`` ranks by α alone, the odds still by ``m``; α tips close calls; uniform α changes nothing."""
    # head 0 saturated, head 1 all below zero: the layer keeps 4 channels, 2 per head
    m = torch.tensor([[4.0, 3.0, 2.0, 1.5], [-1.0, -1.0, -1.0, -1.0]])
    alpha = torch.tensor([[0.7, 0.9, 1.1, 1.3], [1.0, 1.0, 1.0, 1.0]])
    kept = {}
    for combine in ("product", "odds"):
        st = GroupState(2, 4, "v", threshold="raw", combine=combine)
        st.indicator.data.copy_(m)
        st.alpha.copy_(alpha)
        kept[combine] = st.hard_mask()[0]
        torch.testing.assert_close(st.ste_mask(), st.hard_mask())  # the STE forward is the hard mask
        st.alpha.fill_(1.0)
        torch.testing.assert_close(st.scores(), torch.sigmoid(st.indicator))
    assert kept["product"].tolist() == [0.0, 0.0, 1.0, 1.0]  # α alone: the two lowest indicators kept
    assert kept["odds"].tolist() == [1.0, 1.0, 0.0, 0.0]
    close = GroupState(1, 2, "v", combine="odds")
    close.indicator.data.copy_(torch.tensor([[3.0, 2.9]]))
    close.alpha.copy_(torch.tensor([[0.8, 1.2]]))
    assert close.scores()[0, 1] > close.scores()[0, 0]
    with pytest.raises(ValueError, match="combine must be"):
        GroupState(1, 2, "v", combine="sum")


def test_odds_combine_config_reaches_the_gates(swin):
    m, x = swin
    p = Pruner(m, PruneConfig(target_macs=0.7, similarity_combine="odds"), x)
    p.prepare()
    for st in states(p, "qk"):
        assert st.combine == "odds"
        torch.testing.assert_close(st.scores(), torch.sigmoid(st.indicator + st.alpha.log()))
    with pytest.raises(ConfigError, match="similarity_combine"):
        PruneConfig(similarity_combine="sum")


def test_equal_heads_switch():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.2, 0.1, 0.1]])
    st_eq = GroupState(2, 4, "qk", equal_heads=True)
    st_free = GroupState(2, 4, "qk", equal_heads=False)
    for st in (st_eq, st_free):
        st.indicator.data.copy_(torch.logit(scores))
    eq, free = st_eq.hard_mask(), st_free.hard_mask()
    assert eq.sum(1).tolist() == [2.0, 2.0]  # 4 wanted in total -> 2 per head
    assert free.sum(1).tolist() == [3.0, 1.0]  # channels kept independently: misaligned heads


def test_unequal_heads_are_padded_in_the_deployable_plan(swin):
    m, x = swin
    p = Pruner(m, PruneConfig(target_macs=0.9, equal_heads=False, fill=False), x)
    p.prepare()
    st = states(p, "qk")[0]
    with torch.no_grad():
        st.indicator.fill_(5.0)
        st.indicator[0, :] = -5.0
        st.indicator[0, 0] = 5.0  # head 0 keeps 1 channel, head 1 keeps all
    path = next(k for k, s in p.states.items() if s.get("qk") is st)
    assert p._hard_widths()[path]["qk"] == st.width  # padded to the widest head
    plan = p.plan()
    assert all(len(h) == len(plan.layers[path].keep["qk"][0]) for h in plan.layers[path].keep["qk"])


def test_round_to_switch(swin):
    m, x = swin
    p = Pruner(m, PruneConfig(target_macs=0.5, round_to=8), x)
    p.prepare()
    plan = p.plan()
    for lp in plan.layers.values():
        for g, heads in lp.keep.items():
            w, full = len(heads[0]), lp.shapes[g][1]
            assert w % 8 == 0 or w == full
    assert per_head_width(13, 1, 64, round_to=8) == 16 and per_head_width(3, 1, 64, round_to=8) == 8


def test_round_to_gives_way_where_multiples_cannot_reach_the_target(swin, caplog):
    """flatten_swin_micro's first stage has 16-channel heads: at 15% of the MACs, 8 channels per head there is too
    much, so the repair goes on one channel at a time; every width it could keep rounded stays rounded."""
    m, x = swin
    p = Pruner(m, PruneConfig(target_macs=0.15, round_to=8), x)
    p.prepare()
    plan = p.plan()
    assert plan.pruned_macs <= p.target
    assert "widths in multiples of 8 cannot reach the target" in caplog.text
    widths = [len(heads[0]) for lp in plan.layers.values() for heads in lp.keep.values()]
    assert any(w % 8 for w in widths) and any(w % 8 == 0 for w in widths)
    rounded = Pruner(m, PruneConfig(target_macs=0.5, round_to=8), x)  # reachable: no finer width, no warning
    rounded.prepare()
    caplog.clear()
    assert rounded.plan().pruned_macs <= rounded.target and "cannot reach" not in caplog.text


def test_reweight_switch(swin):
    m, x = swin
    on = Pruner(m, PruneConfig(target_macs=0.7), x)
    on.prepare()
    assert all(st.reweight is not None for st in states(on, "v"))
    modes = {st.reweight_mode for st in states(on, "qk")}
    assert modes == {"channel_temp", "head"}  # linear attention: per channel; softmax windows: per head
    m2 = unfuse(mhaprune.create_model("flatten_swin_micro")).eval()
    off = Pruner(m2, PruneConfig(target_macs=0.7, reweight=False), x)
    off.prepare()
    assert all(st.reweight is None for s in off.states.values() for st in s.values())
    assert not any("reweight" in n for n, _ in m2.named_parameters())


def test_attention_difference_init_switch(swin):
    m, x = swin
    cfg = PruneConfig(target_macs=0.7, attn_init_scope="linear")
    on = Pruner(m, cfg, x)
    on.prepare()
    for path, s in on.states.items():
        ind = s["qk"].indicator if "qk" in s else None
        if ind is None:
            continue
        linear = hasattr(m.get_submodule(path), "focusing_factor")
        assert (ind.std() > 0.1) == linear  # only linear-attention Q/K in the paper's scope
        if linear:
            assert abs(float(ind.detach().mean()) - cfg.init_logit) < 1e-5
    m2 = unfuse(mhaprune.create_model("flatten_swin_micro")).eval()
    off = Pruner(m2, PruneConfig(target_macs=0.7, attn_init=False), x)
    off.prepare()
    assert all(torch.all(st.indicator == 3.0) for s in off.states.values() for st in s.values())


def test_attention_init_scope_all_initialises_every_group_by_default(swin):
    m, x = swin
    p = Pruner(m, PruneConfig(target_macs=0.7), x)
    p.prepare()
    assert all(st.indicator.std() > 0.1 for st in states(p, "qk") + states(p, "v") + states(p, "hidden"))
    assert all(float(st.indicator.detach().min()) >= p.cfg.init_min for st in states(p, "hidden"))


def test_attention_difference_ranks_a_dead_channel_last():
    from mhaprune.pruning.init import linear_attention_difference

    q = torch.rand(2, 16, 8) + 0.1
    k = torch.rand(2, 16, 8) + 0.1
    q[..., 3] = 1e-9
    k[..., 3] = 1e-9
    D = linear_attention_difference(q, k, heads=2, focusing_factor=3)
    assert D[0].argmin() == 3


def test_threshold_switch():
    st_sig = GroupState(1, 4, "hidden", threshold="sigmoid")
    st_raw = GroupState(1, 4, "hidden", threshold="raw")
    for st in (st_sig, st_raw):
        st.indicator.data.copy_(torch.tensor([[1.0, 0.5, -0.5, -1.0]]))
        st.alpha.copy_(torch.tensor([[0.5, 1.5, 1.5, 0.5]]))  # σ·α: 0.37, 0.93, 0.57, 0.13
    assert st_sig.keep_total() == 2 and st_raw.keep_total() == 2
    assert st_sig.hard_mask().tolist() == [[0.0, 1.0, 1.0, 0.0]]
    assert st_raw.hard_mask().tolist() == [[0.0, 1.0, 1.0, 0.0]]
    st_raw.alpha.fill_(0.1)  # raw threshold ignores α for the count, sigmoid does not
    st_sig.alpha.fill_(0.1)
    assert st_raw.keep_total() == 2 and st_sig.keep_total() == 0


def test_regularizer_switch(swin):
    m, x = swin
    sq = Pruner(m, PruneConfig(target_macs=0.99, regularizer="squared"), x)
    sq.prepare()
    assert float(sq.regularization_loss().detach()) > 0  # dense model above a 99% target
    with torch.no_grad():
        for s in sq.states.values():
            for st in s.values():
                st.indicator.fill_(-5.0)  # everything at the minimum: far below target
    assert float(sq.regularization_loss().detach()) == 0.0
    m2 = unfuse(mhaprune.create_model("flatten_swin_micro")).eval()
    lg = Pruner(m2, PruneConfig(target_macs=0.99, regularizer="log"), x)
    lg.prepare()
    with torch.no_grad():
        for s in lg.states.values():
            for st in s.values():
                st.indicator.fill_(-5.0)
    assert float(lg.regularization_loss().detach()) > 0  # log-ratio also pushes back up


def test_regularizer_gradient_reaches_indicators(swin):
    m, x = swin
    p = Pruner(m, PruneConfig(target_macs=0.5), x)
    p.prepare()
    p.regularization_loss().backward()
    grads = [st.indicator.grad for s in p.states.values() for st in s.values()]
    assert all(g is not None and (g > 0).all() for g in grads)  # every channel is pushed down


@pytest.mark.parametrize("flag,group", [("prune_mlp", "hidden"), ("prune_v", "v"), ("prune_qk", "qk")])
def test_group_switches(swin, flag, group):
    m, x = swin
    p = Pruner(m, PruneConfig(target_macs=0.8, **{flag: False}), x)
    p.prepare()
    plan = p.plan()
    for lp in plan.layers.values():
        assert group not in lp.keep
    assert plan.pruned_macs <= p.target


def test_equal_heads_mask_keeps_top_per_head():
    s = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    assert equal_heads_mask(s, 2).tolist() == [[False, True, False], [True, False, False]]


@pytest.mark.parametrize(
    "value,dense,expected",
    [
        (0.7, 1000, 700),
        ("70%", 1000, 700),
        ("1.2G", None, 1_200_000_000),
        ("35M", None, 35_000_000),
        (2e6, None, 2_000_000),
        ("35MMACs", None, 35_000_000),
    ],
)
def test_parse_macs(value, dense, expected):
    assert parse_macs(value, dense) == expected


@pytest.mark.parametrize(
    "value,msg",
    [
        (0, "must be > 0"),
        (-1, "must be > 0"),
        ("1.2X", "unknown unit"),
        ("abc", "cannot read"),
        (1.0, "prunes nothing"),
    ],
)
def test_parse_macs_errors(value, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_macs(value, 1000)


def test_target_outside_the_reachable_range(swin):
    m, x = swin
    with pytest.raises(ConfigError, match="not below the dense"):
        Pruner(m, PruneConfig(target_macs="1G"), x)
    with pytest.raises(ConfigError, match="below the smallest reachable model"):
        Pruner(m, PruneConfig(target_macs=0.01), x)


def test_invalid_options():
    with pytest.raises(ConfigError, match="threshold must be one of"):
        PruneConfig(threshold="hard")
    with pytest.raises(ConfigError, match="nothing to prune"):
        PruneConfig(prune_qk=False, prune_v=False, prune_mlp=False)


def test_output_difference_takes_keywords_and_tuple_outputs():
    from mhaprune.pruning.gates import ChannelGate
    from mhaprune.pruning.init import output_difference

    class Layer(nn.Module):  # the shape of a Hugging Face layer: keyword arguments in, a tuple out
        def __init__(self, st):
            super().__init__()
            self.gate, self.fc = ChannelGate(st, "hidden", owner=True, reweight=False), nn.Linear(4, 3).double()

        def forward(self, x, *, scale):
            return (self.fc(self.gate(x)) * scale, None)

    st = GroupState(2, 2, "hidden").double()
    layer, x = Layer(st), torch.randn(5, 4, dtype=torch.float64)
    D = output_difference(layer, (x,), st, "fro", {"scale": 2.0})
    for c in range(4):
        xc = x.clone()
        xc[:, c] = 0
        expected = torch.linalg.norm(2.0 * (layer.fc(xc) - layer.fc(x)))
        assert torch.allclose(D.reshape(-1)[c], expected)
    assert bool(st.frozen) is False and torch.all(st.frozen_mask == 1)  # the state is restored


def _qk_v_widths(plan):
    return [(len(lp.keep["qk"][0]), len(lp.keep["v"][0])) for lp in plan.layers.values() if "qk" in lp.keep]


@pytest.mark.parametrize("method", ["ours", "l1", "oneshot"])
def test_same_qk_v_width_switch(swin, method):
    """One Q/K and V width per attention layer (flash SDPA), under the target, and masked == sliced."""
    import copy

    from mhaprune.pruning import apply_plan, l1_plan
    from mhaprune.pruning.oneshot import fisher_plan

    m, x = swin
    y = torch.arange(len(x)) % 10
    for tied in (False, True):
        model = copy.deepcopy(m)
        if method == "ours":
            p = Pruner(model, PruneConfig(target_macs=0.4, same_qk_v_width=tied), x)
            p.prepare()
            with torch.no_grad():  # an uneven search outcome: V indicators far below Q/K ones
                for s in states(p, "v"):
                    s.indicator.sub_(torch.linspace(0, 6, s.indicator.numel()).reshape(s.indicator.shape))
            plan = p.plan()
        elif method == "l1":
            plan = l1_plan(model, x, 0.4, uniform=False, tied=tied)
        else:
            plan = fisher_plan(model, x[:1], 0.4, x, y, tied=tied)
        widths = _qk_v_widths(plan)
        assert plan.pruned_macs <= plan.target_macs
        if tied:
            assert all(a == b for a, b in widths), widths
            assert plan.pruned_macs >= 0.97 * plan.target_macs  # the fill moves the pair too
            fresh = copy.deepcopy(m)
            pr = Pruner(fresh, PruneConfig(target_macs=0.4), x)
            pr.prepare()
            pr.set_masks(plan)
            masked = fresh(x)
            torch.testing.assert_close(apply_plan(copy.deepcopy(m), plan)(x), masked, rtol=1e-5, atol=1e-5)
        else:
            assert any(a != b for a, b in widths), widths  # the switch is what makes them equal


def _text_batch(path, n=6):
    from mhaprune.data import load_tokenizer

    tok = load_tokenizer(path)
    texts = ["A cat.", "The quick brown fox jumps over the lazy dog near the river bank today.", "Hello there, world!",
             "Pruning keeps what the model uses.", "Yes.", "Seven words make up this short sentence."][:n]  # fmt: skip
    return dict(tok(texts, padding="max_length", max_length=24, return_tensors="pt"))


def _alpha_of_unpadded_texts(pruner, batch):
    """α from each text run alone without padding (the Gram matrices summed over the texts)."""
    sts = [st for _, _, st in pruner._all_states() if st.prunable]
    for st in sts:
        st.reset_stats()
        st.collect = True
    with torch.no_grad():
        for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
            pruner.model(**{k: v[i : i + 1, :n] for k, v in batch.items()})
    for st in sts:
        st.collect = False
    pruner._update_alpha()
    return {id(st): st.alpha.clone() for st in sts}


def test_similarity_weights_skip_padded_tokens(text_encoder):
    """Padded positions feed no output: the similarity weights of a padded text batch equal those of its texts run
    one by one without padding, at calibration and at the search's refresh; the token hook leaves with collection."""
    from mhaprune.interop import from_hf

    batch = _text_batch(text_encoder)
    assert (batch["attention_mask"] == 0).float().mean() > 0.3  # padding would weigh on the statistics
    pruner = Pruner(from_hf(text_encoder).eval(), PruneConfig(target_macs=0.6, attn_init=False, similarity_every=1),
                    batch)  # fmt: skip
    pruner.prepare()
    assert not pruner.model._forward_pre_hooks  # no hook of the pruner outside the statistics' forwards
    calibrated = {id(st): st.alpha.clone() for _, _, st in pruner._all_states() if st.prunable}
    reference = _alpha_of_unpadded_texts(pruner, batch)
    assert any(not torch.allclose(a, torch.ones_like(a)) for a in reference.values())
    for key, ref in reference.items():
        torch.testing.assert_close(calibrated[key], ref, rtol=1e-4, atol=1e-5)

    for _, _, st in pruner._all_states():  # the refresh during the search: collect on the next step's batch
        st.alpha.fill_(1.0)
    pruner.step()
    assert pruner._collecting and pruner.model._forward_pre_hooks
    with torch.no_grad():
        pruner.model(**batch)
    pruner.step()
    assert not pruner.model._forward_pre_hooks
    for _, _, st in pruner._all_states():
        if st.prunable:
            torch.testing.assert_close(st.alpha, reference[id(st)], rtol=1e-4, atol=1e-5)
            assert st.row_mask is None


def test_init_skips_padded_tokens(text_encoder):
    """The data-driven init of a padded text batch is that of its texts without padding: the output differences of
    the texts run one by one, added in squares (Frobenius), then z-scored; padding would change it."""
    import copy

    from mhaprune.interop import from_hf
    from mhaprune.pruning.init import output_difference, zscore

    batch = _text_batch(text_encoder)
    model = from_hf(text_encoder).eval().double()  # the reference without float32 noise
    cfg = PruneConfig(target_macs=0.6, similarity=False)
    pruner = Pruner(copy.deepcopy(model), cfg, batch)
    pruner.prepare()
    ref = Pruner(model, PruneConfig(target_macs=0.6, similarity=False, attn_init=False), batch)
    ref.prepare()

    def differences(inputs):
        ref.example_inputs = inputs
        grabbed, out = ref.layer_inputs(), {}
        for lc in ref.cost.layers:
            args, kwargs = grabbed[lc.path]
            for g, st in ref.states[lc.path].items():
                if st.prunable:
                    out[lc.path, g] = output_difference(lc.module, args, st, "fro", kwargs,
                                                        lc.adapter.output_linear(lc.module, g),
                                                        source=lc.adapter.input_linear(lc.module, g))  # fmt: skip
        return out

    squares = {}
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        for key, d in differences({k: v[i : i + 1, :n] for k, v in batch.items()}).items():
            squares[key] = squares.get(key, 0) + d.double() ** 2
    padded = differences(batch)
    assert len(squares) == 6  # Q/K, V and MLP of both layers
    moved = 0
    for (path, g), sq in squares.items():
        expected = (cfg.init_logit + cfg.attn_init_kappa * zscore(sq.sqrt())).clamp_min(cfg.init_min)
        torch.testing.assert_close(pruner.states[path][g].indicator.data.double(), expected, rtol=1e-6, atol=1e-6)
        naive = (cfg.init_logit + cfg.attn_init_kappa * zscore(padded[path, g].double())).clamp_min(cfg.init_min)
        moved += not torch.allclose(naive, expected, atol=1e-3)
    assert moved  # the padded positions would have changed the init
