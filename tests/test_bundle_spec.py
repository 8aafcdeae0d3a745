"""The bundle specification (``docs/bundle-format.md``) held to the code: its field and rules tables
are the ones generated from the schema, and every worked number it states is what our runtime gives.
The expected numbers here are worked by hand from the spec's formulas, never by the code under test."""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.runtime.bundle.manifest import MemorySpec
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.bundle.schema import (SPEC_FILE, doc_tables, generated_tables, main as schema_main,
                                                  manifest_schema, markdown_table, with_tables)
from corel_annotate.runtime.decoder_state import DecoderState
from corel_annotate.runtime.memory import blend_scores, interpolate_log_probs
from corel_annotate.runtime.preprocessing import load_image, preprocess, to_rgb
from corel_annotate.runtime.scoring import select_labels, sigmoid
from corel_annotate.runtime.search import beam_search, greedy

SPEC = REPO / "docs" / "bundle-format.md"


# --- the spec and the schema say the same thing --------------------------------------------------------
def test_the_spec_tables_are_generated_from_the_schema_and_the_rules():
    assert SPEC_FILE == SPEC
    text = SPEC.read_text(encoding="utf-8")
    assert doc_tables(text) == generated_tables(), "run python -m corel_annotate.runtime.bundle.schema --doc"
    assert schema_main(["--doc", "--check"]) == 0


def test_a_stale_table_is_caught():
    text = SPEC.read_text(encoding="utf-8")
    broken = text.replace("| `preprocess.image_size` | integer ≥ 8 |", "| `preprocess.image_size` | integer ≥ 16 |")
    assert broken != text
    assert doc_tables(broken) != generated_tables()
    assert with_tables(broken) == text        # --doc puts it back
    with pytest.raises(ValueError, match="schema-table"):
        doc_tables(text.replace("<!-- schema-table:end -->", ""))


def test_every_manifest_field_is_described_in_the_schema_and_the_table():
    schema = manifest_schema()
    objects = [("", schema)] + [(name, node) for name, node in schema["$defs"].items()]
    for name, node in objects:
        for field, prop in node["properties"].items():
            assert prop.get("description", "").strip(), f"{name or 'manifest'}.{field} has no description"
    table = markdown_table(schema)
    for field in schema["properties"]:
        assert f"| `{field}` |" in table
    assert "| `sequence.decoding.beam_width` | integer ≥ 1 | no (default `1`) |" in table
    assert "| `scoring.top_k` | integer ≥ 1 or null | no (default `null`) |" in table


def test_the_spec_says_rfc_2119_and_names_every_section():
    text = SPEC.read_text(encoding="utf-8")
    assert "RFC 2119" in text
    for section in ("## The folder", "## The manifest", "## Graphs", "## Pixels", "## The encoder input",
                    "## Scores bundles", "## Sequence bundles", "## Label memory", "## Conformance", "## Changes"):
        assert section in text
    assert "**2026-12-04, pixel rules (every format version).**" in text


# --- pixels ------------------------------------------------------------------------------------------------
def _grey16(values: list[int]) -> Image.Image:
    return Image.frombytes("I;16", (len(values), 1), np.asarray(values, "<u2").tobytes())


def _png(img: Image.Image, path: Path, **options) -> Path:
    img.save(path, **options)
    return path


def test_16_bit_samples_keep_their_high_byte(tmp_path):
    # s >> 8: 0, 255 -> 0, 256 -> 1, 32768 -> 128, 40000 -> 156 (40000 / 256 = 156.25), 65535 -> 255
    values = [0, 255, 256, 32768, 40000, 65535]
    want = [0, 0, 1, 128, 156, 255]
    assert np.asarray(to_rgb(_grey16(values)))[0].tolist() == [[v, v, v] for v in want]
    path = _png(_grey16(values), tmp_path / "grey16.png")
    assert np.asarray(load_image(path))[0, :, 0].tolist() == want


def test_a_dark_16_bit_photo_stays_dark(tmp_path):
    # every sample at most 255: its high byte is 0 (before 2026-12-04 it was read as 8-bit)
    path = _png(_grey16([0, 17, 128, 255]), tmp_path / "dark16.png")
    assert np.asarray(load_image(path)).max() == 0


