"""The label memory of a bundle: kNN label transfer over stored, labelled example embeddings.

The memory is one ONNX graph (``memory.onnx``) whose tensors are the examples' L2-normalised
embeddings (float16, ``[D, N]``) and their label sets (uint8, ``[N, V]``); it maps the encoder's
``embedding`` output ``[B, D]`` to per-label scores ``[B, V]``: cosine similarity to every example,
the ``k`` nearest kept, a softmax over their similarities divided by ``temperature``, and each
label's share of that weight.  Because the tensors are inside the graph, the manifest's sha256 covers
them and every engine (onnxruntime, OpenVINO, the browser, Triton, Ray) runs it from the manifest.

``corel-export`` builds it from the checkpoint's training photos, embedded by the bundle's own
encoder, and chooses ``k``, ``temperature`` and the blend weight on the checkpoint's validation
photos (the memory's own scores there are leave-one-out); ``corel-memory`` edits it afterwards.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.manifest import (FORMAT_VERSION, MANIFEST, BundleManifest, GraphSpec, MemorySpec,
                                             TensorSpec, load_manifest, sha256_file)
from corel_annotate.runtime.memory import EMBEDDING_OUTPUT as EMBEDDING, blend_scores
from corel_annotate.runtime.evaluation.metrics import annotation_metrics, label_sets_to_matrix
from corel_annotate.runtime.evaluation.thresholds import balanced_threshold, shrunk_thresholds, tune_thresholds

MEMORY_FILE = "memory.onnx"
SCORES = "memory_scores"
KEYS, LABELS = "memory_keys", "memory_labels"
K_GRID = (5, 10, 25, 50)
T_GRID = (0.02, 0.05, 0.1)
SCORE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
SEQUENCE_WEIGHTS = (0.0, 0.1, 0.2, 0.35, 0.5)
Log = Callable[[str], None]


@dataclass
class MemoryTable:
    """The stored examples: L2-normalised embeddings ``[N, D]`` and multi-hot label sets ``[N, V]``."""

    keys: np.ndarray
    labels: np.ndarray

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])


def knn_scores(query: np.ndarray, table: MemoryTable, k: int, temperature: float,
               exclude: np.ndarray | None = None) -> np.ndarray:
    """What the memory graph computes, in numpy (float64): per query row, each label's share of the softmax
    weight of its ``k`` most similar examples.  ``exclude[i]`` (an example index, or -1) leaves query i's
    own example out: the leave-one-out scores of a photo that is in the memory."""
    sims = query.astype(np.float64) @ table.keys.astype(np.float64).T
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        sims[rows, exclude[rows]] = -np.inf
    k = min(k, table.size - (1 if exclude is not None else 0))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    near = np.take_along_axis(sims, top, axis=1) / temperature
    weights = np.exp(near - near.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("bk,bkv->bv", weights, table.labels[top].astype(np.float64))


def memory_graph(table: MemoryTable, k: int, temperature: float, opset: int = 17) -> onnx.ModelProto:
    """The memory as an ONNX graph ``embedding [batch, D] -> memory_scores [batch, V]`` with its examples inside."""
    n, dim = table.keys.shape
    vocab = table.labels.shape[1]
    k = min(int(k), n)
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(table.keys.T.astype(np.float16)), KEYS),
        numpy_helper.from_array(np.ascontiguousarray(table.labels.astype(np.uint8)), LABELS),
        numpy_helper.from_array(np.array([k], dtype=np.int64), "k"),
        numpy_helper.from_array(np.array(temperature, dtype=np.float32), "temperature"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Cast", [KEYS], ["keys32"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", [EMBEDDING, "keys32"], ["sims"]),
        helper.make_node("TopK", ["sims", "k"], ["near", "index"], axis=1, largest=1, sorted=1),
        helper.make_node("Div", ["near", "temperature"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["weights"], axis=1),
        helper.make_node("Cast", [LABELS], ["labels32"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["labels32", "index"], ["near_labels"], axis=0),
        helper.make_node("Unsqueeze", ["weights", "axis1"], ["weights3"]),
        helper.make_node("MatMul", ["weights3", "near_labels"], ["scores3"]),
        helper.make_node("Squeeze", ["scores3", "axis1"], [SCORES]),
    ]
    graph = helper.make_graph(
        nodes, "corel_annotate_label_memory",
        [helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["batch", vocab])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="corel-annotate")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model, full_check=True)
    return model


def read_table(bundle: Path, manifest: BundleManifest) -> MemoryTable:
    """The examples stored in a bundle's memory graph."""
    if manifest.memory is None:
        raise ValueError(f"{bundle}: this bundle has no label memory (re-export it with corel-export)")
    model = onnx.load(str(bundle / manifest.graphs["memory"].file))
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return MemoryTable(tensors[KEYS].T.astype(np.float32), tensors[LABELS].astype(bool))


