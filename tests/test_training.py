"""Every method and loss trains on synthetic data: the loss falls and test metrics are far above chance."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.evaluation.metrics import annotation_metrics
from corel_annotate.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
from corel_annotate.training.sequences import multi_hot
from corel_annotate.training.trainer import last_path, train

IMAGE_SIZE = 128


def run(data: Path, out: Path, cache: Path, method: str, epochs: int = 12, resume: bool = False, **model_kw):
    model_cfg = ModelConfig(method=method, num_labels=0, **model_kw)
    train_cfg = TrainConfig(epochs=epochs, batch_size=32, image_size=IMAGE_SIZE, device="cpu", seed=3)
    return train(data, out, model_cfg, SequenceConfig(), DecodingConfig(), train_cfg, cache_dir=cache, resume=resume,
                 log=lambda _m: None, show_progress=False)


def chance_per_class_f1(data: Path) -> float:
    """The better of two label-blind predictors on the test split: every label for every image, and
    each label drawn independently at its training frequency."""
    ds = CorelDataset(data)
    vocab = ds.vocabulary
    test = multi_hot(ds.read("test").label_ids(vocab), len(vocab)).astype(np.uint8)
    train_t = multi_hot(ds.read("train").label_ids(vocab), len(vocab))
    everything = annotation_metrics(test, np.ones_like(test)).per_class_f1
    rng = np.random.default_rng(0)
    drawn = (rng.random(test.shape) < train_t.mean(axis=0)).astype(np.uint8)
    return max(everything, annotation_metrics(test, drawn).per_class_f1)


CASES = [
    ("cnn", {}),
    ("cnn", {"loss": "focal"}),
    ("cnn", {"loss": "asl"}),
    ("ml-gcn", {"loss": "bce"}),
    ("ml-gcn", {"loss": "asl"}),
    ("ria", {}),
    ("sr-cnn-rnn", {}),
    ("attention", {}),
    ("attention", {"order_free": "mla"}),
    ("attention", {"order_free": "pla"}),
]


SHARED_CASES = [("cnn", {}), ("ml-gcn", {"loss": "asl"}), ("ria", {}), ("sr-cnn-rnn", {}), ("attention", {})]
"""The cases ``conftest.bundles`` trains (at most 8 epochs, seed 5); the rest are trained here (12 epochs)."""


@pytest.mark.parametrize("method,kw", CASES, ids=[f"{m}-{'-'.join(map(str, kw.values())) or 'default'}" for m, kw in CASES])
def test_method_learns(request, synth_data, feature_cache, tmp_path, method, kw):
    if (method, kw) in SHARED_CASES:   # the session's bundles trained this one: read its checkpoint
        cfg, _ = load_checkpoint(request.getfixturevalue("bundles")[method][0])
        epochs = len(cfg.history)   # 8, or fewer where validation stopped it early
        assert 5 <= epochs <= 8
    else:
        cfg, epochs = run(synth_data, tmp_path / "m.ckpt", feature_cache, method, **kw), 12
    assert (cfg.model.method, cfg.model.loss) == (method, kw.get("loss", "bce"))
    losses = [h["train_loss"] for h in cfg.history]
    assert len(losses) == epochs
    assert losses[-1] < 0.7 * losses[0], f"loss did not fall: {losses}"
    chance = chance_per_class_f1(synth_data)
    test = cfg.metrics["test"]
    assert test["per_class/f1"] > chance + 0.25, (test, chance)
    assert test["per_image/f1"] > 0.6
    assert test["N+"] >= 8
    assert cfg.metrics["val"]["per_class/f1"] > chance + 0.2


def test_checkpoint_is_self_describing_and_reloads(synth_data, feature_cache, tmp_path):
    out = tmp_path / "ria.ckpt"
    cfg = run(synth_data, out, feature_cache, "ria", epochs=3)
    raw = torch.load(out, map_location="cpu", weights_only=True)
    meta = json.loads(raw["config"])
    assert meta["model"]["method"] == "ria"
    assert meta["model"]["backbone"] == "tf_efficientnet_lite0"
    assert meta["vocabulary"] == list(CorelDataset(synth_data).vocabulary.labels)
    assert meta["sequence"]["ordering"] == "rare-first" and meta["sequence"]["max_seq_len"] == 5
    assert meta["preprocess"]["image_size"] == IMAGE_SIZE and meta["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert {"torch", "timm", "python"} <= set(meta["versions"])
    assert "test" in meta["metrics"] and "val" in meta["metrics"]
    assert any(k.startswith("backbone.") for k in raw["state_dict"])

    model, loaded = model_from_checkpoint(out)
    assert loaded.model == cfg.model
    feats = torch.randn(4, cfg.model.feature_dim)
    state = model.init_state(feats)
    logits, _, _ = model.step(torch.full((4,), cfg.model.num_labels + 1), state)
    reference = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    h = feats @ reference["features_embedding.weight"].T + reference["features_embedding.bias"]
    assert torch.allclose(state["h"], h, atol=1e-5)
    assert logits.shape == (4, cfg.model.num_labels + 1)


def test_resume_continues_from_last_epoch(synth_data, feature_cache, tmp_path):
    whole = tmp_path / "whole.ckpt"
    run(synth_data, whole, feature_cache, "attention", epochs=3)
    parted = tmp_path / "parted.ckpt"
    model_cfg = ModelConfig(method="attention", num_labels=0)
    train_cfg = TrainConfig(epochs=3, batch_size=32, image_size=IMAGE_SIZE, device="cpu", seed=3)
    train(synth_data, parted, model_cfg, SequenceConfig(), DecodingConfig(), train_cfg, cache_dir=feature_cache,
          log=lambda _m: None, show_progress=False, stop_after=2)
    cfg_mid, mid = load_checkpoint(last_path(parted))
    assert mid["epoch"] == 1 and len(cfg_mid.history) == 2
    resumed = run(synth_data, parted, feature_cache, "attention", epochs=3, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    _, a = load_checkpoint(last_path(whole))
    _, b = load_checkpoint(last_path(parted))
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key
    assert {int(s["step"]) for s in b["optimizer"]["state"].values()} == {3 * steps_per_epoch(resumed)}


def steps_per_epoch(cfg) -> int:
    fit = cfg.data["fit_images"]
    return -(-fit // cfg.train.batch_size)


def test_resume_without_last_checkpoint_is_a_clear_error(synth_data, feature_cache, tmp_path):
    with pytest.raises(ValueError, match="nothing to resume"):
        run(synth_data, tmp_path / "none.ckpt", feature_cache, "cnn", epochs=2, resume=True)


def test_interrupted_save_keeps_previous_checkpoint(synth_data, feature_cache, tmp_path, monkeypatch):
    out = tmp_path / "cnn.ckpt"
    cfg = run(synth_data, out, feature_cache, "cnn", epochs=2)
    before = out.read_bytes()
    model, _ = model_from_checkpoint(out)

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(out, cfg, model)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_pickled_checkpoint_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.ckpt"
    torch.save({"format": "corel-annotate/checkpoint", "config": Payload()}, bad)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(bad)


def test_torchrun_two_cpu_processes(synth_data, feature_cache, tmp_path):
    out = tmp_path / "ddp.ckpt"
    env = {**os.environ, "COREL_CACHE_DIR": str(feature_cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "corel_annotate.training.cli.train", "--data", str(synth_data), "--method", "cnn", "--epochs", "8",
           "--image-size", str(IMAGE_SIZE), "--out", str(out), "--device", "cpu", "--no-progress",
           "--cache-dir", str(feature_cache)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg, _ = load_checkpoint(out)
    assert cfg.data["world_size"] == 2
    assert cfg.metrics["test"]["per_class/f1"] > chance_per_class_f1(synth_data) + 0.2
    assert proc.stderr.count("epoch 8/8") == 1


def test_finetune_trains_the_backbone(synth_data, tmp_path):
    """End to end: the backbone changes; with --ema the weight average (not the raw weights) is validated and
    saved; validation sees the photos through the current backbone, not features from before training."""
    import timm

    from corel_annotate.training.data import validation_split
    from corel_annotate.training.evaluation import evaluate, predict_features
    from corel_annotate.training.features import compute_features

    initial = timm.create_model("resnet10t", pretrained=False).state_dict()
    weights = tmp_path / "resnet10t.pth"
    torch.save(initial, weights)
    out = tmp_path / "ft.ckpt"
    model_cfg = ModelConfig(method="cnn", num_labels=0, backbone="resnet10t", backbone_weights=str(weights))
    train_cfg = TrainConfig(epochs=2, batch_size=32, image_size=64, device="cpu", freeze_backbone=False, workers=0,
                            ema=0.9, threshold_tuning="none")
    cfg = train(synth_data, out, model_cfg, SequenceConfig(), DecodingConfig(), train_cfg, cache_dir=tmp_path / "c",
                log=lambda _m: None, show_progress=False)
    _, payload = load_checkpoint(out)
    trained = payload["state_dict"]["backbone.conv1.0.weight"]
    assert trained.shape == initial["conv1.0.weight"].shape
    assert not torch.allclose(trained, initial["conv1.0.weight"])
    assert not (tmp_path / "c").exists(), "fine-tuning must not cache features"

    _, last = load_checkpoint(last_path(out))
    assert last["epoch"] == 1
    if cfg.metrics["best_epoch"] == 2:
        for key, value in payload["state_dict"].items():
            assert torch.equal(value, last["ema_state"][key]), key
    raw = last["state_dict"]["backbone.conv1.0.weight"]
    assert not torch.allclose(raw, last["ema_state"]["backbone.conv1.0.weight"])

    model, best = model_from_checkpoint(out)
    split = CorelDataset(synth_data).read("train")
    val_idx, _ = validation_split(len(split.samples), train_cfg.val_fraction, train_cfg.seed)
    feats = compute_features(model, [split.samples[i].path for i in val_idx], best.preprocess)
    targets = multi_hot(split.label_ids(CorelDataset(synth_data).vocabulary), len(best.vocabulary))[val_idx]
    again = evaluate(predict_features(model, torch.from_numpy(feats), best.decode.greedy()), targets)
    assert again.per_class_f1 == pytest.approx(best.metrics["val"]["per_class/f1"], abs=1e-6)
