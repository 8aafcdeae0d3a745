"""--threshold-tuning oof: out-of-fold head scores, per-label thresholds from them, the final model on
every training photo, and the label memory tuned on those scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
from corel_annotate.training.cross_fit import cross_fit_scores, fold_indices
from corel_annotate.training.factory import create_model


def test_folds_partition_the_photos():
    folds = fold_indices(23, 5, seed=3)
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(23))
    assert [len(f) for f in folds] == [5, 5, 5, 4, 4]
    with pytest.raises(ValueError, match="2 folds"):
        fold_indices(10, 1, seed=0)


def _auc(scores: np.ndarray, targets: np.ndarray) -> float:
    return float(roc_auc_score(targets.ravel(), scores.ravel()))


def test_out_of_fold_scores_never_come_from_a_head_that_saw_the_photo():
    """Labels drawn at random, features of more dimensions than photos: a head memorises its training
    photos (high in-sample AUC), so only scores from heads that never saw a photo are at chance."""
    rng = np.random.default_rng(0)
    n, dim, labels = 120, 256, 6
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    targets = (rng.random((n, labels)) < 0.3).astype(np.float32)
    cfg = ModelConfig(method="cnn", num_labels=labels, feature_dim=dim, head_dropout=0.0)
    train_cfg = TrainConfig(epochs=40, batch_size=16, lr=0.02, folds=4, seed=2, device="cpu")
    t = torch.from_numpy(targets)
    tokens, lengths = torch.zeros((n, 2), dtype=torch.long), torch.ones(n, dtype=torch.long)

    def make_head(_fit):
        return create_model(cfg, torch.nn.Identity())

    fit = cross_fit_scores(make_head, [feats], t, tokens, lengths, train_cfg, DecodingConfig(), "cpu", lambda _m: None)
    assert fit.scores.shape == (n, labels)
    again = cross_fit_scores(make_head, [feats], t, tokens, lengths, train_cfg, DecodingConfig(), "cpu",
                             lambda _m: None)
    # a head trained on every photo, scoring those photos (what in-sample thresholds would see)
    from corel_annotate.training.evaluation import predict_features
    from corel_annotate.training.data import ViewDataset
    from corel_annotate.training.loop import LossModule, train_batches

    model = make_head(None)
    loader = torch.utils.data.DataLoader(ViewDataset([feats], np.arange(n), t, tokens, lengths), batch_size=16,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.head_parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, epochs=40, steps_per_epoch=len(loader))
    for _ in range(40):
        train_batches(model, LossModule(model, from_images=False, head_inputs=True), loader, opt, sched, 5.0, "cpu")
    in_sample = predict_features(model, torch.from_numpy(feats), DecodingConfig().greedy()).scores
    assert _auc(in_sample, targets) > 0.9
    assert abs(_auc(fit.scores, targets) - 0.5) < 0.1
    np.testing.assert_allclose(again.scores, fit.scores, atol=1e-6)  # seeded: the same folds, the same heads


@pytest.fixture(scope="module")
def oof_checkpoint(synth_data, feature_cache, tmp_path_factory):
    from corel_annotate.training.trainer import train

    ckpt = tmp_path_factory.mktemp("oof") / "cnn.ckpt"
    cfg = train(synth_data, ckpt, ModelConfig(method="cnn", num_labels=0, loss="asl"), SequenceConfig(),
                DecodingConfig(), TrainConfig(epochs=6, image_size=128, device="cpu", seed=5, threshold_tuning="oof",
                                              folds=3), cache_dir=feature_cache, log=lambda _m: None,
                show_progress=False)
    return ckpt, cfg


def test_oof_trains_on_every_photo_and_thresholds_come_from_the_stored_scores(oof_checkpoint, synth_data):
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.evaluation.metrics import label_sets_to_matrix
    from corel_annotate.runtime.evaluation.thresholds import shrunk_thresholds
    from corel_annotate.training.checkpoint import load_checkpoint

    path, _ = oof_checkpoint
    cfg, payload = load_checkpoint(path)
    ds = CorelDataset(synth_data)
    train = ds.read("train")
    assert cfg.data["fit_images"] == len(train.samples) and cfg.data["val_images"] == 0
    assert cfg.train.val_fraction == 0.0 and cfg.metrics["oof"]["folds"] == 3
    scores = payload["oof_scores"].float().numpy()
    targets = label_sets_to_matrix(train.label_ids(ds.vocabulary), len(ds.vocabulary))
    assert scores.shape == targets.shape
    top_k = int(targets.sum(axis=1).max())
    assert (cfg.top_k, cfg.min_labels) == (top_k, 1)
    expected = shrunk_thresholds(scores, targets, top_k, 1)
    np.testing.assert_allclose(cfg.thresholds, expected, atol=1e-6)  # fitted on the stored (float16) scores
    assert len(set(np.round(cfg.thresholds, 4))) > 1  # per label, not one for all
    assert "test" in cfg.metrics  # the test split was still evaluated, after the thresholds were set


def test_oof_bundle_tunes_its_memory_on_every_training_photo(oof_checkpoint, tmp_path):
    from corel_annotate.export.bundle import export_bundle
    from corel_annotate.training.checkpoint import load_checkpoint

    path, _ = oof_checkpoint
    cfg, _ = load_checkpoint(path)
    bundle, _, _ = export_bundle(path, tmp_path / "cnn.bundle", log=lambda _m: None)
    manifest = json.loads((bundle / "manifest.json").read_text())
    memory = manifest["memory"]
    assert memory["examples"] == cfg.data["fit_images"]
    assert "out-of-fold" in manifest["source"]["memory"]["tuned_on"]
    assert f"all {cfg.data['fit_images']} training photos" in manifest["source"]["memory"]["tuned_on"]
