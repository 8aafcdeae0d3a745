"""``checkpoint -> bundle``: export every declared graph, verify it against PyTorch, write the manifest.

The bundle is assembled in a temporary directory beside the target and renamed
into place only when every graph has passed, so an interrupted or failed export
never leaves a bundle that loads.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

from corel_annotate.runtime.bundle.manifest import (MANIFEST, BundleManifest, GraphSpec, ScoringSpec, SequenceSpec,
                                             TensorSpec, sha256_file)
from corel_annotate.runtime.bundle.vocabulary import Vocabulary
from corel_annotate.training.checkpoint import load_checkpoint, model_from_checkpoint

from corel_annotate.training.registry import (BATCH, IMAGE_INPUT, LOG_PROBS_OUTPUT, LOGITS_OUTPUT, TOKEN_INPUT,
                                              GraphDecl, MethodSpec, method_spec)
from .onnx_graphs import export_graph, wrappers
from .tensorrt import EngineSettings, add_engines, require_tensorrt
from .int8_accuracy import DEFAULT_MAX_DROP, BundleJudge, Int8Report, quantize_encoder, validation_set
from .precision import PRECISIONS, calibration_images, convert_fp16, quantize_dynamic_int8
from corel_annotate.runtime.bundle.preprocess_config import INPUT_DTYPES
from .pixel_input import fold_normalisation, pixel_preprocess
from .files import replace_dir

DEFAULT_OPSET = 17


@dataclass
class GraphCheck:
    """Largest absolute difference between ONNX Runtime and PyTorch for one graph output at one batch size."""

    graph: str
    output: str
    batch: int
    max_abs_diff: float


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    try:
        out["corel-annotate"] = version("corel-annotate")
    except PackageNotFoundError:
        out["corel-annotate"] = "unknown"
    return out


def _inputs(name: str, decl: GraphDecl, batch: int, encoder_out: dict[str, torch.Tensor] | None, image_size: int,
            num_tokens: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Example inputs: images in the normalised range; decoder inputs from the encoder's real outputs."""
    if name == "encoder":
        return (torch.randn(batch, 3, image_size, image_size, generator=gen).clamp(-2.5, 2.5),)
    assert encoder_out is not None
    return tuple(torch.randint(0, num_tokens, (batch,), generator=gen) if io.name == TOKEN_INPUT
                 else encoder_out[io.name] for io in decl.inputs)


def _spec(decl: GraphDecl, file: str, inputs: tuple[torch.Tensor, ...], outputs: tuple[torch.Tensor, ...]) -> GraphSpec:
    def spec(io, t):
        return TensorSpec(io.name, io.dtype, (BATCH,) + tuple(int(d) for d in t.shape[1:]))
    return GraphSpec(file, tuple(spec(io, t) for io, t in zip(decl.inputs, inputs)),
                     tuple(spec(io, t) for io, t in zip(decl.outputs, outputs)))


