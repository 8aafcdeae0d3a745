"""Shared fixtures: one small synthetic dataset and one feature cache for the whole session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from corel_annotate.training.registry import list_methods

REPO = Path(__file__).resolve().parents[1]
EXPORT_METHODS = tuple(list_methods())  # every registered method, from the registry
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A learnable synthetic Corel-layout dataset: 360 photos, 10 labels, 128 px."""
    from corel_annotate.training.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, SynthConfig(images=360, labels=10, scenes=3, image_size=128, max_labels=4, seed=0))
    return out


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")




@pytest.fixture(scope="session")
def bundles(synth_data, feature_cache, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Per method: a checkpoint trained briefly on the synthetic data and its exported bundle."""
    from corel_annotate.export.bundle import export_bundle
    from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
    from corel_annotate.training.trainer import train

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for method in EXPORT_METHODS:
        ckpt = root / f"{method}.ckpt"
        kw = {"loss": "asl"} if method == "ml-gcn" else {}
        train(synth_data, ckpt, ModelConfig(method=method, num_labels=0, **kw), SequenceConfig(), DecodingConfig(beam_width=3),
              TrainConfig(epochs=8, image_size=128, device="cpu", seed=5), cache_dir=feature_cache,
              log=lambda _m: None, show_progress=False)
        # without a label memory: these bundles test parity with PyTorch; memory_bundles add one
        bundle, _, _ = export_bundle(ckpt, root / f"{method}.bundle", memory=False, log=lambda _m: None)
        out[method] = (ckpt, bundle)
    return out


@pytest.fixture(scope="session")
def float_bundles(bundles, tmp_path_factory) -> dict[str, Path]:
    """The attention and ml-gcn checkpoints exported with the normalised float32 input, their manifests
    written as format 3 wrote them (no ``input_dtype``): the bundles made before pixel input."""
    import json

    from corel_annotate.export.bundle import export_bundle

    root = tmp_path_factory.mktemp("float-bundles")
    out = {}
    for method in ("attention", "ml-gcn"):
        out[method] = export_bundle(bundles[method][0], root / f"{method}.bundle", memory=False, input_dtype="float32",
                                    log=lambda _m: None)[0]
        manifest = out[method] / "manifest.json"
        data = json.loads(manifest.read_text())
        assert data["preprocess"].pop("input_dtype") == "float32"
        data["format_version"] = 3
        manifest.write_text(json.dumps(data))
    return out


@pytest.fixture(scope="session")
def memory_bundles(bundles, tmp_path_factory) -> dict[str, Path]:
    """ml-gcn (scores) and attention (sequence) bundles with their label memory, from the same checkpoints.
    On these easy photos the exporter may give the memory weight 0 (the head alone is best on validation);
    the ml-gcn bundle then gets weight 0.5 in its manifest (not covered by sha256), so the blend really runs."""
    import json

    from corel_annotate.export.bundle import export_bundle

    root = tmp_path_factory.mktemp("memory-bundles")
    out = {method: export_bundle(bundles[method][0], root / f"{method}.bundle", memory=True, log=lambda _m: None)[0]
           for method in ("ml-gcn", "attention")}
    manifest = out["ml-gcn"] / "manifest.json"
    data = json.loads(manifest.read_text())
    if data["memory"]["weight"] == 0:
        data["memory"]["weight"] = 0.5
        manifest.write_text(json.dumps(data))
    return out


RUNTIME_MARK = "pytest.mark.runtime"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """In the runtime-only stage (``COREL_RUNTIME_ONLY=1``, ``make test-runtime``) only the test modules
    that declare the ``runtime`` mark are collected: the others import torch, onnx or the servers."""
    if os.environ.get("COREL_RUNTIME_ONLY") != "1" or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    return RUNTIME_MARK not in collection_path.read_text(encoding="utf-8")
