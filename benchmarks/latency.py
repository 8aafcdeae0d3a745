"""Latency of every way to run one checkpoint, side by side on the same photos.

Variants: PyTorch eager (the reference path), and the runtime on fp32, fp16 and int8
bundles (and TensorRT where it is installed).  For each variant and batch size:
encoder latency, decoder-step latency (recurrent methods), and end to end from JPEG
bytes to labels with greedy, beam 3 and beam 10 decoding.  Medians and spread over
repeated runs after warm-up; thread counts recorded.
"""
from __future__ import annotations

import io
import itertools
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.preprocessing import preprocess, read_image


@dataclass
class Timing:
    """Seconds per call: median and the 10th/90th percentiles over ``n`` runs."""

    median: float
    p10: float
    p90: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Timing":
        ordered = sorted(samples)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        return cls(statistics.median(ordered), pick(0.1), pick(0.9), len(ordered))


def decode_jpeg(data: bytes, config: PreprocessConfig) -> np.ndarray:
    """JPEG bytes to the model input, the same steps ``corel-infer`` takes for a file."""
    return preprocess(read_image(io.BytesIO(data), "bytes", min_size=config.decode_size), config)


def decode_batch(jpegs: Sequence[bytes], config: PreprocessConfig) -> np.ndarray:
    """JPEG bytes to a batch as ``config`` declares the encoder's input (uint8 pixels or normalised float32)."""
    return np.stack([decode_jpeg(j, config) for j in jpegs])


@dataclass
class Row:
    variant: str
    batch: int
    threads: int
    encoder_ms: Timing | None = None
    step_ms: Timing | None = None
    api_ms: Timing | None = None
    end_to_end_ms: dict[str, Timing] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class RuntimeVariant:
    """One bundle through the runtime (``decode`` overrides the bundle's decode rule: ``full`` is the
    path before draft decoding existed)."""

    def __init__(self, name: str, bundle: Path, device: str = "cpu", threads: int = 0, decode: str | None = None,
                 precision: str = "fp32", step_device: str = "auto") -> None:
        from dataclasses import replace

        self.name = name
        self.annotator = Annotator.load(bundle, device=device, threads=threads, precision=precision,
                                        step_device=step_device)
        if decode:
            self.annotator.preprocess_config = replace(self.annotator.preprocess_config, decode=decode)
        self.config = self.annotator.preprocess_config
        self.is_sequence = self.annotator.manifest.is_sequence

    def prepare(self, jpegs: Sequence[bytes]) -> np.ndarray:
        """The photos as this bundle's encoder takes them (uint8 pixels or the normalised float32 tensor)."""
        return decode_batch(jpegs, self.config)

    def encoder(self, batch: np.ndarray) -> Callable[[], object]:
        return lambda: self.annotator.encode(batch)

    def step(self, batch: np.ndarray) -> Callable[[], object] | None:
        if not self.is_sequence:
            return None
        state = self.annotator.start_state(self.annotator.encode(batch))
        tokens = np.full(batch.shape[0], self.annotator.manifest.sequence.start_id, dtype=np.int64)
        return lambda: self.annotator.step(tokens, state)

    def api(self, paths: Sequence[Path]) -> Callable[[], object]:
        """The public API as a user's own loop calls it: ``Annotator.annotate([path], batch_size=1)``,
        greedy, the next photo at each call."""
        options = {"beam_width": 1} if self.is_sequence else {}
        photos = itertools.cycle(paths)
        return lambda: self.annotator.annotate([next(photos)], batch_size=1, **options)

    def end_to_end(self, jpegs: list[bytes], beam: int) -> Callable[[], object]:
        def run():
            batch = self.prepare(jpegs)
            if self.is_sequence:
                return self.annotator.annotate_batch(batch, beam_width=beam)
            return self.annotator.annotate_batch(batch)
        return run


