"""corel-bench augmentation: paired runs with and without generated images, and their summary."""
from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from corel_annotate.benchmarks.augmentation import summarise
from corel_annotate.benchmarks.cli import app


def _run(data: str, seed: int, augmented: bool, f1: float, image_f1: float) -> dict:
    metrics = {"per_class/precision": f1, "per_class/recall": f1, "per_class/f1": f1, "per_image/precision": image_f1,
               "per_image/recall": image_f1, "per_image/f1": image_f1, "N+": 5}
    return {"data": data, "row": "sr-cnn-rnn", "seed": seed, "augmented": augmented, "fit_images": 10 + 3 * augmented,
            "generated_images": 3 * augmented, "runtime": metrics}


def test_summary_pairs_runs_by_seed():
    runs = [_run("a", 1, False, 0.80, 0.70), _run("a", 1, True, 0.85, 0.69), _run("a", 2, False, 0.90, 0.75),
            _run("a", 2, True, 0.88, 0.80), _run("a", 3, False, 0.70, 0.70), _run("b", 1, False, 0.5, 0.5)]
    a, b = summarise(runs)
    assert a["without"]["per_class/f1"]["mean"] == pytest.approx(0.8)
    assert a["without"]["per_class/f1"]["sd"] == pytest.approx(statistics.stdev([0.8, 0.9, 0.7]))
    assert a["with"]["per_class/f1"]["n"] == 2 and a["with"]["generated_images"] == 3
    assert a["delta"]["seeds"] == [1, 2]  # seed 3 has no pair
    assert a["delta"]["per_class/f1"]["mean"] == pytest.approx((0.05 - 0.02) / 2)
    assert a["delta"]["per_class/f1"]["min"] == pytest.approx(-0.02)
    assert a["delta"]["per_image/f1"]["max"] == pytest.approx(0.05)
    assert "with" not in b and "delta" not in b and b["without"]["per_class/f1"]["sd"] == 0.0


def test_augmentation_bench_end_to_end(synth_data, feature_cache, tmp_path):
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.training.wgan import WGANConfig, augment_dataset

    aug = tmp_path / "aug"
    cfg = WGANConfig(height=32, width=48, base_channels=8, iterations=1, n_critic=1, batch_size=2, per_image=1)
    augment_dataset(synth_data, aug, cfg, limit=30, device="cpu", log=lambda _m: None, show_progress=False)
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["augmentation", "--data", str(synth_data), "--augmented", str(aug),
                                      "--out-dir", str(out), "--rows", "cnn-bce", "--seeds", "1,5", "--epochs", "1",
                                      "--image-size", "128", "--cache-dir", str(feature_cache)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "augmentation.json").read_text())
    runs = {(r["seed"], r["augmented"]): r for r in data["runs"]}
    assert set(runs) == {(1, False), (1, True), (5, False), (5, True)}
    for seed in (1, 5):
        plain, mixed = runs[(seed, False)], runs[(seed, True)]
        assert plain["generated_images"] == 0 and 0 < mixed["generated_images"] <= 30
        assert mixed["fit_images"] == plain["fit_images"] + mixed["generated_images"]
        assert plain["max_runtime_torch_gap"] < 1e-6 and mixed["max_runtime_torch_gap"] < 1e-6
    (summary,) = data["summary"]
    deltas = [runs[(s, True)]["runtime"]["per_class/f1"] - runs[(s, False)]["runtime"]["per_class/f1"] for s in (1, 5)]
    assert summary["delta"]["per_class/f1"]["mean"] == pytest.approx(statistics.mean(deltas))
    table = (out / "augmentation.md").read_text()
    assert table.count("| cnn-bce |") == 2 and "Δ F1 (class)" in table
    assert len(CorelDataset(aug).read("train_aug").samples) == 30


def test_augmentation_bench_rejects_bad_seeds(tmp_path):
    result = CliRunner().invoke(app, ["augmentation", "--data", str(tmp_path), "--augmented", str(tmp_path),
                                      "--seeds", "1,x", "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--seeds" in result.output
