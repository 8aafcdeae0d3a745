"""The prepared GPU job (benchmarks/gpu_finetune.py): its runs are valid corel-train command lines, and its
half-precision transport restores float32 checkpoints.  A GPU is lent rarely and briefly, so a typo must fail
here, not there."""
from __future__ import annotations

import pytest
import torch
import typer

from corel_annotate.benchmarks import gpu_finetune
from corel_annotate.training.checkpoint import FORMAT, FORMAT_VERSION
from corel_annotate.training.cli.train import app


@pytest.mark.parametrize("name", list(gpu_finetune.RUNS))
def test_every_run_is_a_valid_corel_train_command(name, tmp_path):
    args, workers = gpu_finetune.RUNS[name]
    argv = ["--data", str(tmp_path), "-o", str(tmp_path / "x.ckpt"), "--workers", str(workers), "--device", "cuda",
            "--epochs", "20", *gpu_finetune.COMMON, *[a.replace("{glove}", str(tmp_path / "g.txt")) for a in args]]
    command = typer.main.get_command(app)
    ctx = command.make_context("corel-train", argv)   # raises on an unknown flag or a bad value
    assert ctx.params["freeze_backbone"] is False
    assert ctx.params["method"].value == args[args.index("--method") + 1]


def test_transport_halves_large_tensors_and_restores_float32(tmp_path):
    big = torch.randn(300, 200)
    state = {"w": big, "bn.running_var": torch.rand(16) * 1e-6, "bn.num_batches_tracked": torch.tensor(7)}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": "{}", "state_dict": state,
               "oof_scores": torch.rand(10, 3).half()}
    original = tmp_path / "a.ckpt"
    torch.save(payload, original)
    packed = tmp_path / "a.ckpt16"
    gpu_finetune.pack(original, packed)
    assert packed.stat().st_size < 0.6 * original.stat().st_size
    restored_path = tmp_path / "b.ckpt"
    gpu_finetune.unpack(packed, restored_path)
    restored = torch.load(restored_path, weights_only=True)
    assert restored["config"] == "{}" and "oof_scores" not in restored
    assert restored["state_dict"]["w"].dtype == torch.float32
    assert torch.allclose(restored["state_dict"]["w"], big, rtol=1e-3, atol=1e-3)
    assert not torch.equal(restored["state_dict"]["w"], big)      # it did travel in half precision
    assert torch.equal(restored["state_dict"]["bn.running_var"], state["bn.running_var"])  # small: exact
    assert torch.equal(restored["state_dict"]["bn.num_batches_tracked"], torch.tensor(7))


def test_large_packs_travel_in_parts_and_join_again(tmp_path, monkeypatch):
    import re

    monkeypatch.setattr(gpu_finetune, "PART", 50_000)
    state = {"w": torch.randn(200, 200)}   # 80 kB in float16
    original = tmp_path / "run.ckpt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "config": "{}", "state_dict": state}, original)
    out = tmp_path / "out"
    out.mkdir()
    written = gpu_finetune.pack(original, out / "run.ckpt16")
    assert [p.name for p in written] == ["run.ckpt16.part00", "run.ckpt16.part01"]
    assert all(p.stat().st_size <= 50_000 for p in written)
    gpu_finetune.main(["unpack", str(out), "--to", str(tmp_path / "back")])
    restored = torch.load(tmp_path / "back" / "run.ckpt", weights_only=True)["state_dict"]["w"]
    assert torch.allclose(restored, state["w"], rtol=1e-3, atol=1e-3)
    # every run's files come back from the lending machine, whose names allow nothing else
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f"{name}.ckpt16.part00") for name in gpu_finetune.RUNS)


def test_camera_jpegs_have_a_cameras_file_size():
    from io import BytesIO

    from PIL import Image

    (data,) = gpu_finetune.camera_jpegs(1)
    assert Image.open(BytesIO(data)).size == (4032, 3024)
    assert 2.5e6 < len(data) < 5.5e6