def export_bundle(checkpoint: str | Path, out_dir: str | Path | None = None, opset: int = DEFAULT_OPSET,
                  tolerance: float = 1e-4, batch_sizes: tuple[int, ...] = (1, 5), trace_batch: int = 2,
                  force: bool = False, precision: str = "fp32", calibration: str | Path | None = None,
                  engine: str | None = None, engine_settings: EngineSettings | None = None,
                  max_drop: float = DEFAULT_MAX_DROP, memory: bool = True, input_dtype: str = "uint8",
                  log: Callable[[str], None] = print) -> tuple[Path, BundleManifest, list[GraphCheck]]:
    """Export ``checkpoint`` to a bundle directory and return it with its manifest and the parity checks.

    The fp32 graphs are always exported and checked against PyTorch first; with ``memory`` the bundle
    then gets its label memory (``export.memory``: the training photos embedded by the exported
    encoder, tuned on the validation photos; skipped with a message when they are not on this machine);
    ``precision`` int8 or fp16 then converts the method's graphs (their differences from PyTorch are
    printed, not enforced: their accuracy is judged with ``corel-eval``).  ``input_dtype`` uint8 (the
    default) then folds the normalisation into the encoder, which takes the resized photo's pixels
    (``export.pixel_input``; checked against the float32 graph); float32 keeps the normalised input."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"unknown input dtype {input_dtype!r}; choose from {', '.join(INPUT_DTYPES)}")
    if engine not in (None, "tensorrt"):
        raise ValueError(f"unknown engine {engine!r}; the only engine is tensorrt")
    if engine:
        require_tensorrt()
    checkpoint = Path(checkpoint)
    out = Path(out_dir) if out_dir else checkpoint.with_suffix(".bundle")
    if out.exists() and not force:
        raise ValueError(f"{out}: already exists (use --force to replace it)")
    model, cfg = model_from_checkpoint(checkpoint)
    method = cfg.model.method
    spec = method_spec(method)
    decls = spec.graphs
    vocab = Vocabulary(tuple(cfg.vocabulary))
    size = cfg.preprocess.image_size
    modules = wrappers(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        specs: dict[str, GraphSpec] = {}
        gen = torch.Generator().manual_seed(0)
        encoder_out = None
        for name, decl in decls.items():
            args = _inputs(name, decl, trace_batch, encoder_out, size, vocab.num_tokens, gen)
            export_graph(modules[name], args, decl, tmp / f"{name}.onnx", opset)
            onnx.checker.check_model(str(tmp / f"{name}.onnx"), full_check=True)
            with torch.no_grad():
                result = modules[name](*args)
            result = result if isinstance(result, tuple) else (result,)
            specs[name] = _spec(decl, f"{name}.onnx", args, result)
            if name == "encoder":
                encoder_out = {io.name: t for io, t in zip(decl.outputs, result)}
        checks = verify(tmp, modules, decls, size, vocab.num_tokens, batch_sizes, tolerance, log)
        manifest = BundleManifest(
            kind=spec.kind, vocabulary=vocab.labels, preprocess=cfg.preprocess,
            image_input=IMAGE_INPUT, graphs=specs, sequence=_sequence_spec(spec, vocab, cfg.decode),
            scoring=None if spec.is_sequence else ScoringSpec(LOGITS_OUTPUT, tuple(cfg.thresholds or [0.5] * len(vocab)),
                                                              cfg.top_k or None, cfg.min_labels),
            precision="fp32", opset=opset, versions=_versions(),
            files={s.file: sha256_file(tmp / s.file) for s in specs.values()},
            source={"method": method, "checkpoint": checkpoint.name, "checkpoint_sha256": sha256_file(checkpoint),
                    "backbone": cfg.model.backbone, "metrics": cfg.metrics.get("test", {})})
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")  # the fp32 bundle, for the int8 check
        if memory:
            from .memory import build_memory

            manifest = build_memory(tmp, cfg, log, oof_scores=_oof_scores(checkpoint)) or manifest
        if precision != "fp32":
            report = _lower_precision(tmp, decls, precision, cfg, calibration, max_drop, log)
            if report is not None:
                manifest = dataclasses.replace(manifest, source={**manifest.source, "int8": report.to_dict()})
            log(f"{precision} graphs against PyTorch (informative; judge accuracy with corel-eval):")
            checks = verify(tmp, modules, decls, size, vocab.num_tokens, batch_sizes, float("inf"), log)
        if input_dtype == "uint8":
            manifest = _pixel_input(tmp, manifest, tolerance, log)
        engines = {}
        if engine == "tensorrt":
            settings = engine_settings or EngineSettings(fp16=precision == "fp16")
            log(f"building TensorRT engines (batch {settings.min_batch}-{settings.max_batch}, opt {settings.opt_batch})")
            engines = add_engines(tmp, settings)
        manifest = dataclasses.replace(
            manifest, precision=precision, engines=engines,
            files={**{s.file: sha256_file(tmp / s.file) for s in manifest.graphs.values()},
                   **{e["file"]: sha256_file(tmp / e["file"]) for e in engines.values()}})
        manifest.check()
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, manifest, checks


def _pixel_input(tmp: Path, manifest: BundleManifest, tolerance: float, log: Callable[[str], None]) -> BundleManifest:
    """Fold the normalisation into the encoder (``pixel_input``) and check it against the float32 graph on
    random pixels normalised as the runtime does; returns the manifest that says so."""
    from corel_annotate.runtime.preprocessing import preprocess

    from PIL import Image

    encoder = tmp / manifest.graphs["encoder"].file
    pre = manifest.preprocess
    float_session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    fold_normalisation(encoder, manifest.image_input, pre)
    pixel_session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(2).integers(0, 256, (2, pre.image_size, pre.image_size, 3), dtype=np.uint8)
    floats = np.stack([preprocess(Image.fromarray(p), pre) for p in pixels])
    want = float_session.run(None, {manifest.image_input: floats})
    got = pixel_session.run(None, {manifest.image_input: pixels})
    worst = max(float(np.max(np.abs(w - g))) if w.size else 0.0 for w, g in zip(want, got))
    log(f"  encoder with pixel input: max |uint8 graph - float32 graph| = {worst:.2e}")
    if worst > tolerance:
        raise ValueError(f"encoder.onnx with pixel input differs from the float32 graph by {worst:.2e} "
                         f"(tolerance {tolerance:.0e})")
    pixel_pre = pixel_preprocess(pre)
    spec = manifest.graphs["encoder"]
    spec = dataclasses.replace(spec, inputs=(TensorSpec(manifest.image_input, "uint8", (BATCH, *pixel_pre.input_shape)),))
    return dataclasses.replace(manifest, preprocess=pixel_pre, graphs={**manifest.graphs, "encoder": spec})


def _oof_scores(checkpoint: Path) -> np.ndarray | None:
    """The head's out-of-fold scores on every training photo (``--threshold-tuning oof``), if stored."""
    scores = load_checkpoint(checkpoint)[1].get("oof_scores")
    return scores.float().numpy() if isinstance(scores, torch.Tensor) else None


