"""Dataclass configs, serialised to JSON inside every checkpoint."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.runtime.bundle.preprocess_config import DECODE_RULES, PreprocessConfig
from corel_annotate.runtime.bundle.scoring_config import ScoringConfig
from corel_annotate.runtime.bundle.typed_json import read_lenient
from .augment import AugmentConfig
from .registry import list_methods, method_spec

__all__ = ["DecodingConfig", "ModelConfig", "SequenceConfig", "TrainConfig", "CheckpointConfig", "Preset", "PRESETS"]

LOSSES = ("bce", "focal", "asl")
ORDERINGS = ("rare-first", "frequent-first", "dataset")
ORDER_FREE = ("none", "mla", "pla")
CONCEPT_NORMS = ("layer", "none")  # sr-cnn-rnn: how the concept probabilities reach the LSTM


@dataclass(frozen=True)
class Preset:
    """A named backbone and input size, so users pick a speed/accuracy trade-off rather than a model name."""

    name: str
    backbone: str
    image_size: int
    summary: str


PRESETS = {
    "fast": Preset("fast", "tf_efficientnet_lite0", 224, "EfficientNet-Lite0 at 224 px (the default)"),
    "accurate": Preset("accurate", "tf_efficientnet_lite2", 260, "EfficientNet-Lite2 at its native 260 px"),
}
DEFAULT_PRESET = "fast"
THRESHOLD_TUNINGS = ("balanced", "oof", "mcc", "f1", "none")
AMP_MODES = ("off", "bf16")
HEAD_ONLY_EPOCHS = 40  # default epochs with --backbone-from, where an epoch trains the head alone


def resolve_preset(name: str, backbone: str | None, image_size: int | None) -> tuple[str, int]:
    """The backbone and input size to train with: the preset's, each overridden when given explicitly."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    return backbone or preset.backbone, image_size or preset.image_size


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's modules (weights come from the state dict)."""

    method: str
    num_labels: int
    backbone: str = "tf_efficientnet_lite0"
    backbone_weights: str = "imagenet"
    feature_dim: int = 0
    hidden_size: int = 512
    emb_size: int = 256
    attention_size: int = 256
    glove: bool = False
    dropout: float = 0.5
    emb_dropout: float = 0.3
    head_dropout: float = 0.3
    gcn_hidden: int = 1024
    gcn_threshold: float = 0.1
    gcn_p: float = 0.2
    loss: str = "bce"
    gamma_pos: float = 0.0
    gamma_neg: float = 4.0
    clip: float = 0.05
    focal_gamma: float = 2.0
    order_free: str = "none"
    concept_norm: str = "layer"

    def __post_init__(self) -> None:
        spec = method_spec(self.method)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.order_free not in ORDER_FREE:
            raise ValueError(f"unknown order-free mode {self.order_free!r}; known: {', '.join(ORDER_FREE)}")
        if self.concept_norm not in CONCEPT_NORMS:
            raise ValueError(f"unknown concept normalisation {self.concept_norm!r}; known: {', '.join(CONCEPT_NORMS)}")
        if self.order_free != "none" and spec.kind != "sequence":
            raise ValueError(f"--order-free {self.order_free} needs a recurrent method "
                             f"({', '.join(list_methods('sequence'))})")

    @property
    def is_sequence(self) -> bool:
        return method_spec(self.method).kind == "sequence"


@dataclass
class SequenceConfig:
    """How label sets become training sequences for the recurrent methods."""

    ordering: str = "rare-first"
    max_seq_len: int = 5
    label_rank: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.ordering not in ORDERINGS:
            raise ValueError(f"unknown ordering {self.ordering!r}; known: {', '.join(ORDERINGS)}")
        if self.max_seq_len < 1:
            raise ValueError("max sequence length must be at least 1")


