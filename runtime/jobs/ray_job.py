"""``corel-infer --ray``: the job on Ray Data, a pool of Annotator actors fed photo paths or photo bytes.

The bundle is verified once on the driver and shipped to the workers through Ray's object store (a
cluster's workers need not see the driver's disk); each actor unpacks it into a content-addressed
folder, loads one :class:`Annotator` and annotates whole batches with the in-process engine's own
per-image code, so its records equal ``corel-infer``'s.  Ray restarts a killed actor and reruns its
batches; :class:`~.records.RecordOutput` drops the records a rerun repeats.  Ray is imported only here."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator, Optional, Sequence

import numpy as np

from ..engines.choice import engine_name, settle_engine
from ..bundle.facts import BundleFacts
from .records import InferOptions, Produced, error_record, ok_record
from ..photos import IMAGE_SUFFIXES, load_batch
from ..bundle.manifest import MANIFEST, BundleManifest, load_manifest
from ..bundle.label_map import LabelMap
from ..bundle.limits import RequestLimits
from ..preprocessing import display_path
from ..reasons import one_line

INSTALL_HINT = "pip install 'corel-annotate[ray]'"
LOCAL = "local"


def _ray():
    """The ``ray`` module with Ray Data, or a ValueError saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        detail = one_line(exc)
        raise ValueError(f"--ray needs Ray Data, which cannot be imported ({detail}): {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class Sizing:
    """How the job sits on the cluster: ``workers`` actors of ``actor_cpus`` logical CPUs each, running
    ``threads`` engine (and photo-decoding) threads, and URI read tasks of ``read_cpus`` each.

    The actors ask for a fraction of a CPU so that they never take every CPU of a small node: with two
    one-CPU actors on two cores Ray Data's read tasks get no CPU and the job stalls."""

    workers: int
    actor_cpus: float
    threads: int
    read_cpus: float = 0.25

    @classmethod
    def for_cluster(cls, cpus: float, workers: int = 0, node_cpus: Optional[float] = None) -> "Sizing":
        """``workers`` actors (0: one per CPU) sharing ``cpus`` CPUs less a quarter CPU for reading, none
        asking for more than the largest node (``node_cpus``) has; an actor's threads match its share."""
        if workers < 0:
            raise ValueError(f"--workers {workers}: give a positive number of actors, or 0 for one per CPU")
        workers = workers or max(1, int(cpus))
        share = max(0.05, (cpus - cls.read_cpus) / workers)
        if node_cpus:
            share = min(share, max(0.05, node_cpus - cls.read_cpus))
        return cls(workers, round(share, 3), max(1, round(share + cls.read_cpus)))


@dataclass(frozen=True)
class ShippedBundle:
    """A verified bundle as bytes (relative path -> contents) and the digest of its manifest, which
    names every file's sha256 and so identifies the whole bundle."""

    files: dict[str, bytes]
    digest: str

    @classmethod
    def read(cls, bundle: Path) -> "ShippedBundle":
        files = {p.relative_to(bundle).as_posix(): p.read_bytes()
                 for p in sorted(bundle.rglob("*")) if p.is_file() and not p.is_symlink()}
        return cls(files, hashlib.sha256(files[MANIFEST]).hexdigest()[:20])

    def unpack(self, root: Path) -> Path:
        """The bundle's folder under ``root`` (written once per machine, atomically by rename)."""
        final = root / self.digest
        if (final / MANIFEST).is_file():
            return final
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
        for name, data in self.files.items():
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        try:
            os.rename(scratch, final)
        except OSError:           # another actor on this machine was first
            shutil.rmtree(scratch, ignore_errors=True)
        return final


class BatchAnnotator:
    """The Ray Data actor: one Annotator, annotating batches of ``path`` (read here) or ``path`` and
    ``bytes`` rows into ``record`` (JSON text) and ``alphas`` (pickled attention weights or empty)."""

    def __init__(self, shipped: list, device: str, precision: str, threads: int, options: InferOptions,
                 labels: Optional[LabelMap] = None, limits: Optional[RequestLimits] = None) -> None:
        import ray

        from ..annotator import Annotator

        bundle: ShippedBundle = ray.get(shipped[0])
        folder = bundle.unpack(Path(tempfile.gettempdir()) / "corel-bundles")
        # Several actors share a node: unpinned engine threads, or OpenVINO pins every actor to the same
        # cores (measured: two one-thread actors on 2 cores each got half a core).
        self.annotator = Annotator.load(folder, device=device, threads=threads, precision=precision, pin_threads=False,
                                        labels=labels)
        self.options, self.threads = options, threads
        self.pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None   # photo decoding
        self.kwargs = options.decoding_kwargs(self.annotator.manifest.is_sequence)
        self.limits = limits or RequestLimits.for_manifest(self.annotator.manifest)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        config, limit = self.annotator.preprocess_config, self.options.max_pixels
        paths = [str(p) for p in batch["path"]]
        records: list[str] = []
        if "bytes" in batch:   # read by Ray: a file over the per-photo limit is not decoded
            photos: list = []
            for path, data in zip(paths, batch["bytes"]):
                too_big = self.limits.check_image(len(data))
                if too_big:
                    records.append(json.dumps(error_record(path, f"{display_path(path)}: {too_big}")))
                else:
                    photos.append((path, bytes(data)))
        else:
            photos = [Path(p) for p in paths]
        loaded = load_batch(photos, config, limit, self.pool)
        records += [json.dumps(error_record(p, reason)) for p, reason in loaded.failed]
        alphas = [b""] * len(records)
        if loaded.array is not None:
            keep = self.options.keep_alphas
            chunk = self.limits.chunk_photos(self.kwargs.get("beam_width"))
            for start in range(0, len(loaded.paths), chunk):   # each search within the memory bound
                results = self.annotator.annotate_batch(loaded.array[start:start + chunk], keep_alphas=keep, **self.kwargs)
                for path, result in zip(loaded.paths[start:start + chunk], results):
                    records.append(json.dumps(ok_record(path, result.labels, result.scores)))
                    alphas.append(pickle.dumps([np.asarray(a) for a in result.alphas]) if keep else b"")
        return {"record": records, "alphas": alphas}


def start_ray(address: str) -> bool:
    """Connect this process to Ray: ``local`` starts a Ray on this machine (all its cores, 127.0.0.1, no
    dashboard, no usage stats), anything else is ``ray.init``'s address.  Reuses a Ray this process
    already runs.  Returns whether this call connected (:meth:`RayJob.close` then disconnects, which
    stops a local Ray and leaves a cluster running)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    # Ray's C++ side logs an error line per actor about Ray Data's own constructor arguments
    # (ray-project/ray#53727); failures that matter reach the driver as Python exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if address != LOCAL:
        _check_reachable(address)
    try:
        if address == LOCAL:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            ray.init(address="local", num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
            return True
        ray.init(address=address, **quiet)
        return True
    except Exception as exc:  # noqa: BLE001 - ray.init raises ConnectionError, RuntimeError, ValueError...
        detail = one_line(exc)
        raise ValueError(f"--ray {address}: cannot start or join Ray ({detail})") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ValueError unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a connection: ``ray.init``
    would otherwise retry an unreachable head for minutes."""
    import socket

    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address)
    if match is None:
        return                                  # "auto" and the like: ray.init knows what they mean
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"--ray {address}: no Ray head answers there ({exc.strerror or exc}); "
                         "start one with `ray start --head`") from None


