"""Unattended runs: a corpus of bad files, kill -9 and --resume, decoder properties."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from hypothesis import given, settings, strategies as st
from PIL import Image

from conftest import REPO
from corpus import build_corpus
from corel_annotate.runtime.decoder_state import DecoderState
from corel_annotate.runtime.search import beam_search, greedy
from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.preprocessing import display_path, load_image, preprocess, preprocess_file


def run_infer(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


def test_corpus_of_bad_files(bundles, tmp_path):
    corpus = tmp_path / "corpus"
    expected = build_corpus(corpus)
    out = tmp_path / "results.jsonl"
    result = run_infer(corpus, "--model", bundles["cnn"][1], "-o", out, "--batch-size", "4")
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
    assert "loop" not in " ".join(by_name), "symlinked directory loops are not followed"


def test_orientation_and_colour_modes_match_between_training_and_runtime(tmp_path):
    expected = build_corpus(tmp_path / "c")
    config = PreprocessConfig(image_size=32)
    rotated = load_image(tmp_path / "c" / "exif-rotated.jpg")
    assert rotated.size == (72, 96), "EXIF orientation 6 turns a 96x72 photo upright"
    with Image.open(tmp_path / "c" / "exif-rotated.jpg") as raw:
        manual = raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(preprocess_file(tmp_path / "c" / "exif-rotated.jpg", config), preprocess(manual, config))
    for name in ("alpha.png", "palette.png", "gray16.png", "cmyk.jpg", "animated.gif"):
        assert expected[name] == "ok"
        arr = preprocess_file(tmp_path / "c" / name, config)
        assert arr.shape == (3, 32, 32) and np.isfinite(arr).all()
    white = load_image(tmp_path / "c" / "alpha.png")
    assert white.mode == "RGB"


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
    assert f"{before} of {len(images)}" in resumed.stderr or f"{before + 0} of" in resumed.stderr


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
