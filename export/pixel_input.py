"""The encoder takes pixels: fold the cast, scale, mean/std and layout change into its graph.

An exported encoder takes the normalised ``[B, 3, S, S]`` float32 tensor that training used.  This
rewrites it to take the resized photo's 8-bit values as decoders give them, ``[B, S, S, 3]`` uint8,
and to do the rest itself with the same float32 operations, in the same order, as
``runtime/preprocessing.py`` does in numpy: ``Transpose -> Cast -> Mul(scale) -> Sub(mean) -> Div(std)``.
Every runtime then skips four array passes per photo (measured: ``docs/performance.md``), and the
engines fold the arithmetic into the first convolution or run it vectorised.  The manifest says
which form a bundle has (``preprocess.input_dtype`` and ``layout``, format 4).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig


def pixel_preprocess(config: PreprocessConfig) -> PreprocessConfig:
    """The manifest's preprocessing for an encoder rewritten by :func:`fold_normalisation`."""
    return replace(config, input_dtype="uint8", layout="NHWC")


def fold_normalisation(path: Path, input_name: str, config: PreprocessConfig) -> None:
    """Rewrite the encoder graph at ``path`` in place so ``input_name`` takes ``[B, S, S, 3]`` uint8 pixels."""
    if config.input_dtype != "float32" or config.layout != "NCHW":
        raise ValueError(f"{path}: the encoder already takes {config.input_dtype} {config.layout} input")
    model = onnx.load(str(path))
    graph = model.graph
    [image] = [i for i in graph.input if i.name == input_name]
    batch = image.type.tensor_type.shape.dim[0]
    normalised = f"{input_name}__normalised"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = normalised
    mean = np.asarray(config.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config.std, np.float32).reshape(1, 3, 1, 1)
    prefix = f"{input_name}__pixels"
    constants = [numpy_helper.from_array(np.array(config.scale, np.float32), f"{prefix}_scale"),
                 numpy_helper.from_array(mean, f"{prefix}_mean"), numpy_helper.from_array(std, f"{prefix}_std")]
    nodes = [helper.make_node("Transpose", [input_name], [f"{prefix}_nchw"], perm=[0, 3, 1, 2], name=f"{prefix}_transpose"),
             helper.make_node("Cast", [f"{prefix}_nchw"], [f"{prefix}_float"], to=TensorProto.FLOAT, name=f"{prefix}_cast"),
             helper.make_node("Mul", [f"{prefix}_float", f"{prefix}_scale"], [f"{prefix}_scaled"], name=f"{prefix}_mul"),
             helper.make_node("Sub", [f"{prefix}_scaled", f"{prefix}_mean"], [f"{prefix}_centred"], name=f"{prefix}_sub"),
             helper.make_node("Div", [f"{prefix}_centred", f"{prefix}_std"], [normalised], name=f"{prefix}_div")]
    for k, node in enumerate(nodes):
        graph.node.insert(k, node)
    graph.initializer.extend(constants)
    size = config.image_size
    pixels = helper.make_tensor_value_info(input_name, TensorProto.UINT8, [batch.dim_param or batch.dim_value, size, size, 3])
    graph.input.remove(image)
    graph.input.insert(0, pixels)
    # no onnx.checker here: the fp16 converter appends its input casts after their users, an order that
    # the checker refuses and the engines accept; the export compares this graph's outputs with the float one's
    onnx.save(model, str(path))
