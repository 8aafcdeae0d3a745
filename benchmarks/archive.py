"""Archive throughput: ``corel-infer``'s in-process pipeline over a folder of camera files, per engine,
against the core-time bound ``cores / (decode + resize + encoder + decoder)``.

Each stage's core time is measured alone on one thread (the engine opened with one thread, the batch
``corel-infer`` uses), so the bound is what the cores could do if no cycle were lost: to waiting, to
spinning threads, to stages holding the interpreter's lock, or to a core left idle while the other
decodes.  The pipeline is :class:`~corel_annotate.runtime.jobs.local.LocalJob`, the code ``corel-infer``
runs, timed after one warm-up batch (start-up excluded).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.jobs.local import LocalJob
from corel_annotate.runtime.jobs.records import InferOptions
from corel_annotate.runtime.preprocessing import preprocess, read_image

STAGES = ("decode", "resize", "encoder", "decoder")


@dataclass(frozen=True)
class Engine:
    """One way to run a bundle: ``device`` and ``precision`` as the CLIs take them (``auto`` too)."""

    name: str
    bundle: Path
    device: str = "cpu"
    precision: str = "fp32"


@dataclass
class ArchiveRow:
    """One engine: per-photo core time of each stage (ms on one thread), the bound, and the pipeline."""

    engine: str
    resolved: str
    batch: int
    core_ms: dict[str, float] = field(default_factory=dict)
    bound_photos_per_s: float = 0.0
    pipeline_photos_per_s: list[float] = field(default_factory=list)
    threads: int = 0
    decode_workers: int = 0
    files: str = ""

    @property
    def best(self) -> float:
        return max(self.pipeline_photos_per_s)

    @property
    def fraction_of_bound(self) -> float:
        return self.best / self.bound_photos_per_s

    def to_dict(self) -> dict:
        return {**asdict(self), "core_ms_total": sum(self.core_ms.values()), "best_photos_per_s": self.best,
                "fraction_of_bound": self.fraction_of_bound}


def core_times(engine: Engine, paths: Sequence[Path], batch: int, repeats: int = 2) -> tuple[dict[str, float], str]:
    """Median per-photo ms of each stage on one thread: decoding the file's pixels (by the bundle's rule),
    resize, the encoder at ``batch``, and the labels from its outputs (the search, or thresholds)."""
    annotator = Annotator.load(engine.bundle, device=engine.device, threads=1, precision=engine.precision)
    config = annotator.preprocess_config
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    chunks = [list(paths[i:i + batch]) for i in range(0, len(paths) - batch + 1, batch)]
    annotator.annotate_batch(np.stack([preprocess(read_image(p, p.name, min_size=config.decode_size), config)
                                       for p in chunks[0]]))   # warm-up
    for _ in range(repeats):
        for chunk in chunks:
            arrays = []
            for p in chunk:
                t0 = time.perf_counter()
                image = read_image(p, p.name, min_size=config.decode_size)
                t1 = time.perf_counter()
                arrays.append(preprocess(image, config))
                t2 = time.perf_counter()
                samples["decode"].append((t1 - t0) * 1000)
                samples["resize"].append((t2 - t1) * 1000)
            array = np.stack(arrays)
            t0 = time.perf_counter()
            annotator.encode(array)
            t1 = time.perf_counter()
            annotator.annotate_batch(array)
            t2 = time.perf_counter()
            samples["encoder"].append((t1 - t0) * 1000 / len(chunk))
            samples["decoder"].append(max(0.0, (t2 - t1) - (t1 - t0)) * 1000 / len(chunk))
    return {s: statistics.median(v) for s, v in samples.items()}, annotator.engine


def pipeline_rate(engine: Engine, paths: Sequence[Path], batch: int, threads: int = 0,
                  previews: bool = False) -> tuple[float, str]:
    """Photos/s of ``corel-infer``'s job over ``paths`` (every record consumed), after one warm-up batch."""
    job = LocalJob.load(engine.bundle, device=engine.device, threads=threads, precision=engine.precision)
    options = InferOptions(batch_size=batch, previews=previews)
    for _ in job.records(list(paths[:batch]), options):
        pass
    t0 = time.perf_counter()
    count = sum(1 for r in job.records(list(paths), options) if not r.failed)
    return count / (time.perf_counter() - t0), job.engine


