"""``corel-bench ray``: corel-infer in process against ``--ray`` with 1..N workers on the same photos and cores.

Each configuration runs in a fresh child process (a fresh local Ray for the Ray rows, so its start-up is
paid and measured every time), configurations alternate round by round so machine noise falls on all
alike, every run's records are compared with the in-process engine's, and one extra run kills an actor
mid-run to check that every photo still gets exactly one record.  CPU seconds are counted per process
(workers, driver, Ray's own processes) for the scaling model."""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .hardware import bundle_precision, machine
from .serve import cpu_seconds

ACTOR_TITLE = "ray::MapWorker(MapBatches(BatchAnnotator))"


@dataclass
class Run:
    """One timed run of one configuration."""

    config: str
    workers: int          # 0: in process
    images: int
    engine: str
    ready_s: float        # engine loaded (local) / Ray up and the bundle in the object store (--ray)
    first_record_s: float  # from the start of the load to the first record
    total_s: float        # from the start of the load to the last record
    steady_images_per_second: float  # between the 10% and the 90% record
    end_to_end_images_per_second: float  # images / total_s
    cpu_ms_per_image: dict[str, float] = field(default_factory=dict)  # workers / driver / ray system, same window


@dataclass
class Parity:
    """One configuration's records against the in-process engine's, by image."""

    config: str
    images: int
    same_images: bool
    same_status_and_labels: int
    max_score_diff: float

    @property
    def identical(self) -> bool:
        return self.same_images and self.same_status_and_labels == self.images and self.max_score_diff <= 1e-5


@dataclass
class KillCheck:
    """A run with one actor SIGKILLed after ``killed_after`` records."""

    images: int
    killed_pid: Optional[int]
    killed_after: int     # records written when the actor was killed
    records: int
    distinct_images: int
    all_ok: bool
    exit_code: int
    total_s: float

    @property
    def passed(self) -> bool:
        return (self.killed_pid is not None and self.killed_after < self.images
                and self.records == self.images == self.distinct_images and self.all_ok and self.exit_code == 0)


def _session_processes(ray_temp: str):
    """The processes of the Ray whose temp dir is ``ray_temp``: (actors, other Ray processes)."""
    import psutil

    roots = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"]
             and any(ray_temp in arg for arg in p.info["cmdline"][1:])]
    actors, system = [], []
    seen = set()
    for root in roots:
        for proc in [root, *root.children(recursive=True)]:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                title = (proc.cmdline() or [""])[0]
            except psutil.Error:
                continue
            (actors if title.startswith(ACTOR_TITLE) else system).append(proc)
    return actors, system


