"""The one place that declares each method's graphs: input and output names, types and dynamic axes.

In the manner of Hugging Face Optimum's ONNX configs.  The exporter builds its
wrappers and ``dynamic_axes`` from these declarations, and the manifest records
them (with the static sizes filled in from a trace) for the runtime to check.
"""
from __future__ import annotations

from dataclasses import dataclass

BATCH = "batch"


@dataclass(frozen=True)
class IO:
    """A named tensor; axis 0 is always the dynamic batch."""

    name: str
    dtype: str = "float32"


@dataclass(frozen=True)
class GraphDecl:
    inputs: tuple[IO, ...]
    outputs: tuple[IO, ...]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {io.name: {0: BATCH} for io in self.inputs + self.outputs}


IMAGES = IO("images")
SCORES = GraphDecl((IMAGES,), (IO("logits"),))
STEP = GraphDecl((IO("token", "int64"), IO("h"), IO("c")), (IO("log_probs"), IO("h_out"), IO("c_out")))
ATTENTION_STEP = GraphDecl((IO("token", "int64"), IO("h"), IO("c"), IO("features"), IO("projection")),
                           (IO("log_probs"), IO("h_out"), IO("c_out"), IO("alpha")))

GRAPHS: dict[str, dict[str, GraphDecl]] = {
    "cnn": {"encoder": SCORES},
    "ml-gcn": {"encoder": SCORES},
    "ria": {"encoder": GraphDecl((IMAGES,), (IO("h"), IO("c"))), "decoder_step": STEP},
    "sr-cnn-rnn": {"encoder": GraphDecl((IMAGES,), (IO("h"), IO("c"), IO("concept_probs"))), "decoder_step": STEP},
    "attention": {"encoder": GraphDecl((IMAGES,), (IO("h"), IO("c"), IO("features"), IO("projection"), IO("pooled"))),
                  "decoder_step": ATTENTION_STEP},
}

STATE_OUTPUTS = {"h_out": "h", "c_out": "c"}
"""Decoder-step outputs that feed the next step's inputs of the other name."""


def graphs_for(method: str) -> dict[str, GraphDecl]:
    try:
        return GRAPHS[method]
    except KeyError:
        raise ValueError(f"no ONNX graphs declared for method {method!r}") from None
