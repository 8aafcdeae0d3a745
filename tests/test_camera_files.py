"""Benchmark camera files: a camera's file size reached with noise, both encodings, EXIF-oriented ones upright."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from corel_annotate.benchmarks.camera_files import CameraSpec, camera_files, describe
from corel_annotate.runtime.preprocessing import load_image


def sources(tmp_path, count=4):
    out = []
    for i in range(count):
        y, x = np.mgrid[0:96, 0:128].astype(np.float32)
        arr = np.stack([x * 2, y * 2 + i * 10, 255 - x], axis=2)
        arr[:10, :20] = 255 * (i % 2)    # a mark in the top-left corner: where "up" is
        path = tmp_path / f"src{i}.png"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
        out.append(path)
    return out


def test_files_reach_the_target_size_in_both_encodings_and_read_upright(tmp_path):
    spec = CameraSpec(size=(800, 600), jpeg_mb=0.2, encoding="mixed", orientation_every=2)
    paths = camera_files(sources(tmp_path), spec, tmp_path / "out")
    info = describe(paths)
    smooth = describe(camera_files(sources(tmp_path), CameraSpec(size=(800, 600), jpeg_mb=None), tmp_path / "out"))
    assert abs(info["mean_mb"] - 0.2) < 0.2 * 0.2, info
    assert smooth["mean_mb"] < 0.5 * info["mean_mb"], "without noise the upscale compresses far better"
    assert info["progressive"] == 2 and info["exif_oriented"] == 2
    for i, p in enumerate(paths):
        with Image.open(p) as img:
            assert img.size == ((600, 800) if i % 2 else (800, 600)), "sideways files store the sensor's landscape"
        upright = np.asarray(load_image(p))
        assert upright.shape[:2] == (600, 800)
        corner = upright[:50, :100].mean()
        assert (corner > 200) == bool(i % 2), "the top-left mark is still top-left once turned upright"
    assert camera_files(sources(tmp_path), spec, tmp_path / "out") == paths, "kept and reused"


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="encoding"):
        CameraSpec(encoding="interlaced")
    with pytest.raises(ValueError, match="jpeg_mb"):
        CameraSpec(jpeg_mb=-1)
