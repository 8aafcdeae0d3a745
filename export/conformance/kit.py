"""``corel-export conformance DIR``: write the conformance kit (``kit.json``, ``bundles/``,
``photos/``) that ``corel-eval conformance KIT --runtime CMD`` runs any runtime against."""
from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx

from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.runtime.bundle.manifest import (FORMAT_VERSION, MANIFEST, BundleManifest, GraphSpec, ScoringSpec,
                                                    SequenceSpec, TensorSpec, sha256_file)
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.evaluation.conformance import (KIT_FILE, KIT_FORMAT, KIT_VERSION, ExpectedRecord, Kit,
                                                           KitCase, KitRun, read_kit)

from ..files import replace_dir
from .graphs import OPSET, TableDecoder, constant_encoder, probe_encoder, table_decoder
from .photos import PixelPhoto, camera_photo, write_flat_photos, write_pixel_photos
from .references import brute_force, pytorch_decode, sigmoid32, spec_select

PROBE_SIZE = 8
"""The pixel probe's input side: 8 x 8 x 3 = 192 labels, one per input value."""
SEQUENCE_SEED = 19
"""The seed of the kit's decoder numbers (``graphs.table_decoder``); :func:`sequence_cases` checks that
they give every case it needs (greedy and beam 3 differ, beam 3 finds the best sequence, ...)."""
FLAT_PHOTOS = 8
SEQUENCE_LABELS = ("sky", "water", "tree", "grass")
SCORE_LABELS = ("sky", "water", "tree", "grass", "snow", "rock")
SCORE_LOGITS = np.array([0.0, 1.0, 1.0, -0.5, 2.0, -3.0])
"""sigmoid: 0.5 exactly (the threshold-equality case), a tie at 0.731059, 0.377541, 0.880797, 0.047426."""
SEQUENCE_TOLERANCE = 1e-4
"""Per-label probability: float32 graphs against float64 PyTorch, records rounded to 6 decimals."""
LEVEL = 2 * 0.5 / 255
"""The probe's score per 8-bit level at its steepest (sigmoid slope 1/4 times the logit gain 2, over 255)."""


@dataclass(frozen=True)
class SequenceCase:
    name: str
    config: DecodingConfig
    rules: tuple[str, ...]
    description: str


def sequence_cases() -> list[SequenceCase]:
    """One bundle per decoding rule, all over the same decoder and the same flat photos."""
    base = DecodingConfig(beam_width=1, max_len=3, min_labels=1, forbid_repeat=True)
    beam = base.replace(beam_width=3)
    return [
        SequenceCase("seq-greedy", base, ("greedy", "masks", "label-scores", "state", "constants"),
                     "greedy: arg-max per step, stop masked before 1 label, repeats masked, per-label probability"),
        SequenceCase("seq-beam3", beam, ("beam-search", "beam-stop-candidates", "constants-per-hypothesis"),
                     "beam 3, no length penalty; differs from greedy on some photos and equals exhaustive search"),
        SequenceCase("seq-beam3-length-penalty", beam.replace(length_penalty=1.0), ("beam-search", "length-penalty"),
                     "beam 3, logprob / n (n counts stop)"),
        SequenceCase("seq-beam3-gnmt", beam.replace(length_penalty=0.6, length_penalty_formula="gnmt"),
                     ("beam-search", "length-penalty"), "beam 3, logprob / ((5 + n) / 6) ** 0.6"),
        SequenceCase("seq-min-labels", base.replace(min_labels=2), ("min-labels", "masks"),
                     "greedy, stop masked until 2 labels (no renormalising after the mask)"),
        SequenceCase("seq-beam3-min-labels", beam.replace(min_labels=2), ("min-labels", "beam-search"),
                     "beam 3, stop masked until 2 labels"),
        SequenceCase("seq-empty-allowed", DecodingConfig(beam_width=1, max_len=3, min_labels=0), ("min-labels",),
                     "greedy, min_labels 0: stop may come first, an empty annotation"),
        SequenceCase("seq-repeat", base.replace(forbid_repeat=False), ("forbid-repeat",),
                     "greedy, repeats allowed: a label may be emitted twice"),
        SequenceCase("seq-max-len", base.replace(max_len=2), ("max-len",),
                     "greedy, at most 2 labels: the forced stop after 2 labels"),
        SequenceCase("seq-beam3-max-len", beam.replace(max_len=2), ("max-len", "beam-search", "length-penalty"),
                     "beam 3, at most 2 labels, the forced stop counted in the sequence's log-probability"),
    ]


