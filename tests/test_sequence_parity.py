"""Sequence bundles against the PyTorch reference decoders in label ORDER and per-label SCORE, not only as
label sets: every recurrent method's bundle on onnxruntime and on OpenVINO fp32 (its decoder step on
onnxruntime, the default, and on OpenVINO), greedy and beam 3, on every photo of the test split."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.manifest import load_manifest
from corel_annotate.runtime.preprocessing import preprocess_file
from corel_annotate.training.checkpoint import model_from_checkpoint
from corel_annotate.training.decoding import search_labels
from corel_annotate.training.registry import list_methods
from test_export_runtime import split_and_vocab

SEQUENCE_METHODS = list_methods("sequence")
SCORE_TOLERANCE = 1e-4   # absolute, per label: the graphs match PyTorch within 1e-4 (export's own check)


def _openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


ENGINES = [pytest.param("cpu", "auto", id="onnxruntime"),
           pytest.param("openvino", "auto", id="openvino-encoder",
                        marks=pytest.mark.skipif(not _openvino(), reason="openvino is not installed")),
           pytest.param("openvino", "openvino", id="openvino-encoder-and-step",
                        marks=pytest.mark.skipif(not _openvino(), reason="openvino is not installed"))]


@pytest.fixture(scope="module")
def reference(synth_data, bundles):
    """Per (method, beam width): the PyTorch reference decoding of the test split from the checkpoint
    (float input by the checkpoint's preprocessing), and the bundle's uint8 pixels of the same photos."""
    split, _ = split_and_vocab(synth_data)
    cache: dict = {}

    def get(method: str, beam_width: int):
        if (method, beam_width) not in cache:
            ckpt, bundle = bundles[method]
            model, cfg = model_from_checkpoint(ckpt)
            images = np.stack([preprocess_file(s.path, cfg.preprocess) for s in split.samples])
            pixels = np.stack([preprocess_file(s.path, load_manifest(bundle).preprocess) for s in split.samples])
            config = cfg.decode.replace(beam_width=beam_width)
            with torch.no_grad():
                hyps = search_labels(model, model.init_state(model.features(torch.from_numpy(images))), config)
            cache[method, beam_width] = hyps, pixels, config, list(cfg.vocabulary)
        return cache[method, beam_width]
    return get


@pytest.mark.parametrize("device,step_device", ENGINES)
@pytest.mark.parametrize("beam_width", [1, 3])
@pytest.mark.parametrize("method", SEQUENCE_METHODS)
def test_labels_in_order_and_scores_equal_pytorch(bundles, reference, method, beam_width, device, step_device):
    expected, pixels, config, vocabulary = reference(method, beam_width)
    annotator = Annotator.load(bundles[method][1], device=device, precision="fp32", step_device=step_device)
    assert annotator.engine == ("openvino fp32" if device == "openvino" else "onnxruntime-cpu fp32")
    assert annotator.decoding_config(beam_width) == config, "the manifest carries the checkpoint's decoding rules"
    got = annotator.annotate_batch(pixels, beam_width=beam_width)
    assert len(got) == len(expected) == len(pixels)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.label_ids == e.labels, f"photo {i}: {g.label_ids} (runtime) against {e.labels} (PyTorch), in order"
        assert g.labels == [vocabulary[j] for j in e.labels]
        assert len(g.scores) == len(e.scores) == len(e.labels)
        diff = max((abs(a - b) for a, b in zip(g.scores, e.scores)), default=0.0)
        assert diff <= SCORE_TOLERANCE, f"photo {i}: scores {g.scores} against {e.scores}"
    assert sum(len(e.labels) for e in expected) > len(expected), "the photos get labels, several on some"


@pytest.mark.parametrize("method", SEQUENCE_METHODS)
def test_beam_3_and_greedy_references_are_both_exercised(reference, method):
    """The two widths compared above are different searches on these photos (else a runtime that ran greedy
    for beam 3 would pass): the beam's total log-probability is never below greedy's, and above it somewhere."""
    greedy, _, _, _ = reference(method, 1)
    beam, _, _, _ = reference(method, 3)
    assert all(b.logprob >= g.logprob - 1e-5 for b, g in zip(beam, greedy))
    assert any(b.labels != g.labels for b, g in zip(beam, greedy)), "beam 3 and greedy agree on every photo"
