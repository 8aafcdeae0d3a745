"""Method names to models (as timm's ``_factory.py``): the one place that imports every model class.
The registry beside it holds the methods' data and imports none of them."""
from __future__ import annotations

from torch import nn

from .config import ModelConfig
from .models.attention import AttentionModel
from .models.base import AnnotationModel
from .models.cnn import CNNModel
from .models.gcn import MLGCNModel
from .models.recurrent import RIAModel, SRCNNRNNModel
from .registry import list_methods, method_spec

MODEL_CLASSES: dict[str, type[AnnotationModel]] = {
    "cnn": CNNModel,
    "ml-gcn": MLGCNModel,
    "ria": RIAModel,
    "sr-cnn-rnn": SRCNNRNNModel,
    "attention": AttentionModel,
}
if set(MODEL_CLASSES) != set(list_methods()):
    raise ImportError(f"factory and registry disagree: {sorted(MODEL_CLASSES)} vs {sorted(list_methods())}")


def model_class(name: str) -> type[AnnotationModel]:
    """The class that implements method ``name`` (ValueError for an unknown name)."""
    method_spec(name)
    return MODEL_CLASSES[name]


def create_model(config: ModelConfig, backbone: nn.Module, **extra) -> AnnotationModel:
    """Build the model for ``config.method`` around ``backbone``."""
    return model_class(config.method)(config, backbone, **extra)
