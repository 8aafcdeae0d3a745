"""The corel-train command: flags reach the checkpoint; bad input exits 2 with a one-line error."""
from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from training.cli import app

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