def sequence_expectations(decoder: TableDecoder, means: np.ndarray) -> dict[str, list[tuple[list[int], list[float]]]]:
    """Each case's labels and scores from PyTorch, refused (RuntimeError) unless the kit's promises hold:
    beam search equals exhaustive search, small perturbations change nothing, and each rule changes
    something on some photo (else its case would not test it)."""
    cases = sequence_cases()
    results: dict[str, list[tuple[list[int], list[float]]]] = {}
    for case in cases:
        got = pytorch_decode(decoder, means, case.config)
        for trial in range(1, 6):
            if [g[0] for g in pytorch_decode(decoder, means, case.config, noise=1e-4, seed=trial)] != [g[0] for g in got]:
                raise RuntimeError(f"{case.name}: labels change under 1e-4 noise; pick another SEQUENCE_SEED")
        if case.config.beam_width > 1:
            for i, mean in enumerate(means):
                best, _, margin = brute_force(decoder, mean, case.config)
                if best != got[i][0] or margin < 1e-3:
                    raise RuntimeError(f"{case.name}: photo {i}: beam {got[i][0]}, exhaustive {best} (margin {margin:.2g})")
        results[case.name] = got
    labels = {name: [g[0] for g in r] for name, r in results.items()}
    needs = {"seq-beam3": "seq-greedy", "seq-min-labels": "seq-greedy", "seq-repeat": "seq-greedy",
             "seq-max-len": "seq-greedy", "seq-beam3-max-len": "seq-beam3", "seq-beam3-length-penalty": "seq-beam3",
             "seq-empty-allowed": "seq-greedy"}
    for case, other in needs.items():
        if labels[case] == labels[other]:
            raise RuntimeError(f"{case} decodes every photo as {other} does; pick another SEQUENCE_SEED")
    if not any(len(x) == 0 for x in labels["seq-empty-allowed"]):
        raise RuntimeError("seq-empty-allowed: no photo is left empty; pick another SEQUENCE_SEED")
    return results


def _spec(info: onnx.ValueInfoProto) -> TensorSpec:
    kinds = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.UINT8: "uint8"}
    t = info.type.tensor_type
    return TensorSpec(info.name, kinds[t.elem_type], tuple(d.dim_param or d.dim_value for d in t.shape.dim))


