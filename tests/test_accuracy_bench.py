"""corel-bench accuracy end to end on synthetic photos: rows trained, exported, scored by the runtime."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from corel_annotate.benchmarks.cli import app


def test_accuracy_bench_writes_the_table_and_runtime_matches_pytorch(synth_data, feature_cache, tmp_path):
    out = tmp_path / "acc"
    result = CliRunner().invoke(app, ["accuracy", "--data", str(synth_data), "--out-dir", str(out),
                                      "--rows", "cnn-bce,ria", "--epochs", "3", "--head-epochs", "4", "--image-size", "128",
                                      "--cache-dir", str(feature_cache), "--latency-images", "6"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "accuracy.json").read_text())
    # two-stage (the default): cnn-asl trains first, the other rows train their heads on its backbone
    assert [r["name"] for r in data["rows"]] == ["cnn-asl", "cnn-bce", "ria"]
    assert [r["epochs"] for r in data["rows"]] == [3, 4, 4]
    assert [r["train"]["backbone_from"] for r in data["rows"]] == ["", str(out / "cnn-asl.ckpt"), str(out / "cnn-asl.ckpt")]
    for row in data["rows"]:
        assert row["max_runtime_torch_gap"] is not None and row["max_runtime_torch_gap"] < 1e-6, row["name"]
        assert row["seconds_per_epoch"] > 0 and row["latency_ms"]["images"] == 6
        assert 0.0 <= row["runtime"]["per_class/f1"] <= 1.0
    assert data["rows"][1]["runtime"]["mAP"] is not None and data["rows"][2]["runtime"]["mAP"] is None
    assert data["linear_probe"]["metrics"]["per_class/f1"] > 0.3
    table = (out / "accuracy.md").read_text()
    assert "| cnn-bce" in table and "| ria" in table and "linear probe" in table
    assert (out / "accuracy.png").stat().st_size > 10_000
    assert "reference:" not in table  # the reference's rows belong to Corel-5k only
    assert "Mean per-label F1" in table and (out / "accuracy-labels.png").stat().st_size > 10_000
    for row in data["rows"] + [data["linear_probe"]]:
        view = row["per_label"]
        assert sum(b["labels"] for b in view["buckets"]) == 10  # every synthetic label lands in one bucket
        assert len(view["never_predicted"]) == view["labels_in_test"] - sum(
            b["labels_in_test"] - b["never_predicted"] for b in view["buckets"])
    assert (out / "cnn-bce.bundle" / "manifest.json").is_file()


def test_accuracy_bench_rejects_unknown_rows(tmp_path):
    result = CliRunner().invoke(app, ["accuracy", "--rows", "cnn-bce,nope", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown rows nope" in result.output


def test_backbones_bench_measures_each_candidate(synth_data, feature_cache, tmp_path):
    out = tmp_path / "bb"
    result = CliRunner().invoke(app, ["backbones", "--data", str(synth_data), "--out-dir", str(out), "--candidates",
                                      "tf_efficientnet_lite0@96,tf_efficientnet_lite0@128", "--epochs", "2",
                                      "--cache-dir", str(feature_cache), "--latency-images", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "backbones.json").read_text())
    assert [(r["backbone"], r["image_size"]) for r in data["rows"]] == [("tf_efficientnet_lite0", 96),
                                                                       ("tf_efficientnet_lite0", 128)]
    small, large = data["rows"]
    # the encoder's cost grows with the input area: (128/96)^2 = 1.78
    assert 1.6 < large["encoder_gflops"] / small["encoder_gflops"] < 1.9
    for r in data["rows"]:
        assert r["train"]["train_top"] == 0 and r["train"]["augment_views"] == 0 and r["train"]["image_size"] == r["image_size"]
        assert r["max_runtime_torch_gap"] < 1e-6
    assert "| tf_efficientnet_lite0 | 128 |" in (out / "backbones.md").read_text()


def test_backbones_bench_rejects_bad_candidates(tmp_path):
    result = CliRunner().invoke(app, ["backbones", "--candidates", "lite0", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "expected BACKBONE@SIZE" in result.output


def test_reference_rows_appear_on_corel5k_only():
    from corel_annotate.benchmarks.accuracy import markdown

    metrics = {"per_class/precision": 0.5, "per_class/recall": 0.4, "per_class/f1": 0.44, "per_image/precision": 0.6,
               "per_image/recall": 0.7, "per_image/f1": 0.65, "N+": 180, "mAP": 0.5}
    row = {"name": "cnn-asl", "runtime": metrics, "train_seconds": 120.0, "seconds_per_epoch": 8.0,
           "latency_ms": {"median": 6.0}, "max_runtime_torch_gap": 0.0}
    result = {"data": "corel5k", "test_images": 499, "num_labels": 260, "cpu_count": 2, "seconds": 60.0,
              "backbone": "tf_efficientnet_lite0", "rows": [row],
              "train_config": {"image_size": 224, "epochs": 15, "lr": 1e-3, "train_top": 2, "augment_views": 4,
                               "val_fraction": 0.1, "threshold_tuning": "f1"}}
    table = markdown(result)
    assert "| reference: ML-GCN + ASL (GPU) | 0.453 | 0.495 | 0.473 | 0.594 | 0.670 | 0.630 | 175 |" in table
    assert "| cnn-asl | 0.500 | 0.400 | **0.440** | 0.600 | 0.700 | **0.650** | 180 | 0.500 | 2.0 | 8.0 | 6.0 |" in table
    assert "reference:" not in markdown({**result, "num_labels": 5})
