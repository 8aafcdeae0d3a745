"""The label memory: its graph against a brute-force kNN, the blend and kNN-LM rules, the manifest's rules,
and ``corel-memory`` adding and removing labels without retraining."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.bundle.manifest import BundleManifest, load_manifest
from corel_annotate.runtime.memory import interpolate_log_probs
from corel_annotate.runtime.preprocessing import preprocess_file
from corel_annotate.training.checkpoint import model_from_checkpoint

from conftest import REPO


def brute_force_knn(query: np.ndarray, keys: np.ndarray, labels: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """One query at a time, with plain loops: cosine similarity, the k largest, softmax, label shares."""
    out = np.zeros((len(query), labels.shape[1]))
    for b, q in enumerate(query.astype(np.float64)):
        sims = sorted(((float(q @ key), i) for i, key in enumerate(keys.astype(np.float64))), key=lambda s: -s[0])[:k]
        top = max(s for s, _ in sims)
        weights = [np.exp((s - top) / temperature) for s, _ in sims]
        total = sum(weights)
        for w, (_, i) in zip(weights, sims):
            out[b] += (w / total) * labels[i]
    return out


def stored(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """The memory graph's examples as stored: float16 keys ``[N, D]`` and labels ``[N, V]``."""
    model = onnx.load(str(bundle / "memory.onnx"))
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keys = next(v for v in tensors.values() if v.dtype == np.float16).T
    labels = next(v for v in tensors.values() if v.dtype == np.uint8)
    return keys, labels


def sha(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_memory_graph_equals_brute_force_on_both_engines(tmp_path):
    from corel_annotate.export.memory import MemoryTable, memory_graph
    from corel_annotate.runtime.engines.openvino_session import OpenVINOSession
    from corel_annotate.runtime.bundle.manifest import GraphSpec, TensorSpec

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(40, 16)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    labels = rng.random((40, 6)) < 0.3
    query = rng.normal(size=(7, 16)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    path = tmp_path / "memory.onnx"
    onnx.save(memory_graph(MemoryTable(keys, labels), k=5, temperature=0.05), str(path))
    expected = brute_force_knn(query, keys.astype(np.float16), labels.astype(np.float64), 5, 0.05)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"embedding": query})[0]
    assert got.shape == (7, 6)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    spec = GraphSpec("memory.onnx", (TensorSpec("embedding", "float32", ("batch", 16)),),
                     (TensorSpec("memory_scores", "float32", ("batch", 6)),))
    openvino = OpenVINOSession(path, spec, "fp32", 1, True).run(["memory_scores"], {"embedding": query})[0]
    np.testing.assert_allclose(openvino, expected, atol=2e-5)


def test_knn_lm_interpolation_rule():
    # step: labels 0.5, 0.3, stop 0.2; memory all on label 1: q = [0, 0.8, 0.2]; weight 0.5
    logp = np.log(np.array([[0.5, 0.3, 0.2]]))
    mixed = np.exp(interpolate_log_probs(logp, np.array([[0.0, 2.0]]), 0.5))
    np.testing.assert_allclose(mixed, [[0.25, 0.55, 0.2]], atol=1e-12)
    # a row whose memory is empty keeps the step's distribution; weight 0 returns the input untouched
    np.testing.assert_allclose(np.exp(interpolate_log_probs(logp, np.zeros((1, 2)), 0.5)), np.exp(logp))
    assert interpolate_log_probs(logp, np.ones((1, 2)), 0.0) is logp


def _synth_test(data: Path, preprocess) -> tuple[list, np.ndarray]:
    split = CorelDataset(data).read("test")
    return split, np.stack([preprocess_file(s.path, preprocess) for s in split.samples])


