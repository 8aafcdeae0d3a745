"""TensorRT engines built from a bundle's ONNX graphs (``corel-export --engine tensorrt``).

Written against TensorRT 10's Python API (``tensorrt``): the ONNX parser fills an
explicit-batch network, one optimisation profile covers the dynamic batch
(min/opt/max), and the serialised engine is stored in the bundle with its build
settings in the manifest.  Engines are tied to the GPU model and TensorRT version
that built them; the manifest records both.  Where TensorRT is not installed this
stops with a clear message.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineSettings:
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    fp16: bool = False
    workspace_mib: int = 1024


def require_tensorrt():
    """The ``tensorrt`` module, or a one-line error saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ValueError("TensorRT is not installed: on a machine with an NVIDIA GPU, "
                         "pip install 'corel-annotate[gpu]' (tensorrt, cuda-python)") from exc
    return trt


def build_engine(onnx_path: Path, engine_path: Path, settings: EngineSettings) -> dict:
    """Parse ``onnx_path``, build an engine with a batch profile, write it; return its manifest entry."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"{onnx_path}: TensorRT cannot parse the graph ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if settings.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (settings.min_batch,) + rest, (settings.opt_batch,) + rest,
                          (settings.max_batch,) + rest)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"{onnx_path}: TensorRT failed to build an engine")
    engine_path.write_bytes(bytes(serialized))
    return {"file": engine_path.name, "onnx": onnx_path.name, "tensorrt": trt.__version__,
            "device": _device_name(), **asdict(settings)}


def _device_name() -> str:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            return "unknown"
    err, props = cudart.cudaGetDeviceProperties(0)
    return props.name.decode(errors="replace").strip("\0") if not int(err) else "unknown"


def add_engines(bundle: Path, settings: EngineSettings) -> dict[str, dict]:
    """Build an engine for every ONNX graph of an assembled bundle directory."""
    engines = {}
    for onnx_path in sorted(bundle.glob("*.onnx")):
        engines[onnx_path.stem] = build_engine(onnx_path, bundle / f"{onnx_path.stem}.engine", settings)
    return engines
