"""The hardware limit: an ONNX graph's floating-point operations and the machine's float32 matmul peak."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx


def graph_flops(path: str | Path, batch: int = 1) -> float:
    """FLOPs (2 per multiply-add) of the Conv, MatMul and Gemm nodes at ``batch``.

    Shapes come from running the graph once with every operand exposed as an output, because
    TF-style "same" padding computes its sizes at run time and static shape inference stops there."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    wanted = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            wanted += [n for n in list(node.input[:2]) + [node.output[0]] if n not in weights]
    existing = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {}
    for inp in session.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in inp.shape]
        dtype = {"tensor(int64)": np.int64, "tensor(uint8)": np.uint8}.get(inp.type, np.float32)
        feed[inp.name] = np.zeros(shape, dtype=dtype)
    names = [o.name for o in session.get_outputs()]
    shapes = dict(zip(names, (list(v.shape) for v in session.run(names, feed))))
    shapes.update(weights)
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            total += 2.0 * np.prod(shapes[node.output[0]]) * np.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes[node.input[0]]
            k = a[-2] if node.op_type == "Gemm" and _attr(node, "transA") else a[-1]
            total += 2.0 * np.prod(shapes[node.output[0]]) * k
    return float(total)


def _attr(node, name: str) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return 0


def matmul_peak(threads: int = 0, size: int = 1024, seconds: float = 2.0) -> dict:
    """Measured float32 matrix-multiply rate (GFLOP/s): numpy's BLAS and onnxruntime's MatMul, best of each."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size ** 3

    def best(fn) -> float:
        fn()
        rates, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            fn()
            rates.append(flops / (time.perf_counter() - t0) / 1e9)
        return max(rates)

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    numpy_rate = best(lambda: a @ b)
    ort_rate = best(lambda: session.run(None, {"a": a, "b": b}))
    out = {"numpy_gflops": numpy_rate, "onnxruntime_gflops": ort_rate, "peak_gflops": max(numpy_rate, ort_rate),
           "size": size}
    try:  # the bfloat16 peak, for rows that compute in bf16 (OpenVINO on CPUs with bfloat16 units)
        import openvino as ov

        core = ov.Core()
        if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            request = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", config).create_infer_request()
            out["bf16_peak_gflops"] = best(lambda: request.infer({"a": a, "b": b}))
        # the int8 peak, for int8 rows: a QDQ MatMul (int8 activations and weights) that OpenVINO runs in int8
        request = core.compile_model(core.read_model(_int8_matmul(size).SerializeToString(), b""), "CPU",
                                     {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                      **({"INFERENCE_NUM_THREADS": threads} if threads else {})}).create_infer_request()
        out["int8_peak_gops"] = best(lambda: request.infer({"a": a}))
    except ImportError:
        pass
    return out


def _int8_matmul(size: int):
    """``DQ(Q(a)) @ DQ(b_int8)``: the pattern OpenVINO (and onnxruntime) fuse into an int8 matrix multiply."""
    from onnx import TensorProto, helper, numpy_helper

    b = np.random.default_rng(1).integers(-127, 128, (size, size), dtype=np.int8)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "sa"), numpy_helper.from_array(np.array(0, np.uint8), "za"),
             numpy_helper.from_array(b, "bq"), numpy_helper.from_array(np.array(0.01, np.float32), "sb"),
             numpy_helper.from_array(np.array(0, np.int8), "zb")]
    nodes = [helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "sa", "za"], ["ad"]),
             helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"]),
             helper.make_node("MatMul", ["ad", "bd"], ["c"])]
    graph = helper.make_graph(nodes, "mm8", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