@pytest.mark.parametrize("device", ["cpu", "openvino"])
def test_scores_bundle_labels_equal_the_reference_blend(bundles, memory_bundles, synth_data, device):
    bundle = memory_bundles["ml-gcn"]
    manifest = load_manifest(bundle)
    memory, scoring = manifest.memory, manifest.scoring
    assert memory is not None and scoring is not None and memory.weight > 0
    assert memory.examples == len(CorelDataset(synth_data).read("train").samples)
    model, cfg = model_from_checkpoint(bundles["ml-gcn"][0])
    annotator = Annotator.load(bundle, device=device, precision="fp32")
    _, images = _synth_test(synth_data, annotator.preprocess_config)   # as the bundle takes them
    _, normalised = _synth_test(synth_data, cfg.preprocess)            # as PyTorch takes them
    with torch.no_grad():
        feats = model.features(torch.from_numpy(normalised))
        probs = torch.sigmoid(feats @ model.label_classifiers().t()).double().numpy()
        emb = torch.nn.functional.normalize(feats, dim=1).numpy()
    keys, labels = stored(bundle)
    knn = brute_force_knn(emb, keys, labels.astype(np.float64), memory.k, memory.temperature)
    blended = (1 - memory.weight) * probs + memory.weight * knn
    thresholds = np.array(scoring.thresholds)
    expected = []
    for row in blended:  # ranked by score relative to threshold, ties toward the lower threshold, then the lower id
        rank = sorted(range(len(row)), key=lambda j: (-row[j] / thresholds[j], thresholds[j], j))
        ids = [j for j in rank if row[j] >= thresholds[j]][:scoring.top_k or None]
        expected.append(set(ids if len(ids) >= scoring.min_labels else rank[:scoring.min_labels]))
    got = annotator.annotate_batch(images)
    agree = sum(set(a.label_ids) == e for a, e in zip(got, expected))
    assert agree >= 0.98 * len(expected), f"{agree}/{len(expected)}"
    np.testing.assert_allclose(annotator.scores(images), blended, atol=1e-4)


def test_sequence_memory_at_full_weight_picks_the_memory_first(memory_bundles, bundles, synth_data, tmp_path):
    """At weight 1 a step's label probabilities are the memory's (the stop share aside): with stop masked at
    the first step (min_labels 1), the first label is the memory's best label for the photo."""
    source = memory_bundles["attention"]
    bundle = tmp_path / "attention-w1.bundle"
    shutil.copytree(source, bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    data["memory"]["weight"] = 1.0
    data["sequence"]["decoding"]["min_labels"] = 1
    (bundle / "manifest.json").write_text(json.dumps(data))
    manifest = load_manifest(bundle)
    model, cfg = model_from_checkpoint(bundles["attention"][0])
    annotator = Annotator.load(bundle, device="cpu")
    _, images = _synth_test(synth_data, annotator.preprocess_config)
    _, normalised = _synth_test(synth_data, cfg.preprocess)
    with torch.no_grad():
        emb = model.embedding(model.features(torch.from_numpy(normalised))).numpy()
    keys, labels = stored(bundle)
    knn = brute_force_knn(emb, keys, labels.astype(np.float64), manifest.memory.k, manifest.memory.temperature)
    first = [a.label_ids[0] for a in annotator.annotate_batch(images, beam_width=1)]
    clear = [i for i, row in enumerate(knn) if np.sort(row)[-1] - np.sort(row)[-2] > 1e-3]
    assert len(clear) > 20
    assert all(first[i] == int(np.argmax(knn[i])) for i in clear)
    plain = Annotator.load(bundles["attention"][1], device="cpu").annotate_batch(images, beam_width=1)
    assert any(a.label_ids != b.label_ids for a, b in zip(annotator.annotate_batch(images, beam_width=1), plain))


def _edit(bundle: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "edited.bundle"
    shutil.copytree(bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    change(data)
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("memory"), "'memory' graph needs a 'memory' section"),
    (lambda d: d["graphs"].pop("memory"), "no 'memory' graph"),
    (lambda d: d["memory"].update(k=10**6), "must be between 1 and the"),
    (lambda d: d["memory"].update(weight=1.5), "in [0, 1]"),
    (lambda d: d["memory"].update(temperature=0), "must be > 0"),
    (lambda d: d["memory"].update(embedding_output="features"), "encoder has no output 'features'"),
    (lambda d: d["memory"].update(head_labels=3), "expected [batch, 3]"),  # the logits cover head_labels
])
def test_broken_memory_sections_are_refused(memory_bundles, tmp_path, change, message):
    bundle = _edit(memory_bundles["ml-gcn"], tmp_path, change)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_manifest(bundle)


