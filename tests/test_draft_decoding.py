"""Decoding only the pixels the model needs: JPEG draft mode and reduce, recorded in the config."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig

from corel_annotate.runtime.preprocessing import load_image, preprocess, preprocess_file


def camera_photo(path, size=(2016, 1512), orientation: int | None = None, fmt: str = "JPEG") -> None:
    """A smooth photo-like image (gradients and blobs) at camera-like size."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / 97.0) * np.cos(y / 131.0)
    g = 128 + 90 * np.cos((x + y) / 173.0)
    b = 255 * (x / w) * (1 - y / h)
    image = Image.fromarray(np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8))
    kwargs = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(path, fmt, quality=92, **kwargs) if fmt == "JPEG" else image.save(path, fmt)


def test_draft_decodes_a_smaller_jpeg_that_still_covers_the_target(tmp_path):
    camera_photo(tmp_path / "cam.jpg")
    full = load_image(tmp_path / "cam.jpg")
    small = load_image(tmp_path / "cam.jpg", min_size=224)
    assert full.size == (2016, 1512)
    assert small.size == (504, 378), "DCT scale 1/4: the largest that keeps both sides >= 224"
    config = PreprocessConfig(image_size=224)
    a = preprocess(full, config)
    b = preprocess_file(tmp_path / "cam.jpg", PreprocessConfig(image_size=224, decode="draft"))
    assert a.shape == b.shape == (3, 224, 224)
    assert float(np.abs(a - b).mean()) < 0.01, "the model sees nearly the same pixels"


def test_draft_respects_exif_orientation(tmp_path):
    camera_photo(tmp_path / "rot.jpg", orientation=6)
    full = load_image(tmp_path / "rot.jpg")
    small = load_image(tmp_path / "rot.jpg", min_size=100)
    assert full.size == (1512, 2016) and small.width < small.height, "turned upright either way"
    assert min(small.size) >= 100
    config = PreprocessConfig(image_size=100)
    assert float(np.abs(preprocess(full, config) - preprocess(small, config)).mean()) < 0.01


def test_other_formats_are_reduced_by_a_whole_factor(tmp_path):
    camera_photo(tmp_path / "big.png", size=(1000, 700), fmt="PNG")
    small = load_image(tmp_path / "big.png", min_size=224)
    assert small.size == (334, 234)      # reduce(3): the largest factor keeping both sides >= 224
    assert load_image(tmp_path / "big.png").size == (1000, 700)


def test_small_photos_are_untouched_and_old_configs_decode_every_pixel(tmp_path):
    camera_photo(tmp_path / "small.jpg", size=(192, 128))
    assert load_image(tmp_path / "small.jpg", min_size=224).size == (192, 128)
    old = PreprocessConfig.from_dict({"image_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert old.decode == "full" and old.decode_size is None, "checkpoints and bundles from before keep their rule"
    with pytest.raises(ValueError, match="decode rule"):
        PreprocessConfig(decode="fast")


def test_new_checkpoints_and_bundles_record_the_draft_rule(bundles):
    import json

    for _, bundle in bundles.values():
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["preprocess"]["decode"] == "draft"
