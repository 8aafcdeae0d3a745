"""The run-time label map (``--labels``): one-line errors naming the key or line, and the same answers in
the Annotator, corel-infer and on Ray (corel-serve and the page: test_serve_labels, test_browser)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.label_map import LabelMap

MAP = """# a user's label map
[labels]
sky = { name = "blue sky", path = "nature|weather" }
tree = { name = "plants" }
grass = { name = "plants", path = "nature" }
people = { exclude = true }
water = { threshold = 0.0 }
"""


@pytest.fixture()
def label_map(tmp_path) -> Path:
    path = tmp_path / "labels.toml"
    path.write_text(MAP, encoding="utf-8")
    return path


@pytest.mark.parametrize("text,suffix,message", [
    ("[labels]\nsky = { name = 'a', colour = 'blue' }\n", ".toml", "labels.sky: unknown field 'colour'"),
    ("[labels]\nsky = { threshold = 1.5 }\n", ".toml", "labels.sky.threshold: a number from 0 to 1"),
    ("[labels]\nsky = { threshold = true }\n", ".toml", "labels.sky.threshold: expected a finite number, got a boolean"),
    ("[labels]\nsky = { name = 'a|b' }\n", ".toml", "labels.sky.name: a non-empty name without '|'"),
    ("[labels]\nsky = { path = 'nature||x' }\n", ".toml", "labels.sky.path: names separated by '|'"),
    ("[labels]\nsky = { exclude = 'yes' }\n", ".toml", "labels.sky.exclude: expected true or false, got a string"),
    ("[labels]\nsky = 3\n", ".toml", "labels.sky: a name or a table"),
    ("[labelz]\n", ".toml", "unknown field 'labelz'"),
    ("[labels]\nsky = { threshold = nan }\n", ".toml", "labels.sky.threshold: expected a finite number, got nan"),
    ("[labels]\nsky = { name = 1979-05-27 }\n", ".toml", "a date value is not JSON data"),
    ("[labels]\nsky = 'a|b'\n", ".toml", "labels.sky.name: a non-empty name without '|'"),
    ('{"labels": ["sky"]}', ".json", "labels: expected an object, got an array"),
    ("[labels]\nsky = \n", ".toml", "not TOML (Invalid value (at line 2, column 7))"),
    ('{"labels": {"sky": "a",}}', ".json", "not JSON (Expecting property name enclosed in double quotes at line 1"),
    ("sky: a\n", ".yaml", "a label map is a .toml or .json file"),
])
def test_bad_maps_get_one_line_naming_the_key_or_line(tmp_path, text, suffix, message) -> None:
    path = tmp_path / f"labels{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        LabelMap.read(path)
    assert str(err.value).startswith(f"{path}: "), err.value
    assert message in str(err.value) and "\n" not in str(err.value), err.value


def test_a_map_is_checked_against_the_bundle(bundles) -> None:
    typo = LabelMap.from_dict({"labels": {"skyy": "heaven"}}, "m.json")
    with pytest.raises(ValueError, match=r"^m.json: labels.skyy: not a label of the bundle \(did you mean 'sky'\?\)$"):
        Annotator.load(bundles["ml-gcn"][1], labels=typo)
    threshold = LabelMap.from_dict({"labels": {"sky": {"threshold": 0.2}}}, "m.json")
    with pytest.raises(ValueError, match="labels.sky.threshold: a sequence bundle decodes its labels"):
        Annotator.load(bundles["attention"][1], labels=threshold)


def _photos(synth_data) -> list[Path]:
    return sorted((synth_data / "images").glob("*.jpeg"))[:40]


def test_scores_bundle_names_merges_excludes_and_thresholds(bundles, synth_data, label_map) -> None:
    """Worked out from the bundle's own scores: what the map should report, label by label."""
    plain = Annotator.load(bundles["ml-gcn"][1], device="cpu", precision="fp32")
    mapped = Annotator.load(bundles["ml-gcn"][1], device="cpu", precision="fp32", labels=label_map)
    vocab = list(plain.manifest.vocabulary)
    thresholds = np.asarray(plain.manifest.scoring.thresholds, dtype=np.float32)
    batch = plain.preprocess(_photos(synth_data))
    probs = plain.scores(batch)
    got = mapped.annotate_batch(batch)
    top_k = plain.manifest.scoring.top_k or len(vocab)
    seen_people = 0
    for row, result in zip(probs, got):
        # the labels over their bar (water's is 0, people never), ranked by score over threshold, at most top_k
        bar = {label: 0.0 if label == "water" else float(thresholds[j]) for j, label in enumerate(vocab)}
        over = [j for j, label in enumerate(vocab) if label != "people" and row[j] >= bar[label]]
        ranked = sorted(over, key=lambda j: (-(row[j] / bar[vocab[j]]) if bar[vocab[j]] else -np.inf, bar[vocab[j]], j))
        passed = [vocab[j] for j in ranked[:top_k]]
        seen_people += bool(row[vocab.index("people")] >= thresholds[vocab.index("people")])
        names = {"sky": "blue sky", "tree": "plants", "grass": "plants"}
        want = sorted({names.get(label, label) for label in passed})
        assert sorted(result.labels) == want
        assert "people" not in result.labels and result.labels[0] == "water"
        if "plants" in result.labels:
            best = max(row[vocab.index(x)] for x in ("tree", "grass") if names[x] in want and x in passed)
            assert result.scores[result.labels.index("plants")] == pytest.approx(float(best), abs=1e-6)
    assert seen_people, "no photo had 'people' to exclude: the test photos do not exercise exclusion"
    assert mapped.label_map.path("plants") == "nature" and mapped.label_map.path("blue sky") == "nature|weather"