def test_version_2_manifest_without_memory_still_loads(bundles):
    data = json.loads((bundles["cnn"][1] / "manifest.json").read_text())
    data["format_version"] = 2
    assert BundleManifest.from_dict(data).memory is None


def _memory_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corel_annotate.export.cli.memory", *args], capture_output=True,
                          text=True, cwd=REPO)


@pytest.fixture(scope="module")
def new_label_data(tmp_path_factory) -> Path:
    """Photos of the fixture's 10 labels plus an 11th, unseen one (synth draws label 11's look the same way)."""
    from corel_annotate.training.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("new-label") / "data"
    generate(out, SynthConfig(images=240, labels=11, scenes=3, image_size=128, max_labels=4, seed=3))
    return out


def test_memory_add_learns_a_new_label_without_retraining(memory_bundles, new_label_data, tmp_path):
    bundle = memory_bundles["ml-gcn"]
    before = sha(bundle)
    old = load_manifest(bundle)
    new_label = (new_label_data / "vocabulary.txt").read_text().split("\n")[10]
    assert new_label not in old.vocabulary
    out = tmp_path / "plus.bundle"
    result = _memory_cli("add", str(bundle), "--data", str(new_label_data), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    edit = json.loads(result.stdout)
    assert edit["added_labels"] == [new_label] and 0.0 < edit["thresholds"][new_label] < 1.0
    assert sha(bundle) == before, "the original bundle is never changed"
    manifest = load_manifest(out)
    assert manifest.vocabulary == old.vocabulary + (new_label,)
    assert manifest.memory.examples == old.memory.examples + len(CorelDataset(new_label_data).read("train").samples)
    assert manifest.memory.head_labels == len(old.vocabulary) and len(manifest.scoring.thresholds) == 11
    test = CorelDataset(new_label_data).read("test")
    got = Annotator.load(out, device="cpu").annotate([s.path for s in test.samples])
    truth = [new_label in s.labels for s in test.samples]
    said = [new_label in a.labels for a in got]
    tp = sum(t and s for t, s in zip(truth, said))
    assert sum(truth) >= 5
    assert tp / sum(truth) >= 0.5 and tp / max(1, sum(said)) >= 0.5, (tp, sum(truth), sum(said))
    listing = json.loads(_memory_cli("list", str(out), "--json").stdout)
    assert listing["added_labels"] == [new_label] and listing["examples_per_label"][new_label] >= 5

    trained = _memory_cli("remove", str(out), old.vocabulary[0], "-o", str(tmp_path / "x.bundle"))
    assert trained.returncode == 2 and len(trained.stderr.strip().splitlines()) == 1
    assert "trained on" in trained.stderr and not (tmp_path / "x.bundle").exists()
    removed = _memory_cli("remove", str(out), new_label, "-o", str(tmp_path / "minus.bundle"))
    assert removed.returncode == 0, removed.stderr
    back = load_manifest(tmp_path / "minus.bundle")
    assert back.vocabulary == old.vocabulary and back.scoring.thresholds == old.scoring.thresholds


def test_sequence_bundle_refuses_new_labels(memory_bundles, new_label_data, tmp_path):
    out = tmp_path / "att.bundle"
    result = _memory_cli("add", str(memory_bundles["attention"]), "--data", str(new_label_data), "-o", str(out))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sequence bundle" in last and result.stderr.count("error") == 1
    assert not out.exists() and not list(tmp_path.glob(".att.bundle*"))


def test_export_records_how_the_memory_was_tuned(memory_bundles):
    manifest = load_manifest(memory_bundles["ml-gcn"])
    tuned = manifest.source["memory"]
    assert "validation photos" in tuned["tuned_on"] and set(tuned["validation"]) >= {"per_class/f1", "N+"}
    assert manifest.format_version == 4 and manifest.files["memory.onnx"]
