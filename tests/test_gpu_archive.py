"""The prepared GPU archive job (benchmarks/gpu_archive.py) runs here on the CPU, as it will on a lent GPU:
its rows, its turning of EXIF orientations on the GPU path, and its refusal without a GPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from corel_annotate.benchmarks import gpu_archive
from corel_annotate.benchmarks.camera_files import CameraSpec, camera_files


@pytest.mark.parametrize("value", range(1, 9))
def test_the_gpu_path_turns_every_exif_orientation_as_pillow(value):
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = value
    img.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(img))
    turned = gpu_archive.upright(torch.from_numpy(pixels).permute(2, 0, 1), value).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(turned, expected)


def test_the_job_runs_on_the_cpu_and_reports_its_rows(bundles, synth_data, tmp_path):
    sources = sorted((synth_data / "images").iterdir())[:6]
    photos = camera_files(sources, CameraSpec(size=(640, 480), jpeg_mb=0.1), tmp_path)
    out = tmp_path / "gpu-archive.json"
    gpu_archive.main(["--bundle", str(bundles["attention"][1]), "--photos", str(photos[0].parent), "--out", str(out),
                      "--device", "cpu", "--batch", "4", "--rounds", "1"])
    result = json.loads(out.read_text())
    assert result["photos"] == 6 and result["decoder"] == "torchvision (CPU)"
    assert result["gpu_best_photos_per_s"] > 0 and result["cpu_photos_per_s"] > 0
    assert 0 <= result["labels_differ_from_cpu"] <= 6
    assert result["engine"].startswith("onnxruntime-cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the job would run")
def test_without_a_gpu_the_job_says_so(bundles, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_archive.main(["--bundle", str(bundles["attention"][1]), "--photos", str(tmp_path), "--out",
                          str(tmp_path / "o.json"), "--device", "cuda"])
