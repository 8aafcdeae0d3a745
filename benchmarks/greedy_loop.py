"""A fused greedy graph, measured (not shipped): an ONNX ``Loop`` around a bundle's decoder step.

The loop carries the token, the recurrent state and a mask of emitted labels (``forbid_repeat``);
each iteration runs the step's own nodes, adds the mask, takes the arg-max and stops at the stop
token or after ``max_len + 1`` iterations.  ``min_labels`` and the label memory's mix are left out,
so on photos where those rules do not act it decodes exactly what the step-wise greedy search
decodes (``corel-bench step`` counts the photos where the two agree) and its time bounds what any
fused greedy path could save.  Built from the manifest alone: state map, constants and shapes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from corel_annotate.runtime.bundle.manifest import BundleManifest

_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "float16": TensorProto.FLOAT16}


def greedy_loop_model(bundle: Path, manifest: BundleManifest, encoded: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The Loop graph for one photo (batch 1): inputs ``start_token``, the state's inputs (``NAME__init``)
    and the constants; outputs ``tokens`` and ``scores`` (one per iteration)."""
    seq = manifest.sequence
    assert seq is not None
    step = onnx.load(str(bundle / manifest.graphs["decoder_step"].file))
    labels_and_stop = len(manifest.vocabulary) + 1
    opset = next(o.version for o in step.opset_import if o.domain in ("", "ai.onnx"))

    def info(name: str, array: np.ndarray):
        return helper.make_tensor_value_info(name, _TYPES[str(array.dtype)], list(array.shape))

    state_inputs = list(seq.state.values())
    body_inputs = [helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
                   helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                   helper.make_tensor_value_info(seq.token_input, TensorProto.INT64, [1]),
                   *[info(name, encoded[name]) for name in state_inputs],
                   helper.make_tensor_value_info("mask_in", TensorProto.FLOAT, [1, labels_and_stop])]
    body_outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("next_token", TensorProto.INT64, [1]),
                    *[info(out, encoded[inp]) for out, inp in seq.state.items()],
                    helper.make_tensor_value_info("mask_out", TensorProto.FLOAT, [1, labels_and_stop]),
                    helper.make_tensor_value_info("token_scan", TensorProto.INT64, [1]),
                    helper.make_tensor_value_info("score_scan", TensorProto.FLOAT, [1])]
    greedy = [helper.make_node("Add", [seq.log_probs_output, "mask_in"], ["masked"]),
              helper.make_node("ArgMax", ["masked"], ["next_token"], axis=1, keepdims=0),
              # the best log-probability of each row (``axes`` became an input in opset 18)
              helper.make_node("ReduceMax", ["masked", "loop_axis"], ["best"], keepdims=0) if opset >= 18 else
              helper.make_node("ReduceMax", ["masked"], ["best"], axes=[1], keepdims=0),
              helper.make_node("OneHot", ["next_token", "loop_depth", "loop_onehot"], ["emitted"], axis=-1),
              helper.make_node("Add", ["mask_in", "emitted"], ["mask_out"]),
              helper.make_node("Equal", ["next_token", "loop_stop"], ["stopped"]),
              helper.make_node("Not", ["stopped"], ["going"]),
              helper.make_node("Squeeze", ["going"], ["cond_out"]),
              helper.make_node("Identity", ["next_token"], ["token_scan"]),
              helper.make_node("Identity", ["best"], ["score_scan"])]
    body = helper.make_graph(list(step.graph.node) + greedy, "greedy_step", body_inputs, body_outputs)
    constants = list(step.graph.initializer) + [
        numpy_helper.from_array(np.array([seq.stop_id], np.int64), "loop_stop"),
        numpy_helper.from_array(np.array(labels_and_stop, np.int64), "loop_depth"),
        numpy_helper.from_array(np.array([0.0, -1e9], np.float32), "loop_onehot"),
        numpy_helper.from_array(np.array(seq.decoding.max_len + 1, np.int64), "loop_trips"),
        numpy_helper.from_array(np.array(True), "loop_go"),
        numpy_helper.from_array(np.array([1], np.int64), "loop_axis")]
    carried = ["start_token", *[f"{name}__init" for name in state_inputs], "mask0"]
    loop = helper.make_node("Loop", ["loop_trips", "loop_go", *carried],
                            ["last_token", *[f"{name}__last" for name in state_inputs], "last_mask", "tokens", "scores"],
                            body=body)
    inputs = [helper.make_tensor_value_info("start_token", TensorProto.INT64, [1]),
              *[info(f"{name}__init", encoded[name]) for name in state_inputs],
              helper.make_tensor_value_info("mask0", TensorProto.FLOAT, [1, labels_and_stop]),
              *[info(name, encoded[name]) for name in seq.constants]]
    outputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, None),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)]
    graph = helper.make_graph([loop], "greedy_loop", inputs, outputs, constants)
    return helper.make_model(graph, opset_imports=step.opset_import, ir_version=step.ir_version)


def loop_feed(manifest: BundleManifest, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    seq = manifest.sequence
    assert seq is not None
    return {"start_token": np.array([seq.start_id], np.int64),
            **{f"{name}__init": encoded[name] for name in seq.state.values()},
            "mask0": np.zeros((1, len(manifest.vocabulary) + 1), np.float32),
            **{name: encoded[name] for name in seq.constants}}


def loop_labels(manifest: BundleManifest, tokens: np.ndarray) -> list[int]:
    """The emitted label ids before the stop token (at most ``max_len``)."""
    seq = manifest.sequence
    assert seq is not None
    out = [int(t) for t in tokens.ravel()]
    return out[:out.index(seq.stop_id)] if seq.stop_id in out else out[:seq.decoding.max_len]
