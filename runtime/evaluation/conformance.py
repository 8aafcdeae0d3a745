"""The conformance kit's contents and its runner: any runtime, in any language, checked against
small bundles, photos and expected records (``docs/bundle-format.md``, "Conformance").

A kit is a folder written by ``corel-export conformance DIR``: ``kit.json`` (this module's
:class:`Kit`), ``bundles/`` and ``photos/``.  A *run* is one bundle over one photo folder; the
runtime under test is a shell command template with ``{bundle}``, ``{photos}`` and ``{out}``
that writes JSON-lines records (``{"image", "status", "labels", "scores"}``, as ``corel-infer``
writes them).  A *case* checks some photos of a run against expected records, with a stated
score tolerance, and passes or fails on its own.  Expected records come from PyTorch and from
brute-force search when the kit is written, never from the runtime under test.
"""
from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal, Optional

from ..bundle.typed_json import read_strict

KIT_FORMAT = "corel-annotate/conformance"
KIT_VERSION = 1
KIT_FILE = "kit.json"
PLACEHOLDERS = ("{bundle}", "{photos}", "{out}")


@dataclass(frozen=True)
class ExpectedRecord:
    """One photo's expected record: ``ok`` with labels (in rank or emission order) and their
    scores, or ``error`` (the runtime must refuse the photo, with any reason)."""

    status: Literal["ok", "error"]
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()


@dataclass(frozen=True)
class KitRun:
    """One bundle over one photo folder: the runtime under test is called once per run."""

    name: str
    bundle: str
    photos: str


@dataclass(frozen=True)
class KitCase:
    """Photos of one run checked against their expected records.  ``order``: the label lists must
    be equal in order (else as sets); every expected label's score must be within
    ``score_tolerance`` of the runtime's."""

    name: str
    run: str
    description: str
    rules: tuple[str, ...]
    order: bool
    score_tolerance: float
    expected: dict[str, ExpectedRecord]
    may_refuse: bool = False
    """The photos are in a format a runtime need not read (TIFF): a refusal passes, wrong labels do not."""


@dataclass(frozen=True)
class Kit:
    """``kit.json``: the runs and the cases of a conformance kit, and how it was made."""

    format: str
    version: int
    bundle_format_version: int
    runs: tuple[KitRun, ...]
    cases: tuple[KitCase, ...]
    made_by: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def read_kit(kit_dir: str | Path) -> Kit:
    """``KIT/kit.json``, checked (ValueError with a one-line reason naming the file)."""
    path = Path(kit_dir) / KIT_FILE
    if not path.is_file():
        raise ValueError(f"{kit_dir}: not a conformance kit (no {KIT_FILE}); write one with corel-export conformance DIR")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or data.get("format") != KIT_FORMAT or data.get("version") != KIT_VERSION:
        raise ValueError(f"{path}: not a version-{KIT_VERSION} {KIT_FORMAT} file")
    try:
        kit = read_strict(Kit, data)
    except ValueError as exc:
        raise ValueError(f"{path}: invalid kit ({' '.join(str(exc).split())})") from None
    runs = {r.name for r in kit.runs}
    for case in kit.cases:
        if case.run not in runs:
            raise ValueError(f"{path}: case {case.name!r} names no run {case.run!r}")
    return kit


@dataclass(frozen=True)
class CaseResult:
    """A case's verdict, and the first mismatches when it failed."""

    name: str
    passed: bool
    rules: tuple[str, ...]
    problems: tuple[str, ...] = ()


def runtime_command(template: str, bundle: Path, photos: Path, out: Path) -> str:
    """The template with its placeholders replaced by shell-quoted paths (ValueError when one is missing)."""
    missing = [p for p in PLACEHOLDERS if p not in template]
    if missing:
        raise ValueError(f"--runtime {template!r}: needs the placeholders {', '.join(PLACEHOLDERS)} (missing "
                         f"{', '.join(missing)})")
    return (template.replace("{bundle}", shlex.quote(str(bundle))).replace("{photos}", shlex.quote(str(photos)))
            .replace("{out}", shlex.quote(str(out))))


def default_runtime(extra: str = "") -> str:
    """This package's runtime as a template: ``corel-infer`` beside this interpreter."""
    infer = Path(sys.executable).with_name("corel-infer")
    exe = shlex.quote(str(infer)) if infer.is_file() else "corel-infer"
    return f"{exe} {{photos}} --model {{bundle}} -o {{out}} --overwrite --no-progress {extra}".strip()


