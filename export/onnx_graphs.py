"""Torch wrappers that give each declared graph its exact inputs and outputs, and their export.

The declarations (names, order, dynamic axes) come from the method registry; the wrappers are
generic: an encoder returns the outputs it declares by name, a step graph maps the registry's
state map and optional outputs."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from corel_annotate.training.models.base import AnnotationModel
from corel_annotate.training.registry import EMBEDDING_OUTPUT, LOG_PROBS_OUTPUT, TOKEN_INPUT, GraphDecl, MethodSpec, method_spec


class ScoreEncoder(nn.Module):
    """``images -> (logits, embedding)``.  For ML-GCN the label classifiers are computed once here and
    stored as a constant of the graph: they do not depend on the image."""

    def __init__(self, model: AnnotationModel) -> None:
        super().__init__()
        self.model = model
        classifiers = None
        if hasattr(model, "label_classifiers"):
            with torch.no_grad():
                classifiers = model.label_classifiers().detach().clone()
        self.register_buffer("classifiers", classifiers)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.features(images)
        logits = feats @ self.classifiers.t() if self.classifiers is not None else self.model.logits(feats)
        return logits, self.model.embedding(feats)


class SequenceEncoder(nn.Module):
    """``images ->`` the decoder's initial state, the per-image constants the steps read and the
    embedding, by name."""

    def __init__(self, model: AnnotationModel, decl: GraphDecl) -> None:
        super().__init__()
        self.model = model
        self.names = decl.output_names()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model.features(images)
        state = {**self.model.init_state(feats), EMBEDDING_OUTPUT: self.model.embedding(feats)}
        return tuple(state[n] for n in self.names)


class DecoderStep(nn.Module):
    """One decoding step: ``(token, *state, *constants) -> (log_probs, *state_out, *optional outputs)``."""

    def __init__(self, model: AnnotationModel, decl: GraphDecl, spec: MethodSpec) -> None:
        super().__init__()
        self.model = model
        self.input_names = decl.input_names()
        self.output_names = decl.output_names()
        self.state = dict(spec.state)
        self.optional = set(spec.optional_outputs.values())

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = dict(zip(self.input_names, tensors))
        token = state.pop(TOKEN_INPUT)
        logits, new_state, alpha = self.model.step(token, state)
        out = []
        for name in self.output_names:
            if name == LOG_PROBS_OUTPUT:
                out.append(torch.log_softmax(logits, dim=1))
            elif name in self.state:
                out.append(new_state[self.state[name]])
            elif name in self.optional:
                out.append(alpha)
            else:
                raise ValueError(f"decoder_step output {name!r} is neither log_probs, state nor optional")
        return tuple(out)


def wrappers(model: AnnotationModel) -> dict[str, nn.Module]:
    """The torch module behind every graph the method declares, in eval mode."""
    model.eval()
    spec = method_spec(model.config.method)
    out: dict[str, nn.Module] = {}
    for name, decl in spec.graphs.items():
        if name == "encoder":
            out[name] = SequenceEncoder(model, decl) if spec.is_sequence else ScoreEncoder(model)
        else:
            out[name] = DecoderStep(model, decl, spec)
    return {k: v.eval() for k, v in out.items()}


def export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], decl: GraphDecl, path: Path, opset: int) -> None:
    """TorchScript-path ONNX export with a dynamic batch axis on every input and output."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=decl.input_names(),
                          output_names=decl.output_names(), dynamic_axes=decl.dynamic_axes(),
                          opset_version=opset, do_constant_folding=True, dynamo=False)
