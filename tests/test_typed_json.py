"""The strict reader of the files users hand us (``runtime/bundle/typed_json.py``, pydantic over the
dataclasses that declare them), seen through the manifest loader: every refusal is one line naming the
field's path, in the loader's words; and the lenient reader of our own checkpoints."""
from __future__ import annotations

import copy
import json
import math

import pytest

from corel_annotate.runtime.bundle.manifest import FORMAT, BundleManifest

pytestmark = pytest.mark.runtime  # run by the runtime-only install (make test-runtime), not by the first stage

SOURCE = "b/manifest.json"
MANIFEST = {
    "format": FORMAT, "format_version": 4, "kind": "scores", "vocabulary": ["sky", "sea"], "image_input": "image",
    "preprocess": {"image_size": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    "graphs": {"encoder": {"file": "encoder.onnx",
                           "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 8, 8]}],
                           "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]}},
    "scoring": {"logits_output": "logits", "thresholds": [0, 1]},
    "files": {"encoder.onnx": "0" * 64},
}


def _set(path: str, value=None, delete: bool = False):
    def change(data: dict) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in parents:
            data = data[key]
        if delete:
            del data[last]
        else:
            data[last] = value
    return change


def test_a_valid_manifest_reads_with_tuples_and_floats():
    manifest = BundleManifest.from_dict(copy.deepcopy(MANIFEST), SOURCE)
    assert manifest.vocabulary == ("sky", "sea") and manifest.preprocess.mean == (0.5, 0.5, 0.5)
    assert manifest.scoring.thresholds == (0.0, 1.0) and all(isinstance(t, float) for t in manifest.scoring.thresholds)
    assert manifest.graphs["encoder"].inputs[0].shape == ("batch", 3, 8, 8)
    assert BundleManifest.from_dict(json.loads(manifest.to_json()), SOURCE) == manifest


@pytest.mark.parametrize("change,message", [
    (_set("preprocess.image_size", True), "preprocess.image_size: expected an integer, got a boolean"),
    (_set("preprocess.image_size", 8.0), "preprocess.image_size: expected an integer, got a number"),
    (_set("scoring.top_k", "2"), "scoring.top_k: expected an integer, got a string"),
    (_set("scoring.thresholds.0", True), "scoring.thresholds[0]: expected a finite number, got a boolean"),
    (_set("scoring.thresholds.1", math.nan), "scoring.thresholds[1]: expected a finite number, got nan"),
    (_set("scoring.thresholds.1", math.inf), "scoring.thresholds[1]: expected a finite number, got inf"),
    (_set("image_input", ["image"]), "image_input: expected a string, got an array"),
    (_set("vocabulary", "sky sea"), "vocabulary: expected an array, got a string"),
    (_set("graphs", []), "graphs: expected an object, got an array"),
    (_set("surprise", 1), "unknown field 'surprise'"),
    (_set("graphs.encoder.inputs.0.colour", "red"), "graphs.encoder.inputs[0]: unknown field 'colour'"),
    (_set("kind", "scorez"), "kind: expected 'scores' or 'sequence', got 'scorez'"),
    (_set("graphs.encoder.inputs.0.dtype", "int8"),
     "graphs.encoder.inputs[0].dtype: expected 'float32', 'float16', 'int64' or 'uint8', got 'int8'"),
    (_set("preprocess.mean", [0.5, 0.5]), "preprocess.mean: expected 3 items, got 2"),
    (_set("preprocess.std", [0.5] * 4), "preprocess.std: expected 3 items, got 4"),
    (_set("graphs.encoder.inputs.0.shape.1", 1.5),
     "graphs.encoder.inputs[0].shape[1]: expected an integer or a string, got a number"),
    (_set("image_input", delete=True), "image_input: missing"),
    (_set("scoring.thresholds", delete=True), "scoring.thresholds: missing"),
    (_set("preprocess.image_size", 4), "preprocess: image size 4 is too small (at least 8)"),   # __post_init__
    (_set("preprocess.layout", "CHWN"), "preprocess: unknown layout 'CHWN'; known: NCHW, NHWC"),
])
def test_a_refusal_is_one_line_naming_the_field(change, message):
    data = copy.deepcopy(MANIFEST)
    change(data)
    with pytest.raises(ValueError) as info:
        BundleManifest.from_dict(data, SOURCE)
    assert str(info.value) == f"{SOURCE}: invalid manifest ({message})"
