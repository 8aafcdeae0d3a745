"""The bundle manifest: the contract between ``corel-export`` and every runtime.

A bundle is a directory holding ``manifest.json`` and the ONNX graphs it names.  The manifest
describes the bundle completely, so a runtime in any language runs it without knowing which
method trained it: its kind (``scores`` or ``sequence``), each graph's inputs and outputs, which
encoder output is what, how the decoder's recurrent state flows from step to step, which inputs
are per-image constants, the decoding rules, the thresholds, the preprocessing and the sha256 of
every file (checked before any session is created).  Its JSON Schema is ``bundle.schema.json``
beside this file, generated from these dataclasses (``python -m corel_annotate.runtime.bundle.schema``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .decoding_config import DecodingConfig
from .preprocess_config import PreprocessConfig
from .scoring_config import ScoringConfig
from .typed_json import read_strict
from .vocabulary import Vocabulary

FORMAT = "corel-annotate/bundle"
FORMAT_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
"""Version 3 adds the optional ``memory`` section (and the ``memory`` graph); a version-2 manifest is
a version-3 manifest without one.  Version 4 adds ``preprocess.input_dtype`` (``uint8``: the encoder
takes the resized photo's 8-bit pixels, ``NHWC``, and normalises in the graph); a version-3 manifest
is a version-4 one whose input is ``float32`` ``NCHW``, so all three are read."""
MANIFEST = "manifest.json"
SCHEMA_FILE = Path(__file__).with_name("bundle.schema.json")
DTYPES = ("float32", "float16", "int64", "uint8")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type and shape (strings name dynamic axes)."""

    name: str
    """The tensor's name in the ONNX graph."""
    dtype: Literal["float32", "float16", "int64", "uint8"]
    """Its element type, as the graph declares it."""
    shape: tuple[int | str, ...]
    """One entry per axis: an integer is a fixed size, a string names a dynamic axis (the first axis,
    the batch, is dynamic in every graph ``corel-export`` writes)."""


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX file and its interface."""

    file: str
    """The ONNX file: a plain name inside the bundle folder (no folder part, no leading dot), with its
    sha256 in ``files``."""
    inputs: tuple[TensorSpec, ...]
    """Every input of the graph, in the graph's order, each name once."""
    outputs: tuple[TensorSpec, ...]
    """Every output of the graph, in the graph's order, each name once; a runtime fetches those the
    manifest's sections name."""

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)


@dataclass(frozen=True)
class ScoringSpec:
    """Kind ``scores``: the encoder output ``logits_output`` ``[B, V]`` holds one logit per label;
    a label is kept when its sigmoid reaches its threshold, best first, at most ``top_k`` (null: no
    cap), and the ``min_labels`` best-scored labels are kept when fewer reach their thresholds."""

    logits_output: str
    """The encoder output ``[batch, head labels]`` holding one logit per label (head labels:
    ``memory.head_labels`` with a memory, else every label)."""
    thresholds: tuple[float, ...]
    """One threshold per label, in [0, 1]: a label is kept when its score reaches it (``>=``, in
    float32)."""
    top_k: int | None = None
    """At most this many labels per photo (null: no cap); ``min_labels`` wins over it."""
    min_labels: int = 0
    """When fewer labels than this are kept (after ``top_k``), the photo gets its ``min_labels``
    best-ranked labels instead."""
    activation: Literal["sigmoid"] = "sigmoid"
    """How a logit becomes a score: ``sigmoid``, 1 / (1 + exp(-logit))."""

    @property
    def config(self) -> ScoringConfig:
        """The selection rules as one validated value (ValueError when a field is out of range)."""
        return ScoringConfig(self.thresholds, self.top_k, self.min_labels)