class TorchVariant:
    """The checkpoint in PyTorch eager mode with the reference decoders."""

    def __init__(self, checkpoint: Path, threads: int = 0) -> None:
        import torch

        from corel_annotate.training.checkpoint import model_from_checkpoint

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.name = "pytorch-eager"
        self.model, self.cfg = model_from_checkpoint(checkpoint)
        self.config = self.cfg.preprocess
        self.is_sequence = self.model.is_sequence

    def prepare(self, jpegs: Sequence[bytes]) -> np.ndarray:
        """The photos normalised as in training."""
        return decode_batch(jpegs, self.config)

    def encoder(self, batch: np.ndarray) -> Callable[[], object]:
        x = self.torch.from_numpy(batch)

        def run():
            with self.torch.no_grad():
                feats = self.model.features(x)
                return self.model.init_state(feats) if self.is_sequence else self.model.logits(feats)
        return run

    def step(self, batch: np.ndarray) -> Callable[[], object] | None:
        if not self.is_sequence:
            return None
        with self.torch.no_grad():
            state = self.model.init_state(self.model.features(self.torch.from_numpy(batch)))
        tokens = self.torch.full((batch.shape[0],), self.cfg.model.num_labels + 1, dtype=self.torch.long)

        def run():
            with self.torch.no_grad():
                return self.model.step(tokens, state)
        return run

    def end_to_end(self, jpegs: list[bytes], beam: int) -> Callable[[], object]:
        from corel_annotate.training.evaluation import predict_images

        decode_config = self.cfg.decode.replace(beam_width=beam)

        def run():
            batch = self.prepare(jpegs)
            return predict_images(self.model, batch, decode_config, self.cfg.thresholds, self.cfg.top_k,
                                  self.cfg.min_labels)
        return run


def bench_variants(variants: list, jpegs: list[bytes], batch_sizes: Sequence[int],
                   beams: Sequence[int], repeats: int, warmup: int, threads: int, log: Callable[[str], None],
                   rounds: int = 3, paths: Sequence[Path] = ()) -> list[Row]:
    """Every measurement for every variant, interleaved: each round times each variant in turn
    (``warmup`` untimed calls, then ``repeats`` timed ones), so a slow spell of the machine falls on
    all variants alike; a short pause between jobs lets the previous engine's spinning threads go
    idle.  Per-image figures are per-call figures divided by the batch; each variant's encoder and step
    get the photos as its own bundle takes them (``prepare``).  With ``paths``, batch 1 also times
    ``Annotator.annotate`` called once per photo file (``api_ms``)."""
    rows = []
    for b in batch_sizes:
        chunk = [jpegs[i % len(jpegs)] for i in range(b)]
        jobs: dict[tuple[str, str], Callable[[], object]] = {}
        for v in variants:
            batch = v.prepare(chunk)
            jobs[(v.name, "encoder")] = v.encoder(batch)
            step = v.step(batch)
            if step is not None:
                jobs[(v.name, "step")] = step
            for beam in (beams if v.is_sequence else (1,)):
                jobs[(v.name, "greedy" if beam == 1 else f"beam{beam}")] = v.end_to_end(chunk, beam)
            if b == 1 and paths and hasattr(v, "api"):
                jobs[(v.name, "api")] = v.api(paths)
        samples: dict[tuple[str, str], list[float]] = {k: [] for k in jobs}
        for _ in range(rounds):
            for key, fn in jobs.items():
                time.sleep(0.05)
                for _ in range(warmup):
                    fn()
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    samples[key].append(time.perf_counter() - t0)
        for v in variants:
            row = Row(v.name, b, threads)
            row.encoder_ms = _per_image(Timing.of(samples[(v.name, "encoder")]), b)
            if (v.name, "step") in samples:
                row.step_ms = _scale(Timing.of(samples[(v.name, "step")]), 1000.0)
            if (v.name, "api") in samples:
                row.api_ms = _scale(Timing.of(samples[(v.name, "api")]), 1000.0)
            for (name, kind), values in samples.items():
                if name == v.name and kind not in ("encoder", "step", "api"):
                    row.end_to_end_ms[kind] = _per_image(Timing.of(values), b)
            log(f"  {v.name:14s} batch {b:3d}: encoder {row.encoder_ms.median:7.2f} ms/img"
                + (f", step {row.step_ms.median:6.3f} ms" if row.step_ms else "")
                + (f", Annotator.annotate {row.api_ms.median:7.2f} ms/photo" if row.api_ms else "")
                + "".join(f", {k} {t.median:7.2f} ms/img" for k, t in row.end_to_end_ms.items()))
            rows.append(row)
    return rows


