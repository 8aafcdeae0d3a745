"""The PyTorch reference decoders against brute force, and their rules (repeats, length, beam 1 = greedy)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from corel_annotate.training.config import DecodingConfig, ModelConfig
from corel_annotate.training.decoding import beam_search, greedy_search, search_labels
from corel_annotate.training.factory import create_model

V = 4


def tiny_model(method: str = "ria", seed: int = 0, stop_bias: float = 0.0, repeat_bias: float = 0.0):
    torch.manual_seed(seed)
    cfg = ModelConfig(method=method, num_labels=V, feature_dim=6, hidden_size=8, emb_size=5, attention_size=4)
    model = create_model(cfg, nn.Identity()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
        model.fc.bias[V] += stop_bias
        model.fc.bias[0] += repeat_bias
    return model


def feats_for(model, batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if model.feature_kind == "spatial":
        return torch.randn(batch, 3, 6, generator=g)
    return torch.randn(batch, 6, generator=g)


def sequence_logprob(model, feats: torch.Tensor, labels: list[int]) -> float:
    """Log-probability of ``labels`` then stop, stepping the model one token at a time."""
    state = model.init_state(feats)
    token = torch.tensor([V + 1])
    total = 0.0
    for target in labels + [V]:
        logits, state, _ = model.step(token, state)
        total += float(torch.log_softmax(logits, dim=1)[0, target])
        token = torch.tensor([target])
    return total


def brute_force(model, feats, config: DecodingConfig) -> list[int]:
    """The best label sequence by enumerating every one the rules allow."""
    best, best_score = None, -math.inf
    for n in range(config.min_labels, config.max_len + 1):
        seqs = itertools.permutations(range(V), n) if config.forbid_repeat else itertools.product(range(V), repeat=n)
        for seq in seqs:
            score = sequence_logprob(model, feats, list(seq)) / config.normaliser(n + 1)
            if score > best_score:
                best, best_score = list(seq), score
    return best


@pytest.mark.parametrize("method", ["ria", "sr-cnn-rnn", "attention"])
@pytest.mark.parametrize("penalty,formula,min_labels", [(0.0, "n^alpha", 1), (1.0, "n^alpha", 0), (1.0, "gnmt", 1),
                                                        (-0.5, "n^alpha", 2)])
def test_wide_beam_equals_brute_force(method, penalty, formula, min_labels):
    model = tiny_model(method, stop_bias=2.0)
    feats = feats_for(model, 3)
    config = DecodingConfig(beam_width=500, max_len=3, length_penalty=penalty, length_penalty_formula=formula,
                            min_labels=min_labels)
    with torch.no_grad():
        hyps = beam_search(model, model.init_state(feats), config)
        assert len(hyps) == len(feats) == 3
        for i, hyp in enumerate(hyps):
            assert hyp.labels == brute_force(model, feats[i:i + 1], config)
            assert len(hyp.labels) >= min_labels
            assert hyp.logprob == pytest.approx(sequence_logprob(model, feats[i:i + 1], hyp.labels), abs=1e-4)


@pytest.mark.parametrize("method", ["ria", "attention"])
def test_beam_width_one_equals_greedy(method):
    model = tiny_model(method, seed=4)
    feats = feats_for(model, 6, seed=2)
    config = DecodingConfig(beam_width=1, max_len=4)
    greedy = greedy_search(model, model.init_state(feats), config)
    beam = beam_search(model, model.init_state(feats), config)
    assert [h.labels for h in greedy] == [h.labels for h in beam]
    assert len(greedy) == len(beam) == 6
    for g, b in zip(greedy, beam, strict=True):
        assert g.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert g.scores == pytest.approx(b.scores, abs=1e-6)


def test_repeat_rule():
    model = tiny_model(repeat_bias=8.0, stop_bias=-8.0)
    feats = feats_for(model, 4)
    allow = greedy_search(model, model.init_state(feats), DecodingConfig(max_len=3, forbid_repeat=False))
    assert any(len(set(h.labels)) < len(h.labels) for h in allow), "the biased model should repeat label 0"
    for decoder, width in ((greedy_search, 1), (beam_search, 3)):
        hyps = decoder(model, model.init_state(feats), DecodingConfig(beam_width=width, max_len=3, forbid_repeat=True))
        assert len(hyps) == 4 and all(len(h.labels) > 0 for h in hyps)
        assert all(len(set(h.labels)) == len(h.labels) for h in hyps)


def test_length_is_bounded_and_stop_is_forced():
    model = tiny_model(stop_bias=-20.0)
    feats = feats_for(model, 5)
    for width in (1, 3):
        hyps = (greedy_search if width == 1 else beam_search)(
            model, model.init_state(feats), DecodingConfig(beam_width=width, max_len=2))
        assert len(hyps) == 5
        assert all(len(h.labels) == 2 for h in hyps)


def test_label_scores_are_emission_probabilities():
    model = tiny_model("attention", seed=7)
    feats = feats_for(model, 3)
    hyps = greedy_search(model, model.init_state(feats), DecodingConfig(max_len=3))
    assert len(hyps) == 3 and any(hyp.labels for hyp in hyps)
    for hyp in hyps:
        assert len(hyp.scores) == len(hyp.labels)
        assert all(0.0 < s <= 1.0 for s in hyp.scores)
        assert len(hyp.alphas) == len(hyp.labels) + 1
        assert all(sum(a) == pytest.approx(1.0, abs=1e-5) for a in hyp.alphas)
        assert sum(math.log(s) for s in hyp.scores) >= hyp.logprob - 1e-5


def test_min_labels_masks_stop():
    model = tiny_model(stop_bias=20.0)          # stop is by far the likeliest first token
    feats = feats_for(model, 4)
    empty = greedy_search(model, model.init_state(feats), DecodingConfig(max_len=3, min_labels=0))
    assert len(empty) == 4
    assert all(h.labels == [] for h in empty)
    for width in (1, 3):
        for min_labels in (1, 2):
            config = DecodingConfig(beam_width=width, max_len=3, min_labels=min_labels)
            hyps = (greedy_search if width == 1 else beam_search)(model, model.init_state(feats), config)
            assert len(hyps) == 4
            assert all(len(h.labels) == min_labels for h in hyps)


def test_length_penalty_formulas():
    assert DecodingConfig(length_penalty=1.0).normaliser(4) == 4.0
    assert DecodingConfig(length_penalty=1.0, length_penalty_formula="gnmt").normaliser(4) == pytest.approx(1.5)
    assert DecodingConfig(length_penalty=0.0).normaliser(4) == 1.0


@pytest.mark.parametrize("bad", [dict(beam_width=0), dict(beam_width=-2), dict(beam_width=True), dict(beam_width="3"),
                                 dict(max_len=0), dict(min_labels=6, max_len=5), dict(min_labels=-1),
                                 dict(length_penalty=float("nan")), dict(length_penalty_formula="hf"),
                                 dict(forbid_repeat=1)])
def test_decoding_config_refuses_bad_values(bad):
    with pytest.raises(ValueError):
        DecodingConfig(**bad)


def test_decoding_config_refuses_more_min_labels_than_distinct_labels():
    model = tiny_model()
    with pytest.raises(ValueError, match="min_labels"):
        search_labels(model, model.init_state(feats_for(model, 1)), DecodingConfig(max_len=5, min_labels=V + 1))