def test_sequence_bundle_renames_merges_and_keeps_attention_with_its_label(bundles, synth_data, label_map) -> None:
    plain = Annotator.load(bundles["attention"][1], device="cpu", precision="fp32")
    text = "\n".join(line for line in MAP.splitlines() if "threshold" not in line)
    (label_map.parent / "seq.toml").write_text(text, encoding="utf-8")
    mapped = Annotator.load(bundles["attention"][1], device="cpu", precision="fp32", labels=label_map.parent / "seq.toml")
    batch = plain.preprocess(_photos(synth_data)[:16])
    names = {"sky": "blue sky", "tree": "plants", "grass": "plants"}
    for want, got in zip(plain.annotate_batch(batch, keep_alphas=True), mapped.annotate_batch(batch, keep_alphas=True)):
        kept = [i for i, label in enumerate(want.labels) if label != "people"]
        order = list(dict.fromkeys(names.get(want.labels[i], want.labels[i]) for i in kept))
        assert got.labels == order
        for name, alpha in zip(got.labels, got.alphas):
            first = next(i for i in kept if names.get(want.labels[i], want.labels[i]) == name)
            np.testing.assert_array_equal(alpha, want.alphas[first])


def test_corel_infer_applies_the_map_as_the_annotator_does(bundles, synth_data, label_map, tmp_path) -> None:
    photos = _photos(synth_data)[:12]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, photos)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(listing), "--model",
                             str(bundles["ml-gcn"][1]), "--labels", str(label_map), "-o", str(out), "--no-progress",
                             "--device", "cpu", "--precision", "fp32"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    want = Annotator.load(bundles["ml-gcn"][1], device="cpu", precision="fp32", labels=label_map).annotate(photos)
    assert [r["labels"] for r in records] == [w.labels for w in want]
    assert any("blue sky" in r["labels"] for r in records)
    bad = subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(listing), "--model",
                          str(bundles["ml-gcn"][1]), "--labels", str(tmp_path / "missing.toml"), "--no-progress"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "missing.toml: cannot read the label map" in bad.stderr


def test_corel_serve_models_apply_the_map(bundles, synth_data, label_map) -> None:
    """corel-serve --labels: the bundle model Triton calls answers with the mapped labels (the transport
    itself is test_serve's)."""
    from corel_annotate.runtime.serve.tensors import IMAGE, LABELS
    from corel_annotate.runtime.serve.triton_server import ServeConfig, load_models

    [served] = load_models([str(bundles["ml-gcn"][1])], ServeConfig(device="cpu", precision="fp32", labels=label_map),
                           log=lambda _m: None)
    model = served.instances[0]
    try:
        photos = _photos(synth_data)[:6]
        [answer] = model([{IMAGE.name: np.array([[p.read_bytes()] for p in photos], dtype=object)}])
    finally:
        model.close()
    got = [[label.decode() for label in row if label] for row in answer[LABELS.name]]
    want = Annotator.load(bundles["ml-gcn"][1], device="cpu", precision="fp32", labels=label_map).annotate(photos)
    assert got == [w.labels for w in want]
    assert all("people" not in labels and labels[0] == "water" for labels in got)


def test_a_server_job_refuses_a_client_side_map(bundles, synth_data, label_map) -> None:
    result = subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(_photos(synth_data)[0]),
                             "--model", "ml-gcn", "--server", "http://127.0.0.1:9", "--labels", str(label_map),
                             "--no-progress"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert f"start it with corel-serve --labels {label_map}" in " ".join(result.stderr.split())