def read_records(out: Path) -> dict[str, dict]:
    """The runtime's records by photo file name (``image`` or ``path``; the last record of a name wins)."""
    records: dict[str, dict] = {}
    for number, line in enumerate(out.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ValueError(f"{out}:{number}: not a JSON record") from None
        name = record.get("image", record.get("path")) if isinstance(record, dict) else None
        if not isinstance(name, str):
            raise ValueError(f"{out}:{number}: a record needs an 'image' (or 'path') string")
        records[Path(name.replace("\\", "/")).name] = record
    return records


def _short(labels: list) -> str:
    return str(labels) if len(labels) <= 8 else f"[{', '.join(map(repr, labels[:6]))}, ... {len(labels)} labels]"


def compare(case: KitCase, records: dict[str, dict]) -> CaseResult:
    """One case against a run's records: status, labels (in order when the case says so), scores."""
    problems: list[str] = []
    for photo, want in case.expected.items():
        got = records.get(photo)
        if got is None:
            problems.append(f"{photo}: no record")
            continue
        status = got.get("status", "ok")
        if want.status == "error":
            if status == "ok":
                problems.append(f"{photo}: annotated as {got.get('labels')}, expected a refusal")
            continue
        if status != "ok" and case.may_refuse:
            continue
        if status != "ok":
            problems.append(f"{photo}: {status} ({got.get('error', '')}), expected labels {_short(list(want.labels))}")
            continue
        labels, scores = list(got.get("labels", [])), list(got.get("scores", []))
        same = labels == list(want.labels) if case.order else sorted(labels) == sorted(want.labels)
        if not same or len(scores) != len(labels):
            problems.append(f"{photo}: labels {_short(labels)}, expected {_short(list(want.labels))}"
                            + ("" if case.order else " (as a set)"))
            continue
        # in order, position by position (a label may repeat); as sets, label by label
        score_of = dict(zip(labels, scores))
        pairs = (zip(labels, scores, want.scores) if case.order else
                 ((label, score_of[label], s) for label, s in zip(want.labels, want.scores)))
        wrong = [(abs(float(g) - s), label, float(g), s) for label, g, s in pairs
                 if not math.isclose(float(g), s, rel_tol=0.0, abs_tol=case.score_tolerance)]
        if wrong:
            _, label, g, s = max(wrong)
            problems.append(f"{photo}: score of {label!r} {g:.6f}, expected {s:.6f} (tolerance {case.score_tolerance}; "
                            f"{len(wrong)} outside it)")
    return CaseResult(case.name, not problems, case.rules, tuple(problems))


def run_kit(kit_dir: str | Path, template: str, work: Path, timeout: float = 600.0,
            log: Callable[[str], None] = lambda _: None, only: Optional[str] = None, jobs: int = 1) -> list[CaseResult]:
    """Every run of the kit through ``template`` (records under ``work``; ``jobs`` runs at a time), then
    every case judged.  A run whose command writes no records fails its cases with the command's last
    error line.  ``only``: the runs whose name starts with it (``seq-``, ``probe-uint8``), and their cases."""
    kit_dir = Path(kit_dir)
    kit = read_kit(kit_dir)
    if only:
        kit = replace(kit, runs=tuple(r for r in kit.runs if r.name.startswith(only)),
                      cases=tuple(c for c in kit.cases if c.run.startswith(only)))
        if not kit.runs:
            raise ValueError(f"{kit_dir}: no run's name starts with {only!r}")
    runtime_command(template, kit_dir, kit_dir, work)      # the placeholders, checked before anything runs
    work.mkdir(parents=True, exist_ok=True)

    def one(run: KitRun) -> dict[str, dict] | str:
        out = work / f"{run.name}.jsonl"
        out.unlink(missing_ok=True)
        command = runtime_command(template, kit_dir / run.bundle, kit_dir / run.photos, out)
        started = time.perf_counter()
        try:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
            tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            tail = f"no answer within {timeout:.0f} s"
        log(f"run {run.name}: {time.perf_counter() - started:.1f} s")
        try:
            return read_records(out) if out.is_file() else f"the runtime wrote no records ({tail})"
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        records = dict(zip((r.name for r in kit.runs), pool.map(one, kit.runs)))
    results = []
    for case in kit.cases:
        got = records[case.run]
        results.append(CaseResult(case.name, False, case.rules, (got,)) if isinstance(got, str) else compare(case, got))
    return results


def format_results(results: list[CaseResult]) -> str:
    """One line per case (PASS/FAIL, the case, the rules it checks), then the first problem of each failure."""
    lines = []
    for r in results:
        lines.append(f"{'PASS' if r.passed else 'FAIL'}  {r.name}  ({', '.join(r.rules)})")
        lines.extend(f"      {p}" for p in r.problems[:3])
    passed = sum(r.passed for r in results)
    lines.append(f"{passed} of {len(results)} cases passed")
    return "\n".join(lines)


def results_json(results: list[CaseResult], runtime: Optional[str] = None) -> str:
    return json.dumps({"runtime": runtime, "passed": sum(r.passed for r in results), "cases": [asdict(r) for r in results]},
                      indent=1)
