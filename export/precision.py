"""Lower-precision graphs: int8 (dynamic for the decoder step, static QDQ for the encoder) and fp16.

int8 runs onnxruntime's ``quant_pre_process`` first (shape inference and graph
clean-up; without it quantisation can fail on exported graphs).  The decoder
step's ``nn.LSTMCell`` exports as Gemm + Split, so its int8 form is dynamic
quantisation of those MatMul/Gemm weights.  The encoder gets static QDQ
quantisation (per-channel int8 weights, uint8 activations) calibrated on real
photos.  fp16 converts weights and arithmetic to float16 while keeping float32
inputs and outputs, so the bundle's interface does not change.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

PRECISIONS = ("fp32", "fp16", "int8")
STATIC_OPS = ("Conv", "MatMul", "Gemm")
"""Only these are quantised statically: TF-style "same" padding computes pad sizes with float
Div/Ceil/Mul nodes from the input shape, and quantising those arithmetic nodes corrupts the padding."""


def _pre_process(src: Path, dst: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_dynamic_int8(src: Path, dst: Path) -> None:
    """Dynamic int8: weights quantised once, activations per call (MatMul/Gemm/Attention-style ops)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        _pre_process(src, pre)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def quantize_static_int8(src: Path, dst: Path, calibration: np.ndarray, input_name: str = "images",
                         batch: int = 8) -> None:
    """Static QDQ int8 calibrated (min/max) on ``calibration`` images ``[N, 3, S, S]``.

    The stem convolution (the first, on raw pixels) stays float: on miml-scenes quantising it cost
    0.025 more per-class F1 for no measurable speed (measured with MinMax, Percentile and Entropy
    calibration; see the benchmark notes)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calibration[i:i + batch] for i in range(0, len(calibration), batch)])

        def get_next(self):
            nxt = next(self.batches, None)
            return None if nxt is None else {input_name: np.ascontiguousarray(nxt, dtype=np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        _pre_process(src, pre)
        stem = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"][:1]
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(STATIC_OPS),
                        nodes_to_exclude=stem)


def convert_fp16(src: Path, dst: Path) -> None:
    """float16 weights and arithmetic, float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(dst))


def calibration_images(paths: Sequence[Path], preprocess, limit: int = 64, seed: int = 0) -> np.ndarray:
    """A seeded sample of up to ``limit`` photos, preprocessed exactly as the runtime does."""
    from corel_annotate.runtime.preprocessing import preprocess_file

    paths = list(paths)
    if not paths:
        raise ValueError("no calibration images")
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), size=min(limit, len(paths)), replace=False))]
    return np.stack([preprocess_file(p, preprocess) for p in chosen])