STAGES = ("decode", "resize", "encoder", "decoder")


def stage_times(variant: "RuntimeVariant", jpegs: Sequence[bytes], repeats: int = 3) -> dict:
    """Where one photo's time goes at batch 1, JPEG bytes to labels: pixel decoding (``read_image``),
    resize (and normalisation, for a float32-input bundle), the encoder, and decoding (greedy steps, or thresholds); medians in ms
    over every photo and repeat, and each stage's share of their sum."""
    from corel_annotate.runtime.search import search_labels

    annotator, config = variant.annotator, variant.config
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    for _ in range(repeats):
        for data in jpegs:
            t0 = time.perf_counter()
            image = read_image(io.BytesIO(data), "bytes", min_size=config.decode_size)
            t1 = time.perf_counter()
            array = preprocess(image, config)[None]
            t2 = time.perf_counter()
            encoded = annotator.encode(array)
            t3 = time.perf_counter()
            if annotator.manifest.is_sequence:
                search_labels(annotator.step, annotator.start_state(encoded), annotator.decoding_config(1),
                       len(annotator.vocabulary))
            else:
                annotator.labels_from_scores(annotator.label_scores(encoded))
            t4 = time.perf_counter()
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                samples[stage].append(seconds * 1000.0)
    medians = {s: statistics.median(v) for s, v in samples.items()}
    total = sum(medians.values())
    return {"ms": medians, "share": {s: m / total for s, m in medians.items()}, "total_ms": total,
            "photo_pixels": list(Image.open(io.BytesIO(jpegs[0])).size)}


def _scale(t: Timing, factor: float) -> Timing:
    return Timing(t.median * factor, t.p10 * factor, t.p90 * factor, t.n)


def _per_image(t: Timing, batch: int) -> Timing:
    return _scale(t, 1000.0 / batch)


def infer_throughput(bundle: Path, folder: Path, batch_size: int, threads: int, decode: str | None = None,
                     device: str = "cpu", precision: str = "fp32") -> dict:
    """Images per second of the ``corel-infer`` pipeline (decoding threads prefetching while the runtime
    works on the previous batch) over a folder, after one warm-up batch."""
    from dataclasses import replace

    from corel_annotate.runtime.photos import collect_paths, prefetch_batches

    annotator = Annotator.load(bundle, threads=threads, device=device, precision=precision)
    if decode:
        annotator.preprocess_config = replace(annotator.preprocess_config, decode=decode)
    paths = collect_paths([folder])
    for batch in prefetch_batches(paths[:batch_size], annotator.preprocess_config, batch_size):
        annotator.annotate_batch(batch.array)
    started = time.perf_counter()
    count = 0
    for batch in prefetch_batches(paths, annotator.preprocess_config, batch_size):
        annotator.annotate_batch(batch.array)
        count += len(batch.paths)
    seconds = time.perf_counter() - started
    return {"images": count, "seconds": seconds, "images_per_second": count / seconds, "batch_size": batch_size,
            "engine": annotator.engine, "decode": annotator.preprocess_config.decode}


def cpu_count() -> int:
    """The cores this process may use (its affinity): the machine record's ``cores``."""
    from .hardware import usable_cores

    return usable_cores()