@dataclass(frozen=True)
class SequenceSpec:
    """Kind ``sequence``: how to drive the ``decoder_step`` graph.

    Each step feeds ``token_input`` (``[R]`` int64: ``start_id`` first, then the previous token),
    every recurrent input (``state`` maps a step output to the input it feeds at the next step; the
    first step reads the encoder output of the input's name) and every ``constants`` input (the
    encoder output of that name, one row per image, the same at every step).  ``log_probs_output``
    is ``[R, V + 1]``: labels ``0..V-1`` then ``stop_id`` = V; ``start_id`` = V + 1.  The optional
    ``attention_output`` ``[R, P]`` holds attention weights over feature positions."""

    token_input: str
    """The decoder_step input ``[rows]`` int64 holding each row's previous token (``start_id`` at the
    first step)."""
    log_probs_output: str
    """The decoder_step output ``[rows, labels + 1]``: the log-probability of each label ``0..V-1``,
    then of stop."""
    state: dict[str, str]
    """The recurrent state: decoder_step output -> the decoder_step input it feeds at the next step. At
    the first step each of these inputs reads the encoder output of its own name."""
    start_id: int
    """The start token: the number of labels plus one (``V + 1``)."""
    stop_id: int
    """The stop token: the number of labels (``V``), the last column of ``log_probs_output``."""
    decoding: DecodingConfig
    """The search rules: greedy or beam search, the masks and the length penalty."""
    constants: tuple[str, ...] = ()
    """decoder_step inputs read once from the encoder output of the same name (one row per photo) and
    fed unchanged at every step, to every row of that photo."""
    attention_output: str | None = None
    """An optional decoder_step output ``[rows, positions]`` of attention weights; informational (a
    runtime may report it)."""


@dataclass(frozen=True)
class MemorySpec:
    """The label memory: kNN label transfer over stored, labelled example embeddings.

    The encoder output ``embedding_output`` ``[B, D]`` (L2-normalised) is the only input of the
    ``memory`` graph, whose tensors hold the ``examples`` stored embeddings and their label sets.
    Its output ``scores_output`` ``[B, V]`` is, for each label, the softmax-weighted (``temperature``)
    share of the ``k`` most similar examples (cosine) that carry it: a probability in [0, 1].  ``k``
    and ``temperature`` are baked into the graph and stated here; ``weight`` says how the memory's
    scores combine with the bundle's own:

    * ``scores``: ``score = (1 - weight) * sigmoid(logit) + weight * memory`` for the first
      ``head_labels`` labels (the ones the encoder's logits cover) and ``score = memory`` for the
      labels after them (added to the memory without retraining); thresholds apply to ``score``;
    * ``sequence``: every step's probabilities become ``(1 - weight) * p + weight * q`` before
      masking, where ``q`` keeps the step's stop probability and shares the rest among the labels
      in proportion to the image's memory scores (kNN-LM); ``weight`` 0 leaves decoding unchanged."""

    embedding_output: str
    """The encoder output ``[batch, D]`` (the L2-normalised embedding) that is the memory graph's only
    input."""
    scores_output: str
    """The memory graph output ``[batch, V]``: each label's memory score, in [0, 1]."""
    k: int
    """How many most similar examples the memory graph keeps; baked into the graph, informational."""
    temperature: float
    """The softmax temperature over those examples' cosine similarities; baked into the graph,
    informational."""
    weight: float
    """How much of the memory's scores a runtime mixes into the bundle's own (0: none)."""
    examples: int
    """How many labelled examples the memory graph stores; informational."""
    head_labels: int
    """How many labels the encoder's logits cover: the first ``head_labels`` of the vocabulary (all of
    them in a sequence bundle); the memory alone scores the rest."""
    graph: Literal["memory"] = "memory"
    """The memory graph's name in ``graphs``: always ``memory``."""


