"""The Python API: ``Annotator.load(bundle).annotate(images)``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image

from .decoder_state import DecoderState
from .search import search_labels
from .bundle.decoding_config import DecodingConfig
from .bundle.facts import BundleFacts
from .bundle.manifest import BundleManifest, load_manifest, safe_member
from .bundle.label_map import LabelMap, with_label_map
from .memory import EMBEDDING_OUTPUT, blend_scores, interpolate_log_probs
from .preprocessing import load_image, preprocess, to_rgb
from .scoring import select_labels, sigmoid
from .engines.choice import engine_name, settle_engine
from .engines.onnxruntime_session import create_session, session_device

ImageLike = Union[str, Path, Image.Image, np.ndarray]


@dataclass
class Annotation:
    """Labels for one image, best first for score-based methods, emission order for recurrent ones."""

    labels: list[str]
    scores: list[float]
    label_ids: list[int]
    alphas: list[np.ndarray] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"labels": self.labels, "scores": [round(s, 6) for s in self.scores]}


class Annotator(BundleFacts):
    """A loaded bundle: verified manifest, ONNX Runtime sessions, preprocessing and decoding.

    Everything comes from the manifest (graph roles, state map, constants, decoding rules,
    thresholds), never from the name of the method that trained the bundle."""

    def __init__(self, bundle: Path, manifest: BundleManifest, sessions: dict, device: str,
                 precision: str = "fp32", labels: LabelMap | None = None) -> None:
        self.bundle, self.manifest, self.sessions, self.device = bundle, manifest, sessions, device
        self.precision = precision
        self.vocabulary = manifest.vocab()
        self.label_map = labels.bind(manifest.vocabulary, manifest.kind) if labels is not None else None
        self.preprocess_config = manifest.preprocess_config()
        self._input_dtype = np.dtype(self.preprocess_config.input_dtype)
        seq = manifest.sequence
        if seq is not None:
            self._encoder_outputs = list(dict.fromkeys([*seq.state.values(), *seq.constants]))
            self._step_outputs = [seq.log_probs_output, *seq.state] + ([seq.attention_output] if seq.attention_output else [])
            self._step_source = str(bundle / manifest.graphs["decoder_step"].file)
        else:
            assert manifest.scoring is not None
            self._encoder_outputs = [manifest.scoring.logits_output]
        self.memory = manifest.memory
        # a sequence bundle whose memory weight is 0 decodes as without one: its memory graph is not run
        self._run_memory = self.memory is not None and (not manifest.is_sequence or self.memory.weight > 0)
        if self._run_memory:
            self._encoder_outputs.append(self.memory.embedding_output)

    @classmethod
    def load(cls, bundle: str | Path, device: str = "cpu", threads: int = 0, spinning: bool = False,
             precision: str = "fp32", pin_threads: bool = True,
             labels: LabelMap | str | Path | None = None, step_device: str = "auto") -> "Annotator":
        """Verify the bundle (sha256 of every file, paths inside the bundle, graph interfaces), then open sessions.

        ``device="tensorrt"`` runs the bundle's TensorRT engines when it has them, else onnxruntime's
        TensorRT provider; a provider that is not installed falls back to the CPU with a message.
        ``spinning`` lets onnxruntime's idle threads spin-wait: off by default, because on 2 cores the
        spinning threads slow down the JPEG decoding and decoding loops that run between graph calls.
        ``device="openvino"`` compiles the graphs with OpenVINO at ``precision`` (``fp32`` or ``bf16``,
        always explicit); the other devices compute in the bundle's own precision (``fp32`` here).
        ``pin_threads=False`` stops OpenVINO pinning its threads to cores: needed when several engine
        processes share a machine (``--ray`` actors), which it would otherwise pin to the same cores.
        ``device="auto"``/``precision="auto"`` pick the fastest engine within the accuracy budget (the
        CLIs' default; see ``openvino_session.resolve_engine``); :attr:`engine` says which ran.
        ``labels``: a run-time :class:`~.label_map.LabelMap` (or its file) for the names, merges,
        exclusions and per-label thresholds of every result; the bundle is not changed.
        ``step_device``: where a sequence bundle's decoder step runs when ``device="openvino"``: ``auto``
        (onnxruntime: one step at batch 1 is per-call overhead, measured 0.95 ms in onnxruntime against
        1.9 ms in OpenVINO on a 2-core AVX2 CPU, docs/performance.md) or ``openvino``."""
        if step_device not in ("auto", "openvino", "onnxruntime"):
            raise ValueError(f"step_device {step_device!r}: choose auto, openvino or onnxruntime")
        bundle = Path(bundle)
        manifest = load_manifest(bundle, verify=True)
        if isinstance(labels, (str, Path)):
            labels = LabelMap.read(labels)
        if labels is not None:
            labels.bind(manifest.vocabulary, manifest.kind)
        device, precision = settle_engine(device, precision)
        if device == "openvino":
            from .engines.openvino_session import OpenVINOSession

            sessions = {name: OpenVINOSession(safe_member(bundle, spec.file), spec, precision, threads, pin_threads)
                        if name != "decoder_step" or step_device == "openvino" else
                        create_session(safe_member(bundle, spec.file), spec, "cpu", threads, spinning)
                        for name, spec in manifest.graphs.items()}
        elif device == "tensorrt" and manifest.engines:
            from .engines.tensorrt_engine import TensorRTSession

            sessions = {name: TensorRTSession(safe_member(bundle, manifest.engines[name]["file"]))
                          if name in manifest.engines else
                          create_session(safe_member(bundle, spec.file), spec, device, threads, spinning)
                        for name, spec in manifest.graphs.items()}
        else:
            sessions = {name: create_session(safe_member(bundle, spec.file), spec, device, threads, spinning)
                        for name, spec in manifest.graphs.items()}
        return cls(bundle, manifest, sessions, device, precision, labels)

    @property
    def engine(self) -> str:
        """What computes, for the record: ``onnxruntime-cpu fp32``, ``openvino bf16``, ...; a device whose
        onnxruntime provider is missing is named by what ran instead (the CPU)."""
        return engine_name(self.manifest, session_device(self.sessions["encoder"], self.device), self.precision)

    @property
    def engine_note(self) -> str | None:
        """One line to show at start-up when this engine is a known slow choice for the bundle (an int8
        bundle on onnxruntime's CPU provider without VNNI, ``engines.isa``); None otherwise."""
        from .engines.isa import int8_without_vnni

        return int8_without_vnni(self.manifest.precision, session_device(self.sessions["encoder"], self.device))

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Images (paths, PIL images or HxWx3 uint8 arrays) to the encoder's batch, as the manifest's
        ``preprocess`` declares it (``[B, 3, S, S]`` float32, or ``[B, S, S, 3]`` uint8 pixels)."""
        arrays = []
        for image in images:
            if isinstance(image, (str, Path)):
                pil = load_image(image, min_size=self.preprocess_config.decode_size)
            elif isinstance(image, Image.Image):
                pil = to_rgb(image)
            else:
                pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
            arrays.append(preprocess(pil, self.preprocess_config))
        return np.stack(arrays)

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as the encoder's contiguous input; ValueError when it is not what the manifest declares
        (a normalised float batch for a pixel-input bundle would otherwise be cast to garbage)."""
        batch = np.asarray(batch)
        want = self.preprocess_config.input_shape
        kind_ok = batch.dtype == np.uint8 if self._input_dtype == np.uint8 else batch.dtype.kind == "f"
        if batch.ndim != 4 or batch.shape[1:] != want or not kind_ok:
            raise ValueError(f"{self.bundle}: the encoder takes {self._input_dtype} images [batch, "
                             f"{', '.join(map(str, want))}] (Annotator.preprocess makes them); got {batch.dtype} "
                             f"{list(batch.shape)}")
        return np.ascontiguousarray(batch, self._input_dtype)

    def encode(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the encoder graph (and the memory graph on its embedding); returns the outputs decoding reads."""
        outputs = self.sessions["encoder"].run(self._encoder_outputs, {self.manifest.image_input: self._checked(batch)})
        encoded = dict(zip(self._encoder_outputs, outputs))
        if self._run_memory:
            memory = self.memory
            [scores] = self.sessions["memory"].run([memory.scores_output],
                                                   {memory.embedding_output: encoded[memory.embedding_output]})
            encoded[memory.scores_output] = scores
        return encoded

    def label_scores(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        """Score bundles: the label scores the thresholds apply to (the head's sigmoid, blended with the
        memory's scores when the bundle has a memory)."""
        probs = sigmoid(encoded[self._encoder_outputs[0]])
        if self.memory is None:
            return probs
        return blend_scores(probs, encoded[self.memory.scores_output], self.memory)

    def decoding_config(self, beam_width: int | None = None, max_len: int | None = None,
                        forbid_repeat: bool | None = None, length_penalty: float | None = None,
                        min_labels: int | None = None) -> DecodingConfig:
        """The manifest's decoding rules with the given overrides (None keeps the manifest's); validated."""
        seq = self.manifest.sequence
        if seq is None:
            raise ValueError(f"{self.bundle}: a scores bundle has no decoding rules")
        return seq.decoding.replace(beam_width=beam_width, max_len=max_len, forbid_repeat=forbid_repeat,
                                    length_penalty=length_penalty, min_labels=min_labels)

    def start_state(self, encoded: dict[str, np.ndarray]) -> DecoderState:
        """The first step's state: recurrent inputs and per-image constants from the encoder's outputs."""
        seq = self.manifest.sequence
        assert seq is not None
        return DecoderState.start({name: encoded[name] for name in seq.state.values()},
                                  {name: encoded[name] for name in seq.constants})

    def step(self, tokens: np.ndarray, state: DecoderState, memory: tuple[np.ndarray, float] | None = None
             ) -> tuple[np.ndarray, DecoderState, np.ndarray | None]:
        """One decoder-step call: the token, the recurrent rows and each row's constants in, the
        log-probabilities, the next recurrent rows (by the manifest's state map) and attention out.
        With ``memory`` = (memory scores ``[B, V]``, one row per image; weight) the log-probabilities
        are mixed with the memory's (``memory.interpolate_log_probs``)."""
        seq = self.manifest.sequence
        assert seq is not None
        feed = {seq.token_input: tokens.astype(np.int64, copy=False), **state.inputs()}
        result = dict(zip(self._step_outputs, self.sessions["decoder_step"].run(self._step_outputs, feed)))
        new_state = state.with_rows({target: result[out] for out, target in seq.state.items()})
        logp = result[seq.log_probs_output]
        if memory is not None and memory[1] > 0:
            logp = interpolate_log_probs(logp, memory[0][state.image], memory[1])
        return logp, new_state, result.get(seq.attention_output) if seq.attention_output else None

    def annotate_batch(self, batch: np.ndarray, beam_width: int | None = None, top_k: int | None = None,
                       threshold: float | None = None, keep_alphas: bool = False) -> list[Annotation]:
        """Annotate preprocessed images (a batch from :meth:`preprocess`).

        Any ``beam_width`` is accepted here.  Memory grows with images x width: each live hypothesis
        costs :func:`~corel_annotate.runtime.bundle.limits.hypothesis_bytes` (about 0.7 MB for an attention
        decoder over a 49 x 1280 feature map), so a width of 1,000 on a batch of 8 asks for gigabytes.
        Code that takes widths from others should check them with
        :class:`~corel_annotate.runtime.bundle.limits.RequestLimits`, as the server, the Ray job and the page do."""
        encoded = self.encode(batch)
        if self.manifest.is_sequence:
            config = self.decoding_config(beam_width)
            mix = (encoded[self.memory.scores_output], self.memory.weight) if self._run_memory else None
            results = search_labels(lambda tokens, state: self.step(tokens, state, mix), self.start_state(encoded),
                             config, len(self.vocabulary), keep_alphas, source=self._step_source)
            return [with_label_map(self.label_map, Annotation(self.vocabulary.decode(r.labels), r.scores, r.labels, r.alphas))
                    for r in results]
        return self.labels_from_scores(self.label_scores(encoded), top_k, threshold)

    def labels_from_scores(self, probs: np.ndarray, top_k: int | None = None,
                           threshold: float | None = None) -> list[Annotation]:
        """Score-based bundles: labels whose score reaches the threshold (per label from the manifest,
        or one ``threshold`` for all), best first, at most ``top_k``, at least the manifest's ``min_labels``.
        A label map's thresholds replace those of its labels, and its excluded labels are never chosen."""
        scoring = self.manifest.scoring
        assert scoring is not None
        rules = self.scoring_config(top_k, threshold)
        thresholds, choose = rules.thresholds, probs
        if self.label_map is not None:
            excluded = self.label_map.excluded(self.manifest.vocabulary)
            # an excluded label never reaches its bar and ranks below every other, even for min_labels
            thresholds = np.where(excluded, 2.0, self.label_map.thresholds(self.manifest.vocabulary, thresholds))
            choose = np.where(excluded, -1.0, probs)
        chosen = select_labels(choose, thresholds, rules.top_k, rules.min_labels)
        return [with_label_map(self.label_map, Annotation(self.vocabulary.decode(ids), [float(probs[i, j]) for j in ids], ids))
                for i, ids in enumerate(chosen)]

    def scores(self, batch: np.ndarray) -> np.ndarray | None:
        """Label scores ``[B, L]`` for score-based bundles (sigmoid, blended with the memory's), None for
        recurrent ones."""
        if self.manifest.is_sequence:
            return None
        return self.label_scores(self.encode(batch))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """The encoder's L2-normalised embeddings ``[B, D]`` (what the label memory stores and searches)."""
        name = self.memory.embedding_output if self.memory is not None else EMBEDDING_OUTPUT
        if name not in self.manifest.graphs["encoder"].output_names():
            raise ValueError(f"{self.bundle}: the encoder has no {name!r} output (exported before format 3); "
                             "re-export the checkpoint")
        [out] = self.sessions["encoder"].run([name], {self.manifest.image_input: self._checked(batch)})
        return out

    def annotate(self, images: Iterable[ImageLike], batch_size: int = 8, **options) -> list[Annotation]:
        """Annotate images given as paths, PIL images or uint8 arrays; the next batches are decoded in
        background threads (``inputs.decode_workers``) while the engine runs.  A file that cannot be
        read raises ValueError naming it."""
        from .photos import decode_workers, prefetch

        images = list(images)
        chunks = [images[start:start + batch_size] for start in range(0, len(images), batch_size)]
        out: list[Annotation] = []
        for batch in prefetch(chunks, self.preprocess, workers=decode_workers(), ahead=decode_workers()):
            out.extend(self.annotate_batch(batch, **options))
        return out
