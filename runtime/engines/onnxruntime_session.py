"""ONNX Runtime sessions on the execution provider a user asks for, checked against the manifest."""
from __future__ import annotations

import sys
from pathlib import Path

import onnxruntime as ort

from ..bundle.manifest import GraphSpec

DEVICES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
PROVIDER_DEVICES = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}
_warned: set[str] = set()


def providers_for(device: str) -> list[str]:
    """Providers for ``device`` that this onnxruntime has; says once on stderr when it falls back."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    available = set(ort.get_available_providers())
    wanted = DEVICES[device]
    chosen = [p for p in wanted if p in available]
    if wanted[0] not in available and device not in _warned:
        _warned.add(device)
        print(f"warning: --device {device}: onnxruntime has no {wanted[0]} (install corel-annotate[gpu] on an "
              f"NVIDIA machine); running on {chosen[0]}", file=sys.stderr)
    return chosen


def session_device(session, requested: str) -> str:
    """The device an onnxruntime session really runs on (its first provider): ``cpu`` where ``requested``
    fell back for want of its provider; ``requested`` for sessions of other engines."""
    if isinstance(session, ort.InferenceSession):
        return PROVIDER_DEVICES.get(session.get_providers()[0], requested)
    return requested


def create_session(path: Path, spec: GraphSpec, device: str = "cpu", threads: int = 0,
                   spinning: bool = False) -> ort.InferenceSession:
    """A session for one graph; refused when its inputs or outputs differ from what the manifest declares.

    ``spinning=False`` stops idle worker threads from spin-waiting: slightly slower single calls, but
    much faster pipelines where image decoding shares the cores with inference (measured with
    corel-infer on miml-scenes: 110 -> 165 images/s on 2 cores)."""
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ValueError(f"{path}: onnxruntime cannot load the graph ({str(exc).splitlines()[0][:200]})") from exc
    check_interface(path, session, spec)
    return session


def check_interface(path: Path, session: ort.InferenceSession, spec: GraphSpec) -> None:
    for kind, actual, declared in (("inputs", session.get_inputs(), spec.inputs),
                                   ("outputs", session.get_outputs(), spec.outputs)):
        got = [(a.name, _ORT_TYPES.get(a.type, a.type), len(a.shape)) for a in actual]
        want = [(d.name, d.dtype, len(d.shape)) for d in declared]
        if got != want:
            raise ValueError(f"{path}: graph {kind} {got} do not match the manifest {want}")
