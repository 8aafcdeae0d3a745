"""The bundle manifest: the contract between ``corel-export`` and the runtime.

A bundle is a directory holding ``manifest.json`` and the ONNX graphs it names.
The manifest says what each graph takes and gives, how photos are preprocessed,
how decoding works, and the sha256 of every file, which is checked before any
session is created.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .preprocessing import PreprocessConfig
from .vocabulary import Vocabulary

FORMAT = "corel-annotate/bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCORE_METHODS = ("cnn", "ml-gcn")
SEQUENCE_METHODS = ("ria", "sr-cnn-rnn", "attention")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type and shape (strings name dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, data: dict) -> "TensorSpec":
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["shape"]))


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX file and its interface."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_dict(cls, data: dict) -> "GraphSpec":
        return cls(str(data["file"]), tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in data["outputs"]))

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True)
class DecodingSpec:
    """Decoding defaults for recurrent bundles (token ids follow ``runtime.vocabulary``)."""

    start_id: int
    stop_id: int
    max_len: int = 5
    beam_width: int = 1
    forbid_repeat: bool = True
    length_penalty: float = 0.0


@dataclass(frozen=True)
class ScoringSpec:
    """Score-based bundles: per-label thresholds on sigmoid scores, an optional top-k cap and a floor of
    labels per image (the best-scored ones when fewer reach their thresholds)."""

    thresholds: tuple[float, ...]
    top_k: int | None = None
    min_labels: int = 0


@dataclass(frozen=True)
class BundleManifest:
    method: str
    vocabulary: tuple[str, ...]
    preprocess: dict[str, Any]
    graphs: dict[str, GraphSpec]
    decoding: DecodingSpec | None = None
    scoring: ScoringSpec | None = None
    precision: str = "fp32"
    opset: int = 17
    versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def is_sequence(self) -> bool:
        return self.method in SEQUENCE_METHODS

    def vocab(self) -> Vocabulary:
        return Vocabulary(tuple(self.vocabulary))

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str = MANIFEST) -> "BundleManifest":
        """Parse and validate a manifest dict; every problem is a one-line ValueError naming ``source``."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a corel-annotate bundle manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: bundle format version {data.get('format_version')!r} is not supported "
                             f"(this runtime reads version {FORMAT_VERSION})")
        try:
            method = str(data["method"])
            if method not in SCORE_METHODS + SEQUENCE_METHODS:
                raise ValueError(f"unknown method {method!r}")
            graphs = {str(k): GraphSpec.from_dict(v) for k, v in data["graphs"].items()}
            if "encoder" not in graphs or (method in SEQUENCE_METHODS and "decoder_step" not in graphs):
                raise ValueError(f"method {method} needs graphs 'encoder'" + (" and 'decoder_step'" if method in SEQUENCE_METHODS else ""))
            manifest = cls(
                method=method, vocabulary=tuple(data["vocabulary"]), preprocess=dict(data["preprocess"]), graphs=graphs,
                decoding=DecodingSpec(**data["decoding"]) if data.get("decoding") else None,
                scoring=ScoringSpec(tuple(float(t) for t in data["scoring"]["thresholds"]), data["scoring"].get("top_k"),
                                    int(data["scoring"].get("min_labels", 0)))
                if data.get("scoring") else None,
                precision=str(data.get("precision", "fp32")), opset=int(data.get("opset", 17)),
                versions=dict(data.get("versions", {})), files={str(k): str(v) for k, v in data.get("files", {}).items()},
                source=dict(data.get("source", {})),
                engines={str(k): dict(v) for k, v in data.get("engines", {}).items()})
            manifest.vocab()
            manifest.preprocess_config()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: invalid manifest ({exc})") from exc
        if manifest.is_sequence and manifest.decoding is None:
            raise ValueError(f"{source}: a {method} bundle needs a 'decoding' section")
        if not manifest.is_sequence and (manifest.scoring is None or len(manifest.scoring.thresholds) != len(manifest.vocabulary)):
            raise ValueError(f"{source}: a {method} bundle needs one threshold per label")
        return manifest


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
    needed = {g.file for g in manifest.graphs.values()} | {str(e.get("file")) for e in manifest.engines.values()}
    missing_hash = needed - set(manifest.files)
    if missing_hash:
        raise ValueError(f"{path}: no sha256 recorded for {sorted(missing_hash)[0]}")
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