@dataclass(frozen=True)
class Lever:
    """One way to run the pipeline, to measure a lever side by side: the JPEG decoder (``simplejpeg``, the
    runtime's, or ``pillow``, draft mode as before), the prefetch unit (``photo``, the runtime's, or
    ``batch``, a whole batch per thread as before), decoding threads and engine threads (0: defaults)."""

    name: str
    decoder: str = "simplejpeg"
    unit: str = "photo"
    workers: int = 0
    threads: int = 0


LEVERS = (Lever("before: Pillow draft, a batch per thread", "pillow", "batch"),
          Lever("simplejpeg, a batch per thread", "simplejpeg", "batch"),
          Lever("Pillow draft, a photo per task", "pillow", "photo"),
          Lever("now: simplejpeg, a photo per task"),
          Lever("now, engine on 1 thread", threads=1),
          Lever("now, 3 decoding threads", workers=3),
          Lever("now, 1 decoding thread", workers=1))


@contextlib.contextmanager
def jpeg_decoder(name: str) -> Iterator[None]:
    """Within the block, JPEGs decode through ``name``: ``simplejpeg`` (the runtime's path) or ``pillow``
    (its fallback, and the path before it), to time one against the other."""
    from corel_annotate.runtime import preprocessing

    if name not in ("simplejpeg", "pillow"):
        raise ValueError(f"decoder {name!r}: simplejpeg or pillow")
    if name == "simplejpeg" and not preprocessing.turbo_available():
        raise ValueError("simplejpeg is not installed (pip install simplejpeg)")
    saved = preprocessing.turbo_available
    preprocessing.turbo_available = (lambda: False) if name == "pillow" else saved
    try:
        yield
    finally:
        preprocessing.turbo_available = saved


def lever_rate(engine: Engine, lever: Lever, paths: Sequence[Path], batch: int) -> float:
    """Photos/s of the job's loop (batches decoded ahead, ``annotate_batch``, records) under ``lever``."""
    from corel_annotate.runtime.jobs.records import ok_record
    from corel_annotate.runtime.photos import decode_workers, load_batch, prefetch, prefetch_batches

    annotator = Annotator.load(engine.bundle, device=engine.device, threads=lever.threads, precision=engine.precision)
    config, workers = annotator.preprocess_config, lever.workers or decode_workers()

    def batches(files: Sequence[Path]):
        if lever.unit == "batch":
            chunks = [files[i:i + batch] for i in range(0, len(files), batch)]
            return prefetch(chunks, lambda c: load_batch(c, config), workers, workers)
        return prefetch_batches(files, config, batch, workers, workers)

    with jpeg_decoder(lever.decoder):
        for b in batches(paths[:batch]):
            annotator.annotate_batch(b.array)
        t0 = time.perf_counter()
        count = 0
        for b in batches(paths):
            for path, result in zip(b.paths, annotator.annotate_batch(b.array)):
                ok_record(path, result.labels, result.scores)
                count += 1
        return count / (time.perf_counter() - t0)


def bench_levers(engine: Engine, levers: Sequence[Lever], paths: Sequence[Path], batch: int, rounds: int,
                 log: Callable[[str], None]) -> list[dict]:
    """Each lever's photos/s on one engine, ``rounds`` interleaved rounds (alternating order)."""
    rates: dict[str, list[float]] = {lv.name: [] for lv in levers}
    for r in range(rounds):
        for lv in (levers if r % 2 == 0 else levers[::-1]):
            time.sleep(0.2)
            rates[lv.name].append(lever_rate(engine, lv, paths, batch))
            log(f"  round {r + 1}: {lv.name:40s} {rates[lv.name][-1]:6.1f} photos/s")
    return [{**asdict(lv), "photos_per_s": rates[lv.name], "median": statistics.median(rates[lv.name])}
            for lv in levers]


