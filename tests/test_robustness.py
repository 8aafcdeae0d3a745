"""Unattended runs: a corpus of bad files, kill -9 and --resume, decoder properties."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from conftest import REPO
from corpus import build_corpus, unprivileged
from corel_annotate.runtime.decoder_state import DecoderState
from corel_annotate.runtime.search import beam_search, greedy
from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.preprocessing import display_path, load_image, preprocess, preprocess_file, to_rgb


def run_infer(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture
def open_dir():
    """A folder others may enter (pytest's own temporary folders are private to their owner): for the
    corpus an unprivileged ``corel-infer`` reads."""
    path = Path(tempfile.mkdtemp(prefix="corel-corpus-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_corpus_of_bad_files(bundles, open_dir):
    corpus = open_dir / "corpus"
    expected = build_corpus(corpus)
    bundle = shutil.copytree(bundles["cnn"][1], open_dir / "cnn.bundle")
    out_dir = open_dir / "out"
    out_dir.mkdir(mode=0o777)
    out_dir.chmod(0o777)
    subprocess.run(["chmod", "-R", "a+rX", str(bundle)], check=True)
    out = out_dir / "results.jsonl"
    cmd = unprivileged([sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(corpus), "--model", str(bundle),
                        "-o", str(out), "--batch-size", "4", "--no-progress"])
    if cmd is None:
        pytest.skip("running as root without setpriv: locked.jpg cannot be made unreadable")
    env = {**os.environ, "HOME": str(out_dir), "XDG_CACHE_HOME": str(out_dir)}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    by_name = {}
    for r in records:
        name = os.path.relpath(r["image"], display_path(corpus))
        assert name not in by_name, f"{name} has two records"
        by_name[name] = r
    wanted = {display_path(n): s for n, s in expected.items()}
    assert set(by_name) == set(wanted)
    for name, status in wanted.items():
        assert by_name[name]["status"] == status, (name, by_name[name])
        if status == "error":
            reason = by_name[name]["error"]
            assert "\n" not in reason and os.path.basename(name) in reason
        else:
            assert isinstance(by_name[name]["labels"], list)
    locked = by_name["locked.jpg"]["error"]
    assert locked.startswith(f"{corpus / 'locked.jpg'}: ") and "Permission denied" in locked, locked
    assert "loop" not in " ".join(by_name), "symlinked directory loops are not followed"


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The pixel rule for transparency, in numpy: round((c*a + 255*(255-a)) / 255)."""
    c, a = rgb.astype(np.int64), alpha.astype(np.int64)[..., None]
    return np.floor((c * a + 255 * (255 - a)) / 255 + 0.5).astype(np.int64)


def assert_pixels(got: Image.Image, expected: np.ndarray, tol: int = 0, what: str = "") -> None:
    arr = np.asarray(got)
    assert got.mode == "RGB" and arr.shape == expected.shape, (what, got.mode, arr.shape, expected.shape)
    diff = np.abs(arr.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= tol, f"{what}: max difference {diff.max()} (allowed {tol})"


def test_orientation_and_colour_modes_match_between_training_and_runtime(tmp_path):
    expected = build_corpus(tmp_path / "c")
    corpus = tmp_path / "c"
    rotated = load_image(corpus / "exif-rotated.jpg")
    assert rotated.size == (72, 96), "EXIF orientation 6 turns a 96x72 photo upright"
    with Image.open(corpus / "exif-rotated.jpg") as raw:
        manual = np.rot90(np.asarray(raw.convert("RGB")), k=-1)   # orientation 6: turn 90 degrees clockwise
    assert_pixels(rotated, manual, what="exif-rotated.jpg")
    config = PreprocessConfig(image_size=32)
    assert np.array_equal(preprocess_file(corpus / "exif-rotated.jpg", config),
                          preprocess(Image.fromarray(np.ascontiguousarray(manual)), config))
    for name in ("alpha.png", "palette.png", "palette-transparent.png", "gray.png", "gray16.png", "cmyk.jpg",
                 "animated.gif"):
        assert expected[name] == "ok"
    # the corpus's own lossless files, against the samples stored in them (read raw, without any conversion)
    with Image.open(corpus / "alpha.png") as raw:
        assert raw.mode == "RGBA"
        stored = np.asarray(raw)
    assert_pixels(load_image(corpus / "alpha.png"), composite_on_white(stored[..., :3], stored[..., 3]), 1, "alpha.png")
    for name in ("palette.png", "animated.gif"):
        with Image.open(corpus / name) as raw:
            assert raw.mode == "P"
            table = np.asarray(raw.getpalette("RGB"), dtype=np.int64).reshape(-1, 3)
            lookup = table[np.asarray(raw)]
        assert_pixels(load_image(corpus / name), lookup, 0, name)
    with Image.open(corpus / "palette-transparent.png") as raw:
        assert raw.mode == "P" and raw.info["transparency"] == 0
        index = np.asarray(raw)
        table = np.asarray(raw.getpalette("RGB"), dtype=np.int64).reshape(-1, 3)
    assert (index == 0).any(), "some pixels use the transparent entry"
    want = np.where((index == 0)[..., None], 255, table[index])
    assert_pixels(load_image(corpus / "palette-transparent.png"), want, 1, "palette-transparent.png")
    with Image.open(corpus / "gray.png") as raw:
        grey = np.asarray(raw)
    assert_pixels(load_image(corpus / "gray.png"), np.repeat(grey[..., None], 3, axis=2), 0, "gray.png")
    samples = (np.arange(96 * 72).reshape(72, 96) * 9).astype(np.uint16)   # what build_corpus wrote to gray16.png
    assert_pixels(load_image(corpus / "gray16.png"), np.repeat((samples >> 8)[..., None], 3, axis=2), 0, "gray16.png")
    with Image.open(corpus / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
        cmyk = np.asarray(raw).astype(np.int64)
    want = np.floor((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255 + 0.5)
    assert_pixels(load_image(corpus / "cmyk.jpg"), want, 1, "cmyk.jpg")


def test_pixel_rules_on_images_written_here(tmp_path):
    """Each colour mode's rule, on samples this test chose: the runtime's RGB against numpy, both through
    ``load_image`` and through ``preprocess_file`` at the photo's own size (the resize is the identity)."""
    rng = np.random.default_rng(3)
    size = 16
    uint8 = PreprocessConfig(image_size=size, input_dtype="uint8", layout="NHWC")
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (size, size), dtype=np.uint8)
    alpha[0, :4] = (0, 255, 1, 254)
    cases = {"rgba.png": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), composite_on_white(rgb, alpha), 1)}
    grey, grey_alpha = rgb[..., 0], alpha
    cases["la.png"] = (Image.fromarray(np.dstack([grey, grey_alpha]), "LA"),
                       composite_on_white(np.repeat(grey[..., None], 3, axis=2), grey_alpha), 1)
    cases["l.png"] = (Image.fromarray(grey, "L"), np.repeat(grey[..., None], 3, axis=2), 0)
    table = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (size, size), dtype=np.uint8)
    pal = Image.fromarray(index, "P")
    pal.putpalette(table.ravel().tolist())
    cases["p.png"] = (pal, table[index], 0)
    cases["p-transparent.png"] = (pal, np.where((index == index[0, 0])[..., None], 255, table[index]), 1)
    cmyk = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    cmyk[0, :3] = ((0, 0, 0, 0), (255, 255, 255, 255), (100, 30, 200, 128))
    c = cmyk.astype(np.int64)
    cases["cmyk.tiff"] = (Image.fromarray(cmyk, "CMYK"), np.floor((255 - c[..., :3]) * (255 - c[..., 3:]) / 255 + 0.5), 1)
    dark = rng.integers(0, 256, (size, size), dtype=np.uint16)
    dark[0, 0] = 255
    cases["dark16.png"] = (Image.fromarray(dark), np.zeros((size, size, 3)), 0)   # high byte 0: black, not stretched
    bright = rng.integers(0, 65536, (size, size), dtype=np.uint16)
    bright[0, :4] = (0, 255, 256, 65535)
    cases["bright16.png"] = (Image.fromarray(bright), np.repeat((bright >> 8)[..., None], 3, axis=2), 0)
    for name, (img, want, tol) in cases.items():
        path = tmp_path / name
        img.save(path, **({"transparency": int(index[0, 0])} if name == "p-transparent.png" else {}))
        with Image.open(path) as raw:   # the file really holds the mode under test (16-bit PNG opens as I;16 or I)
            assert raw.mode.startswith("I") if img.mode.startswith("I") else raw.mode == img.mode, (name, raw.mode)
        assert_pixels(load_image(path), want, tol, name)
        tensor = preprocess_file(path, uint8)
        assert tensor.dtype == np.uint8 and tensor.shape == (size, size, 3)
        assert np.abs(tensor.astype(np.int64) - want).max() <= tol, name
    assert np.array_equal(np.asarray(load_image(tmp_path / "dark16.png")), np.zeros((size, size, 3), np.uint8))
    floats = tmp_path / "float.tiff"
    Image.fromarray(rng.random((size, size), dtype=np.float32), "F").save(floats)
    with Image.open(floats) as raw:
        assert raw.mode == "F"
        with pytest.raises(ValueError, match="floating-point") as refused:
            to_rgb(raw)
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match=r"float\.tiff: .*floating-point") as refused:
        load_image(floats)
    assert "\n" not in str(refused.value)