def _png16_rgb(rgb: list[tuple[int, int, int]]) -> bytes:
    """A one-row 16-bit RGB PNG, written byte by byte."""
    raw = b"\x00" + np.asarray(rgb, ">u2").tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", len(rgb), 1, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16_bit_rgb_samples_keep_their_high_byte(tmp_path):
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png16_rgb([(32768, 255, 65535), (256, 40000, 0)]))
    assert np.asarray(load_image(path))[0].tolist() == [[128, 0, 255], [1, 156, 0]]


def test_a_float_photo_is_refused(tmp_path):
    with pytest.raises(ValueError, match="floating-point"):
        to_rgb(Image.fromarray(np.full((2, 2), 0.5, np.float32), "F"))
    path = _png(Image.fromarray(np.full((4, 4), 0.5, np.float32), "F"), tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"float\.tif: cannot read image"):
        load_image(path)


def test_cmyk_worked_numbers():
    # R = round((255 - C)(255 - K) / 255): (0, 128, 255, 64) -> 191, 127 * 191 / 255 = 95.1 -> 95, 0;
    # (100, 0, 0, 50) -> 155 * 205 / 255 = 124.6 -> 125, 205, 205
    cmyk = Image.fromarray(np.array([[[0, 128, 255, 64], [100, 0, 0, 50]]], np.uint8), "CMYK")
    assert np.asarray(to_rgb(cmyk))[0].tolist() == [[191, 95, 0], [125, 205, 205]]


def test_transparency_is_composited_on_white():
    # (c a + 255 (255 - a)) / 255: (200, 100, 0) at 128 -> 227.39, 177.2, 127 -> (227, 177, 127), within 1
    rgba = Image.fromarray(np.array([[[200, 100, 0, 128], [10, 20, 30, 0], [10, 20, 30, 255]]], np.uint8), "RGBA")
    got = np.asarray(to_rgb(rgba)).astype(int)[0]
    assert np.abs(got[0] - [227, 177, 127]).max() <= 1
    assert got[1].tolist() == [255, 255, 255] and got[2].tolist() == [10, 20, 30]
    grey = Image.fromarray(np.array([[[200, 128]]], np.uint8), "LA")
    assert np.abs(np.asarray(to_rgb(grey)).astype(int)[0, 0] - 227).max() <= 1


def test_palette_transparency_is_composited_and_a_colour_key_is_ignored(tmp_path):
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([200, 100, 0, 10, 20, 30])
    path = _png(palette, tmp_path / "palette.png", transparency=bytes([128, 255]))
    got = np.asarray(load_image(path)).astype(int)[0]
    assert np.abs(got[0] - [227, 177, 127]).max() <= 1 and got[1].tolist() == [10, 20, 30]
    grey = _png(Image.new("L", (2, 1), 10), tmp_path / "key.png", transparency=10)   # a tRNS colour key
    assert np.asarray(load_image(grey))[0].tolist() == [[10, 10, 10], [10, 10, 10]]
    assert np.asarray(to_rgb(Image.new("L", (1, 1), 77)))[0, 0].tolist() == [77, 77, 77]


SHOW = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1, :],
        5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1)}
"""The spec's words for each EXIF orientation: 2 mirrors left-right, 3 turns 180, 4 mirrors top-bottom,
5 transposes, 6 turns 90 clockwise, 7 transverses, 8 turns 90 counter-clockwise."""


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _png(Image.fromarray(stored), tmp_path / "turned.png", exif=exif)
    assert np.array_equal(np.asarray(load_image(path)), SHOW[orientation](stored))


@pytest.mark.parametrize("size, want", [((4032, 3024), (504, 378)),    # s = 8, factor min(2, 1) = 1
                                        ((8000, 6000), (334, 250)),    # s = 8: 1000 x 750, factor 3
                                        ((3000, 300), (3000, 300))])   # min(13, 1) = 1: in full
def test_draft_decoding_of_a_jpeg(tmp_path, size, want):
    path = _png(Image.new("RGB", size, (50, 100, 150)), tmp_path / "camera.jpg", quality=80)
    assert load_image(path, min_size=224).size == want
    assert load_image(path).size == size   # decode full


