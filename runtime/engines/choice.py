"""Which engine computes: ``auto`` settled to a device and precision once (the same for every worker
of a job), and the engine's name for records and messages."""
from __future__ import annotations

from ..bundle.manifest import BundleManifest


def settle_engine(device: str, precision: str) -> tuple[str, str]:
    """``auto`` device and precision resolved (``openvino_session.resolve_engine``), and a non-fp32
    precision refused off OpenVINO (ValueError)."""
    if "auto" in (device, precision):
        from .openvino_session import resolve_engine

        device, precision = resolve_engine(device, precision)
    if precision != "fp32" and device != "openvino":
        raise ValueError(f"--precision {precision} needs --device openvino (onnxruntime computes in the "
                         "bundle's precision; export an int8 or fp16 bundle for those)")
    return device, precision


def engine_name(manifest: BundleManifest, device: str, precision: str) -> str:
    """What computes, for the record: ``onnxruntime-cpu fp32``, ``openvino bf16``, ..."""
    if device != "openvino":
        return f"onnxruntime-{device} {manifest.precision}"
    bundle = f" ({manifest.precision} bundle)" if manifest.precision != "fp32" else ""
    return f"openvino {precision}{bundle}"
