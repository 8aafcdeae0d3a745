"""Variants of a bundle's label memory, measured on its own stored examples and a test split:
2PKNN's per-label neighbourhoods against plain K nearest photos, and keys projected to fewer dimensions.

    corel-bench memory-variants --bundle bench-out/memory-c5k-oof/cnn-asl.memory.bundle --data ../shared/corel5k

Every variant scores photos by the memory alone.  Its settings (K, K1, temperature) are chosen by the
leave-one-out mean average precision of the stored training photos, and its one threshold (at most 5
and at least 1 label per photo) on those leave-one-out scores; the test split is only scored.

2PKNN (Verma & Jawahar, ECCV 2012): pass one takes, for every label, the ``k1`` stored photos carrying
that label that are most similar to the query; pass two weighs the union of those photos by a softmax
of similarity / temperature, and each label gets its share of the weight, as the plain memory does
over its ``k`` nearest photos.  Rare labels always get neighbours in pass one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

Log = Callable[[str], None]
K_GRID = (5, 10, 25, 50)
K1_GRID = (1, 2, 3, 5)
T_GRID = (0.02, 0.05, 0.1)
DIMS = (64, 128, 256)


def two_pass_scores(query: np.ndarray, keys: np.ndarray, labels: np.ndarray, k1: int, temperature: float,
                    exclude: np.ndarray | None = None) -> np.ndarray:
    """2PKNN label scores ``[B, V]``: per label the ``k1`` most similar stored photos carrying it form the
    neighbourhood; softmax(similarity / temperature) over it; each label's share of the weight.
    ``exclude[i]`` (a stored index, or -1) leaves query i's own photo out."""
    # float32 products, as the memory graph computes them
    sims = (query.astype(np.float32) @ keys.astype(np.float32).T).astype(np.float64)
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        sims[rows, exclude[rows]] = -np.inf
    chosen = np.zeros(sims.shape, dtype=bool)
    batch = np.arange(sims.shape[0])[:, None]
    for label in range(labels.shape[1]):
        holders = np.flatnonzero(labels[:, label])
        if holders.size == 0:
            continue
        take = min(k1, holders.size)
        sub = sims[:, holders]
        top = np.argpartition(-sub, take - 1, axis=1)[:, :take]
        chosen[batch, holders[top]] = True
    chosen &= np.isfinite(sims)
    scaled = np.where(chosen, sims / temperature, -np.inf)
    weights = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ labels.astype(np.float64)


def _mean_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    from corel_annotate.runtime.evaluation.metrics import mean_average_precision

    return float(mean_average_precision(targets, scores))


def _row(name: str, setting: str, loo: np.ndarray, test: np.ndarray, train_targets: np.ndarray,
         test_targets: np.ndarray, key_mb: float) -> dict:
    from corel_annotate.runtime.evaluation.metrics import annotation_metrics, label_sets_to_matrix
    from corel_annotate.runtime.scoring import select_labels
    from corel_annotate.runtime.evaluation.thresholds import balanced_threshold

    threshold = balanced_threshold(loo, train_targets, 5, 1)
    chosen = label_sets_to_matrix(select_labels(test, [threshold] * test.shape[1], 5, 1), test.shape[1])
    m = annotation_metrics(test_targets.astype(np.uint8), chosen, test)
    return {"variant": name, "setting": setting, "threshold": threshold, "loo_mAP": round(_mean_ap(loo, train_targets), 4),
            "keys_mb": round(key_mb, 2), **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.to_dict().items()}}


