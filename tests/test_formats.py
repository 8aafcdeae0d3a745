"""iPhone, camera and modern formats: HEIC (pillow-heif), AVIF (Pillow) and camera RAW (a DNG written
here with tifffile, read by rawpy through its embedded preview) annotate like the same picture saved as
PNG, by every path a photo takes (a file, or its bytes as the Triton model and Ray receive them); and
files we do not read are named, not hidden."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.photos import collect_paths, photo_tensor
from corel_annotate.runtime.preprocessing import heif_available

if not os.environ.get("CI"):   # in CI the dev extra installs it, and a missing one must fail
    pytest.importorskip("pillow_heif")
    pytest.importorskip("rawpy")
    pytest.importorskip("tifffile")
FORMATS = {"heic": {"quality": 95, "chroma": 444}, "avif": {"quality": 95, "subsampling": "4:4:4"}}
JPEG = {"quality": 95, "subsampling": 0}   # the same quality and full chroma: the yardstick for lossy formats
PIXEL_TOLERANCE = 4 / 255    # mean absolute difference of the model input, in [0, 1] pixel units


@pytest.fixture(scope="module")
def pictures(synth_data, tmp_path_factory) -> dict[str, list[Path]]:
    """Six synthetic photos, each saved as PNG, JPEG, HEIC, AVIF and DNG."""
    assert heif_available()
    root = tmp_path_factory.mktemp("formats")
    out: dict[str, list[Path]] = {"png": [], "jpg": [], "dng": [], **{f: [] for f in FORMATS}}
    for src in sorted((synth_data / "images").glob("*.jpeg"))[:6]:
        image = Image.open(src).convert("RGB")
        out["png"].append(root / f"{src.stem}.png")
        image.save(out["png"][-1])
        for fmt, options in {**FORMATS, "jpg": JPEG}.items():
            out[fmt].append(root / f"{src.stem}.{fmt}")
            image.save(out[fmt][-1], **options)
        out["dng"].append(root / f"{src.stem}.dng")
        write_dng(out["dng"][-1], np.asarray(image))
    return out


def write_dng(path: Path, rgb: np.ndarray) -> None:
    """A DNG as cameras write them: IFD 0 the camera's rendered preview (here the picture itself,
    uncompressed), a sub-IFD the raw sensor mosaic (RGGB, 12 bits)."""
    import tifffile

    mosaic = np.zeros(rgb.shape[:2], np.uint16)
    for (dy, dx), channel in {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}.items():
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel].astype(np.uint16) * 16
    identity = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb, photometric="rgb", subfiletype=1, subifds=1,
                  extratags=[(50706, "B", 4, (1, 4, 0, 0), True),          # DNGVersion
                             (50708, "s", 0, "corel-annotate test", True),  # UniqueCameraModel
                             (50721, "2i", 9, identity, True)])             # ColorMatrix1
        tif.write(mosaic, photometric=32803, subfiletype=0,                 # CFA
                  extratags=[(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True),
                             (50717, "I", 1, 4095, True)])                  # CFA pattern, WhiteLevel


def test_the_files_really_are_heic_avif_and_raw(pictures) -> None:
    import rawpy

    assert {Image.open(p).format for p in pictures["heic"]} == {"HEIF"}
    assert {Image.open(p).format for p in pictures["avif"]} == {"AVIF"}
    with rawpy.imread(str(pictures["dng"][0])) as raw:   # LibRaw sees the sensor mosaic, not an RGB picture
        assert raw.raw_type == rawpy.RawType.Flat and raw.raw_image.shape == Image.open(pictures["png"][0]).size[::-1]


def test_raw_photos_are_read_by_their_embedded_preview(bundles, pictures, tmp_path) -> None:
    """The camera's own rendering is what a RAW annotates by: the same pixels as the PNG, by file and by bytes."""
    annotator = Annotator.load(bundles["ml-gcn"][1], device="cpu", precision="fp32")
    config = annotator.preprocess_config
    for png, dng in zip(pictures["png"], pictures["dng"]):
        from_file = photo_tensor(dng, config)
        assert not isinstance(from_file, str), from_file
        np.testing.assert_array_equal(from_file, photo_tensor(png, config))
        np.testing.assert_array_equal(from_file, photo_tensor((dng, dng.read_bytes()), config))
    broken = tmp_path / "broken.dng"
    broken.write_bytes(pictures["dng"][0].read_bytes()[:300])
    reason = photo_tensor(broken, config)
    assert isinstance(reason, str) and reason.startswith(f"{broken}: cannot read image (cannot read RAW")


def _score_gaps(annotator: Annotator, pictures: dict[str, list[Path]], fmt: str) -> list[float]:
    """Per photo, the largest change of any label's score from the PNG to ``fmt``."""
    config = annotator.preprocess_config
    gaps = []
    for png, other in zip(pictures["png"], pictures[fmt]):
        scores = annotator.scores(np.stack([photo_tensor(png, config), photo_tensor(other, config)]))
        gaps.append(float(np.abs(scores[0] - scores[1]).max()))
    return gaps


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_heic_and_avif_annotate_like_png(bundles, pictures, fmt) -> None:
    """Every path reads the same pixels (a file, or its bytes as the Triton model and Ray get them),
    close to the PNG's; and the scores move from the PNG's no more than a JPEG of the same quality
    moves them (with a floor of 0.02 for codecs better than JPEG)."""
    annotator = Annotator.load(bundles["ml-gcn"][1], device="cpu", precision="fp32")
    config = annotator.preprocess_config
    for png, other in zip(pictures["png"], pictures[fmt]):
        from_file = photo_tensor(other, config)
        assert not isinstance(from_file, str), from_file
        np.testing.assert_array_equal(from_file, photo_tensor((other, other.read_bytes()), config))
        assert config.input_dtype == "uint8"   # 8-bit pixels, compared in units of 1/255
        pixels = np.abs(from_file.astype(np.float32) - photo_tensor(png, config).astype(np.float32)) / 255
        assert float(pixels.mean()) < PIXEL_TOLERANCE, (other.name, float(pixels.mean()))
    gaps, jpeg = _score_gaps(annotator, pictures, fmt), _score_gaps(annotator, pictures, "jpg")
    assert max(gaps) <= max(1.5 * max(jpeg), 0.02), (fmt, gaps, jpeg)
    assert np.mean(gaps) <= max(1.5 * np.mean(jpeg), 0.01), (fmt, gaps, jpeg)


def test_corel_infer_reads_them_and_names_what_it_skips(bundles, pictures, tmp_path) -> None:
    folder = pictures["png"][0].parent
    (folder / "clip.mov").write_bytes(b"\0" * 16)
    (folder / "notes.xmp").write_text("<x/>", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(folder), "--model",
                             str(bundles["ml-gcn"][1]), "-o", str(out), "--no-progress", "--device", "cpu",
                             "--precision", "fp32"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(Path(r["image"]).suffix for r in got) == sorted([".png", ".jpg", ".heic", ".avif", ".dng"] * 6)
    assert all(r["status"] == "ok" for r in got)
    assert "skipped 1 files that are not photos corel-infer reads: .mov (1)" in result.stderr
    skipped: Counter = Counter()
    assert len(collect_paths([folder], skipped)) == 30
    assert dict(skipped) == {".mov": 1}