def test_kill_and_resume_annotates_every_image_once(bundles, synth_data, tmp_path):
    images = sorted((synth_data / "images").iterdir())[:200]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, images)) + "\n")
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(listing), "--model", str(bundles["attention"][1]), "-o",
           str(out), "--batch-size", "1", "--no-progress", "--beam-width", "3"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = out.read_bytes().count(b"\n")
    assert 20 <= before < len(images), "the run must be killed part-way"
    with out.open("ab") as fh:
        fh.write(b'{"image": "' + str(images[-1]).encode() + b'", "stat')
    refused = run_infer(listing, "--model", bundles["attention"][1], "-o", out)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_infer(listing, "--model", bundles["attention"][1], "-o", out, "--resume", "--beam-width", "3")
    assert resumed.returncode == 0, resumed.stderr
    names = [json.loads(line)["image"] for line in out.read_text().splitlines()]
    assert sorted(names) == sorted(map(str, images))
    assert f"resuming: {before} of {len(images)} images already have a record" in resumed.stderr


class RandomStep:
    """A small random recurrent step in numpy: enough structure for decoder properties."""

    def __init__(self, seed: int, labels: int, hidden: int = 6) -> None:
        rng = np.random.default_rng(seed)
        self.emb = rng.normal(0, 1.5, (labels + 2, hidden))
        self.rec = rng.normal(0, 1.0, (hidden, hidden))
        self.out = rng.normal(0, 2.0, (hidden, labels + 1))

    def __call__(self, tokens, state):
        h = np.tanh(state.rows["h"] @ self.rec + self.emb[tokens])
        logits = h @ self.out
        logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return logp.astype(np.float32), state.with_rows({"h": h}), None


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), labels=st.integers(1, 7), batch=st.integers(1, 5), max_len=st.integers(1, 5),
       width=st.integers(1, 6), forbid=st.booleans(), penalty=st.sampled_from([0.0, 0.6, 1.0]),
       min_labels=st.integers(0, 2))
