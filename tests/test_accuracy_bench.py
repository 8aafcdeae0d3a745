"""corel-bench accuracy end to end on synthetic photos: rows trained, exported, scored by the runtime."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from benchmarks.cli import app


def test_accuracy_bench_writes_the_table_and_runtime_matches_pytorch(synth_data, feature_cache, tmp_path):
    out = tmp_path / "acc"
    result = CliRunner().invoke(app, ["accuracy", "--data", str(synth_data), "--out-dir", str(out),
                                      "--rows", "cnn-bce,ria", "--epochs", "3", "--image-size", "128", "--cache-dir", str(feature_cache),
                                      "--latency-images", "6"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "accuracy.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["cnn-bce", "ria"]
    for row in data["rows"]:
        assert row["max_runtime_torch_gap"] is not None and row["max_runtime_torch_gap"] < 1e-6, row["name"]
        assert row["epochs"] == 3 and row["seconds_per_epoch"] > 0 and row["latency_ms"]["images"] == 6
        assert 0.0 <= row["runtime"]["per_class/f1"] <= 1.0
    assert data["rows"][0]["runtime"]["mAP"] is not None and data["rows"][1]["runtime"]["mAP"] is None
    assert data["linear_probe"]["metrics"]["per_class/f1"] > 0.3
    table = (out / "accuracy.md").read_text()
    assert "| cnn-bce" in table and "| ria" in table and "linear probe" in table
    assert (out / "accuracy.png").stat().st_size > 10_000
    assert (out / "cnn-bce.bundle" / "manifest.json").is_file()


def test_accuracy_bench_rejects_unknown_rows(tmp_path):
    result = CliRunner().invoke(app, ["accuracy", "--rows", "cnn-bce,nope", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown rows nope" in result.output