@dataclass(frozen=True)
class BundleManifest:
    """``manifest.json``: a bundle's kind (``scores``: the encoder gives label logits; ``sequence``: a
    decoder_step graph emits labels one at a time), its vocabulary, how photos become the encoder's
    ``image_input``, its graphs, the section of its kind (``scoring`` or ``sequence``), and the sha256
    of every file.  ``source`` (the method and checkpoint that made it) is informational."""

    kind: Literal["scores", "sequence"]
    """``scores``: the encoder's logits give the labels; ``sequence``: the decoder_step graph emits them
    one at a time."""
    vocabulary: tuple[str, ...]
    """The labels in id order (a label's id is its position): each non-empty, without white space,
    unique, and neither ``start`` nor ``stop``."""
    preprocess: PreprocessConfig
    """How a photo becomes the encoder's input."""
    image_input: str
    """The name of the encoder's only input."""
    graphs: dict[str, GraphSpec]
    """The graphs by role: ``encoder`` always, ``decoder_step`` in a sequence bundle, ``memory`` with a
    ``memory`` section, and no other."""
    scoring: ScoringSpec | None = None
    """Kind ``scores`` only (and then required): how labels are chosen from the logits."""
    sequence: SequenceSpec | None = None
    """Kind ``sequence`` only (and then required): how the decoder step is fed and searched."""
    memory: MemorySpec | None = None
    """The optional label memory (format 3 and later)."""
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    """What the export reduced the graphs to; informational: a runtime runs the graphs with the tensor
    types they declare."""
    opset: int = 17
    """The ONNX opset (default domain) the graphs use; a runtime that cannot run it refuses the bundle."""
    versions: dict[str, str] = field(default_factory=dict)
    """The versions of the libraries that wrote the bundle; informational."""
    files: dict[str, str] = field(default_factory=dict)
    """The sha256 (64 lower-case hex digits) of every file of the bundle by its plain name; a runtime
    verifies each before running any graph."""
    source: dict[str, Any] = field(default_factory=dict)
    """How the bundle was made (method, checkpoint, measurements); informational, it never changes what
    a runtime does."""
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Optional prebuilt engines (TensorRT plans) by graph name: each names its ``file`` and the
    settings it was built with. A runtime may use them and must run without them."""
    format: str = FORMAT
    """Always ``corel-annotate/bundle``."""
    format_version: int = FORMAT_VERSION
    """The version of this format the manifest follows; a reader of version 4 reads versions 2, 3 and 4."""

    @property
    def is_sequence(self) -> bool:
        return self.kind == "sequence"

    @property
    def method(self) -> str:
        """The training method, for messages only (the runtime never branches on it)."""
        return str(self.source.get("method", self.kind))

    def vocab(self) -> Vocabulary:
        return Vocabulary(tuple(self.vocabulary))

    def preprocess_config(self) -> PreprocessConfig:
        return self.preprocess

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST) -> "BundleManifest":
        """Parse and validate a manifest dict; every problem is a one-line ValueError naming ``source``."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a corel-annotate bundle manifest")  # rule: format
        version = data.get("format_version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            # rule: format
            raise ValueError(f"{source}: bundle format version {version!r} is not supported (this runtime reads "
                             f"versions {', '.join(map(str, READABLE_VERSIONS))}); re-export the checkpoint with "
                             "this corel-export")
        try:
            manifest = read_strict(cls, data)
            manifest.check()
        except ValueError as exc:
            raise ValueError(f"{source}: invalid manifest ({' '.join(str(exc).split())})") from None
        return manifest

    def check(self) -> None:
        """Cross-field rules the types alone do not say; a ValueError names the first broken one."""
        vocab = self.vocab()
        n = len(vocab)
        if "encoder" not in self.graphs:
            raise ValueError("graphs: no 'encoder' graph")  # rule: encoder
        encoder = self.graphs["encoder"]
        if encoder.input_names() != [self.image_input]:
            raise ValueError(f"graphs.encoder: inputs {encoder.input_names()}, expected [{self.image_input!r}]")  # rule: encoder
        pre = self.preprocess
        shape, want = encoder.inputs[0].shape, pre.input_shape
        if len(shape) != 4 or any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want)):
            raise ValueError(f"graphs.encoder: input shape {list(shape)} does not take [batch, {', '.join(map(str, want))}] "  # rule: encoder
                             f"images (preprocess.layout {pre.layout})")
        if encoder.inputs[0].dtype != pre.input_dtype:
            raise ValueError(f"graphs.encoder: input dtype {encoder.inputs[0].dtype}, but preprocess.input_dtype is "  # rule: encoder
                             f"{pre.input_dtype}")
        for name, graph in self.graphs.items():
            for io in graph.inputs + graph.outputs:
                if any(isinstance(d, int) and d < 0 for d in io.shape):
                    raise ValueError(f"graphs.{name}: {io.name} has a negative dimension")  # rule: tensors
            names = graph.input_names() + graph.output_names()
            if len(set(graph.input_names())) != len(graph.inputs) or len(set(graph.output_names())) != len(graph.outputs):
                raise ValueError(f"graphs.{name}: a tensor name appears twice in {names}")  # rule: tensors
        if self.kind == "scores":
            self._check_scores(n)
        else:
            self._check_sequence(n)
        self._check_memory(n)
        for graph in self.graphs.values():
            check_member_name(graph.file)  # rule: files
            if graph.file not in self.files:
                raise ValueError(f"files: no sha256 recorded for {graph.file}")  # rule: files
        for name, engine in self.engines.items():
            if name not in self.graphs or not isinstance(engine.get("file"), str):
                raise ValueError(f"engines.{name}: needs a graph of that name and a 'file'")  # rule: engines
            check_member_name(engine["file"])  # rule: files
            if engine["file"] not in self.files:
                raise ValueError(f"files: no sha256 recorded for {engine['file']}")  # rule: files

    def _check_scores(self, n: int) -> None:
        scoring = self.scoring
        if scoring is None or self.sequence is not None:
            raise ValueError("a scores bundle needs a 'scoring' section and no 'sequence' section")  # rule: kind
        if set(self.graphs) - {"memory"} != {"encoder"}:
            raise ValueError(f"graphs: a scores bundle has one graph, 'encoder', and may have 'memory' "  # rule: kind
                             f"(got {sorted(self.graphs)})")
        encoder = self.graphs["encoder"]
        if scoring.logits_output not in encoder.output_names():
            raise ValueError(f"scoring.logits_output: the encoder has no output {scoring.logits_output!r}")  # rule: logits
        shape = encoder.output(scoring.logits_output).shape
        head = self.memory.head_labels if self.memory is not None else n
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != head):
            raise ValueError(f"scoring.logits_output: shape {list(shape)}, expected [batch, {head}]")  # rule: logits
        if len(scoring.thresholds) != n:
            raise ValueError(f"scoring.thresholds: {len(scoring.thresholds)} thresholds for {n} labels")  # rule: thresholds
        scoring.config   # the bounds, checked in one place (ValueError)  # rule: scoring-bounds

    def _check_sequence(self, n: int) -> None:
        seq = self.sequence
        if seq is None or self.scoring is not None:
            raise ValueError("a sequence bundle needs a 'sequence' section and no 'scoring' section")  # rule: kind
        if set(self.graphs) - {"memory"} != {"encoder", "decoder_step"}:
            raise ValueError(f"graphs: a sequence bundle has 'encoder' and 'decoder_step', and may have 'memory' "  # rule: kind
                             f"(got {sorted(self.graphs)})")
        encoder, step = self.graphs["encoder"], self.graphs["decoder_step"]
        fed = [seq.token_input, *seq.state.values(), *seq.constants]
        if len(set(fed)) != len(fed):
            raise ValueError(f"sequence: the token, state and constant inputs overlap ({fed})")  # rule: step-inputs
        if sorted(step.input_names()) != sorted(fed):
            raise ValueError(f"sequence: decoder_step inputs {step.input_names()} are not the token input, the "  # rule: step-inputs
                             f"state's inputs and the constants {fed}")
        token = next(t for t in step.inputs if t.name == seq.token_input)
        if token.dtype != "int64" or len(token.shape) != 1:
            raise ValueError(f"sequence.token_input: {seq.token_input} must be a [batch] int64 input")  # rule: step-inputs
        outputs = step.output_names()
        needed = [seq.log_probs_output, *seq.state] + ([seq.attention_output] if seq.attention_output else [])
        missing = [o for o in needed if o not in outputs]
        if missing:
            raise ValueError(f"sequence: decoder_step has no output {missing[0]!r}")  # rule: step-outputs
        if len(set(needed)) != len(needed):
            raise ValueError(f"sequence: the log-probability, state and attention outputs overlap ({needed})")  # rule: step-outputs
        missing = [i for i in [*seq.state.values(), *seq.constants] if i not in encoder.output_names()]
        if missing:
            raise ValueError(f"sequence: the encoder has no output {missing[0]!r} for the decoder input of that name")  # rule: state
        shape = step.output(seq.log_probs_output).shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n + 1):
            raise ValueError(f"sequence.log_probs_output: shape {list(shape)}, expected [batch, {n + 1}] "  # rule: log-probs
                             "(the labels, then stop)")
        if seq.stop_id != n or seq.start_id != n + 1:
            raise ValueError(f"sequence: stop_id {seq.stop_id} and start_id {seq.start_id} must be {n} and {n + 1} "  # rule: stop-start
                             f"for {n} labels")
        seq.decoding.check_labels(n)

    def _check_memory(self, n: int) -> None:
        memory = self.memory
        if memory is None:
            if "memory" in self.graphs:
                raise ValueError("graphs: a 'memory' graph needs a 'memory' section")  # rule: memory-present
            return
        if "memory" not in self.graphs:
            raise ValueError("memory: the bundle has no 'memory' graph")  # rule: memory-present
        graph, encoder = self.graphs["memory"], self.graphs["encoder"]
        if memory.embedding_output not in encoder.output_names():
            raise ValueError(f"memory.embedding_output: the encoder has no output {memory.embedding_output!r}")  # rule: memory-io
        if graph.input_names() != [memory.embedding_output]:
            raise ValueError(f"graphs.memory: inputs {graph.input_names()}, expected [{memory.embedding_output!r}]")  # rule: memory-io
        if memory.scores_output not in graph.output_names():
            raise ValueError(f"memory.scores_output: the memory graph has no output {memory.scores_output!r}")  # rule: memory-io
        shape = graph.output(memory.scores_output).shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n):
            raise ValueError(f"memory.scores_output: shape {list(shape)}, expected [batch, {n}]")  # rule: memory-io
        if encoder.output(memory.embedding_output).shape[1:] != graph.inputs[0].shape[1:]:
            raise ValueError("graphs.memory: its input does not take the encoder's embedding shape")  # rule: memory-io
        if memory.examples < 1 or memory.k < 1:
            raise ValueError(f"memory: k {memory.k} and examples {memory.examples} must be at least 1")  # rule: memory-bounds
        if memory.k > memory.examples:
            raise ValueError(f"memory: k {memory.k} must be between 1 and the {memory.examples} examples")  # rule: memory-k
        if not memory.temperature > 0 or not 0.0 <= memory.weight <= 1.0:
            raise ValueError(f"memory: temperature {memory.temperature} must be > 0 and weight {memory.weight} "  # rule: memory-bounds
                             "in [0, 1]")
        if memory.head_labels < 1:
            raise ValueError(f"memory.head_labels: {memory.head_labels}; at least 1")  # rule: memory-bounds
        if memory.head_labels > n or (self.kind == "sequence" and memory.head_labels != n):
            raise ValueError(f"memory.head_labels: {memory.head_labels}; between 1 and {n} (all {n} for a "  # rule: memory-head
                             "sequence bundle)")


