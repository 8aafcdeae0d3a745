"""Training augmentation: crops within bounds, deterministic cached views, training on views and top stages."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig

from corel_annotate.runtime.preprocessing import preprocess
from corel_annotate.training.augment import AugmentConfig, augment_image, crop_box, view_rng
from corel_annotate.training.backbones import build_backbone
from corel_annotate.training.checkpoint import load_checkpoint
from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
from corel_annotate.training.features import cached_features
from corel_annotate.training.factory import create_model
from corel_annotate.training.data import ViewDataset
from corel_annotate.training.trainer import train


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 2000), h=st.integers(1, 2000), lo=st.floats(0.05, 1.0), seed=st.integers(0, 2**32 - 1))
def test_crop_box_stays_inside_and_covers_the_asked_area(w, h, lo, seed):
    cfg = AugmentConfig(min_scale=lo)
    left, top, right, bottom = crop_box(w, h, cfg, np.random.default_rng(seed))
    assert 0 <= left < right <= w and 0 <= top < bottom <= h
    area = (right - left) * (bottom - top) / (w * h)
    whole = (left, top, right, bottom) == (0, 0, w, h)
    # rounding of the side lengths moves the area by at most one row and one column
    assert whole or lo - (1 / w + 1 / h) - 1e-9 <= area


def test_augmented_view_is_a_flipped_or_plain_crop_of_the_photo():
    arr = np.zeros((60, 90, 3), dtype=np.uint8)
    arr[:, :45, 0] = 255  # left half red, right half blue
    arr[:, 45:, 2] = 255
    img = Image.fromarray(arr)
    pre = PreprocessConfig(image_size=32)
    cfg = AugmentConfig(min_scale=1.0, max_scale=1.0, ratio=(1.5, 1.5))
    seen = set()
    for seed in range(12):
        view = augment_image(img, pre, cfg, np.random.default_rng(seed))
        assert view.shape == (3, 32, 32) and view.dtype == np.float32
        red_left = view[0, :, :8].mean() > view[2, :, :8].mean()
        seen.add(bool(red_left))
        if red_left:  # whole-photo crop, not flipped: equals the plain preprocessing
            np.testing.assert_allclose(view, preprocess(img, pre), atol=1e-6)
    assert seen == {True, False}, "the flip never (or always) happened in 12 draws"


def test_views_are_fixed_per_seed_view_and_image():
    a = view_rng(AugmentConfig(seed=1), 2, 7).random(4)
    assert np.array_equal(a, view_rng(AugmentConfig(seed=1), 2, 7).random(4))
    assert not np.array_equal(a, view_rng(AugmentConfig(seed=1), 3, 7).random(4))
    assert not np.array_equal(a, view_rng(AugmentConfig(seed=2), 2, 7).random(4))


def test_cached_views_differ_from_plain_and_hit_the_cache(synth_data, tmp_path):
    from corel_annotate.runtime.dataset import CorelDataset

    paths = [s.path for s in CorelDataset(synth_data).read("train").samples[:12]]
    net, info = build_backbone("tf_efficientnet_lite0", "imagenet")
    model = create_model(ModelConfig(method="cnn", num_labels=3, feature_dim=info.num_features), net)
    model.set_backbone_frozen(True)
    pre = PreprocessConfig(image_size=96, mean=info.mean, std=info.std)
    aug = AugmentConfig(views=2, seed=4)
    plain, hit0 = cached_features(model, paths, pre, info.weights_id, tmp_path)
    v1, hit1 = cached_features(model, paths, pre, info.weights_id, tmp_path, augment=aug, view=1)
    v1_again, hit2 = cached_features(model, paths, pre, info.weights_id, tmp_path, augment=aug, view=1)
    v2, _ = cached_features(model, paths, pre, info.weights_id, tmp_path, augment=aug, view=2)
    assert (hit0, hit1, hit2) == (False, False, True)
    assert v1.dtype == np.float16 and v1.shape == plain.shape
    assert np.array_equal(np.asarray(v1), np.asarray(v1_again))
    assert np.abs(np.asarray(v1, np.float32) - plain).mean() > 1e-3
    assert np.abs(np.asarray(v1, np.float32) - np.asarray(v2, np.float32)).mean() > 1e-3


def test_view_dataset_draws_every_view_and_is_seeded():
    views = [np.full((5, 2), k, dtype=np.float32) for k in range(3)]
    targets = torch.zeros(5, 4)
    ds = ViewDataset(views, np.arange(5), targets, torch.zeros(5, 6, dtype=torch.long), torch.ones(5, dtype=torch.long))
    torch.manual_seed(0)
    drawn = [float(ds[i % 5][0][0]) for i in range(60)]
    assert set(drawn) == {0.0, 1.0, 2.0}
    torch.manual_seed(0)
    assert drawn == [float(ds[i % 5][0][0]) for i in range(60)]


def test_top_stages_split_reproduces_the_whole_backbone():
    net, info = build_backbone("tf_efficientnet_lite0", "imagenet")
    model = create_model(ModelConfig(method="attention", num_labels=4, feature_dim=info.num_features), net)
    model.set_backbone_frozen(True)
    model.set_trainable_top(2)
    model.eval()
    x = torch.randn(2, 3, 96, 96)
    cached = model.cache_inputs(x, model.cache_kind)
    assert model.cache_kind == f"stage{len(net.blocks) - 2}"
    torch.testing.assert_close(model.head_inputs_from_cache(cached), model.features(x))
    trainable = {id(p) for p in model.trainable_backbone_parameters()}
    assert trainable and not any(id(p) in trainable for p in net.conv_stem.parameters())
    assert all(id(p) in trainable for p in net.conv_head.parameters())


def test_top_stages_need_a_staged_backbone():
    net, info = build_backbone("resnet18", "random")
    model = create_model(ModelConfig(method="cnn", num_labels=4, backbone="resnet18", feature_dim=info.num_features), net)
    with pytest.raises(ValueError, match="EfficientNet/MobileNet-style"):
        model.set_trainable_top(1)


def test_training_on_views_with_top_stages_changes_only_the_top(synth_data, feature_cache, tmp_path):
    out = tmp_path / "cnn.ckpt"
    cfg = train(synth_data, out, ModelConfig(method="cnn", num_labels=0), SequenceConfig(), DecodingConfig(),
                TrainConfig(epochs=4, image_size=128, seed=2, augment_views=2, train_top=1),
                cache_dir=feature_cache, log=lambda _m: None, show_progress=False)
    _, payload = load_checkpoint(out)
    pretrained = build_backbone("tf_efficientnet_lite0", "imagenet")[0].state_dict()
    state = payload["state_dict"]
    last_stage = f"blocks.{len(build_backbone('tf_efficientnet_lite0', 'random')[0].blocks) - 1}."
    changed = {k for k, v in pretrained.items() if not torch.equal(v, state[f"backbone.{k}"])}
    assert any(k.startswith("conv_head") for k in changed) and any(k.startswith(last_stage) for k in changed)
    assert all(k.startswith(("conv_head", "bn2", last_stage)) for k in changed), sorted(changed)[:5]
    assert not any("running_" in k for k in changed), "batch-norm statistics must stay frozen"
    assert cfg.train.augment_views == 2 and cfg.train.train_top == 1
    assert cfg.metrics["test"]["per_class/f1"] > 0.5