def bench_archive(engines: Sequence[Engine], paths: Sequence[Path], batch: int, cores: int, rounds: int,
                  log: Callable[[str], None], threads: int = 0, files: str = "") -> list[ArchiveRow]:
    """Each engine's core times, then ``rounds`` pipeline runs per engine, interleaved (each round runs
    every engine in turn, so a slow spell of the machine falls on all alike)."""
    from corel_annotate.runtime.photos import decode_workers

    rows = []
    for e in engines:
        core, resolved = core_times(e, paths[:max(batch * 4, 32)], batch)
        rows.append(ArchiveRow(e.name, resolved, batch, core, cores * 1000.0 / sum(core.values()),
                               threads=threads, decode_workers=decode_workers(), files=files))
        log(f"  {files}: {e.name:24s} ({resolved}): core ms/photo " + ", ".join(f"{s} {core[s]:.2f}" for s in STAGES)
            + f"; bound {rows[-1].bound_photos_per_s:.1f} photos/s on {cores} cores")
    for r in range(rounds):
        for e, row in zip(engines, rows):
            time.sleep(0.2)
            rate, _ = pipeline_rate(e, paths, batch, threads)
            row.pipeline_photos_per_s.append(rate)
            log(f"  round {r + 1}: {files}: {e.name:24s} {rate:6.1f} photos/s = {rate / row.bound_photos_per_s:.0%} of the bound")
    return rows


def bench_previews(engine: Engine, paths: Sequence[Path], batch: int, rounds: int,
                   log: Callable[[str], None]) -> dict:
    """``corel-infer --previews`` against the default on files with a camera's large preview: how often the
    labels differ, the decode time per photo, and the pipeline's photos/s (interleaved rounds)."""
    from corel_annotate.runtime.photos import prefetch_batches

    annotator = Annotator.load(engine.bundle, device=engine.device, precision=engine.precision)
    config = annotator.preprocess_config
    labels: dict[bool, list[list[str]]] = {}
    for previews in (False, True):
        labels[previews] = [sorted(a.labels) for b in prefetch_batches(paths, config, batch, previews=previews)
                            for a in annotator.annotate_batch(b.array)]
    differ = sum(a != b for a, b in zip(labels[False], labels[True]))
    decode = {}
    for previews in (False, True):
        samples = []
        for p in paths[:32]:
            t0 = time.perf_counter()
            read_image(p, p.name, min_size=config.decode_size, preview_size=config.image_size if previews else None)
            samples.append((time.perf_counter() - t0) * 1000)
        decode["previews" if previews else "full"] = statistics.median(samples)
    rates: dict[str, list[float]] = {"full": [], "previews": []}
    for r in range(rounds):
        for previews in ((False, True) if r % 2 == 0 else (True, False)):
            time.sleep(0.2)
            rates["previews" if previews else "full"].append(pipeline_rate(engine, paths, batch, previews=previews)[0])
    result = {"photos": len(paths), "labels_differ": differ, "label_difference_rate": differ / len(paths),
              "decode_ms": decode, "photos_per_s": rates,
              "best": {k: max(v) for k, v in rates.items()}}
    log(f"  previews: labels differ on {differ}/{len(paths)} photos; decode {decode['full']:.1f} -> "
        f"{decode['previews']:.1f} ms; {result['best']['full']:.1f} -> {result['best']['previews']:.1f} photos/s")
    return result


def engines_for(bundles: dict[str, Path]) -> list[Engine]:
    """Every engine this machine has for the bundles (``fp32``, ``int8``): onnxruntime, OpenVINO in each
    precision it runs here, and ``auto`` (what the CLIs pick) on the fp32 bundle."""
    engines = [Engine(f"onnxruntime {p}", b) for p, b in bundles.items()]
    try:
        from corel_annotate.runtime.engines.openvino_session import cpu_precisions

        precisions = cpu_precisions()
    except ValueError:
        precisions = []
    for p, b in bundles.items():
        for ep in precisions if p == "fp32" else ["fp32"][:bool(precisions)]:
            engines.append(Engine(f"openvino {ep}" + ("" if p == "fp32" else f" ({p} bundle)"), b, "openvino", ep))
    if "fp32" in bundles:
        engines.append(Engine("auto", bundles["fp32"], "auto", "auto"))
    return engines