def run_variants(bundle: Path, data: Path, command: str, log: Log) -> dict:
    from corel_annotate.export.memory import embed_paths, knn_scores, read_table, MemoryTable
    from corel_annotate.runtime.annotator import Annotator
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.evaluation.metrics import label_sets_to_matrix

    from .hardware import bundle_precision, machine

    annotator = Annotator.load(bundle, device="cpu")
    table = read_table(bundle, annotator.manifest)
    ds = CorelDataset(data)
    if list(ds.vocabulary.labels)[: table.labels.shape[1]] != list(annotator.manifest.vocabulary)[: table.labels.shape[1]]:
        raise ValueError(f"{data}: its vocabulary is not the bundle's")
    test = ds.read("test")
    test_targets = label_sets_to_matrix(test.label_ids(ds.vocabulary), table.labels.shape[1])
    query, failed = embed_paths(annotator, [s.path for s in test.samples])
    if failed:
        raise ValueError(f"{failed[0][0]}: {failed[0][1]}")
    train_targets = table.labels.astype(np.float32)
    own = np.arange(table.size)
    n, dim = table.keys.shape
    rows = []

    def best_plain(keys: np.ndarray, queries: np.ndarray) -> tuple[int, float, np.ndarray, np.ndarray]:
        t = MemoryTable(keys, table.labels)
        found = max(((_mean_ap(knn_scores(keys, t, k, temp, exclude=own), train_targets), k, temp)
                     for k in K_GRID for temp in T_GRID))
        _, k, temp = found
        return k, temp, knn_scores(keys, t, k, temp, exclude=own), knn_scores(queries, t, k, temp)

    t0 = time.perf_counter()
    k, temp, loo, scores = best_plain(table.keys, query)
    rows.append(_row("plain kNN", f"k {k}, T {temp}", loo, scores, train_targets, test_targets, n * dim * 2 / 1e6))
    log(f"plain kNN: {rows[-1]} [{time.perf_counter() - t0:.0f}s]")

    t0 = time.perf_counter()
    found = max(((_mean_ap(two_pass_scores(table.keys, table.keys, table.labels, k1, temp, exclude=own),
                           train_targets), k1, temp) for k1 in K1_GRID for temp in T_GRID))
    _, k1, temp = found
    loo = two_pass_scores(table.keys, table.keys, table.labels, k1, temp, exclude=own)
    scores = two_pass_scores(query, table.keys, table.labels, k1, temp)
    rows.append(_row("2PKNN", f"k1 {k1}, T {temp}", loo, scores, train_targets, test_targets, n * dim * 2 / 1e6))
    log(f"2PKNN: {rows[-1]} [{time.perf_counter() - t0:.0f}s]")

    mean = table.keys.mean(axis=0)
    _, _, vt = np.linalg.svd(table.keys - mean, full_matrices=False)
    for d in DIMS:
        if d >= dim:
            continue
        t0 = time.perf_counter()
        project = lambda x: _normalise((x - mean) @ vt[:d].T)  # noqa: E731 - the projection stored in the graph
        k, temp, loo, scores = best_plain(project(table.keys), project(query))
        rows.append(_row(f"plain kNN, PCA {d}", f"k {k}, T {temp}", loo, scores, train_targets, test_targets,
                         (n * d + d * dim) * 2 / 1e6))
        log(f"PCA {d}: {rows[-1]} [{time.perf_counter() - t0:.0f}s]")
    return {"bundle": str(bundle), "data": str(data), "examples": n, "dim": dim, "test_photos": len(test.samples),
            "rows": rows, "machine": machine(f"{bundle_precision(bundle)} bundle embeddings (onnxruntime), float32 similarities").to_dict(), "command": command}


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def markdown(result: dict) -> str:
    lines = [f"The label memory of `{result['bundle']}` alone ({result['examples']} stored photos, {result['dim']} "
             f"dimensions), scored on the test split of `{result['data']}` ({result['test_photos']} photos); settings "
             "and the one threshold (at most 5, at least 1 label) chosen on the stored photos' leave-one-out scores.", "",
             "| variant | setting | leave-one-out mAP | P (class) | R (class) | F1 (class) | F1 (image) | N+ | mAP | keys MB (fp16) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['setting']} | {r['loo_mAP']:.3f} | {r['per_class/precision']:.3f} "
                     f"| {r['per_class/recall']:.3f} | **{r['per_class/f1']:.3f}** | {r['per_image/f1']:.3f} | {r['N+']} "
                     f"| {r['mAP']:.3f} | {r['keys_mb']:.1f} |")
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir: Path, stem: str = "memory-variants") -> list[Path]:
    from .report import write_json_and_markdown

    return write_json_and_markdown(result, out_dir, stem, markdown(result))
