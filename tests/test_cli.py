"""The corel-train command: flags reach the checkpoint; bad input exits 2 with a one-line error."""
from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from corel_annotate.training.cli.train import app

runner = CliRunner()


def test_missing_data_dir_exits_2_with_one_line(tmp_path):
    result = runner.invoke(app, ["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "m.ckpt")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "absent" in lines[0] and "does not exist" in lines[0]


def test_strict_data_refuses_unknown_label(synth_data, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images").symlink_to(synth_data / "images")
    (bad / "vocabulary.txt").write_text((synth_data / "vocabulary.txt").read_text())
    samples = json.loads((synth_data / "train.json").read_text())["samples"]
    samples[0]["image_labels"] = ["no-such-label"]
    (bad / "train.json").write_text(json.dumps({"samples": samples}))
    result = runner.invoke(app, ["--data", str(bad), "--out", str(tmp_path / "m.ckpt"), "--strict-data", "--epochs", "1"])
    assert result.exit_code == 2
    assert "no-such-label" in result.output and "train.json" in result.output


def test_flags_reach_the_checkpoint(synth_data, feature_cache, tmp_path):
    out = tmp_path / "m.ckpt"
    result = runner.invoke(app, ["--data", str(synth_data), "--out", str(out), "--method", "ria", "--epochs", "2",
                                 "--image-size", "128", "--hidden-size", "64", "--ordering", "frequent-first",
                                 "--max-seq-len", "3", "--cache-dir", str(feature_cache), "--no-progress",
                                 "--allow-repeat", "--beam-width", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads(torch.load(out, weights_only=True)["config"])
    assert meta["model"]["hidden_size"] == 64
    assert meta["sequence"] == {**meta["sequence"], "ordering": "frequent-first", "max_seq_len": 3}
    assert meta["decode"]["forbid_repeat"] is False and meta["decode"]["beam_width"] == 2
    assert "test_beam2" in meta["metrics"]


def test_preset_picks_backbone_and_size_and_flags_override_it(synth_data, feature_cache, tmp_path):
    from corel_annotate.training.config import PRESETS, resolve_preset

    assert resolve_preset("accurate", None, None) == (PRESETS["accurate"].backbone, PRESETS["accurate"].image_size)
    assert resolve_preset("fast", None, 300) == (PRESETS["fast"].backbone, 300)
    out = tmp_path / "m.ckpt"
    result = runner.invoke(app, ["--data", str(synth_data), "--out", str(out), "--method", "cnn", "--epochs", "1",
                                 "--preset", "accurate", "--image-size", "96", "--train-top", "0",
                                 "--augment-views", "0", "--cache-dir", str(feature_cache), "--no-progress"])
    assert result.exit_code == 0, result.output
    meta = json.loads(torch.load(out, weights_only=True)["config"])
    assert meta["model"]["backbone"] == "tf_efficientnet_lite2" and meta["train"]["image_size"] == 96


def test_unknown_preset_exits_2(synth_data, tmp_path):
    result = runner.invoke(app, ["--data", str(synth_data), "--out", str(tmp_path / "m.ckpt"), "--preset", "huge"])
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.output


def test_backbone_from_keeps_the_adopted_backbone_and_trains_the_head(synth_data, feature_cache, tmp_path):
    common = ["--data", str(synth_data), "--image-size", "128", "--cache-dir", str(feature_cache), "--no-progress",
              "--augment-views", "1"]
    source = tmp_path / "cnn.ckpt"
    assert runner.invoke(app, common + ["--out", str(source), "--method", "cnn", "--epochs", "2"]).exit_code == 0
    out = tmp_path / "ria.ckpt"
    result = runner.invoke(app, common + ["--out", str(out), "--method", "ria", "--epochs", "3",
                                          "--backbone-from", str(source)])
    assert result.exit_code == 0, result.output
    src, ria = torch.load(source, weights_only=True), torch.load(out, weights_only=True)
    backbone = [k for k in src["state_dict"] if k.startswith("backbone.")]
    assert backbone and all(torch.equal(src["state_dict"][k], ria["state_dict"][k]) for k in backbone)
    from corel_annotate.training.backbones import build_backbone

    imagenet = build_backbone("tf_efficientnet_lite0")[0].state_dict()
    # the adopted backbone carries the source's trained top (conv_head), not ImageNet's
    assert not torch.equal(imagenet["conv_head.weight"], ria["state_dict"]["backbone.conv_head.weight"])
    meta = json.loads(ria["config"])
    assert meta["data"]["backbone_from"]["method"] == "cnn" and meta["train"]["epochs"] == 3
    assert meta["metrics"]["test"]["per_image/f1"] > 0.3


def test_backbone_from_refuses_another_split(synth_data, feature_cache, tmp_path):
    common = ["--data", str(synth_data), "--image-size", "128", "--cache-dir", str(feature_cache), "--no-progress",
              "--augment-views", "0", "--epochs", "1"]
    source = tmp_path / "cnn.ckpt"
    assert runner.invoke(app, common + ["--out", str(source), "--method", "cnn", "--seed", "7"]).exit_code == 0
    result = runner.invoke(app, common + ["--out", str(tmp_path / "ria.ckpt"), "--method", "ria",
                                          "--backbone-from", str(source)])
    assert result.exit_code == 2 and "same --seed" in result.output and "leak" in result.output