def test_decoder_properties(seed, labels, batch, max_len, width, forbid, penalty, min_labels):
    step = RandomStep(seed, labels)
    min_labels = min(min_labels, max_len, labels if forbid else max_len)
    h0 = np.random.default_rng(seed + 1).normal(size=(batch, 6))
    config = DecodingConfig(max_len=max_len, beam_width=width, forbid_repeat=forbid, length_penalty=penalty,
                            min_labels=min_labels)
    search = beam_search if width > 1 else greedy
    results = search(step, DecoderState.start({"h": h0}, {}), config, labels)
    assert len(results) == batch
    for r in results:
        assert min_labels <= len(r.labels) <= max_len
        assert all(0 <= x < labels for x in r.labels), "stop or start never appears among the labels"
        if forbid:
            assert len(set(r.labels)) == len(r.labels)
            assert len(r.labels) <= labels
        assert all(0.0 < s <= 1.0 for s in r.scores) and len(r.scores) == len(r.labels)
        assert r.logprob <= 1e-6
    if not penalty:   # without a length penalty a one-wide beam stops where greedy does
        one = beam_search(step, DecoderState.start({"h": h0}, {}), config.greedy(), labels)
        assert [r.labels for r in one] == [r.labels for r in greedy(step, DecoderState.start({"h": h0}, {}), config.greedy(), labels)]
