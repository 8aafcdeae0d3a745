"""Pixel input (format 4): the encoder takes the resized photo's uint8 pixels, NHWC, and normalises in
the graph; bundles with the normalised float32 input (format 3) keep working and answer alike."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.manifest import load_manifest
from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.engines.openvino_session import openvino_available


def _photos(synth_data):
    return [s.path for s in CorelDataset(synth_data).read("test").samples]


@pytest.mark.parametrize("method", ["attention", "ml-gcn"])
def test_the_exported_encoder_takes_uint8_pixels_and_the_manifest_says_so(bundles, float_bundles, method):
    bundle = bundles[method][1]
    manifest = load_manifest(bundle)
    pre = manifest.preprocess
    assert (pre.input_dtype, pre.layout, manifest.format_version) == ("uint8", "NHWC", 4)
    [image] = onnx.load(str(bundle / manifest.graphs["encoder"].file)).graph.input
    dims = [d.dim_value or d.dim_param for d in image.type.tensor_type.shape.dim]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[1:] == [pre.image_size, pre.image_size, 3]
    old = load_manifest(float_bundles[method])
    assert (old.preprocess.input_dtype, old.preprocess.layout, old.format_version) == ("float32", "NCHW", 3)


ENGINES = ["cpu"] + (["openvino"] if openvino_available() else [])


@pytest.mark.parametrize("device", ENGINES)
@pytest.mark.parametrize("method", ["attention", "ml-gcn"])
def test_pixel_and_float_bundles_give_the_same_answers(bundles, float_bundles, synth_data, method, device):
    """The same checkpoint with either input: the same labels and scores on every test photo, on onnxruntime
    (whose float32 arithmetic is the numpy runtime's, op for op) and OpenVINO (which folds it into the first
    convolution)."""
    photos = _photos(synth_data)
    pixel = Annotator.load(bundles[method][1], device=device, precision="fp32")
    old = Annotator.load(float_bundles[method], device=device, precision="fp32")
    x_pixel, x_old = pixel.preprocess(photos[:4]), old.preprocess(photos[:4])
    assert x_pixel.dtype == np.uint8 and x_pixel.shape[1:] == (128, 128, 3)
    assert x_old.dtype == np.float32 and x_old.shape[1:] == (3, 128, 128)
    # the float input is the pixel input normalised, as the graph does it
    pre = old.preprocess_config
    renormalised = ((x_pixel.astype(np.float32) * np.float32(pre.scale) - np.float32(pre.mean[0]))
                    / np.float32(pre.std[0])).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(renormalised, x_old)
    options = {"beam_width": 3} if method == "attention" else {}
    want, got = old.annotate(photos, **options), pixel.annotate(photos, **options)
    assert [a.labels for a in got] == [a.labels for a in want]
    tolerance = 0.0 if device == "cpu" else 1e-4
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.scores, b.scores, atol=tolerance, rtol=0)


def test_a_batch_the_encoder_does_not_take_is_refused_in_one_line(bundles, float_bundles, synth_data):
    """A normalised float batch for a pixel bundle (or pixels for a float one) would otherwise be cast to
    garbage, or fail deep inside the engine."""
    photos = _photos(synth_data)[:2]
    pixel = Annotator.load(bundles["ml-gcn"][1])
    old = Annotator.load(float_bundles["ml-gcn"])
    with pytest.raises(ValueError, match=r"the encoder takes uint8 images \[batch, 128, 128, 3\].*got float32 \[2, 3, 128, 128\]"):
        pixel.annotate_batch(old.preprocess(photos))
    with pytest.raises(ValueError, match=r"the encoder takes float32 images \[batch, 3, 128, 128\].*got uint8 \[2, 128, 128, 3\]"):
        old.scores(pixel.preprocess(photos))