def check_member_name(name: str) -> None:
    """A bundle file is named plainly, inside the bundle's own folder (no folder, no leading dot)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"files: {name!r} points outside the bundle (bundle files sit in its own folder)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_member(bundle: Path, name: str) -> Path:
    """The path of bundle file ``name``, refusing absolute paths, ``..`` and links that leave the bundle."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name:
        raise ValueError(f"{bundle / MANIFEST}: file name {name!r} points outside the bundle")
    path = bundle / name
    root = bundle.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"{bundle / MANIFEST}: file {name!r} resolves outside the bundle ({resolved})")
    return path


def load_manifest(bundle: str | Path, verify: bool = True) -> BundleManifest:
    """Read ``BUNDLE/manifest.json``; with ``verify`` check every file's presence and sha256."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise ValueError(f"{bundle}: not a bundle (no {MANIFEST})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc})") from exc
    manifest = BundleManifest.from_dict(data, str(path))
    if verify:
        for name, expected in manifest.files.items():
            member = safe_member(bundle, name)
            if not member.is_file():
                raise ValueError(f"{member}: file named in the manifest is missing")
            actual = sha256_file(member)
            if actual != expected:
                raise ValueError(f"{member}: sha256 {actual[:12]}... does not match the manifest ({expected[:12]}...); "
                                 "the file was changed")
    return manifest
