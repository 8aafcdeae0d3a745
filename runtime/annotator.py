"""The Python API: ``Annotator.load(bundle).annotate(images)``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image

from .decoding import DecodeOptions, decode
from .manifest import BundleManifest, load_manifest, safe_member
from .preprocessing import load_image, preprocess, to_rgb
from .scoring import select_labels, sigmoid
from .session import create_session

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


class Annotator:
    """A loaded bundle: verified manifest, ONNX Runtime sessions, preprocessing and decoding."""

    def __init__(self, bundle: Path, manifest: BundleManifest, sessions: dict, device: str) -> None:
        self.bundle, self.manifest, self.sessions, self.device = bundle, manifest, sessions, device
        self.vocabulary = manifest.vocab()
        self.preprocess_config = manifest.preprocess_config()
        self._encoder_outputs = manifest.graphs["encoder"].output_names()

    @classmethod
    def load(cls, bundle: str | Path, device: str = "cpu", threads: int = 0, spinning: bool = False) -> "Annotator":
        """Verify the bundle (sha256 of every file, paths inside the bundle, graph interfaces), then open sessions.

        ``device="tensorrt"`` runs the bundle's TensorRT engines when it has them, else onnxruntime's
        TensorRT provider; a provider that is not installed falls back to the CPU with a message.
        ``spinning`` lets onnxruntime's idle threads spin-wait: off by default, because on 2 cores the
        spinning threads slow down the JPEG decoding and decoding loops that run between graph calls."""
        bundle = Path(bundle)
        manifest = load_manifest(bundle, verify=True)
        if device == "tensorrt" and manifest.engines:
            from .tensorrt_engine import TensorRTSession

            sessions = {name: TensorRTSession(safe_member(bundle, manifest.engines[name]["file"]))
                        for name in manifest.graphs}
        else:
            sessions = {name: create_session(safe_member(bundle, spec.file), spec, device, threads, spinning)
                        for name, spec in manifest.graphs.items()}
        return cls(bundle, manifest, sessions, device)

    @property
    def method(self) -> str:
        return self.manifest.method

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Images (paths, PIL images or HxWx3 uint8 arrays) to the encoder's ``[B, 3, S, S]`` input."""
        arrays = []
        for image in images:
            if isinstance(image, (str, Path)):
                pil = load_image(image)
            elif isinstance(image, Image.Image):
                pil = to_rgb(image)
            else:
                pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
            arrays.append(preprocess(pil, self.preprocess_config))
        return np.stack(arrays)

    def encode(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the encoder graph."""
        outputs = self.sessions["encoder"].run(self._encoder_outputs, {"images": np.ascontiguousarray(batch, np.float32)})
        return dict(zip(self._encoder_outputs, outputs))

    def decode_options(self, beam_width: int | None = None, max_len: int | None = None,
                       forbid_repeat: bool | None = None, length_penalty: float | None = None) -> DecodeOptions:
        spec = self.manifest.decoding
        assert spec is not None
        return DecodeOptions(num_labels=len(self.vocabulary), max_len=max_len or spec.max_len,
                             beam_width=beam_width or spec.beam_width,
                             forbid_repeat=spec.forbid_repeat if forbid_repeat is None else forbid_repeat,
                             length_penalty=spec.length_penalty if length_penalty is None else length_penalty)

    def step(self, tokens: np.ndarray, state: dict[str, np.ndarray]):
        """One decoder-step call; the graph's constant inputs (features, projection) ride along in the state."""
        spec = self.manifest.graphs["decoder_step"]
        feed = {"token": tokens.astype(np.int64, copy=False)}
        feed.update({name: state[name] for name in spec.input_names()[1:]})
        names = spec.output_names()
        result = dict(zip(names, self.sessions["decoder_step"].run(names, feed)))
        new_state = dict(state)
        new_state["h"], new_state["c"] = result["h_out"], result["c_out"]
        return result["log_probs"], new_state, result.get("alpha")

    def annotate_batch(self, batch: np.ndarray, beam_width: int | None = None, top_k: int | None = None,
                       threshold: float | None = None, keep_alphas: bool = False) -> list[Annotation]:
        """Annotate preprocessed images ``[B, 3, S, S]``."""
        encoded = self.encode(batch)
        if self.manifest.is_sequence:
            names = self.manifest.graphs["decoder_step"].input_names()[1:]
            state = {name: encoded[name] for name in names}
            results = decode(self.step, state, self.decode_options(beam_width), keep_alphas)
            return [Annotation(self.vocabulary.decode(r.labels), r.scores, r.labels, r.alphas) for r in results]
        return self.labels_from_scores(sigmoid(encoded["logits"]), top_k, threshold)

    def labels_from_scores(self, probs: np.ndarray, top_k: int | None = None,
                           threshold: float | None = None) -> list[Annotation]:
        """Score-based bundles: labels whose score reaches the threshold (per label from the manifest,
        or one ``threshold`` for all), best first, at most ``top_k``, at least the manifest's ``min_labels``."""
        scoring = self.manifest.scoring
        assert scoring is not None
        thresholds = [threshold] * len(self.vocabulary) if threshold is not None else list(scoring.thresholds)
        chosen = select_labels(probs, thresholds, top_k if top_k is not None else scoring.top_k, scoring.min_labels)
        return [Annotation(self.vocabulary.decode(ids), [float(probs[i, j]) for j in ids], ids)
                for i, ids in enumerate(chosen)]

    def scores(self, batch: np.ndarray) -> np.ndarray | None:
        """Sigmoid label scores ``[B, L]`` for score-based bundles, None for recurrent ones."""
        if self.manifest.is_sequence:
            return None
        return sigmoid(self.encode(batch)["logits"])

    def annotate(self, images: Iterable[ImageLike], batch_size: int = 8, **options) -> list[Annotation]:
        """Annotate images given as paths, PIL images or uint8 arrays."""
        images = list(images)
        out: list[Annotation] = []
        for start in range(0, len(images), batch_size):
            out.extend(self.annotate_batch(self.preprocess(images[start:start + batch_size]), **options))
        return out