def write_bundle(folder: Path, graphs: dict[str, onnx.ModelProto], vocabulary: tuple[str, ...],
                 preprocess: PreprocessConfig, scoring: Optional[ScoringSpec] = None,
                 sequence: Optional[SequenceSpec] = None, what: str = "") -> None:
    """A bundle folder from hand-built graphs: the graphs, and a manifest checked by this runtime's reader."""
    folder.mkdir(parents=True)
    specs = {}
    for name, model in graphs.items():
        onnx.save(model, folder / f"{name}.onnx")
        specs[name] = GraphSpec(f"{name}.onnx", tuple(map(_spec, model.graph.input)), tuple(map(_spec, model.graph.output)))
    manifest = BundleManifest(kind="sequence" if sequence else "scores", vocabulary=vocabulary, preprocess=preprocess,
                              image_input="image", graphs=specs, scoring=scoring, sequence=sequence, opset=OPSET,
                              versions={"onnx": onnx.__version__},
                              files={s.file: sha256_file(folder / s.file) for s in specs.values()},
                              source={"method": "conformance-kit", "what": what})
    BundleManifest.from_dict(json.loads(manifest.to_json()), str(folder / MANIFEST))
    (folder / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")


def _probe_records(photos: list[PixelPhoto], labels: tuple[str, ...]) -> dict[str, ExpectedRecord]:
    out = {}
    for p in photos:
        if p.expected is None:
            out[p.name] = ExpectedRecord("error")
            continue
        chw = p.expected.astype(np.float64).transpose(2, 0, 1).reshape(-1) / 255.0
        scores = sigmoid32(2.0 * (chw - 0.5))
        out[p.name] = ExpectedRecord("ok", labels, tuple(round(float(s), 6) for s in scores))
    return out


def write_kit(out: str | Path, force: bool = False, log: Callable[[str], None] = lambda _: None) -> Kit:
    """Write the kit into ``out`` (refused when it exists, unless ``force``); returns what ``kit.json`` holds."""
    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"{out}: already exists (--force replaces it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        kit = _write(tmp, log)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    read_kit(out)
    return kit


def _write(root: Path, log: Callable[[str], None]) -> Kit:
    runs: list[KitRun] = []
    cases: list[KitCase] = []
    size = PROBE_SIZE
    probe_labels = tuple(f"{c}-{y}-{x}" for c in "rgb" for y in range(size) for x in range(size))
    everything = ScoringSpec("logits", (0.0,) * len(probe_labels))

    # pixels: the probe, with both input forms, over every pixel case; the draft rule on a camera-size JPEG
    pixel_photos = write_pixel_photos(root / "photos" / "pixels", size)
    camera = camera_photo(root / "photos" / "camera", size)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    probes = {"probe-uint8": PreprocessConfig(size, input_dtype="uint8", layout="NHWC"),
              "probe-float32": PreprocessConfig(size, mean=mean, std=std),
              "probe-draft": PreprocessConfig(size, input_dtype="uint8", layout="NHWC", decode="draft")}
    for name, pre in probes.items():
        write_bundle(root / "bundles" / name, {"encoder": probe_encoder(size, pre.input_dtype, pre.mean, pre.std)},
                     probe_labels, pre, scoring=everything, what="pixel probe: each label's score is one input value")
        draft = pre.decode == "draft"
        runs.append(KitRun(name, f"bundles/{name}", "photos/camera" if draft else "photos/pixels"))
        form = f"{pre.input_dtype} {pre.layout}"
        for p in [camera] if draft else pixel_photos:
            cases.append(KitCase(f"{name}/{p.name}", name, f"{p.name} ({form} input): {p.rule.replace('pixels-', '')}",
                                 (p.rule, "input-" + pre.input_dtype), False, round(p.levels * LEVEL + 1e-6, 6),
                                 _probe_records([p], probe_labels), p.may_refuse))
    log(f"pixel cases: {len(cases)}")

    # scores: constant logits, one bundle per selection rule
    flat = write_flat_photos(root / "photos" / "flat", size, FLAT_PHOTOS)
    uint8 = PreprocessConfig(size, input_dtype="uint8", layout="NHWC")
    scores = sigmoid32(SCORE_LOGITS)
    n = len(SCORE_LABELS)
    score_rules = [
        ("scores-threshold", (0.5,) * n, None, 0, ("threshold-reached", "score-ties"),
         "threshold 0.5: a score of exactly 0.5 is kept (>=); equal scores rank by label id"),
        ("scores-per-label", (0.25, 0.9, 0.5, 0.3, 0.8, 0.01), None, 0, ("per-label-thresholds", "score-ranking"),
         "per-label thresholds: ranked by score / threshold"),
        ("scores-top-k", (0.25, 0.9, 0.5, 0.3, 0.8, 0.01), 3, 0, ("top-k",), "top_k 3 of the ranked labels"),
        ("scores-min-labels", (0.95,) * n, None, 2, ("min-labels",),
         "no label reaches 0.95: the 2 best instead (replacing, not padding)"),
        ("scores-top-k-below-min-labels", (0.7,) * n, 1, 2, ("min-labels", "top-k"),
         "3 labels pass, top_k 1, min_labels 2: min_labels wins, 2 labels"),
    ]
    for name, thresholds, top_k, min_labels, rules, what in score_rules:
        write_bundle(root / "bundles" / name, {"encoder": constant_encoder(SCORE_LOGITS, size, "uint8", uint8.mean, uint8.std)},
                     SCORE_LABELS, uint8, scoring=ScoringSpec("logits", thresholds, top_k, min_labels), what=what)
        runs.append(KitRun(name, f"bundles/{name}", "photos/flat"))
        chosen = spec_select(scores, np.asarray(thresholds), top_k, min_labels)
        record = ExpectedRecord("ok", tuple(SCORE_LABELS[i] for i in chosen), tuple(round(float(scores[i]), 6) for i in chosen))
        cases.append(KitCase(name, name, what, rules, True, 1e-5, {flat[0][0]: record}))

    # sequences: one decoder, one bundle per decoding rule
    decoder = table_decoder(SEQUENCE_SEED, len(SEQUENCE_LABELS))
    means = np.stack([c for _, c in flat]).astype(np.float64) / 255.0
    expected = sequence_expectations(decoder, means)
    v = decoder.num_labels
    for case in sequence_cases():
        seq = SequenceSpec(token_input="token", log_probs_output="log_probs", state={"h_out": "h"}, start_id=v + 1,
                           stop_id=v, decoding=case.config, constants=("bias",))
        write_bundle(root / "bundles" / case.name, {"encoder": decoder.encoder(size, "uint8", uint8.mean, uint8.std),
                                                    "decoder_step": decoder.step()},
                     SEQUENCE_LABELS, uint8, sequence=seq, what=case.description)
        runs.append(KitRun(case.name, f"bundles/{case.name}", "photos/flat"))
        records = {photo: ExpectedRecord("ok", tuple(SEQUENCE_LABELS[i] for i in labels), tuple(round(s, 6) for s in probs))
                   for (photo, _), (labels, probs) in zip(flat, expected[case.name])}
        cases.append(KitCase(case.name, case.name, case.description, case.rules, True, SEQUENCE_TOLERANCE, records))
    kit = Kit(KIT_FORMAT, KIT_VERSION, FORMAT_VERSION, tuple(runs), tuple(cases),
              {"writer": "corel-export conformance", "python": platform.python_version(), "onnx": onnx.__version__})
    (root / KIT_FILE).write_text(kit.to_json(), encoding="utf-8")
    log(f"{len(runs)} runs, {len(cases)} cases")
    return kit
