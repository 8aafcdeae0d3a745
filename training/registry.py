"""The one method registry, a leaf holding data (as timm's ``_registry.py``): the single source of truth.

Each method is a :class:`MethodSpec`: its kind (``scores`` or ``sequence``), the ONNX graphs it
exports with their inputs, outputs and dynamic axes (as Hugging Face Optimum's ONNX configs), its
recurrent state map (which decoder-step output feeds which input at the next step), the per-image
constants its steps read, and its optional outputs.  ``corel-train``'s ``--method`` choices, the
config, the exporter and the tests read it; ``factory.py`` (as timm's ``_factory.py``) imports the
model classes and turns a name into a model.  This module imports neither torch nor the models.
The runtime never sees a method name, only what the exporter writes into the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from corel_annotate.runtime.memory import EMBEDDING_OUTPUT  # every encoder's last output (the label memory's key)

Kind = Literal["scores", "sequence"]
BATCH = "batch"
IMAGE_INPUT = "images"
TOKEN_INPUT = "token"
LOGITS_OUTPUT = "logits"
LOG_PROBS_OUTPUT = "log_probs"


@dataclass(frozen=True)
class IO:
    """A named tensor; axis 0 is always the dynamic batch (images, or live hypotheses in a decoder step)."""

    name: str
    dtype: str = "float32"


@dataclass(frozen=True)
class GraphDecl:
    """One graph's interface."""

    inputs: tuple[IO, ...]
    outputs: tuple[IO, ...]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {io.name: {0: BATCH} for io in self.inputs + self.outputs}

    def input_names(self) -> list[str]:
        return [io.name for io in self.inputs]

    def output_names(self) -> list[str]:
        return [io.name for io in self.outputs]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the CLI, the trainer and the exporter need to know about one method."""

    name: str
    kind: Kind
    summary: str
    graphs: dict[str, GraphDecl]
    state: dict[str, str] = field(default_factory=dict)
    """Decoder-step output -> the input it feeds at the next step (recurrent rows); the encoder's
    outputs of the input names give the first step's values."""
    constants: tuple[str, ...] = ()
    """Decoder-step inputs read from the encoder output of the same name, per image, every step."""
    optional_outputs: dict[str, str] = field(default_factory=dict)
    """Role -> decoder-step output, e.g. ``{"attention": "alpha"}`` (weights over feature positions)."""

    def __post_init__(self) -> None:
        if self.kind not in ("scores", "sequence"):
            raise ValueError(f"method {self.name}: unknown kind {self.kind!r}")
        if self.kind == "sequence":
            step = self.graphs["decoder_step"]
            encoder = self.graphs["encoder"]
            fed = {TOKEN_INPUT, *self.state.values(), *self.constants}
            if set(step.input_names()) != fed:
                raise ValueError(f"method {self.name}: decoder_step inputs {step.input_names()} are not the token, "
                                 f"the state map's inputs and the constants ({sorted(fed)})")
            missing = (set(self.state.values()) | set(self.constants)) - set(encoder.output_names())
            if missing:
                raise ValueError(f"method {self.name}: the encoder does not give {sorted(missing)}")

    @property
    def is_sequence(self) -> bool:
        return self.kind == "sequence"


def scores_graphs() -> dict[str, GraphDecl]:
    """``images -> (logits, embedding)``: one graph for every score-based method."""
    return {"encoder": GraphDecl((IO(IMAGE_INPUT),), (IO(LOGITS_OUTPUT), IO(EMBEDDING_OUTPUT)))}


def sequence_graphs(state: tuple[str, ...], constants: tuple[str, ...] = (), extra_outputs: tuple[str, ...] = ()
                    ) -> dict[str, GraphDecl]:
    """An encoder giving the initial ``state``, the ``constants`` and the embedding, and a step graph
    ``(token, *state, *constants) -> (log_probs, *state_out, *extra_outputs)``."""
    return {
        "encoder": GraphDecl((IO(IMAGE_INPUT),), tuple(IO(n) for n in state + constants)
                             + (IO(EMBEDDING_OUTPUT),)),
        "decoder_step": GraphDecl((IO(TOKEN_INPUT, "int64"),) + tuple(IO(n) for n in state + constants),
                                  (IO(LOG_PROBS_OUTPUT),) + tuple(IO(f"{n}_out") for n in state)
                                  + tuple(IO(n) for n in extra_outputs)),
    }


LSTM_STATE = ("h", "c")
LSTM_STATE_MAP = {"h_out": "h", "c_out": "c"}

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("cnn", "scores", "a linear classifier on pooled features (BCE, focal or ASL loss)", scores_graphs()),
    MethodSpec("ml-gcn", "scores", "ML-GCN: label classifiers from a graph convolution over label embeddings and "
               "co-occurrence", scores_graphs()),
    MethodSpec("ria", "sequence", "RIA: an LSTM initialised from pooled features emits labels, rare first",
               sequence_graphs(LSTM_STATE), state=LSTM_STATE_MAP),
    MethodSpec("sr-cnn-rnn", "sequence", "SR-CNN-RNN: concept probabilities from the CNN initialise the LSTM",
               sequence_graphs(LSTM_STATE), state=LSTM_STATE_MAP),
    MethodSpec("attention", "sequence", "CNN-RNN with soft attention over the feature map",
               sequence_graphs(LSTM_STATE, ("features", "projection"), ("alpha",)),
               state=LSTM_STATE_MAP, constants=("features", "projection"), optional_outputs={"attention": "alpha"}),
)
"""Every method, in ``--method``'s order."""

_REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in METHODS}


def method_spec(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}") from None


def list_methods(kind: Kind | None = None) -> list[str]:
    """Method names (in ``--method``'s order), optionally of one kind."""
    return [name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind]