def test_draft_decoding_turns_after_scaling(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _png(Image.new("RGB", (4032, 3024), (50, 100, 150)), tmp_path / "upright.jpg", quality=80, exif=exif)
    assert load_image(path, min_size=224).size == (378, 504)


def test_draft_decoding_of_another_format_is_a_box_reduction(tmp_path):
    path = _png(Image.new("RGB", (4032, 3024), (50, 100, 150)), tmp_path / "camera.png", compress_level=1)
    assert load_image(path, min_size=224).size == (311, 233)   # factor 13: ceil(4032 / 13), ceil(3024 / 13)


def test_box_reduction_means_and_partial_blocks(tmp_path):
    # 5 x 5 values (5 y + x) * 10 reduced by 2: full blocks their mean (0, 10, 50, 60 -> 30), the
    # last column and row the mean of what they hold (40, 90 -> 65; 200, 210 -> 205; 240)
    values = (np.arange(25, dtype=np.uint8).reshape(5, 5) * 10)
    path = _png(Image.fromarray(values), tmp_path / "small.png")
    got = np.asarray(load_image(path, min_size=2))[..., 0]
    assert got.tolist() == [[30, 50, 65], [130, 150, 165], [205, 225, 240]]


def test_the_resize_is_antialiased_bilinear():
    # 16 x 8 to 8 x 8: only the horizontal pass; scale 2, support 2. Output 0: inputs 0, 1, 2 weighted
    # 0.75, 0.75, 0.25 over 1.75: (0 + 75 + 50) / 1.75 = 71.4 -> 71; output 1: inputs 1..4 weighted
    # 0.25, 0.75, 0.75, 0.25 over 2: (25 + 150 + 191.25 + 63.75) / 2 = 215; then 255
    row = [0, 100, 200, 255] + [255] * 12
    img = Image.fromarray(np.tile(np.asarray(row, np.uint8)[None, :, None], (8, 1, 3)))
    pixels = preprocess(img, PreprocessConfig(8, input_dtype="uint8", layout="NHWC"))
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    assert pixels[0, :, 0].tolist() == [71, 215, 255, 255, 255, 255, 255, 255]
    assert (pixels == pixels[:1]).all()


def test_float32_input_normalises_in_float32():
    img = Image.new("RGB", (8, 8), (128, 0, 255))
    x = preprocess(img, PreprocessConfig(8))
    assert x.shape == (3, 8, 8) and x.dtype == np.float32
    # (v / 255 - 0.5) / 0.5: 128 -> 0.0039216, 0 -> -1, 255 -> 1 (float32 rounding within 1e-6)
    assert x[:, 0, 0] == pytest.approx([0.0039216, -1.0, 1.0], abs=1e-6)


# --- scores bundles ----------------------------------------------------------------------------------------
def test_threshold_is_reached_with_greater_or_equal_in_float32():
    assert float(sigmoid(np.array([[0.0]]))[0, 0]) == 0.5
    assert select_labels(sigmoid(np.array([[0.0]])), [0.5]) == [[0]]
    # float32(0.7) is below the float64 0.7, and reaches the threshold 0.7 rounded to float32
    assert select_labels(np.array([[np.float32(0.7)]], np.float32), [0.7]) == [[0]]


def test_score_selection_worked_examples():
    scores = np.array([[0.9, 0.8, 0.75, 0.2]], np.float32)
    assert select_labels(scores, [0.7] * 4) == [[0, 1, 2]]
    assert select_labels(scores, [0.7] * 4, top_k=1, min_labels=2) == [[0, 1]]   # min_labels wins over top_k
    assert select_labels(scores, [0.7] * 4, top_k=2) == [[0, 1]]
    assert select_labels(scores, [0.95] * 4, min_labels=2) == [[0, 1]]           # none kept: the 2 best instead
    # per-label thresholds rank by score / threshold: 1.5, 1.2, 1.0
    assert select_labels(np.array([[0.6, 0.3, 0.5]], np.float32), [0.5, 0.2, 0.5]) == [[1, 0, 2]]
    # equal ratios: the lower threshold first, then the lower id
    assert select_labels(np.array([[0.6, 0.3, 0.6]], np.float32), [0.6, 0.3, 0.6]) == [[1, 0, 2]]
    # threshold 0 ranks first, and among such labels by id, not by score
    assert select_labels(np.array([[0.1, 0.9, 0.5]], np.float32), [0.0, 0.0, 0.5]) == [[0, 1, 2]]


# --- sequence bundles --------------------------------------------------------------------------------------
SKY, SEA, STOP, START = 0, 1, 2, 3
STEP = {(): (0.5, 0.4, 0.1), (SKY,): (0.6, 0.2, 0.2), (SEA,): (0.9, 0.05, 0.05),
        (SKY, SEA): (0.25, 0.25, 0.5), (SEA, SKY): (0.25, 0.25, 0.5)}
"""The spec's worked example: the step's probabilities after each prefix (sky, sea, stop)."""


def _table_step(tokens: np.ndarray, state: DecoderState):
    prefix_rows = state.rows["h"].copy()
    out = []
    for r, token in enumerate(tokens):
        prefix = tuple(int(x) for x in prefix_rows[r] if x >= 0)
        if token != START:
            prefix_rows[r, len(prefix)] = token
            prefix += (int(token),)
        out.append(np.log(np.asarray(STEP[prefix], np.float64)))
    return np.asarray(out, np.float32), state.with_rows({"h": prefix_rows}), None


def _decode(beam_width: int, length_penalty: float = 0.0):
    config = DecodingConfig(beam_width=beam_width, max_len=2, min_labels=1, forbid_repeat=True,
                            length_penalty=length_penalty)
    state = DecoderState.start({"h": np.full((1, 3), -1, np.int64)}, {})
    [result] = (greedy if beam_width == 1 else beam_search)(_table_step, state, config, 2)
    return result


def test_greedy_worked_example():
    # step 1: sea and stop tie at 0.2, the lower id wins; scores are not renormalised after the mask
    result = _decode(1)
    assert result.labels == [SKY, SEA]
    assert result.scores == pytest.approx([0.5, 0.2], rel=1e-6)
    assert result.logprob == pytest.approx(math.log(0.5 * 0.2 * 0.5), rel=1e-6)   # the forced stop counts


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_worked_example(length_penalty):
    # step 1 ranks sea sky (0.36), sky sea (0.1), sky stop (0.1, after sky sea by token id): no stop among
    # the first 2 finishes; step 2 finishes sea sky stop (0.18) and sky sea stop (0.05)
    result = _decode(2, length_penalty)
    assert result.labels == [SEA, SKY]
    assert result.scores == pytest.approx([0.4, 0.9], rel=1e-6)
    assert result.logprob == pytest.approx(math.log(0.18), rel=1e-6)


def test_length_penalty_normalisers():
    assert DecodingConfig(length_penalty=1.0).normaliser(3) == 3.0
    assert DecodingConfig(length_penalty=0.6, length_penalty_formula="gnmt").normaliser(3) == pytest.approx((8 / 6) ** 0.6)
    assert DecodingConfig().normaliser(3) == 1.0


# --- label memory ------------------------------------------------------------------------------------------
def test_memory_worked_examples():
    memory = MemorySpec("embedding", "memory_scores", k=1, temperature=0.1, weight=0.25, examples=1, head_labels=1)
    # scores: (1 - 0.25) * 0.8 + 0.25 * 0.4 = 0.7 for the head's label; 0.9, the memory's own, after it
    blended = blend_scores(np.array([[0.8]], np.float32), np.array([[0.4, 0.9]], np.float32), memory)
    assert blended[0].tolist() == pytest.approx([0.7, 0.9], abs=1e-6)
    # sequence: p = (0.5, 0.3, 0.2), m = (0.6, 0.2): q = (0.8 * 0.75, 0.8 * 0.25, 0.2) = (0.6, 0.2, 0.2);
    # weight 0.5 mixes them to (0.55, 0.25, 0.2)
    mixed = interpolate_log_probs(np.log(np.array([[0.5, 0.3, 0.2]])), np.array([[0.6, 0.2]]), 0.5)
    assert np.exp(mixed)[0].tolist() == pytest.approx([0.55, 0.25, 0.2], abs=1e-12)
    # memory scores all 0: q = p
    same = interpolate_log_probs(np.log(np.array([[0.5, 0.3, 0.2]])), np.zeros((1, 2)), 0.5)
    assert np.exp(same)[0].tolist() == pytest.approx([0.5, 0.3, 0.2], abs=1e-12)

