"""Run a bundle's TensorRT engines with the same ``run(names, feed)`` call as an onnxruntime session.

Needs ``tensorrt`` and ``cuda-python`` (the ``[gpu]`` extra) and an NVIDIA GPU; without
them, loading says so in one line.  Device buffers are kept per tensor and grown
when a larger batch arrives, so steady-state calls allocate nothing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise ValueError("running TensorRT engines needs cuda-python: pip install 'corel-annotate[gpu]'") from exc
    return cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {int(err)}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTSession:
    """An engine, its execution context, a CUDA stream and reusable device buffers."""

    def __init__(self, engine_path: Path) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise ValueError("--device tensorrt with engines needs TensorRT: pip install 'corel-annotate[gpu]'") from exc
        self.trt, self.cudart = trt, _cudart()
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ValueError(f"{engine_path}: TensorRT cannot load this engine (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers: dict[str, tuple[int, int]] = {}

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr))
            ptr = _check(self.cudart.cudaMalloc(max(nbytes, 1)))
            self.buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        kind = self.cudart.cudaMemcpyKind
        for name in self.inputs:
            array = np.ascontiguousarray(feed[name], dtype=self.dtypes[name])
            self.context.set_input_shape(name, array.shape)
            ptr = self._buffer(name, array.nbytes)
            _check(self.cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind.cudaMemcpyHostToDevice,
                                               self.stream))
            self.context.set_tensor_address(name, ptr)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self.dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        for name, array in results.items():
            _check(self.cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[name][0], array.nbytes,
                                               kind.cudaMemcpyDeviceToHost, self.stream))
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return [results[n] for n in (output_names or self.outputs)]

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(ptr)
