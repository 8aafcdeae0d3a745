"""OpenVINO as a second CPU engine for the same bundles, with the arithmetic precision always explicit.

OpenVINO compiles a bundle's ONNX graphs for the CPU it runs on.  On CPUs with AVX-512 BF16 (or
AMX) it silently computes in bfloat16 unless told otherwise, so the precision is always passed
(``INFERENCE_PRECISION_HINT``) and recorded: ``fp32`` keeps float32 arithmetic (results within
float rounding of onnxruntime), ``bf16`` halves the multiply cost at about three significant
digits.  An int8 bundle's quantised layers run in int8 either way.  The sessions offer the
``run(output_names, feed)`` call of onnxruntime sessions, so the annotator does not care which
engine runs a graph.  Install with ``pip install 'corel-annotate[openvino]'``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle.manifest import GraphSpec

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
_TYPES = {"f32": "float32", "i64": "int64", "f16": "float16", "u8": "uint8"}


def _core():
    try:
        import openvino as ov
    except ImportError:
        raise ValueError("--device openvino: OpenVINO is not installed (pip install 'corel-annotate[openvino]')") from None
    return ov.Core()


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(device: str, precision: str) -> tuple[str, str]:
    """``auto`` made concrete.  The default engine is the fastest one measured within the accuracy budget
    (per-class F1 within 0.01 of fp32; README, Performance): OpenVINO in bfloat16 where the CPU has
    bfloat16 units, OpenVINO fp32 where it does not, onnxruntime where OpenVINO is not installed."""
    if device == "auto":
        device = "openvino" if openvino_available() else "cpu"
    if precision == "auto":
        precision = "bf16" if device == "openvino" and "bf16" in cpu_precisions() else "fp32"
    return device, precision


def cpu_precisions() -> list[str]:
    """The engine precisions this CPU offers through OpenVINO (``fp32`` always; ``bf16`` with BF16 units)."""
    capabilities = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ["fp32"] + (["bf16"] if "BF16" in capabilities else [])


class OpenVINOSession:
    """One graph compiled by OpenVINO for the CPU at an explicit precision."""

    def __init__(self, path: Path, spec: GraphSpec, precision: str = "fp32", threads: int = 0,
                 pin_threads: bool = True) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown engine precision {precision!r} for OpenVINO; choose {', '.join(PRECISIONS)}")
        core = _core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("--precision bf16: this CPU has no bfloat16 units (AVX-512 BF16 or AMX); use fp32")
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        if not pin_threads:   # several engine processes on one machine: OpenVINO would pin them all to the same cores
            config["ENABLE_CPU_PINNING"] = False
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise ValueError(f"{path}: OpenVINO cannot compile the graph ({str(exc).splitlines()[0][:200]})") from exc
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = {"f32": "fp32", "bf16": "bf16"}.get(hint.get_type_name(), hint.get_type_name())
        if self.precision != precision:
            raise ValueError(f"{path}: OpenVINO compiled it in {self.precision}, not the {precision} asked for")
        self.request = self.compiled.create_infer_request()
        got_in = [(p.get_any_name(), _TYPES.get(p.get_element_type().get_type_name(), "?")) for p in self.compiled.inputs]
        got_out = [p.get_any_name() for p in self.compiled.outputs]
        if got_in != [(t.name, t.dtype) for t in spec.inputs] or got_out != spec.output_names():
            raise ValueError(f"{path}: graph interface {got_in} -> {got_out} does not match the manifest")
        self._outputs = {p.get_any_name(): p for p in self.compiled.outputs}

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(feed)
        return [np.asarray(result[self._outputs[name]]) for name in output_names]
