"""The runtime's numpy decoders against the PyTorch reference decoders, on the same step function,
and the search's own rules (beam semantics, early stopping, NaN, per-image constants)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from corel_annotate.runtime.decoder_state import DecoderState
from corel_annotate.runtime.search import beam_search, greedy, search_labels as np_decode
from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.training.decoding import search_labels as torch_decode
from test_decoding import V, feats_for, tiny_model

CONSTANTS = ("features", "projection")


def start_state(model, feats) -> DecoderState:
    with torch.no_grad():
        state = {k: v.numpy() for k, v in model.init_state(feats).items()}
    return DecoderState.start({k: v for k, v in state.items() if k not in CONSTANTS},
                              {k: v for k, v in state.items() if k in CONSTANTS})


def numpy_step(model):
    def step(tokens, state: DecoderState):
        inputs = {k: torch.from_numpy(v) for k, v in state.inputs().items()}
        with torch.no_grad():
            logits, new, alpha = model.step(torch.from_numpy(tokens), inputs)
            logp = torch.log_softmax(logits, dim=1).numpy()
        return logp, state.with_rows({k: new[k].numpy() for k in state.rows}), None if alpha is None else alpha.numpy()
    return step


CONFIGS = [(w, m, r, p, n) for w in (1, 2, 3, 7) for m in (1, 3, 5) for r in (True, False) for p in (0.0, 0.8)
           for n in (0, 1)]


@pytest.mark.parametrize("method", ["ria", "attention"])
@pytest.mark.parametrize("width,max_len,forbid,penalty,min_labels", CONFIGS)
def test_numpy_decoding_equals_reference(method, width, max_len, forbid, penalty, min_labels):
    model = tiny_model(method, seed=width * 10 + max_len, stop_bias=1.5 * min_labels)
    feats = feats_for(model, 6, seed=max_len)
    config = DecodingConfig(beam_width=width, max_len=max_len, forbid_repeat=forbid, length_penalty=penalty,
                            min_labels=min_labels)
    with torch.no_grad():
        expected = torch_decode(model, model.init_state(feats), config)
    got = np_decode(numpy_step(model), start_state(model, feats), config, V, keep_alphas=True)
    assert len(got) == len(expected) == 6
    for g, e in zip(got, expected, strict=True):
        assert g.labels == e.labels
        assert g.logprob == pytest.approx(e.logprob, abs=1e-4)
        assert g.scores == pytest.approx(e.scores, abs=1e-5)
        if method == "attention":
            assert len(g.alphas) == len(e.alphas)
            for a, b in zip(g.alphas, e.alphas, strict=True):
                assert np.allclose(a, b, atol=1e-5)


def test_beam_one_equals_greedy_in_numpy():
    model = tiny_model("ria", seed=11)
    feats = feats_for(model, 8)
    config = DecodingConfig(max_len=4, beam_width=1)
    a = greedy(numpy_step(model), start_state(model, feats), config, V)
    b = beam_search(numpy_step(model), start_state(model, feats), config, V)
    assert [x.labels for x in a] == [x.labels for x in b]
    assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-6)


def test_beam_steps_are_batched_across_beams_and_images():
    model = tiny_model("ria", seed=2, stop_bias=-3.0)
    calls = []
    inner = numpy_step(model)

    def counting(tokens, st):
        calls.append(tokens.shape[0])
        return inner(tokens, st)

    beam_search(counting, start_state(model, feats_for(model, 5)), DecodingConfig(max_len=3, beam_width=3), V)
    assert len(calls) <= 4, "one decoder call per step, not per beam or image"
    assert max(calls) > 5, "a step call carries rows of several images and beams"


# --- a table-driven decoder: the distribution of the next token depends on the label prefix only ---
A, X, Y, Z = 0, 1, 2, 3
STOP = V


def table_step(table: dict[tuple[int, ...], dict[int, float]], seen: list | None = None, nan_at: int | None = None):
    """Next-token log-probabilities from ``table[prefix]`` (missing tokens share what is left); the
    recurrent row carries the prefix (-1 padded); a constant ``image`` input is recorded per call."""
    def step(tokens, state: DecoderState):
        prefix = state.rows["prefix"].copy()
        if (tokens <= V - 1).any():
            pos = (prefix >= 0).sum(axis=1)
            live = tokens < V
            prefix[np.flatnonzero(live), pos[live]] = tokens[live]
        inputs = state.inputs()
        if seen is not None:
            seen.append(inputs["image_const"])
        logp = np.empty((tokens.size, V + 1), dtype=np.float32)
        for r, row in enumerate(prefix):
            key = tuple(int(t) for t in row if t >= 0)
            dist = table.get(key, {})
            rest = max(1e-6, 1.0 - sum(dist.values())) / max(1, V + 1 - len(dist))
            logp[r] = np.log([dist.get(t, rest) for t in range(V + 1)])
        if nan_at is not None and (prefix >= 0).sum(axis=1).max() >= nan_at:
            logp[0, 0] = np.nan
        return logp, state.with_rows({"prefix": prefix}), None
    return step


# the counterexample: the old shrinking beam (width 2) returned no labels at 0.25
TABLE = {(): {A: 0.70, STOP: 0.25, X: 0.03, Y: 0.02}, (A,): {X: 0.36 / 0.70, Y: 0.33 / 0.70, STOP: 0.001},
         (A, X): {STOP: 0.5, Z: 0.5}, (A, Y): {STOP: 0.999}, (A, X, Z): {STOP: 0.999}}


def table_state(batch: int = 1, max_len: int = 3) -> DecoderState:
    return DecoderState.start({"prefix": np.full((batch, max_len + 1), -1, dtype=np.int64)},
                              {"image_const": np.arange(batch, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)})


@pytest.mark.parametrize("min_labels", [0, 1])
def test_beam_keeps_width_hypotheses_alive(min_labels):
    config = DecodingConfig(beam_width=2, max_len=3, min_labels=min_labels)
    [result] = beam_search(table_step(TABLE), table_state(), config, V)
    assert result.labels == [A, Y]
    assert result.logprob == pytest.approx(np.log(0.70 * 0.33 / 0.70 * 0.999), abs=1e-5)


def test_wide_beam_on_the_table_equals_exhaustive_search():
    import itertools

    def logprob(seq):
        total, prefix = 0.0, ()
        for t in list(seq) + [STOP]:
            dist = TABLE.get(prefix, {})
            rest = max(1e-6, 1.0 - sum(dist.values())) / max(1, V + 1 - len(dist))
            total += float(np.log(np.float32(dist.get(t, rest))))
            prefix = prefix + (t,)
        return total

    best = max((list(s) for n in range(0, 4) for s in itertools.permutations(range(V), n)), key=logprob)
    [wide] = beam_search(table_step(TABLE), table_state(), DecodingConfig(beam_width=50, max_len=3, min_labels=0), V)
    assert wide.labels == best == [A, Y]


@pytest.mark.parametrize("width", [1, 3])
def test_nan_log_probabilities_raise_naming_the_graph(width):
    with pytest.raises(ValueError, match=r"step\.onnx: non-finite log-probability nan"):
        np_decode(table_step(TABLE, nan_at=1), table_state(2), DecodingConfig(beam_width=width, max_len=3), V,
                  source="bundle/step.onnx")


def test_constants_stay_per_image_and_are_not_copied_per_step():
    seen: list[np.ndarray] = []
    state = table_state(batch=3)
    flat = {(): {A: 0.3, X: 0.3, Y: 0.3, STOP: 0.05}}          # no early stop: the beams stay full
    beam_search(table_step(flat, seen), state, DecodingConfig(beam_width=3, max_len=3, min_labels=3), V)
    constant = state.inputs()["image_const"]
    assert seen[0] is constant, "the first step reads the encoder's array itself"
    assert seen[1].shape[0] == 9 and np.array_equal(seen[1][:, 0], np.repeat([0, 1, 2], 3))
    assert len(seen) >= 3 and all(s is seen[1] for s in seen[2:]), "full beams reuse one gather of the constants"