def _quiet_data() -> None:
    """No progress bars or execution banners from Ray Data (corel-infer draws its own progress)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def list_uri(uri: str) -> list[str]:
    """The image files under a URI (a folder, searched recursively, or one file) as the filesystem
    paths Ray reports for them (``/data/x.jpg`` for file://, ``bucket/x.jpg`` for s3://), sorted."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            return [root]
        if info.type != pafs.FileType.Directory:
            raise ValueError("no such file or folder")
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as exc:
        detail = one_line(exc)
        raise ValueError(f"{uri}: cannot list ({detail})") from None
    return sorted(f.path for f in found if f.type == pafs.FileType.File
                  and os.path.splitext(f.path)[1].lower() in IMAGE_SUFFIXES)


def _scheme_path(uri: str, path: str) -> str:
    """A listed path back as a URI Ray can read (``s3://`` + ``bucket/key``)."""
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{path}" if scheme != "file" else f"file://{path}"


BATCHES_PER_BLOCK = 4
"""A block's records reach the driver only when all of it is annotated, so blocks of a few batches
stream records steadily and spread the work evenly.  With one batch a block and Ray Data's default
queue the actors sat idle ~25% of the time between tasks (2 cores, 1,000 miml-scenes photos: 135
images/s; 4 batches a block and 8 tasks queued per actor: 169, the in-process engine's speed)."""
TASKS_IN_FLIGHT = 8
"""Tasks queued on each actor, so it starts the next block the moment one ends."""


def _blocks(images: int, batch_size: int) -> int:
    return max(1, -(-images // max(1, batch_size * BATCHES_PER_BLOCK)))


class RayJob(BundleFacts):
    """``corel-infer --ray``: Ray started or joined, the bundle verified and in the object store."""

    def __init__(self, address: str, bundle: Path, manifest: BundleManifest, device: str, precision: str,
                 sizing: Sizing, shipped: Any, owns_ray: bool, labels: Optional[LabelMap] = None,
                 limits: Optional[RequestLimits] = None) -> None:
        self.address, self.bundle, self.manifest, self.labels = address, bundle, manifest, labels
        self.limits = limits or RequestLimits.for_manifest(manifest)
        self.device, self.precision, self.sizing = device, precision, sizing
        self._shipped, self._owns_ray = shipped, owns_ray

    @classmethod
    def start(cls, address: str, bundle: Path, device: str = "auto", precision: str = "auto",
              workers: int = 0, labels: Optional[LabelMap] = None, max_beam_width: Optional[int] = None) -> "RayJob":
        """Verify ``bundle`` here (ValueError naming the problem), connect to Ray, put the bundle's files in
        the object store and size the actor pool.  ``auto`` device and precision are settled here, so
        every worker computes alike.  ``labels``: the run-time label map every worker applies.
        ``max_beam_width``: the widest beam the job accepts (None: what fits the decoding memory bound,
        :class:`~corel_annotate.runtime.bundle.limits.RequestLimits`); the workers decode within that bound."""
        manifest = load_manifest(bundle, verify=True)
        if max_beam_width is not None and max_beam_width < 1:
            raise ValueError(f"--max-beam-width {max_beam_width}: at least 1")
        limits = RequestLimits.for_manifest(manifest, max_beam_width)
        if labels is not None:
            labels.bind(manifest.vocabulary, manifest.kind)
        device, precision = settle_engine(device, precision)
        if workers < 0:
            raise ValueError(f"--workers {workers}: give a positive number of actors, or 0 for one per CPU")
        owns = start_ray(address)
        ray = _ray()
        try:
            nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
            sizing = Sizing.for_cluster(float(ray.cluster_resources().get("CPU", 1.0)), workers, max(nodes, default=None))
            shipped = ray.put(ShippedBundle.read(bundle))
        except BaseException:
            if owns:
                ray.shutdown()
            raise
        _quiet_data()
        return cls(address, bundle, manifest, device, precision, sizing, shipped, owns, labels, limits)

    def check_overrides(self, beam_width: Optional[int] = None, top_k: Optional[int] = None,
                        threshold: Optional[float] = None) -> None:
        """The bundle's rules, and the beam width against the job's cap (a wider search could exhaust a
        worker's memory: ``--max-beam-width`` raises the cap)."""
        super().check_overrides(beam_width, top_k, threshold)
        try:
            self.limits.check_beam(beam_width)
        except ValueError as exc:
            raise ValueError(f"{exc}; --max-beam-width raises it") from None

    @property
    def engine(self) -> str:
        n = self.sizing.workers
        return f"ray ({n} worker{'s' if n != 1 else ''}) {engine_name(self.manifest, self.device, self.precision)}"

    def records(self, todo: list[Path], options: InferOptions, uris: Sequence[str] = (),
                done: Collection[str] = frozenset()) -> Iterator[Produced]:
        """Records of the local files ``todo`` (read by the workers) and of the images under ``uris`` that
        have no record in ``done`` (read by Ray), in the order they finish; streamed, never gathered."""
        ray = _ray()
        datasets = []
        if todo:
            datasets.append(ray.data.from_items([{"path": str(p)} for p in todo],
                                                override_num_blocks=_blocks(len(todo), options.batch_size)))
        for uri in uris:
            if options.keep_alphas and not uri.startswith("file://"):
                raise ValueError(f"{uri}: --attention-maps draws on the photos, which must be local files")
            left = [_scheme_path(uri, p) for p in list_uri(uri) if display_path(p) not in done]
            if left:
                datasets.append(ray.data.read_binary_files(left, include_paths=True, num_cpus=self.sizing.read_cpus,
                                                           override_num_blocks=_blocks(len(left), options.batch_size)))
        for ds in datasets:
            yield from self._annotate(ds, options)

    def _annotate(self, ds, options: InferOptions) -> Iterator[Produced]:
        s = self.sizing
        ray = _ray()
        # Ray Data's actor pools restart a dead actor without limit and rerun its batches
        # (max_restarts=-1, max_task_retries=-1 are its defaults): nothing to ask for here.
        pool = ray.data.ActorPoolStrategy(size=s.workers, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT)
        out = ds.map_batches(BatchAnnotator, batch_size=options.batch_size, batch_format="numpy", compute=pool,
                             num_cpus=s.actor_cpus,
                             fn_constructor_args=([self._shipped], self.device, self.precision, s.threads, options,
                                                  self.labels, self.limits))
        try:
            for row in out.iter_rows():
                record = json.loads(row["record"])
                alphas = pickle.loads(row["alphas"]) if row["alphas"] else None
                yield Produced(Path(record["image"]), record, alphas)
        except ray.exceptions.RayError as exc:   # e.g. a worker without the package or the engine
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"--ray: the job failed on the cluster ({detail})") from None

    def close(self) -> None:
        """Disconnect from the Ray this job connected to: a local Ray stops, a cluster keeps running."""
        ray = _ray()
        if not (self._owns_ray and ray.is_initialized()):
            return
        started = _ray_processes() if self.address == LOCAL else []
        ray.shutdown()
        _reap(started)


def _ray_processes() -> list:
    """The processes of the local Ray this process started (GCS, raylet and its workers: descendants)."""
    import psutil  # Ray ships it

    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("ray" in part for part in proc.cmdline()[:2]):
                out.append(proc)
        except psutil.Error:
            pass
    return out


def _reap(procs: list, grace: float = 3.0) -> None:
    """Kill what ``ray.shutdown`` left running after ``grace`` seconds: a worker still exiting when its
    raylet stopped can otherwise outlive the job."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
