"""Torch wrappers that give each declared graph its exact inputs and outputs, and their export."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from training.models.base import AnnotationModel

from .graph_specs import GraphDecl, graphs_for


class ScoreEncoder(nn.Module):
    """``images -> logits``.  For ML-GCN the label classifiers are computed once here and stored
    as a constant of the graph: they do not depend on the image."""

    def __init__(self, model: AnnotationModel) -> None:
        super().__init__()
        self.model = model
        classifiers = None
        if hasattr(model, "label_classifiers"):
            with torch.no_grad():
                classifiers = model.label_classifiers().detach().clone()
        self.register_buffer("classifiers", classifiers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.model.features(images)
        if self.classifiers is not None:
            return feats @ self.classifiers.t()
        return self.model.logits(feats)


class SequenceEncoder(nn.Module):
    """``images ->`` the decoder's initial state and everything the steps read that does not change."""

    def __init__(self, model: AnnotationModel, decl: GraphDecl) -> None:
        super().__init__()
        self.model = model
        self.names = [io.name for io in decl.outputs]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model.features(images)
        state = self.model.init_state(feats)
        extra = {}
        if "pooled" in self.names:
            extra["pooled"] = feats.mean(dim=1)
        if "concept_probs" in self.names:
            extra["concept_probs"] = torch.sigmoid(state["concepts"])
        return tuple(state[n] if n in state else extra[n] for n in self.names)


class DecoderStep(nn.Module):
    """One decoding step: ``(token, h, c[, features, projection]) -> (log_probs, h, c[, alpha])``."""

    def __init__(self, model: AnnotationModel, decl: GraphDecl) -> None:
        super().__init__()
        self.model = model
        self.input_names = [io.name for io in decl.inputs]
        self.with_alpha = any(io.name == "alpha" for io in decl.outputs)

    def forward(self, token: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = dict(zip(self.input_names[1:], tensors))
        logits, new_state, alpha = self.model.step(token, state)
        out = (torch.log_softmax(logits, dim=1), new_state["h"], new_state["c"])
        return out + (alpha,) if self.with_alpha else out


def wrappers(model: AnnotationModel) -> dict[str, nn.Module]:
    """The torch module behind every graph the method declares, in eval mode."""
    model.eval()
    decls = graphs_for(model.method_name)
    out: dict[str, nn.Module] = {}
    for name, decl in decls.items():
        if name == "encoder":
            out[name] = SequenceEncoder(model, decl) if model.is_sequence else ScoreEncoder(model)
        else:
            out[name] = DecoderStep(model, decl)
    return {k: v.eval() for k, v in out.items()}


def export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], decl: GraphDecl, path: Path, opset: int) -> None:
    """TorchScript-path ONNX export with a dynamic batch axis on every input and output."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=[io.name for io in decl.inputs],
                          output_names=[io.name for io in decl.outputs], dynamic_axes=decl.dynamic_axes(),
                          opset_version=opset, do_constant_folding=True, dynamo=False)
