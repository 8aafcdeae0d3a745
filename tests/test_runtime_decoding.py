"""The runtime's numpy decoders against the PyTorch reference decoders, on the same step function."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.decoding import DecodeOptions, beam_search, decode as np_decode, greedy
from training.config import DecodeConfig
from training.decoding import decode as torch_decode
from test_decoding import V, feats_for, tiny_model


def numpy_step(model):
    def step(tokens, state):
        with torch.no_grad():
            logits, new, alpha = model.step(torch.from_numpy(tokens), {k: torch.from_numpy(v) for k, v in state.items()})
            logp = torch.log_softmax(logits, dim=1).numpy()
        return logp, {k: v.numpy() for k, v in new.items()}, None if alpha is None else alpha.numpy()
    return step


CONFIGS = [(w, m, r, p) for w in (1, 2, 3, 7) for m in (1, 3, 5) for r in (True, False) for p in (0.0, 0.8)]


@pytest.mark.parametrize("method", ["ria", "attention"])
@pytest.mark.parametrize("width,max_len,forbid,penalty", CONFIGS)
def test_numpy_decoding_equals_reference(method, width, max_len, forbid, penalty):
    model = tiny_model(method, seed=width * 10 + max_len)
    feats = feats_for(model, 6, seed=max_len)
    with torch.no_grad():
        state = model.init_state(feats)
    expected = torch_decode(model, state, DecodeConfig(beam_width=width, max_len=max_len, forbid_repeat=forbid,
                                                       length_penalty=penalty))
    opts = DecodeOptions(num_labels=V, max_len=max_len, beam_width=width, forbid_repeat=forbid, length_penalty=penalty)
    got = np_decode(numpy_step(model), {k: v.numpy() for k, v in state.items()}, opts, keep_alphas=True)
    for g, e in zip(got, expected):
        assert g.labels == e.labels
        assert g.logprob == pytest.approx(e.logprob, abs=1e-4)
        assert g.scores == pytest.approx(e.scores, abs=1e-5)
        if method == "attention":
            assert len(g.alphas) == len(e.alphas)
            for a, b in zip(g.alphas, e.alphas):
                assert np.allclose(a, b, atol=1e-5)


def test_beam_one_equals_greedy_in_numpy():
    model = tiny_model("ria", seed=11)
    state = {k: v.detach().numpy() for k, v in model.init_state(feats_for(model, 8)).items()}
    opts = DecodeOptions(num_labels=V, max_len=4, beam_width=1)
    a = greedy(numpy_step(model), dict(state), opts)
    b = beam_search(numpy_step(model), dict(state), opts)
    assert [x.labels for x in a] == [x.labels for x in b]
    assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-6)


def test_beam_steps_are_batched_across_beams_and_images():
    model = tiny_model("ria", seed=2, stop_bias=-3.0)
    state = {k: v.detach().numpy() for k, v in model.init_state(feats_for(model, 5)).items()}
    calls = []
    inner = numpy_step(model)

    def counting(tokens, st):
        calls.append(tokens.shape[0])
        return inner(tokens, st)

    beam_search(counting, state, DecodeOptions(num_labels=V, max_len=3, beam_width=3))
    assert len(calls) <= 4, "one decoder call per step, not per beam or image"
    assert max(calls) > 5, "a step call carries rows of several images and beams"
