"""The machine a benchmark ran on, recorded with its results: CPU model, cores, the ISA flags that
decide engine speed (AVX2, AVX-512, VNNI, BF16, AMX), the engine versions and the precision.

One record, :class:`Machine`, made by :func:`machine`; every ``corel-bench`` result carries it as its
``"machine"`` object (:func:`record_of` adds it where a bench did not), its Markdown names it in one line
(:func:`markdown_line`) and ``corel-bench`` prints :meth:`Machine.describe` when a subcommand starts."""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional

from corel_annotate.runtime.engines.isa import FLAGS, ISA, isa_names, parse_cpuinfo  # noqa: F401 - re-exported

# Engines looked up by their distribution names (never imported); the first name installed counts.
ENGINES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "openvino": ("openvino",),
    "numpy": ("numpy",),
    "pillow": ("pillow",),
}
# Recorded only when the benchmark has already imported them (a runtime path never imports torch).
IMPORTED_ENGINES = {"torch": ("torch",), "tensorrt": ("tensorrt", "tensorrt-cu12"), "ray": ("ray",),
                    "pyexiv2": ("pyexiv2",), "pytriton": ("nvidia-pytriton",)}
ENGINE_NAMES = {"onnxruntime": "onnxruntime", "openvino": "OpenVINO", "torch": "PyTorch", "tensorrt": "TensorRT"}


def usable_cores() -> int:
    """The cores this process may run on (its affinity), else the logical core count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _version(names: tuple[str, ...]) -> Optional[str]:
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def engine_versions() -> dict[str, str]:
    """onnxruntime, OpenVINO, numpy and Pillow as installed; PyTorch, TensorRT, Ray, pyexiv2 and PyTriton
    only when this process has imported them."""
    out = {}
    for key, names in ENGINES.items():
        if (v := _version(names)) is not None:
            out[key] = v
    for key, names in IMPORTED_ENGINES.items():
        if key in sys.modules:
            v = getattr(sys.modules[key], "__version__", None) or _version(names)
            if v is not None:
                out[key] = str(v)
    return out


@dataclass(frozen=True)
class Machine:
    """Where a result was measured. ``cores`` is what the benchmark could use (affinity);
    ``logical_cores`` what the machine has (``os.cpu_count``)."""
    cpu: str
    cores: int
    logical_cores: int
    isa: list[str]
    """Short names: AVX2, AVX-512, VNNI, BF16, AMX (see :data:`ISA`)."""
    flags: list[str]
    """The raw ``/proc/cpuinfo`` flags of :data:`FLAGS` present."""
    engines: dict[str, str] = field(default_factory=dict)
    precision: Optional[str] = None
    """The precision the result was measured at (``fp32``, or which row runs which)."""
    system: str = ""
    python: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Machine":
        """A record read back from a result's JSON, older ones included (raw flags under ``isa``)."""
        raw = [f for f in d.get("flags", d.get("isa", [])) if f in FLAGS]
        isa = d.get("isa", [])
        if not isa or any(name not in ISA for name in isa):
            isa = isa_names(raw)
        cores = int(d.get("cores") or d.get("cpu_count") or 0)
        return cls(cpu=d.get("cpu") or "unknown CPU", cores=cores, logical_cores=int(d.get("logical_cores") or cores),
                   isa=list(isa), flags=raw, engines=dict(d.get("engines", {})), precision=d.get("precision"),
                   system=d.get("system", ""), python=d.get("python", ""))

    def describe(self) -> str:
        """One line: ``AMD EPYC, 2 cores, AVX2 (no AVX-512, VNNI, BF16, AMX); onnxruntime 1.32.0, OpenVINO
        2026.4.1`` (then ``; precision fp32`` when the record has one)."""
        cores = f"{self.cores} cores" if self.cores == self.logical_cores else \
            f"{self.cores} of {self.logical_cores} cores"
        missing = [name for name in ISA if name not in self.isa]
        isa = ", ".join(self.isa) if self.isa else "no " + ", ".join(missing)
        if self.isa and missing:
            isa += f" (no {', '.join(missing)})"
        text = f"{self.cpu}, {cores}, {isa}"
        engines = [f"{ENGINE_NAMES[k]} {v}" for k, v in self.engines.items() if k in ENGINE_NAMES]
        if engines:
            text += "; " + ", ".join(engines)
        if self.precision:
            text += f"; precision {self.precision}"
        return text


def machine(precision: Optional[str] = None, cpuinfo: Optional[str] = None) -> Machine:
    """This machine (``cpuinfo``: a ``/proc/cpuinfo`` text to read instead of this machine's)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    model, flags = parse_cpuinfo(cpuinfo)
    return Machine(cpu=model or platform.processor() or platform.machine() or "unknown CPU", cores=usable_cores(),
                   logical_cores=os.cpu_count() or 1, isa=isa_names(flags), flags=[f for f in FLAGS if f in flags],
                   engines=engine_versions(), precision=precision, system=platform.platform(),
                   python=platform.python_version())


def describe() -> str:
    """This machine in one line (``corel-bench``'s header)."""
    return machine().describe()


def record_of(result: dict, precision: Optional[str] = None) -> dict:
    """``result`` with its ``"machine"`` object: the bench's own record where it made one (the precision
    filled in where it left it out), else this machine's."""
    record = result.get("machine")
    if isinstance(record, dict) and "cpu" in record:
        if precision and not record.get("precision"):
            record = {**record, "precision": precision}
        return {**result, "machine": record}
    return {**result, "machine": machine(precision).to_dict()}


def markdown_line(record: dict) -> str:
    """The line under a result's table naming the machine it came from."""
    return f"Machine: {Machine.from_dict(record).describe()}."


def with_machine_line(text: str, record: dict) -> str:
    """A result's Markdown with the machine line at its end (once)."""
    line = markdown_line(record)
    if line in text:
        return text
    return text.rstrip("\n") + "\n\n" + line + "\n"


def bundle_precision(bundle: Path) -> str:
    """The precision a bundle's manifest records (``fp32`` where it names none or cannot be read)."""
    import json

    try:
        return json.loads((Path(bundle) / "manifest.json").read_text()).get("precision", "fp32")
    except (OSError, ValueError):
        return "fp32"
