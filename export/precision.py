"""Lower-precision graphs: int8 (dynamic for the decoder step, static QDQ for the encoder) and fp16.

int8 runs onnxruntime's ``quant_pre_process`` first (shape inference and graph
clean-up; without it quantisation can fail on exported graphs).  The decoder
step's ``nn.LSTMCell`` exports as Gemm + Split, so its int8 form is dynamic
quantisation of those MatMul/Gemm weights.  The encoder gets static QDQ
quantisation by NNCF, calibrated on real photos and checked on the validation
photos (``int8_accuracy``).  fp16 converts weights and arithmetic to float16 while keeping float32
inputs and outputs, so the bundle's interface does not change.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

PRECISIONS = ("fp32", "fp16", "int8")


def pre_processed(src: Path, dst: Path) -> Path:
    """onnxruntime's ``quant_pre_process`` of ``src`` written to ``dst``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def quantize_dynamic_int8(src: Path, dst: Path) -> None:
    """Dynamic int8: weights quantised once, activations per call (MatMul/Gemm/Attention-style ops)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = pre_processed(src, Path(tmp) / "pre.onnx")
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


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
