"""The checkpoint's JSON half is shaped like the manifest: typed ``preprocess`` and ``scoring`` sections,
and checkpoints written before them (flat ``thresholds``/``top_k``/``min_labels``, no ``decode`` rule)
read as they always did."""
from __future__ import annotations

import json

import pytest

from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.bundle.scoring_config import ScoringConfig
from corel_annotate.training.config import CheckpointConfig, DecodingConfig, ModelConfig, SequenceConfig, TrainConfig


def _config(method: str, scoring: ScoringConfig | None) -> CheckpointConfig:
    return CheckpointConfig(model=ModelConfig(method=method, num_labels=3), sequence=SequenceConfig(),
                            decode=DecodingConfig(), train=TrainConfig(), vocabulary=["a", "b", "c"],
                            preprocess=PreprocessConfig(image_size=96, decode="draft"), scoring=scoring)


def test_sections_round_trip_in_the_manifests_shape() -> None:
    cfg = _config("cnn", ScoringConfig((0.25, 0.5, 0.75), 2, 1))
    data = json.loads(cfg.to_json())
    assert data["scoring"] == {"thresholds": [0.25, 0.5, 0.75], "top_k": 2, "min_labels": 1}
    assert data["preprocess"]["image_size"] == 96 and data["preprocess"]["decode"] == "draft"
    again = CheckpointConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.preprocess, PreprocessConfig) and isinstance(again.scoring, ScoringConfig)
    assert (again.thresholds, again.top_k, again.min_labels) == ([0.25, 0.5, 0.75], 2, 1)


def test_checkpoints_from_before_the_sections_read_as_before() -> None:
    data = json.loads(_config("cnn", None).to_json())
    del data["scoring"]
    data["preprocess"].pop("decode")
    data.update(thresholds=[0.4, 0.4, 0.4], top_k=0, min_labels=1)   # top_k 0 meant no cap
    old = CheckpointConfig.from_json(json.dumps(data))
    assert old.scoring == ScoringConfig((0.4, 0.4, 0.4), None, 1)
    assert old.top_k == 0 and old.preprocess.decode == "full"   # the rule of checkpoints before draft decoding
    data.update(thresholds=[])                                    # a sequence model's: no operating point
    assert CheckpointConfig.from_json(json.dumps(data)).scoring is None


def test_unknown_fields_are_ignored_missing_ones_default_and_a_broken_one_is_named() -> None:
    """Checkpoints from newer and older code read (pydantic, leniently); a broken field is one line."""
    data = json.loads(_config("cnn", None).to_json())
    data["written_later"] = 1
    data["train"]["a_later_flag"] = True
    data["preprocess"]["a_later_rule"] = "x"
    del data["train"]["epochs"]
    data["sequence"]["label_rank"] = [2, 0, 1]
    cfg = CheckpointConfig.from_json(json.dumps(data))
    assert cfg.train == TrainConfig() and cfg.preprocess == PreprocessConfig(image_size=96, decode="draft")
    assert cfg.sequence.label_rank == (2, 0, 1)
    data["train"]["batch_size"] = "many"
    with pytest.raises(ValueError, match=r"^train\.batch_size: expected an integer, got a string$"):
        CheckpointConfig.from_json(json.dumps(data))
