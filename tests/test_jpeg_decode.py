"""The one-call JPEG decode (simplejpeg) gives Pillow's draft pixels exactly, for every JPEG kind a camera,
phone or editor writes; what it does not take (CMYK, multi-picture files, bad data) goes through Pillow."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from corel_annotate.runtime import preprocessing
from corel_annotate.runtime.preprocessing import _turbo_decode, draft_scale, read_image

pytestmark = pytest.mark.runtime


def noisy_photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Gradients plus grain: a picture whose every 8x8 block differs, so a changed IDCT or upsampling shows."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0), 255 * x / w, 255 * (1 - y / h)], axis=2)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, orientation: int = 1, **options) -> bytes:
    buf = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    img.save(buf, "JPEG", quality=options.pop("quality", 90), **options)
    return buf.getvalue()


KINDS = {
    "baseline 4:2:0": ((2016, 1512), {}),
    "baseline 4:4:4": ((2016, 1512), {"subsampling": 0}),
    "baseline 4:2:2": ((2016, 1512), {"subsampling": 1}),
    "progressive": ((2016, 1512), {"progressive": True}),
    "optimised Huffman tables": ((1600, 1200), {"optimize": True}),
    "odd size, partial blocks": ((1001, 757), {}),
    "odd size, progressive 4:4:4": ((1003, 755), {"progressive": True, "subsampling": 0}),
    "smaller than the model input": ((200, 150), {}),
    "grey": ((1200, 900), {"grey": True}),
}


def pillow_pixels(data: bytes, min_size: int | None, monkeypatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(preprocessing, "turbo_available", lambda: False)
        return np.asarray(read_image(io.BytesIO(data), "photo.jpg", min_size=min_size))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("min_size", [224, None])
def test_one_call_decode_equals_pillow_draft_pixels(kind, min_size, monkeypatch):
    size, options = KINDS[kind]
    options = dict(options)
    img = noisy_photo(size, seed=len(kind))
    if options.pop("grey", False):
        img = img.convert("L")
    data = jpeg(img, **options)
    with Image.open(io.BytesIO(data)) as header:
        fast = _turbo_decode(header, io.BytesIO(data), min_size)
    assert fast is not None, f"{kind}: taken by the one-call path"
    s = draft_scale(size, min_size)
    assert fast.size == ((size[0] + s - 1) // s, (size[1] + s - 1) // s)
    ours = np.asarray(read_image(io.BytesIO(data), "photo.jpg", min_size=min_size))
    np.testing.assert_array_equal(ours, pillow_pixels(data, min_size, monkeypatch), err_msg=kind)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_turned_as_pillow_turns_it(orientation, monkeypatch, tmp_path):
    data = jpeg(noisy_photo((1344, 1008), seed=orientation), orientation=orientation)
    ours = np.asarray(read_image(io.BytesIO(data), "photo.jpg", min_size=224))
    np.testing.assert_array_equal(ours, pillow_pixels(data, 224, monkeypatch))
    assert (ours.shape[0] > ours.shape[1]) == (orientation >= 5), "5-8 turn the picture a quarter"
    (tmp_path / "p.jpg").write_bytes(data)     # a path reads the same as bytes
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "p.jpg", "p.jpg", min_size=224)), ours)


def test_draft_scale_is_pillows_choice():
    for size in [(4032, 3024), (2016, 1512), (1000, 700), (447, 448), (448, 448), (200, 150), (3024, 4032)]:
        with Image.open(io.BytesIO(jpeg(noisy_photo(size)))) as img:
            img.draft(None, (224, 224))
            assert img.size == tuple((v + draft_scale(size, 224) - 1) // draft_scale(size, 224) for v in size), size
    assert draft_scale((4032, 3024), 224) == 8 and draft_scale((4032, 3024), None) == 1


def test_what_the_one_call_path_does_not_take_goes_through_pillow(monkeypatch):
    cmyk = jpeg(noisy_photo((800, 600)).convert("CMYK"))
    with Image.open(io.BytesIO(cmyk)) as header:
        assert _turbo_decode(header, io.BytesIO(cmyk), 224) is None, "CMYK: Pillow's inversion rule"
    np.testing.assert_array_equal(np.asarray(read_image(io.BytesIO(cmyk), "c.jpg", min_size=224)),
                                  pillow_pixels(cmyk, 224, monkeypatch))
    png = io.BytesIO()
    noisy_photo((800, 600)).save(png, "PNG")
    with Image.open(io.BytesIO(png.getvalue())) as header:
        assert _turbo_decode(header, io.BytesIO(png.getvalue()), 224) is None


def test_a_truncated_jpeg_gets_pillows_reason():
    data = jpeg(noisy_photo((1200, 900)))
    with pytest.raises(ValueError, match=r"^cut\.jpg: cannot read image \(image file is truncated"):
        read_image(io.BytesIO(data[: len(data) // 2]), "cut.jpg", min_size=224)


def mpo(primary_size=(2400, 1800), preview_size=(800, 600), orientation: int = 1, retype: bool = True) -> bytes:
    """A camera-like multi-picture JPEG: the photo and a large preview of it."""
    from corel_annotate.benchmarks.camera_files import with_large_preview

    img = noisy_photo(primary_size, seed=3)
    options = {"quality": 90}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    if not retype:     # Pillow's own MPO: the second picture's type is "undefined", not a preview
        buf = io.BytesIO()
        img.save(buf, "MPO", save_all=True, append_images=[img.resize(preview_size)], **options)
        return buf.getvalue()
    return with_large_preview(img, preview_size, **options)


def test_previews_are_read_only_when_asked_and_only_when_they_cover_the_input():
    data = mpo()
    full = read_image(io.BytesIO(data), "p.jpg", min_size=224)
    preview = read_image(io.BytesIO(data), "p.jpg", min_size=224, preview_size=224)
    assert full.size == (300, 225), "the primary picture at 1/8: the bundle's rule, the default"
    assert preview.size == (400, 300), "the 800x600 preview at 1/2"
    assert float(np.abs(np.asarray(preview.resize((224, 224)), dtype=np.float32)
                        - np.asarray(full.resize((224, 224)), dtype=np.float32)).mean()) < 8, "the same picture"
    assert read_image(io.BytesIO(data), "p.jpg", min_size=224, preview_size=640).size == (300, 225), \
        "a preview smaller than asked is not used"
    assert read_image(io.BytesIO(mpo(retype=False)), "p.jpg", min_size=224, preview_size=224).size == (300, 225), \
        "a second picture that is not typed as a preview (a stereo pair's other eye) is not used"
    assert read_image(io.BytesIO(mpo(preview_size=(800, 450))), "p.jpg", min_size=224,
                      preview_size=224).size == (300, 225), "a preview of another shape (cropped to 16:9) is not used"
    turned = read_image(io.BytesIO(mpo(orientation=6)), "p.jpg", min_size=224, preview_size=224)
    assert turned.size == (300, 400), "the preview is turned upright like the photo"


def test_corel_infer_previews_reach_the_tensor_and_stay_local(tmp_path):
    from typer.testing import CliRunner

    from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
    from corel_annotate.runtime.cli.infer import infer_app
    from corel_annotate.runtime.photos import prefetch_batches
    from corel_annotate.runtime.preprocessing import preprocess

    data = mpo()
    (tmp_path / "p.jpg").write_bytes(data)
    config = PreprocessConfig(image_size=224, decode="draft")
    for previews, expected in [(True, read_image(io.BytesIO(data), "p", min_size=224, preview_size=224)),
                               (False, read_image(io.BytesIO(data), "p", min_size=224))]:
        for paths in ([tmp_path / "p.jpg"], [tmp_path / "p.jpg"] * 3):     # in this thread, and in the pool
            batch = next(prefetch_batches(paths, config, 3, previews=previews))
            np.testing.assert_array_equal(batch.array[0], preprocess(expected, config))
    result = CliRunner().invoke(infer_app, [str(tmp_path / "p.jpg"), "-m", str(tmp_path), "--previews", "--ray"])
    assert result.exit_code == 2 and "--previews reads previews in this process" in result.output