def run_archive(bundles: dict[str, Path], folders: dict[str, tuple[list[Path], dict]], batch: int, rounds: int,
                command: str, log: Callable[[str], None], threads: int = 0, levers: bool = True,
                previews: tuple[list[Path], dict] | None = None) -> dict:
    """The archive benchmark's result: for each folder of files (by encoding) one row per engine; then, on the
    first folder and the ``auto`` engine, each lever side by side."""
    from .hardware import machine, usable_cores

    cores = usable_cores()
    engines = engines_for(bundles)
    rows = []
    for name, (paths, _) in folders.items():
        rows += bench_archive(engines, paths, batch, cores, rounds, log, threads, name)
    result = {"machine": machine("per row").to_dict(), "command": command, "cores": cores, "batch": batch,
              "rounds": rounds, "folders": {k: info for k, (_, info) in folders.items()},
              "rows": [r.to_dict() for r in rows]}
    first = next(iter(folders))
    fastest = max((r for r in rows if r.files == first), key=lambda r: r.best)
    auto = next((r for r in rows if r.files == first and r.engine == "auto"), None)
    result["auto_fraction_of_fastest"] = auto.best / fastest.best if auto else None
    if levers:
        log(f"levers on {first}, engine auto")
        result["levers"] = bench_levers(engines[-1], LEVERS, folders[first][0], batch, rounds, log)
        result["levers_files"] = first
    if previews:
        log("corel-infer --previews on files with a camera's large preview, engine auto")
        result["previews"] = {**bench_previews(engines[-1], previews[0], batch, rounds, log), "files": previews[1]}
    return result


def markdown(result: dict, command: str) -> str:
    """The archive tables: per folder, each engine's core time per stage, the bound, the pipeline and its
    share of the bound; then the levers side by side."""
    lines = [f"`corel-infer`'s job at batch {result['batch']} on {result['cores']} cores, best of {result['rounds']} "
             "interleaved rounds. Core ms: each stage alone on one thread, per photo; the bound is cores × 1000 ÷ "
             "their sum."]
    for name, f in result["folders"].items():
        lines += ["", f"**{name}**: {f['files']} camera files, {f['size']}, mean {f['mean_mb']:.2f} MB (from "
                      f"{f['min_mb']:.2f} to {f['max_mb']:.2f}), {f['progressive']} progressive, {f['exif_oriented']} "
                      "stored sideways with an EXIF orientation.", "",
                  "| engine | runs as | photo MB | decode ms | resize ms | encoder ms | decoder ms | bound photos/s "
                  "| corel-infer photos/s | of bound |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in (r for r in result["rows"] if r["files"] == name):
            c = r["core_ms"]
            lines.append(f"| {r['engine']} | {r['resolved']} | {f['mean_mb']:.2f} | {c['decode']:.2f} | "
                         f"{c['resize']:.2f} | {c['encoder']:.2f} | {c['decoder']:.2f} | "
                         f"{r['bound_photos_per_s']:.1f} | {r['best_photos_per_s']:.1f} | {r['fraction_of_bound']:.0%} |")
    if result.get("auto_fraction_of_fastest"):
        lines += ["", f"`auto` reached {result['auto_fraction_of_fastest']:.0%} of the fastest engine's photos/s "
                      f"({next(iter(result['folders']))})."]
    if result.get("levers"):
        base = result["levers"][0]["median"]
        lines += ["", f"Levers, side by side on {result['levers_files']} (engine `auto`; median of the rounds):", "",
                  "| pipeline | decoder | prefetch unit | decoding threads | engine threads | photos/s | ÷ before |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        for lv in result["levers"]:
            lines.append(f"| {lv['name']} | {lv['decoder']} | {lv['unit']} | {lv['workers'] or 'default'} | "
                         f"{lv['threads'] or 'default'} | {lv['median']:.1f} | {lv['median'] / base:.2f}× |")
    if result.get("previews"):
        pv = result["previews"]
        f = pv["files"]
        lines += ["", f"`corel-infer --previews` (opt-in) on {f['files']} camera files with a {f['preview']} large "
                      f"preview in their MPF index (mean {f['mean_mb']:.2f} MB with it), engine `auto`:", "",
                  "| decoding | decode ms/photo | corel-infer photos/s | labels that differ from the full picture's |",
                  "| --- | ---: | ---: | ---: |",
                  f"| the photo (default) | {pv['decode_ms']['full']:.2f} | {pv['best']['full']:.1f} | – |",
                  f"| its preview | {pv['decode_ms']['previews']:.2f} | {pv['best']['previews']:.1f} | "
                  f"{pv['labels_differ']} of {pv['photos']} ({pv['label_difference_rate']:.1%}) |"]
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