def embed_paths(annotator: Annotator, paths: Sequence[Path], batch_size: int = 32,
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """The bundle's own embeddings of photos ``[N, D]`` (rows of unreadable photos are NaN) and, for each
    unreadable photo, its one-line reason."""
    from corel_annotate.runtime.photos import prefetch_batches

    dim = int(annotator.manifest.graphs["encoder"].output(EMBEDDING).shape[1])
    out = np.full((len(paths), dim), np.nan, dtype=np.float32)
    position = {Path(p): i for i, p in enumerate(paths)}
    failed: list[tuple[Path, str]] = []
    for batch in prefetch_batches(list(paths), annotator.preprocess_config, batch_size):
        if batch.array is not None:
            out[[position[Path(p)] for p in batch.paths]] = annotator.embed(batch.array)
        failed.extend((Path(p), reason) for p, reason in batch.failed)
        if progress:
            progress(len(batch.paths) + len(batch.failed))
    return out, failed


@dataclass
class Choice:
    """One candidate setting of the memory and the operating point it gets on validation photos."""

    k: int
    temperature: float
    weight: float
    thresholds: list[float]
    value: float
    metrics: dict


def _objective(targets: np.ndarray, chosen: list[list[int]]) -> tuple[float, dict]:
    m = annotation_metrics(targets, label_sets_to_matrix(chosen, targets.shape[1]))
    return (m.per_class_f1 + m.per_image_f1) / 2, {"per_class/f1": round(m.per_class_f1, 4),
                                                   "per_image/f1": round(m.per_image_f1, 4), "N+": int(m.n_plus)}


def operating_point(scores: np.ndarray, targets: np.ndarray, rule: str, top_k: int | None,
                    min_labels: int) -> list[float]:
    """Thresholds for blended scores by ``rule``: ``balanced`` (one for every label), ``shrunk`` (per label,
    shrunk toward the balanced one by how many positives the label has), ``f1``/``mcc`` (per label), ``none``."""
    if rule == "balanced":
        return [balanced_threshold(scores, targets, top_k or 0, min_labels)] * scores.shape[1]
    if rule == "shrunk":
        return [float(t) for t in shrunk_thresholds(scores, targets, top_k or 0, min_labels)]
    if rule in ("f1", "mcc"):
        return [float(t) for t in tune_thresholds(scores, targets, rule)]
    return [0.5] * scores.shape[1]


def _halves(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.random.default_rng(0).permutation(n)
    a, b = np.sort(order[: n // 2]), np.sort(order[n // 2:])
    return [(a, b), (b, a)]


def tune_scores(head: np.ndarray, val_embeddings: np.ndarray, val_index: np.ndarray, targets: np.ndarray,
                table: MemoryTable, tuning: str, top_k: int | None, min_labels: int, log: Log) -> Choice:
    """The memory's ``k``, temperature and blend weight for a score bundle, and the operating-point rule
    (the checkpoint's own, or ``shrunk`` per-label thresholds), chosen on validation photos by two-fold
    cross-fitting: thresholds fitted on one half are judged on the other (the mean of per-class and
    per-image F1), so a rule that overfits the photos it was fitted on does not win.  The winner's
    thresholds are then fitted on all the validation photos."""
    from corel_annotate.runtime.scoring import select_labels

    rules = list(dict.fromkeys([tuning, "shrunk"])) if tuning != "none" else ["none"]
    halves = _halves(len(targets))
    best: tuple[float, int, float, float, str] | None = None
    head_labels = head.shape[1]
    for k in K_GRID:
        for temperature in T_GRID:
            memory = knn_scores(val_embeddings, table, k, temperature, exclude=val_index).astype(np.float32)
            for weight in SCORE_WEIGHTS:
                spec = MemorySpec(EMBEDDING, SCORES, k, temperature, weight, table.size, head_labels)
                scores = blend_scores(head, memory, spec)
                for rule in rules:
                    value = float(np.mean([
                        _objective(targets[b], select_labels(scores[b], operating_point(
                            scores[a], targets[a], rule, top_k, min_labels), top_k, min_labels))[0]
                        for a, b in halves]))
                    if best is None or value > best[0] + 1e-9:
                        best = (value, k, temperature, weight, rule)
    assert best is not None
    value, k, temperature, weight, rule = best
    memory = knn_scores(val_embeddings, table, k, temperature, exclude=val_index).astype(np.float32)
    scores = blend_scores(head, memory, MemorySpec(EMBEDDING, SCORES, k, temperature, weight, table.size, head_labels))
    thresholds = operating_point(scores, targets, rule, top_k, min_labels)
    _, metrics = _objective(targets, select_labels(scores, thresholds, top_k, min_labels))
    metrics = {**metrics, "rule": rule, "cross_fitted_value": round(value, 4)}
    log(f"label memory: k {k}, temperature {temperature}, weight {weight}, thresholds {rule} (cross-fitted mean F1 "
        f"{value:.4f}; fitted on all {len(targets)} tuning photos: per-class F1 {metrics['per_class/f1']:.4f}, "
        f"per-image F1 {metrics['per_image/f1']:.4f}, N+ {metrics['N+']})")
    return Choice(k, temperature, weight, thresholds, value, metrics)


def tune_sequence(annotator: Annotator, val_images: np.ndarray, val_embeddings: np.ndarray, val_index: np.ndarray,
                  targets: np.ndarray, table: MemoryTable, log: Log, batch_size: int = 32) -> Choice:
    """The memory's ``k`` and temperature for a sequence bundle (the best leave-one-out label ranking,
    mean average precision), then the kNN-LM weight by greedy decoding of the validation photos."""
    from corel_annotate.runtime.search import search_labels
    from corel_annotate.runtime.evaluation.metrics import mean_average_precision

    ranked = []
    for k in K_GRID:
        for temperature in T_GRID:
            memory = knn_scores(val_embeddings, table, k, temperature, exclude=val_index)
            ranked.append((mean_average_precision(targets, memory), k, temperature, memory.astype(np.float32)))
    _, k, temperature, memory = max(ranked, key=lambda r: r[0])
    config = annotator.decoding_config(beam_width=1)
    encoded = [annotator.encode(val_images[i:i + batch_size]) for i in range(0, len(val_images), batch_size)]
    best: Choice | None = None
    for weight in SEQUENCE_WEIGHTS:
        chosen: list[list[int]] = []
        for b, enc in enumerate(encoded):
            rows = memory[b * batch_size:(b + 1) * batch_size]
            results = search_labels(lambda tokens, state: annotator.step(tokens, state, (rows, weight)),
                             annotator.start_state(enc), config, targets.shape[1])
            chosen.extend(r.labels for r in results)
        value, metrics = _objective(targets, chosen)
        if best is None or value > best.value + 1e-9:
            best = Choice(k, temperature, weight, [], value, metrics)
    assert best is not None
    log(f"label memory: k {best.k}, temperature {best.temperature}, kNN-LM weight {best.weight} "
        f"(validation greedy per-class F1 {best.metrics['per_class/f1']:.4f}, per-image F1 "
        f"{best.metrics['per_image/f1']:.4f}, N+ {best.metrics['N+']})")
    return best


def write_memory(bundle: Path, manifest: BundleManifest, table: MemoryTable, spec: MemorySpec,
                 vocabulary: Sequence[str] | None = None, thresholds: Sequence[float] | None = None,
                 source: dict | None = None) -> BundleManifest:
    """Write ``memory.onnx`` into ``bundle`` and its manifest (new vocabulary and thresholds when given);
    returns the checked manifest, already written."""
    model = memory_graph(table, spec.k, spec.temperature, manifest.opset)
    onnx.save(model, str(bundle / MEMORY_FILE))
    dim, vocab = table.keys.shape[1], table.labels.shape[1]
    graph = GraphSpec(MEMORY_FILE, (TensorSpec(spec.embedding_output, "float32", ("batch", dim)),),
                      (TensorSpec(spec.scores_output, "float32", ("batch", vocab)),))
    stale = manifest.engines.get("memory")  # an engine built from the old memory graph is dropped
    if stale is not None:
        (bundle / stale["file"]).unlink(missing_ok=True)
    files = {name: digest for name, digest in manifest.files.items() if stale is None or name != stale["file"]}
    changes: dict = {"memory": spec, "graphs": {**manifest.graphs, "memory": graph},
                     "engines": {name: e for name, e in manifest.engines.items() if name != "memory"},
                     "files": {**files, MEMORY_FILE: sha256_file(bundle / MEMORY_FILE)}}
    if vocabulary is not None:
        changes["vocabulary"] = tuple(vocabulary)
    if thresholds is not None and manifest.scoring is not None:
        changes["scoring"] = dataclasses.replace(manifest.scoring, thresholds=tuple(float(t) for t in thresholds))
    if source is not None:
        changes["source"] = {**manifest.source, "memory": source}
    changes["format_version"] = FORMAT_VERSION
    new = dataclasses.replace(manifest, **changes)
    new.check()
    (bundle / MANIFEST).write_text(new.to_json(), encoding="utf-8")
    return new


def build_memory(bundle: Path, cfg, log: Log, batch_size: int = 32,
                 oof_scores: np.ndarray | None = None) -> BundleManifest | None:
    """``corel-export``: the label memory of a freshly exported bundle (fp32 graphs, in ``bundle``) from the
    checkpoint's training photos, tuned on its validation photos, or, for a checkpoint trained with
    ``--threshold-tuning oof``, on every training photo with the head's out-of-fold scores
    (``oof_scores``, stored in the checkpoint).  None (and a message) when the training data is not on
    this machine or there is nothing held out to tune it on."""
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.training.data import validation_split

    data_dir = cfg.data.get("dir")
    if not data_dir or not Path(data_dir).is_dir():
        log(f"no label memory: the training data {data_dir!r} is not on this machine")
        return None
    ds = CorelDataset(data_dir)
    if list(ds.vocabulary.labels) != list(cfg.vocabulary):
        log(f"no label memory: {data_dir}/vocabulary.txt is not the checkpoint's vocabulary")
        return None
    train = ds.read("train", strict=cfg.train.strict_data)
    out_of_fold = oof_scores is not None and cfg.train.threshold_tuning == "oof" and not cfg.model.is_sequence
    if out_of_fold and oof_scores.shape != (len(train.samples), len(ds.vocabulary)):
        log(f"no label memory: the checkpoint's out-of-fold scores {tuple(oof_scores.shape)} do not match "
            f"{data_dir}'s {len(train.samples)} training photos and {len(ds.vocabulary)} labels")
        return None
    if not out_of_fold and cfg.train.val_fraction <= 0:
        log("no label memory: the checkpoint kept no validation photos (nor out-of-fold scores) to tune it on")
        return None
    if out_of_fold:
        val_idx = np.arange(len(train.samples))
    else:
        val_idx, _ = validation_split(len(train.samples), cfg.train.val_fraction, cfg.train.seed)
    annotator = Annotator.load(bundle, device="cpu")
    embeddings, failed = embed_paths(annotator, [s.path for s in train.samples], batch_size)
    if failed:
        log(f"label memory: {len(failed)} training photos unreadable, left out (first: {failed[0][0]}: {failed[0][1]})")
    targets_all = label_sets_to_matrix(train.label_ids(ds.vocabulary), len(ds.vocabulary)).astype(bool)
    ok = np.flatnonzero(~np.isnan(embeddings).any(axis=1))
    table = MemoryTable(embeddings[ok], targets_all[ok])
    position = np.full(len(train.samples), -1)
    position[ok] = np.arange(ok.size)
    val_idx = np.array([i for i in val_idx if position[i] >= 0])
    val_targets = targets_all[val_idx].astype(np.float32)
    val_index = position[val_idx]
    manifest = annotator.manifest
    from corel_annotate.runtime.preprocessing import preprocess_file

    source = {"examples": "the checkpoint's training photos", "tuned_on": f"{val_idx.size} validation photos "
              "(held out from training; the memory's scores on them leave the photo itself out)"}
    if manifest.is_sequence:
        val_images = np.stack([preprocess_file(train.samples[i].path, annotator.preprocess_config) for i in val_idx])
        choice = tune_sequence(annotator, val_images, table.keys[val_index], val_index, val_targets, table, log)
        spec = MemorySpec(EMBEDDING, SCORES, choice.k, choice.temperature, choice.weight, table.size,
                          len(ds.vocabulary))
        return write_memory(bundle, manifest, table, spec, source={**source, "validation": choice.metrics})
    scoring = manifest.scoring
    assert scoring is not None
    if out_of_fold:
        source["tuned_on"] = (f"all {val_idx.size} training photos, with the head's out-of-fold scores "
                              f"({cfg.train.folds} folds; the memory's scores leave the photo itself out)")
        head, tuning = oof_scores[val_idx].astype(np.float32), "shrunk"
    else:
        images = np.stack([preprocess_file(train.samples[i].path, annotator.preprocess_config) for i in val_idx])
        head = np.concatenate([annotator.scores(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        tuning = cfg.train.threshold_tuning
    choice = tune_scores(head, table.keys[val_index], val_index, val_targets, table, tuning, scoring.top_k,
                         scoring.min_labels, log)
    spec = MemorySpec(EMBEDDING, SCORES, choice.k, choice.temperature, choice.weight, table.size,
                      len(ds.vocabulary))
    return write_memory(bundle, manifest, table, spec, thresholds=choice.thresholds,
                        source={**source, "threshold_tuning": choice.metrics["rule"], "validation": choice.metrics})


def loo_scores(table: MemoryTable, k: int, temperature: float, columns: Sequence[int], chunk: int = 512) -> np.ndarray:
    """Leave-one-out memory scores of every stored example for the label ``columns`` ``[N, len(columns)]``."""
    sub = MemoryTable(table.keys, table.labels[:, list(columns)])
    out = [knn_scores(table.keys[i:i + chunk], sub, k, temperature, exclude=np.arange(i, min(i + chunk, table.size)))
           for i in range(0, table.size, chunk)]
    return np.concatenate(out) if out else np.zeros((0, len(columns)))


def new_label_thresholds(table: MemoryTable, spec: MemorySpec, columns: Sequence[int], fallback: float,
                         prior: float = 5.0) -> list[float]:
    """Thresholds for labels only the memory scores, from its leave-one-out scores on the stored examples:
    each label's F1-best threshold, shrunk toward ``fallback`` by ``n / (n + prior)`` (n: its examples)."""
    if not columns:
        return []
    scores = loo_scores(table, spec.k, spec.temperature, columns)
    best = tune_thresholds(scores.astype(np.float32), table.labels[:, list(columns)].astype(np.float32), "f1")
    out = []
    for j, t in zip(columns, best):
        n = float(table.labels[:, j].sum())
        out.append(float(np.clip(fallback + n / (n + prior) * (float(t) - fallback), 0.0, 1.0)))
    return out


def _edited_copy(bundle: Path, out: Path, force: bool) -> Path:
    if out.exists() and not force:
        raise ValueError(f"{out}: already exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    for name in load_manifest(bundle, verify=True).files:
        shutil.copy2(bundle / name, tmp / name)
    return tmp


def _finish_edit(tmp: Path, out: Path) -> BundleManifest:
    from .files import replace_dir

    manifest = load_manifest(tmp, verify=True)
    replace_dir(tmp, out)
    return manifest


@dataclass
class MemoryEdit:
    """What ``corel-memory add`` or ``remove`` did."""

    examples_before: int
    examples_after: int
    added_labels: list[str]
    removed_labels: list[str]
    thresholds: dict[str, float]
    unreadable: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def add_examples(bundle: str | Path, data_dir: str | Path, out: str | Path, split: str = "train", force: bool = False,
                 log: Log = print) -> tuple[BundleManifest, MemoryEdit]:
    """``corel-memory add``: embed DIR's labelled photos (Corel layout, ``split``) with the bundle's own
    encoder, add them to its memory, extend the vocabulary with labels it has never seen (a scores bundle
    only: a sequence bundle's decoder emits its own labels), give each new label a threshold from the
    memory's leave-one-out scores, and write a new verified bundle ``out``."""
    from corel_annotate.runtime.dataset import CorelDataset

    bundle, out = Path(bundle), Path(out)
    manifest = load_manifest(bundle, verify=True)
    if manifest.memory is None:
        raise ValueError(f"{bundle}: this bundle has no label memory (re-export it with corel-export --memory)")
    table = read_table(bundle, manifest)
    ds = CorelDataset(data_dir)
    data = ds.read(split)
    log(data.report.summary())
    if not data.samples:
        raise ValueError(f"{data_dir}/{split}.json: no usable labelled photos")
    vocabulary = list(manifest.vocabulary)
    used = {label for s in data.samples for label in s.labels}
    added = [label for label in ds.vocabulary.labels if label in used and label not in vocabulary]
    if added and manifest.is_sequence:
        raise ValueError(f"{bundle}: a sequence bundle's decoder emits only its own {len(vocabulary)} labels; "
                         f"{data_dir} brings new ones ({', '.join(added[:5])}); add them to a scores bundle")
    vocabulary += added
    index = {label: i for i, label in enumerate(vocabulary)}
    annotator = Annotator.load(bundle, device="cpu")
    embeddings, failed = embed_paths(annotator, [s.path for s in data.samples])
    for path, reason in failed[:3]:
        log(f"{path}: {reason}; left out")
    ok = ~np.isnan(embeddings).any(axis=1)
    rows = np.zeros((int(ok.sum()), len(vocabulary)), dtype=bool)
    for r, sample in enumerate(s for s, good in zip(data.samples, ok) if good):
        rows[r, [index[label] for label in sample.labels]] = True
    keys = embeddings[ok]
    # a photo already in the memory (the same embedding, up to the stored float16) gets the new labels on its
    # existing example instead of a second, conflicting one
    same = (keys @ table.keys.T).argmax(axis=1) if table.size else np.zeros(0, dtype=int)
    merged = np.array([float(keys[i] @ table.keys[j]) > 1 - 1e-3 for i, j in enumerate(same)], dtype=bool)
    labels = np.zeros((table.size + int((~merged).sum()), len(vocabulary)), dtype=bool)
    labels[:table.size, :table.labels.shape[1]] = table.labels
    for i in np.flatnonzero(merged):
        labels[same[i]] |= rows[i]
    labels[table.size:] = rows[~merged]
    grown = MemoryTable(np.concatenate([table.keys, keys[~merged]]), labels)
    if merged.any():
        log(f"{int(merged.sum())} of the photos are already in the memory: their labels were merged")
    spec = dataclasses.replace(manifest.memory, examples=grown.size)
    thresholds = None
    new_thresholds: dict[str, float] = {}
    if manifest.scoring is not None:
        current = list(manifest.scoring.thresholds)
        columns = [index[label] for label in added]
        fitted = new_label_thresholds(grown, spec, columns, float(np.median(current[:spec.head_labels])))
        new_thresholds = dict(zip(added, fitted))
        thresholds = current + fitted
    tmp = _edited_copy(bundle, out, force)
    try:
        write_memory(tmp, manifest, grown, spec, vocabulary=vocabulary, thresholds=thresholds)
        result = _finish_edit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result, MemoryEdit(table.size, grown.size, added, [], new_thresholds,
                              [(str(p), r) for p, r in failed])


def remove_labels(bundle: str | Path, labels: Sequence[str], out: str | Path, force: bool = False
                  ) -> tuple[BundleManifest, MemoryEdit]:
    """``corel-memory remove``: take labels that were added to the memory out of the bundle (vocabulary,
    thresholds, the label's column) with the examples left without a label.  The labels the bundle was
    trained on stay: its graphs score them."""
    bundle, out = Path(bundle), Path(out)
    manifest = load_manifest(bundle, verify=True)
    if manifest.memory is None:
        raise ValueError(f"{bundle}: this bundle has no label memory")
    vocabulary = list(manifest.vocabulary)
    head = manifest.memory.head_labels
    unknown = [label for label in labels if label not in vocabulary]
    if unknown:
        raise ValueError(f"{bundle}: no label {unknown[0]!r} in the bundle's vocabulary")
    trained = [label for label in labels if vocabulary.index(label) < head]
    if trained:
        raise ValueError(f"{bundle}: {trained[0]!r} is one of the {head} labels the bundle was trained on; only labels "
                         "added with corel-memory add can be removed")
    table = read_table(bundle, manifest)
    keep_cols = [j for j, label in enumerate(vocabulary) if label not in set(labels)]
    kept_labels = table.labels[:, keep_cols]
    keep_rows = kept_labels.any(axis=1)
    shrunk = MemoryTable(table.keys[keep_rows], kept_labels[keep_rows])
    if shrunk.size == 0:
        raise ValueError(f"{bundle}: removing {', '.join(labels)} would leave the memory empty")
    spec = dataclasses.replace(manifest.memory, examples=shrunk.size, k=min(manifest.memory.k, shrunk.size))
    thresholds = [manifest.scoring.thresholds[j] for j in keep_cols] if manifest.scoring is not None else None
    tmp = _edited_copy(bundle, out, force)
    try:
        write_memory(tmp, manifest, shrunk, spec, vocabulary=[vocabulary[j] for j in keep_cols], thresholds=thresholds)
        result = _finish_edit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result, MemoryEdit(table.size, shrunk.size, [], list(labels), {}, [])


@dataclass
class MemoryListing:
    """``corel-memory list``: what a bundle's memory holds."""

    examples: int
    k: int
    temperature: float
    weight: float
    trained_labels: int
    added_labels: list[str]
    examples_per_label: dict[str, int]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def describe(bundle: str | Path) -> MemoryListing:
    bundle = Path(bundle)
    manifest = load_manifest(bundle, verify=True)
    table = read_table(bundle, manifest)
    memory = manifest.memory
    assert memory is not None
    counts = table.labels.sum(axis=0)
    return MemoryListing(table.size, memory.k, memory.temperature, memory.weight, memory.head_labels,
                         list(manifest.vocabulary[memory.head_labels:]),
                         {label: int(c) for label, c in zip(manifest.vocabulary, counts)})
