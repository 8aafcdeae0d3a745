"""Shared fixtures: one small synthetic dataset and one feature cache for the whole session."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A learnable synthetic Corel-layout dataset: 360 photos, 10 labels, 128 px."""
    from training.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, SynthConfig(images=360, labels=10, scenes=3, image_size=128, max_labels=4, seed=0))
    return out


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")