def kill_one_actor(ray_temp: str, out: Path, after: int, killed: list[tuple[int, int]], timeout: float = 300) -> None:
    """Once ``out`` holds ``after`` records, SIGKILL one Annotator actor (a direct child of the raylet)
    of the Ray whose temp dir is ``ray_temp``; its pid and the records written by then go into ``killed``."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = out.read_text().count("\n") if out.exists() else 0
        if written >= after:
            for proc in psutil.process_iter(["cmdline"]):
                cmd = proc.info["cmdline"] or []
                try:
                    parent = " ".join(proc.parent().cmdline()) if cmd and proc.parent() else ""
                except psutil.Error:
                    continue
                if cmd and cmd[0].startswith(ACTOR_TITLE) and "raylet" in parent and ray_temp in parent:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append((proc.pid, written))
                    return
        time.sleep(0.05)


def child(spec: dict) -> dict:
    """One run in this (fresh) process: ``spec`` = bundle, list, out, workers (0: in process), batch_size.
    Throughput and CPU per image are taken between the 10% and the 90% record: the steady state, without
    the start-up and the last batches' tail."""
    from corel_annotate.runtime.jobs.records import InferOptions

    files = [Path(line) for line in Path(spec["list"]).read_text().splitlines() if line]
    options = InferOptions(batch_size=spec["batch_size"])
    start = time.perf_counter()
    if spec["workers"]:
        from corel_annotate.runtime.jobs.ray_job import RayJob

        job = RayJob.start("local", Path(spec["bundle"]), "auto", "auto", spec["workers"])
    else:
        from corel_annotate.runtime.jobs.local import LocalJob

        job = LocalJob.load(Path(spec["bundle"]), device="auto", precision="auto")
    produced, engine = job.records(files, options), job.engine
    ready = time.perf_counter() - start
    lo, hi = max(1, len(files) // 10), max(2, len(files) - len(files) // 10)   # the 10% and 90% records
    first = last = 0.0
    marks: dict[int, tuple[float, dict[str, float]]] = {}
    n = 0
    with open(spec["out"], "w", encoding="utf-8") as out:
        for item in produced:
            out.write(json.dumps(item.record) + "\n")
            n += 1
            last = time.perf_counter() - start
            if n == 1:
                first = last
            if n in (lo, hi):
                marks[n] = (last, _cpu_split(bool(spec["workers"])))
    if spec["workers"]:
        job.close()
    (t_lo, cpu_lo), (t_hi, cpu_hi) = marks.get(lo, (first, {})), marks.get(hi, (last, {}))
    window = max(1, hi - lo)
    return asdict(Run(spec["config"], spec["workers"], n, engine, round(ready, 3), round(first, 3), round(last, 3),
                      round(window / max(1e-9, t_hi - t_lo), 2), round(n / max(1e-9, last), 2),
                      {k: round(1000 * (cpu_hi[k] - cpu_lo.get(k, 0.0)) / window, 3) for k in cpu_hi}))


def _cpu_split(ray_run: bool) -> dict[str, float]:
    """CPU seconds so far: this process (the driver), and for a Ray run its actors and Ray's other processes."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu = {"driver": own.ru_utime + own.ru_stime}
    if ray_run:
        actors, system = _session_processes(os.environ["RAY_TMPDIR"])
        cpu.update(workers=cpu_seconds(actors), ray_system=cpu_seconds(system))
    return cpu


def _run_child(spec: dict) -> Run:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    temp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    env["RAY_TMPDIR"] = temp
    cmd = [sys.executable, "-c", "import json, sys; from corel_annotate.benchmarks.ray_bench import child; "
           "print(json.dumps(child(json.loads(sys.argv[1]))))", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if done.returncode != 0:
        raise ValueError(f"{spec['config']}: run failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return Run(**json.loads(done.stdout.strip().splitlines()[-1]))


def _records(path: Path) -> dict[str, dict]:
    return {r["image"]: r for r in map(json.loads, path.read_text().splitlines())}


def compare(config: str, got: dict[str, dict], want: dict[str, dict]) -> Parity:
    """Records equal by image: status, labels (and error text), scores within 1e-5."""
    same, worst = 0, 0.0
    for image, w in want.items():
        g = got.get(image)
        if g is None:
            continue
        same += (g["status"], g.get("labels"), g.get("error")) == (w["status"], w.get("labels"), w.get("error"))
        for a, b in zip(g.get("scores", []), w.get("scores", [])):
            worst = max(worst, abs(a - b))
    return Parity(config, len(want), got.keys() == want.keys(), same, worst)


def kill_check(bundle: Path, listing: Path, images: int, workers: int, scratch: Path) -> KillCheck:
    """``corel-infer --ray`` as a user runs it, with one actor killed a quarter of the way through."""
    out = scratch / "kill.jsonl"
    out.unlink(missing_ok=True)
    temp = tempfile.mkdtemp(prefix="rk-", dir="/tmp")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=temp)
    after = max(1, images // 4)
    killed: list[tuple[int, int]] = []
    cli = shutil.which("corel-infer", path=str(Path(sys.executable).parent)) or "corel-infer"
    cmd = [cli, str(listing), "-m", str(bundle), "-o", str(out), "--ray", "--workers", str(workers), "--no-progress"]
    killer = threading.Thread(target=kill_one_actor, args=(temp, out, after, killed), daemon=True)
    killer.start()
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    total = time.perf_counter() - start
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    pid, at = killed[0] if killed else (None, 0)
    return KillCheck(images, pid, at, len(rows), len({r["image"] for r in rows}),
                     all(r["status"] == "ok" for r in rows), done.returncode, round(total, 2))


def run_ray_bench(bundle: Path, data: Path, images: Optional[int], workers: list[int], rounds: int, batch_size: int,
                  scratch: Path, command: str, log: Callable[[str], None], kill: bool = True) -> dict:
    """Every configuration ``rounds`` times, alternating; parity with the in-process engine; the kill check."""
    from corel_annotate.runtime.photos import collect_paths
    from corel_annotate.runtime.bundle.manifest import load_manifest

    load_manifest(bundle, verify=True)
    photos = collect_paths([str((data / "images").resolve())])
    if not photos:
        raise ValueError(f"{data}/images: no photos")
    photos = photos[:images] if images else photos
    scratch.mkdir(parents=True, exist_ok=True)
    listing = scratch / "photos.txt"
    listing.write_text("\n".join(map(str, photos)) + "\n")
    configs = [("local corel-infer", 0)] + [(f"--ray, {w} worker{'s' if w > 1 else ''}", w) for w in workers]
    runs: dict[str, list[Run]] = {name: [] for name, _ in configs}
    parity: dict[str, Parity] = {}
    reference: Optional[dict] = None
    for r in range(rounds):
        for name, w in configs if r % 2 == 0 else configs[::-1]:
            out = scratch / f"{w}-{r}.jsonl"
            run = _run_child({"config": name, "bundle": str(bundle), "list": str(listing), "out": str(out),
                              "workers": w, "batch_size": batch_size})
            runs[name].append(run)
            log(f"round {r + 1}: {name}: {run.steady_images_per_second:.1f} images/s, first record after "
                f"{run.first_record_s:.1f}s")
            if w == 0 and reference is None:
                reference = _records(out)
        for name, w in configs[1:]:
            if name not in parity and reference is not None:
                parity[name] = compare(name, _records(scratch / f"{w}-{r}.jsonl"), reference)
    checked = kill_check(bundle, listing, len(photos), max(workers), scratch) if kill else None
    if checked:
        log(f"kill check: {'passed' if checked.passed else 'FAILED'} ({checked})")
    return summarise(runs, parity, checked, bundle, data, len(photos), batch_size, command)


def _median_run(rs: list[Run]) -> dict:
    keys = ("ready_s", "first_record_s", "total_s", "steady_images_per_second", "end_to_end_images_per_second")
    out = {k: round(statistics.median(getattr(r, k) for r in rs), 3) for k in keys}
    out["cpu_ms_per_image"] = {k: round(statistics.median(r.cpu_ms_per_image.get(k, 0.0) for r in rs), 3)
                               for k in rs[0].cpu_ms_per_image}
    out["per_round_steady"] = [r.steady_images_per_second for r in rs]
    return {"config": rs[0].config, "workers": rs[0].workers, "engine": rs[0].engine, "images": rs[0].images, **out}


def summarise(runs: dict[str, list[Run]], parity: dict[str, Parity], kill: Optional[KillCheck], bundle: Path,
              data: Path, images: int, batch_size: int, command: str) -> dict:
    rows = [_median_run(rs) for rs in runs.values()]
    local = rows[0]["steady_images_per_second"]
    for row in rows:
        row["vs_local"] = round(row["steady_images_per_second"] / local, 3)
    return {"bundle": str(bundle), "data": str(data), "images": images, "batch_size": batch_size,
            "cpu_count": os.cpu_count(), "machine": machine(bundle_precision(bundle)).to_dict(),
            "rows": rows, "parity": [{**asdict(p), "identical": p.identical} for p in parity.values()],
            "kill": {**asdict(kill), "passed": kill.passed} if kill else None, "command": command}


def markdown(result: dict, command: str = "") -> str:
    """The table, the parity and kill checks, and the scaling model."""
    lines = [f"Command: `{result['command']}`", "",
             f"{result['images']} photos of `{result['data']}`, bundle `{result['bundle']}`, batch "
             f"{result['batch_size']}, {result['cpu_count']} CPU cores; median of the rounds, each configuration "
             "in a fresh process (a fresh local Ray for the --ray rows).", "",
             "| configuration | engine | images/s (steady) | vs local | images/s incl. start-up | ready s | "
             "first record s | CPU ms/image: workers / driver / Ray's processes |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in result["rows"]:
        cpu = row["cpu_ms_per_image"]
        split = (f"{cpu.get('workers', 0):.1f} / {cpu['driver']:.1f} / {cpu.get('ray_system', 0):.1f}"
                 if row["workers"] else f"{cpu['driver']:.1f} (one process)")
        lines.append(f"| {row['config']} | {row['engine']} | {row['steady_images_per_second']:.1f} | "
                     f"{row['vs_local']:.0%} | {row['end_to_end_images_per_second']:.1f} | {row['ready_s']:.2f} | "
                     f"{row['first_record_s']:.2f} | {split} |")
    lines += ["", "| configuration | photos | same images | same status and labels | max score diff | identical |",
              "| --- | ---: | --- | ---: | ---: | --- |"]
    for p in result["parity"]:
        lines.append(f"| {p['config']} | {p['images']} | {'yes' if p['same_images'] else 'no'} | "
                     f"{p['same_status_and_labels']} | {p['max_score_diff']:.1e} | {'yes' if p['identical'] else 'NO'} |")
    kill = result.get("kill")
    if kill:
        lines += ["", f"Kill check (`corel-infer --ray --workers N`, one actor SIGKILLed after {kill['killed_after']} "
                      f"records): {kill['records']} records for {kill['images']} photos, {kill['distinct_images']} "
                      f"distinct, all ok: {kill['all_ok']}, exit {kill['exit_code']}, {kill['total_s']:.1f}s: "
                      f"**{'passed' if kill['passed'] else 'FAILED'}**."]
    lines += ["", *scaling_note(result)]
    return "\n".join(lines) + "\n"


def scaling_note(result: dict) -> list[str]:
    """How throughput scales with workers, from the measured CPU time per image."""
    rows = {r["workers"]: r for r in result["rows"]}
    ray_rows = [r for w, r in sorted(rows.items()) if w]
    if not ray_rows:
        return []
    best = max(ray_rows, key=lambda r: r["workers"])
    cpu = best["cpu_ms_per_image"]
    worker_ms, driver_ms, system_ms = cpu.get("workers", 0.0), cpu["driver"], cpu.get("ray_system", 0.0)
    total = worker_ms + driver_ms + system_ms
    cores = result["cpu_count"]
    return [
        "Scaling model (no GPU here): an image costs the workers "
        f"{worker_ms:.1f} CPU ms (decode, preprocess, encoder, decoder) and Ray "
        f"{driver_ms + system_ms:.1f} ms more ({driver_ms:.1f} in the driver: scheduling, gathering and "
        f"writing records; {system_ms:.1f} in Ray's raylet, GCS and helper actors). On {cores} cores the "
        f"ceiling is {cores} / {total:.1f} ms = {1000 * cores / total:.0f} images/s (measured "
        f"{best['steady_images_per_second']:.0f} with {best['workers']} workers). On a cluster the workers' "
        f"share scales with the workers' cores, so throughput grows about linearly with workers until the "
        f"driver, one process, is the limit: about 1000 / {driver_ms:.1f} ms = "
        f"{1000 / max(driver_ms, 1e-6):.0f} images/s per driver core at this batch size (larger batches cut "
        "the per-batch scheduling part)."]