@dataclass
class TrainConfig:
    """Optimisation settings; every field is a ``corel-train`` flag."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 0.0
    pct_start: float = 0.2
    freeze_backbone: bool = True
    val_fraction: float = 0.1
    seed: int = 1
    image_size: int = 224
    device: str = "auto"
    workers: int = 2
    strict_data: bool = False
    glove_path: str = ""
    grad_clip: float = 5.0
    threshold_tuning: str = "balanced"
    folds: int = 5
    augment_views: int = 4
    train_top: int = 2
    augmented_dir: str = ""
    augment_min_scale: float = 0.35
    backbone_from: str = ""
    decode: str = "draft"
    amp: str = "off"
    ema: float = 0.0
    augment_aspect: str = "square"

    def __post_init__(self) -> None:
        self.augment_config()
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("validation fraction must be in [0, 1)")
        if self.lr <= 0 or self.backbone_lr <= 0:
            raise ValueError("learning rates must be positive")
        if self.train_top < 0:
            raise ValueError("--train-top counts backbone stages: 0 or more")
        if self.decode not in DECODE_RULES:
            raise ValueError(f"unknown decode rule {self.decode!r}; choose {' or '.join(DECODE_RULES)}")
        if self.threshold_tuning not in THRESHOLD_TUNINGS:
            raise ValueError(f"unknown threshold tuning {self.threshold_tuning!r}; choose {', '.join(THRESHOLD_TUNINGS)}")
        if self.folds < 2:
            raise ValueError("--folds: cross-fitting needs at least 2 folds")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp {self.amp!r}: choose {' or '.join(AMP_MODES)}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema {self.ema}: the averaging decay must be in [0, 1) (0: off)")

    def augment_config(self) -> AugmentConfig:
        """Random resized crops (area ``augment_min_scale``..1) and flips; ``augment_views`` cached
        views per training image with a frozen backbone, on the fly when fine-tuning (0: off)."""
        return AugmentConfig(views=self.augment_views, min_scale=self.augment_min_scale, seed=self.seed,
                             aspect=self.augment_aspect)


@dataclass
class CheckpointConfig:
    """The JSON half of a checkpoint: it describes the model completely."""

    model: ModelConfig
    sequence: SequenceConfig
    decode: DecodingConfig
    train: TrainConfig
    vocabulary: list[str]
    preprocess: PreprocessConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    scoring: ScoringConfig | None = None
    """A score model's label selection, as the bundle's manifest will carry it (None for sequence models)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def thresholds(self) -> list[float]:
        """The per-label thresholds (empty for sequence models)."""
        return list(self.scoring.thresholds) if self.scoring is not None else []

    @property
    def top_k(self) -> int:
        """The cap on labels per image, 0 for none (as ``select_labels`` takes it)."""
        return (self.scoring.top_k or 0) if self.scoring is not None else 0

    @property
    def min_labels(self) -> int:
        return self.scoring.min_labels if self.scoring is not None else 0

    @classmethod
    def from_json(cls, text: str) -> "CheckpointConfig":
        """Read the JSON half of a checkpoint, leniently, so every checkpoint written so far reads:
        unknown fields are ignored, missing ones take their defaults (ValueError of one line when
        a field is broken)."""
        data = json.loads(text)
        if isinstance(data, dict):
            data = {**data, "scoring": _scoring_from(data)}
            if isinstance(data.get("model"), dict):
                # checkpoints written before concept_norm existed fed the LSTM the raw probabilities
                data["model"] = {"concept_norm": "none", **data["model"]}
        return read_lenient(cls, data)


def _scoring_from(data: dict[str, Any]) -> dict[str, Any] | None:
    """A checkpoint's ``scoring`` section; checkpoints written before it existed kept the same fields
    flat (``thresholds``, ``top_k`` with 0 for no cap, ``min_labels``) and read the same."""
    if data.get("scoring") is not None:
        return data["scoring"]
    if data.get("thresholds"):
        return {"thresholds": data["thresholds"], "top_k": data.get("top_k") or None,
                "min_labels": data.get("min_labels", 0)}
    return None
