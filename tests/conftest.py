"""Shared fixtures: one small synthetic dataset and one feature cache for the whole session."""
from __future__ import annotations

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
        bundle, _, _ = export_bundle(ckpt, root / f"{method}.bundle", log=lambda _m: None)
        out[method] = (ckpt, bundle)
    return out
