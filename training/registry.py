"""The one method registry, in the manner of timm's ``create_model``: the single source of truth.

Each model class registers itself with a :class:`MethodSpec`: its kind (``scores`` or
``sequence``), the ONNX graphs it exports with their inputs, outputs and dynamic axes (as
Hugging Face Optimum's ONNX configs), its recurrent state map (which decoder-step output feeds
which input at the next step), the per-image constants its steps read, and its optional outputs.
``corel-train``'s ``--method`` choices, the exporter and the tests read this registry; the trainer
calls the class's hooks (``training_inputs``, ``embedding_words``) instead of branching on names;
the runtime never sees a method name, only what the exporter writes into the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, TypeVar

from torch import nn

from corel_annotate.runtime.memory import EMBEDDING_OUTPUT  # every encoder's last output (the label memory's key)

from .config import ModelConfig

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
    model_class: type | None = None

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


_REGISTRY: dict[str, MethodSpec] = {}
M = TypeVar("M", bound=type)


def register_method(spec: MethodSpec) -> Callable[[M], M]:
    """Class decorator: make ``--method spec.name`` build this class."""
    def wrap(cls: M) -> M:
        if spec.name in _REGISTRY:
            raise ValueError(f"method {spec.name!r} registered twice")
        _REGISTRY[spec.name] = MethodSpec(**{**spec.__dict__, "model_class": cls})
        cls.method_name = spec.name  # type: ignore[attr-defined]
        return cls
    return wrap


def _load() -> None:
    from . import models  # noqa: F401 - importing registers every method


def method_spec(name: str) -> MethodSpec:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}") from None


def list_methods(kind: Kind | None = None) -> list[str]:
    """Registered method names (in registration order), optionally of one kind."""
    _load()
    return [name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind]


def model_class(name: str) -> type:
    cls = method_spec(name).model_class
    assert cls is not None
    return cls


def create_model(config: ModelConfig, backbone: nn.Module, **extra) -> nn.Module:
    """Build the model for ``config.method`` around ``backbone``."""
    return model_class(config.method)(config, backbone, **extra)
