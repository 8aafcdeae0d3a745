"""The conformance kit (``corel-export conformance``, ``corel-eval conformance``): written from a fresh
clone, passed by the Python runtime on onnxruntime and on OpenVINO at fp32 and by the browser runtime
in Chromium, and failed, case by case, by a runtime with one rule of docs/bundle-format.md broken."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corel_annotate.export.cli.export import app as export_app
from corel_annotate.export.conformance.graphs import table_decoder
from corel_annotate.export.conformance.kit import SEQUENCE_SEED, sequence_cases
from corel_annotate.export.conformance.references import brute_force
from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.runtime.bundle.manifest import load_manifest
from corel_annotate.runtime.cli.eval import eval_app
from corel_annotate.runtime.evaluation.conformance import default_runtime, read_kit, run_kit, runtime_command

HERE = Path(__file__).parent
runner = CliRunner()


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conformance") / "kit"
    result = runner.invoke(export_app, ["conformance", str(out)])
    assert result.exit_code == 0, result.output
    return out


def failed(results) -> set[str]:
    return {r.name for r in results if not r.passed}


def test_the_kit_covers_every_rule_the_issue_names(kit):
    k = read_kit(kit)
    rules = {rule for case in k.cases for rule in case.rules}
    assert rules >= {"greedy", "beam-search", "length-penalty", "min-labels", "forbid-repeat", "max-len",
                     "threshold-reached", "top-k", "pixels-alpha", "pixels-palette", "pixels-grey", "pixels-16-bit",
                     "pixels-cmyk", "pixels-exif-orientation", "pixels-progressive-jpeg", "pixels-draft-decode",
                     "pixels-antialiased-bilinear", "pixels-float-refused", "input-uint8", "input-float32"}
    names = {c.name for c in k.cases}
    assert {f"probe-uint8/orientation-{o}.jpg" for o in range(1, 9)} <= names
    for run in k.runs:   # every bundle is one this package's reader accepts, sha256 and all
        load_manifest(kit / run.bundle)
    camera = next(c for c in k.cases if c.name == "probe-draft/camera.jpg")
    assert camera.expected["camera.jpg"].status == "ok"
    from PIL import Image
    with Image.open(kit / "photos/camera/camera.jpg") as img:
        assert img.size == (4032, 3024) and img.getexif()[0x0112] == 6


def test_greedy_and_beam_3_differ_and_beam_3_is_the_exhaustive_optimum(kit):
    k = read_kit(kit)
    greedy = next(c for c in k.cases if c.name == "seq-greedy").expected
    beam = next(c for c in k.cases if c.name == "seq-beam3").expected
    differ = [p for p in greedy if greedy[p].labels != beam[p].labels]
    assert differ, "the kit needs a photo whose greedy and beam-3 label lists differ"
    # exhaustive search over every label sequence, by hand here (not the kit writer's brute_force):
    # sum of log-probabilities, no length penalty, labels from the photo's flat colour
    decoder = table_decoder(SEQUENCE_SEED, 4)
    labels = ("sky", "water", "tree", "grass")
    from PIL import Image
    for photo in differ:
        mean = np.asarray(Image.open(kit / "photos/flat" / photo), np.float64).reshape(-1, 3).mean(0) / 255
        bias = mean @ decoder.colour
        best, best_seq = -np.inf, None
        import itertools
        for n in (1, 2, 3):
            for seq in itertools.permutations(range(4), n):
                h, total, prev = np.zeros(6), 0.0, 5
                for token in (*seq, 4):
                    logits = decoder.table[prev] + bias + h @ decoder.history
                    total += logits[token] - np.log(np.exp(logits).sum())
                    h[prev] += 1
                    prev = token
                if total > best:
                    best, best_seq = total, seq
        assert beam[photo].labels == tuple(labels[i] for i in best_seq)
        assert brute_force(decoder, mean, DecodingConfig(beam_width=3))[0] == list(best_seq)


def test_every_decoding_case_changes_something(kit):
    k = read_kit(kit)
    by = {c.name: c.expected for c in k.cases}
    assert any(len(r.labels) == 0 for r in by["seq-empty-allowed"].values())
    assert any(len(set(r.labels)) < len(r.labels) for r in by["seq-repeat"].values())
    assert all(len(r.labels) >= 2 for r in by["seq-min-labels"].values())
    assert all(len(r.labels) <= 2 for r in by["seq-max-len"].values())
    assert any(len(r.labels) == 3 for r in by["seq-greedy"].values())
    # hand-computed: sigmoid(0) = 0.5 reaches a 0.5 threshold; the tied 0.731059 pair keeps id order
    threshold = next(iter(by["scores-threshold"].values()))
    assert threshold.labels == ("snow", "water", "tree", "sky") and threshold.scores[-1] == 0.5
    assert next(iter(by["scores-top-k-below-min-labels"].values())).labels == ("snow", "water")
    assert next(iter(by["scores-min-labels"].values())).labels == ("snow", "water")


def test_the_python_runtime_passes_the_kit(kit, tmp_path):
    """On OpenVINO here; onnxruntime's run (``--device cpu``) is the runtime-only stage's
    (tests/test_runtime_install.py), in the install most users get."""
    pytest.importorskip("openvino")
    results = run_kit(kit, default_runtime("--device openvino --precision fp32"), tmp_path, jobs=2)
    assert len(results) == len(read_kit(kit).cases) > 50
    assert failed(results) == set(), [r.problems for r in results if not r.passed]


def test_the_browser_runtime_passes_the_kit(kit, tmp_path):
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make browser` should have run")
        pytest.skip("chromium is not installed")
    command = f"{shlex.quote(sys.executable)} -m corel_annotate.benchmarks.browser_records {{bundle}} {{photos}} {{out}}"
    results = run_kit(kit, command, tmp_path, jobs=2)
    refused = {r.name for r in results if r.name.endswith("cmyk.tif")}
    assert failed(results) == set(), [(r.name, r.problems) for r in results if not r.passed]
    assert refused   # TIFF is a format the page may refuse (the kit says so); everything else it must read
    records = [json.loads(line) for line in (tmp_path / "probe-uint8.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "ok" for r in records) >= 20


@pytest.mark.parametrize("fault, only, broken", [
    ("drop-alpha", "probe-uint8", {"probe-uint8/alpha.png", "probe-uint8/grey-alpha.png",
                                   "probe-uint8/palette-transparent.png"}),
    ("ignore-orientation", "probe-draft", {"probe-draft/camera.jpg"}),
    ("sixteen-bit-range", "probe-float32", {"probe-float32/grey16-dark.png"}),
    ("above-threshold", "scores-", {"scores-threshold"}),
    ("always-greedy", "seq-beam3", {"seq-beam3", "seq-beam3-gnmt", "seq-beam3-min-labels", "seq-beam3-max-len"}),
])
def test_a_runtime_with_one_rule_broken_fails_exactly_those_cases(kit, tmp_path, fault, only, broken):
    command = f"{shlex.quote(sys.executable)} {HERE / 'faulty_runtime.py'} {fault} {{bundle}} {{photos}} {{out}}"
    assert failed(run_kit(kit, command, tmp_path, only=only, jobs=2)) == broken


def test_a_runtime_that_writes_nothing_fails_every_case_with_its_error(kit, tmp_path):
    results = run_kit(kit, "echo 'engine missing' >&2; false {bundle} {photos} {out}", tmp_path, only="scores-")
    assert len(results) == 5 and not any(r.passed for r in results)
    assert all("the runtime wrote no records (engine missing)" in r.problems[0] for r in results)


def test_the_command_needs_its_placeholders(tmp_path):
    with pytest.raises(ValueError, match=r"missing \{out\}"):
        runtime_command("my-runtime {bundle} {photos}", tmp_path, tmp_path, tmp_path)
    assert runtime_command("r {bundle} {photos} {out}", Path("a b"), Path("c"), Path("d")) == "r 'a b' c d"


def test_the_cli_exit_codes(kit, tmp_path):
    ok = runner.invoke(eval_app, ["conformance", str(kit), "--only", "scores-"])
    assert ok.exit_code == 0 and "5 of 5 cases passed" in ok.output, ok.output
    bad = runner.invoke(eval_app, ["conformance", str(kit), "--only", "scores-", "--runtime",
                                   f"{shlex.quote(sys.executable)} {HERE / 'faulty_runtime.py'} above-threshold "
                                   "{bundle} {photos} {out}"])
    assert bad.exit_code == 1 and "FAIL  scores-threshold" in bad.output and "4 of 5 cases passed" in bad.output
    missing = runner.invoke(eval_app, ["conformance", str(tmp_path)])
    assert missing.exit_code == 2 and "not a conformance kit" in missing.output
    again = runner.invoke(export_app, ["conformance", str(kit)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_the_old_command_lines_still_reach_the_main_commands(tmp_path):
    assert "--data" in runner.invoke(eval_app, ["--help"]).output
    result = runner.invoke(export_app, [str(tmp_path / "missing.ckpt")])
    assert result.exit_code == 2 and "missing.ckpt" in result.output
