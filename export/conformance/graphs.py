"""The kit's ONNX graphs, built node by node so that every number they compute is known: a pixel
probe (each input value comes back as a label score), constant label logits, and a small
recurrent decoder whose step is a table lookup plus a per-image bias and a state term."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="corel-annotate")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _image_input(size: int, dtype: str) -> onnx.ValueInfoProto:
    if dtype == "uint8":
        return helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", size, size, 3])
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])


def _pixels_nchw(size: int, dtype: str, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[list, dict]:
    """Nodes giving ``x`` [batch, 3, size, size]: the photo's 8-bit values over 255, whatever the input
    form (uint8 NHWC: cast, scale, transpose; float32 NCHW: the runtime's normalisation undone)."""
    if dtype == "uint8":
        return ([helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
                 helper.make_node("Cast", ["nchw"], ["cast"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["cast", "inv255"], ["x"])],
                {"inv255": np.array(1 / 255, np.float32)})
    return ([helper.make_node("Mul", ["image", "std"], ["scaled"]), helper.make_node("Add", ["scaled", "mean"], ["x"])],
            {"std": np.array(std, np.float32).reshape(1, 3, 1, 1), "mean": np.array(mean, np.float32).reshape(1, 3, 1, 1)})


def probe_encoder(size: int, dtype: str, mean: tuple[float, ...], std: tuple[float, ...]) -> onnx.ModelProto:
    """``logits[c * size * size + y * size + x] = 2 * (pixel / 255 - 0.5)``: with every threshold 0,
    the label scores are the encoder input's pixels, so a record shows what the runtime fed."""
    nodes, inits = _pixels_nchw(size, dtype, mean, std)
    nodes += [helper.make_node("Sub", ["x", "half"], ["centred"]), helper.make_node("Mul", ["centred", "two"], ["wide"]),
              helper.make_node("Reshape", ["wide", "flat"], ["logits"])]
    inits |= {"half": np.array(0.5, np.float32), "two": np.array(2.0, np.float32),
              "flat": np.array([-1, 3 * size * size], np.int64)}
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3 * size * size])
    return _model(nodes, [_image_input(size, dtype)], [out], inits, "probe_encoder")


def _photo_mean(size: int, dtype: str, mean, std) -> tuple[list, dict]:
    """Nodes giving ``f`` [batch, 3]: each channel's mean over the photo, in [0, 1]."""
    nodes, inits = _pixels_nchw(size, dtype, mean, std)
    nodes.append(helper.make_node("ReduceMean", ["x"], ["f"], axes=[2, 3], keepdims=0))
    return nodes, inits


def constant_encoder(logits: np.ndarray, size: int, dtype: str, mean, std) -> onnx.ModelProto:
    """The same label logits for every photo (``logits + 0 * mean pixel``, so the input is read)."""
    nodes, inits = _photo_mean(size, dtype, mean, std)
    nodes += [helper.make_node("MatMul", ["f", "zero"], ["nothing"]), helper.make_node("Add", ["nothing", "fixed"], ["logits"])]
    inits |= {"zero": np.zeros((3, logits.size), np.float32), "fixed": logits.astype(np.float32).reshape(1, -1)}
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", int(logits.size)])
    return _model(nodes, [_image_input(size, dtype)], [out], inits, "constant_encoder")


@dataclass(frozen=True)
class TableDecoder:
    """A recurrent decoder of known numbers, over ``V`` labels (tokens ``0..V-1``, stop ``V``,
    start ``V + 1``):

    * the encoder gives ``bias = f @ colour + offset`` ([batch, V + 1], ``f`` the photo's channel
      means: a per-image constant) and ``h = 0`` ([batch, V + 2]: how often each token was fed);
    * each step gives ``log_softmax(table[token] + bias + h @ history)`` and ``h + onehot(token)``."""

    table: np.ndarray      # [V + 2, V + 1]
    colour: np.ndarray     # [3, V + 1]
    offset: np.ndarray     # [V + 1]
    history: np.ndarray    # [V + 2, V + 1]

    @property
    def num_labels(self) -> int:
        return self.table.shape[1] - 1

    def encoder(self, size: int, dtype: str, mean, std) -> onnx.ModelProto:
        v = self.num_labels
        nodes, inits = _photo_mean(size, dtype, mean, std)
        nodes += [helper.make_node("MatMul", ["f", "colour"], ["tinted"]), helper.make_node("Add", ["tinted", "offset"], ["bias"]),
                  helper.make_node("MatMul", ["f", "zero"], ["h"])]
        inits |= {"colour": self.colour.astype(np.float32), "offset": self.offset.astype(np.float32).reshape(1, -1),
                  "zero": np.zeros((3, v + 2), np.float32)}
        outs = [helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", v + 1]),
                helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", v + 2])]
        return _model(nodes, [_image_input(size, dtype)], outs, inits, "table_encoder")

    def step(self) -> onnx.ModelProto:
        v = self.num_labels
        nodes = [helper.make_node("Gather", ["table", "token"], ["row"], axis=0),
                 helper.make_node("MatMul", ["h", "history"], ["said"]),
                 helper.make_node("Add", ["row", "bias"], ["partial"]), helper.make_node("Add", ["partial", "said"], ["logits"]),
                 helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=1),
                 helper.make_node("Gather", ["eye", "token"], ["onehot"], axis=0),
                 helper.make_node("Add", ["h", "onehot"], ["h_out"])]
        inits = {"table": self.table.astype(np.float32), "history": self.history.astype(np.float32),
                 "eye": np.eye(v + 2, dtype=np.float32)}
        ins = [helper.make_tensor_value_info("token", TensorProto.INT64, ["rows"]),
               helper.make_tensor_value_info("h", TensorProto.FLOAT, ["rows", v + 2]),
               helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["rows", v + 1])]
        outs = [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["rows", v + 1]),
                helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["rows", v + 2])]
        return _model(nodes, ins, outs, inits, "table_step")


def table_decoder(seed: int, num_labels: int = 4) -> TableDecoder:
    """The kit's decoder: numbers drawn from ``seed`` (the kit writer checks the cases it needs hold)."""
    rng = np.random.default_rng(seed)
    w = num_labels + 1
    history = np.zeros((num_labels + 2, w))
    history[:num_labels, num_labels] = 0.6        # each label said makes stopping likelier
    history[:num_labels, :num_labels] = -0.4 * np.eye(num_labels)   # and saying it again less likely
    return TableDecoder(table=np.round(rng.normal(0, 1.5, (num_labels + 2, w)), 2),
                        colour=np.round(rng.normal(0, 2.0, (3, w)), 2), offset=np.zeros(w), history=history)
