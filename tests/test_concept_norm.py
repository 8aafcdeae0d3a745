"""sr-cnn-rnn: layer-normalised concept probabilities reach the LSTM (so small data does not collapse), and
checkpoints from before the option keep the raw probabilities they were trained with."""
from __future__ import annotations

import json

import torch

from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.training.config import CheckpointConfig, DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
from corel_annotate.training.factory import create_model


def _spread(concept_norm: str) -> float:
    """How much the LSTM's initial state differs between photos, relative to its size, when the concept
    head gives every label a low probability (as after training on rare labels)."""
    torch.manual_seed(0)
    cfg = ModelConfig(method="sr-cnn-rnn", num_labels=40, feature_dim=64, concept_norm=concept_norm)
    model = create_model(cfg, torch.nn.Identity()).eval()
    with torch.no_grad():
        model.concept_fc.bias.fill_(-6.0)
        h = model.init_state(torch.randn(32, 64))["h"]
    return float(h.std(dim=0).mean() / h.abs().mean())


def test_layer_norm_makes_the_initial_state_depend_on_the_photo():
    assert _spread("layer") > 5 * _spread("none")


def test_checkpoints_without_the_field_keep_raw_probabilities():
    cfg = CheckpointConfig(model=ModelConfig(method="sr-cnn-rnn", num_labels=3), sequence=SequenceConfig(),
                           decode=DecodingConfig(), train=TrainConfig(), vocabulary=["a", "b", "c"], preprocess=PreprocessConfig())
    assert CheckpointConfig.from_json(cfg.to_json()).model.concept_norm == "layer"
    data = json.loads(cfg.to_json())
    del data["model"]["concept_norm"]
    assert CheckpointConfig.from_json(json.dumps(data)).model.concept_norm == "none"