def _sequence_spec(spec: MethodSpec, vocab: Vocabulary, decoding) -> SequenceSpec | None:
    """The manifest's description of the decoder loop, from the registry entry."""
    if not spec.is_sequence:
        return None
    return SequenceSpec(token_input=TOKEN_INPUT, log_probs_output=LOG_PROBS_OUTPUT, state=dict(spec.state),
                        start_id=vocab.start_id, stop_id=vocab.stop_id, decoding=decoding,
                        constants=tuple(spec.constants), attention_output=spec.optional_outputs.get("attention"))


def _lower_precision(tmp: Path, decls: dict[str, GraphDecl], precision: str, cfg, calibration: str | Path | None,
                     max_drop: float, log: Callable[[str], None]) -> Int8Report | None:
    """Replace the fp32 graphs in ``tmp`` with their fp16 or int8 forms; int8 returns what its accuracy
    check measured.  The decoder step (dynamic int8) is converted first, so the encoder's check judges
    the whole int8 bundle."""
    if precision == "fp16":
        for name in decls:
            convert_fp16(tmp / f"{name}.onnx", tmp / f"{name}.fp16.onnx")
            os.replace(tmp / f"{name}.fp16.onnx", tmp / f"{name}.onnx")
        return None
    for name in decls:
        if name != "encoder":
            quantize_dynamic_int8(tmp / f"{name}.onnx", tmp / f"{name}.int8.onnx")
            os.replace(tmp / f"{name}.int8.onnx", tmp / f"{name}.onnx")
    images = _calibration_images(cfg, calibration)
    validation = validation_set(cfg)
    log(f"calibrating the int8 encoder on {len(images)} photos"
        + (f"; accuracy control on {len(validation.images)} validation photos (budget {max_drop} per-class F1)"
           if validation is not None else "; no validation photos here, so its accuracy is not checked"))
    with tempfile.TemporaryDirectory(dir=tmp.parent) as work:
        judge = BundleJudge(tmp, validation, Path(work)) if validation is not None else None
        report = quantize_encoder(tmp / "encoder.onnx", tmp / "encoder.int8.onnx", images, IMAGE_INPUT, judge,
                                  max_drop, log)
    os.replace(tmp / "encoder.int8.onnx", tmp / "encoder.onnx")
    for leftover in tmp.glob("*.data"):
        leftover.unlink()
    return report


def _calibration_images(cfg, calibration: str | Path | None) -> np.ndarray:
    """Photos from ``--calibration`` (files, folders, lists), else a sample of the checkpoint's training images."""
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.photos import collect_paths

    preprocess = cfg.preprocess
    if calibration is not None:
        paths = collect_paths([calibration])
    else:
        data_dir = cfg.data.get("dir")
        if not data_dir or not Path(data_dir).is_dir():
            raise ValueError(f"int8 calibration needs photos: the training data {data_dir!r} is not here; "
                             "pass --calibration DIR")
        paths = [s.path for s in CorelDataset(data_dir).read("train").samples]
    if not paths:
        raise ValueError(f"{calibration}: no calibration images found")
    return calibration_images(paths, preprocess)


def verify(bundle: Path, modules: dict[str, torch.nn.Module], decls: dict[str, GraphDecl], image_size: int,
           num_tokens: int, batch_sizes: tuple[int, ...], tolerance: float,
           log: Callable[[str], None]) -> list[GraphCheck]:
    """Run every graph in ONNX Runtime at each batch size and compare each output with PyTorch."""
    checks: list[GraphCheck] = []
    sessions = {name: ort.InferenceSession(str(bundle / f"{name}.onnx"), providers=["CPUExecutionProvider"])
                for name in decls}
    gen = torch.Generator().manual_seed(1)
    for batch in batch_sizes:
        encoder_out = None
        for name, decl in decls.items():
            args = _inputs(name, decl, batch, encoder_out, image_size, num_tokens, gen)
            with torch.no_grad():
                expected = modules[name](*args)
            expected = expected if isinstance(expected, tuple) else (expected,)
            feed = {io.name: t.numpy() for io, t in zip(decl.inputs, args)}
            got = sessions[name].run([io.name for io in decl.outputs], feed)
            for io, e, g in zip(decl.outputs, expected, got):
                diff = float(np.max(np.abs(e.numpy() - g))) if e.numel() else 0.0
                checks.append(GraphCheck(name, io.name, batch, diff))
            if name == "encoder":
                encoder_out = {io.name: t for io, t in zip(decl.outputs, expected)}
    worst = max(checks, key=lambda c: c.max_abs_diff)
    for c in checks:
        log(f"  {c.graph}.{c.output} batch {c.batch}: max |onnx - torch| = {c.max_abs_diff:.2e}")
    if worst.max_abs_diff > tolerance:
        raise ValueError(f"{worst.graph}.onnx output {worst.output} differs from PyTorch by {worst.max_abs_diff:.2e} "
                         f"at batch {worst.batch} (tolerance {tolerance:.0e})")
    return checks
