"""int8 with accuracy control: the encoder is quantised by NNCF and judged, as a whole bundle, on the
checkpoint's own validation photos.

``nncf.quantize_with_accuracy_control`` first quantises every Conv/MatMul/Gemm (per-channel symmetric
int8 weights, fast bias correction off: on Corel-5k it cost 0.01 per-class F1 on its own); when the
bundle's per-class F1 on the validation photos drops by more than ``max_drop`` from fp32, it ranks the
quantised layers by how much their outputs move and returns the most sensitive ones to float until the
drop is within budget.  The judge is the runtime itself: the candidate encoder is written into a copy
of the bundle (with the int8 decoder step, for recurrent bundles) and annotated by :class:`Annotator`
with the bundle's decoding or thresholds, so the check measures what users will run.

Without the training photos (another machine, ``--calibration`` only) the encoder gets the same
quantisation without the check, and the manifest says so.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.engines.isa import isa_names, this_cpu
from corel_annotate.runtime.evaluation.runner import per_class_f1
from corel_annotate.runtime.bundle.manifest import MANIFEST, sha256_file

DEFAULT_MAX_DROP = 0.01
MAX_REVERTED_GROUPS = 20
"""At most this many layer groups go back to float before the search gives up (each costs one validation pass)."""


@dataclass
class Int8Report:
    """What the int8 export did and measured; stored as the manifest's ``source["int8"]``."""

    method: str
    calibration_images: int
    validation_images: int
    max_drop: float | None
    fp32_per_class_f1: float | None = None
    int8_per_class_f1: float | None = None
    float_layers: int = 0
    cpu: str = dataclasses.field(default_factory=lambda: this_cpu()[0])
    """The CPU the export ran on, which quantised and judged the graphs."""
    isa: list = dataclasses.field(default_factory=lambda: isa_names(this_cpu()[1]))
    """Its instruction sets (``engines.isa``): int8 is fast on onnxruntime's CPU provider only with VNNI."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def judged_on(self) -> str:
        return f"judged on {self.cpu or 'an unknown CPU'} ({', '.join(self.isa) or 'ISA unknown'})"

    def summary(self) -> str:
        if self.fp32_per_class_f1 is None or self.int8_per_class_f1 is None:
            return (f"int8 by {self.method} on {self.calibration_images} calibration photos; "
                    f"accuracy not checked (no validation photos); {self.judged_on}")
        return (f"int8 by {self.method}: per-class F1 on {self.validation_images} validation photos "
                f"{self.fp32_per_class_f1:.4f} (fp32) -> {self.int8_per_class_f1:.4f} (int8), "
                f"budget {self.max_drop}; {self.float_layers} quantisable layers kept float; {self.judged_on}")


@dataclass
class ValidationSet:
    """Preprocessed validation photos and their multi-hot labels."""

    images: np.ndarray
    targets: np.ndarray


def validation_set(cfg, limit: int | None = None) -> ValidationSet | None:
    """The checkpoint's held-out validation photos (the same split its training used), or None when the
    training data is not on this machine or the run kept no validation split."""
    from corel_annotate.runtime.dataset import CorelDataset, CorelSplit
    from corel_annotate.runtime.evaluation.metrics import label_sets_to_matrix
    from corel_annotate.runtime.preprocessing import preprocess_file
    from corel_annotate.training.data import validation_split

    data_dir = cfg.data.get("dir")
    if not data_dir or not Path(data_dir).is_dir() or cfg.train.val_fraction <= 0:
        return None
    ds = CorelDataset(data_dir)
    if list(ds.vocabulary.labels) != list(cfg.vocabulary):
        return None
    train = ds.read("train", strict=cfg.train.strict_data)
    val_idx, _ = validation_split(len(train.samples), cfg.train.val_fraction, cfg.train.seed)
    if limit is not None:
        val_idx = val_idx[:limit]
    samples = [train.samples[i] for i in val_idx]
    preprocess = cfg.preprocess
    images = np.stack([preprocess_file(s.path, preprocess) for s in samples])
    targets = label_sets_to_matrix(CorelSplit(train.name, samples, train.report).label_ids(ds.vocabulary),
                                   len(ds.vocabulary))
    return ValidationSet(images, targets)


class BundleJudge:
    """Per-class F1 of a bundle whose encoder is swapped for a candidate graph (on CPU, fp32 arithmetic
    for float layers, as onnxruntime runs the int8 bundle)."""

    def __init__(self, bundle: Path, validation: ValidationSet, workdir: Path) -> None:
        self.dir = workdir / "judge.bundle"
        shutil.copytree(bundle, self.dir)
        self.manifest = json.loads((self.dir / MANIFEST).read_text(encoding="utf-8"))
        self.manifest["files"] = {name: sha256_file(self.dir / name) for name in self.manifest["files"]}
        self.encoder_file = self.manifest["graphs"]["encoder"]["file"]
        self.validation = validation

    def __call__(self, encoder: onnx.ModelProto | Path, items: Iterable[int] | None = None) -> float:
        if isinstance(encoder, Path):
            shutil.copyfile(encoder, self.dir / self.encoder_file)
        else:
            onnx.save(encoder, str(self.dir / self.encoder_file))
        self.manifest["files"][self.encoder_file] = sha256_file(self.dir / self.encoder_file)
        (self.dir / MANIFEST).write_text(json.dumps(self.manifest), encoding="utf-8")
        rows = np.arange(len(self.validation.images)) if items is None else np.fromiter(items, dtype=np.int64)
        annotator = Annotator.load(self.dir, device="cpu")
        return per_class_f1(annotator, self.validation.images[rows], self.validation.targets[rows])


def quantize_encoder(src: Path, dst: Path, calibration: np.ndarray, input_name: str,
                     judge: BundleJudge | None, max_drop: float, log: Callable[[str], None]) -> Int8Report:
    """Quantise ``src`` (an fp32 encoder) into ``dst``: with accuracy control when ``judge`` is given."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from .precision import pre_processed

    logging.getLogger("nncf").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(pre_processed(src, Path(tmp) / "pre.onnx")))
        calib = nncf.Dataset(list(range(len(calibration))), lambda i: {input_name: calibration[i:i + 1]})
        if judge is None:
            quantized = nncf.quantize(model, calib, subset_size=len(calibration), fast_bias_correction=False)
            onnx.save(quantized, str(dst))
            return Int8Report("nncf post-training quantisation", len(calibration), 0, None)
        images = judge.validation.images
        validation = nncf.Dataset(list(range(len(images))), lambda i: {input_name: images[i:i + 1]})
        quantized = nncf.quantize_with_accuracy_control(
            model, calib, validation, lambda m, items: (judge(m, items), None), max_drop=max_drop,
            subset_size=len(calibration), fast_bias_correction=False,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=MAX_REVERTED_GROUPS, ranking_subset_size=min(300, len(images))))
        onnx.save(quantized, str(dst))
    report = Int8Report("nncf accuracy control", len(calibration), len(images), max_drop,
                        fp32_per_class_f1=judge(src), int8_per_class_f1=judge(dst),
                        float_layers=_float_layers(dst))
    log(report.summary())
    return report


def _float_layers(path: Path) -> int:
    """Conv/MatMul/Gemm nodes whose weights were left unquantised (no DequantizeLinear feeding them)."""
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
               and not any(i in dequantized for i in n.input[1:2]))
