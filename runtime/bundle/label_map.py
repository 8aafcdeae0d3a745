"""A run-time label map (``--labels FILE``, TOML or JSON): what a bundle's labels are called, which
ones merge or are left out, per-label thresholds and where each sits in a tag hierarchy.  It changes
what a run reports, never the bundle.

::

    # labels.toml
    [labels]
    sky = "blue sky"                                   # a display name (spaces allowed)
    grass = { name = "plants", threshold = 0.4 }       # score bundles: this label's own threshold
    tree = { name = "plants", path = "nature" }        # two labels with one name merge (the best score stays)
    people = { exclude = true }                        # never reported
    water = { path = "nature|water bodies" }           # lr:hierarchicalSubject ROOT|nature|water bodies|water

Every problem is a one-line ValueError naming the file and the key (or, for a file that does not
parse, the line).  The same map file gives the same answers in ``corel-infer``, the ``Annotator``,
``corel-serve`` and the web page (``corel-web --labels``), which all apply it here or in its
JavaScript twin ``web/labels.js``.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional, Sequence

import numpy as np
from pydantic import AfterValidator, BeforeValidator

from .typed_json import read_strict

ENTRY_KEYS = ("name", "path", "threshold", "exclude")


def _check_name(name: Optional[str]) -> Optional[str]:
    if name is not None and (not name.strip() or name != name.strip() or any(c in name for c in "|/,;\n")):
        raise ValueError("a non-empty name without '|', '/', ',', ';' or surrounding spaces")
    return name


def _check_path(path: Optional[str]) -> Optional[str]:
    if path is not None and any(not p.strip() or "/" in p for p in path.split("|")):
        raise ValueError("names separated by '|' (nature|sky), none empty, no '/'")
    return path


def _check_threshold(threshold: Optional[float]) -> Optional[float]:
    if threshold is not None and not 0 <= threshold <= 1:
        raise ValueError("a number from 0 to 1")
    return threshold


@dataclass(frozen=True)
class LabelEntry:
    """What the map says about one bundle label (None: as the bundle has it)."""

    name: Annotated[Optional[str], AfterValidator(_check_name)] = None
    """The name reported instead of the label's; labels given one name merge (the best score stays)."""
    path: Annotated[Optional[str], AfterValidator(_check_path)] = None
    """Where the name sits in a tag hierarchy, names separated by ``|`` (``nature|water bodies``)."""
    threshold: Annotated[Optional[float], AfterValidator(_check_threshold)] = None
    """Score bundles: this label's own threshold, in [0, 1]."""
    exclude: bool = False
    """Never report this label."""


def _shorthand(value: Any) -> Any:
    """``sky = "blue sky"`` is ``sky = { name = "blue sky" }``."""
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"a name or a table {{ {', '.join(ENTRY_KEYS)} }}")
    return value


@dataclass(frozen=True)
class LabelMapFile:
    """A label map file as written: ``{"labels": {LABEL: NAME | {name, path, threshold, exclude}}}``."""

    labels: dict[str, Annotated[LabelEntry, BeforeValidator(_shorthand)]] = field(default_factory=dict)
    """What the map says about each bundle label it names."""


@dataclass(frozen=True)
class LabelMap:
    """A validated label map for one vocabulary; :meth:`bind` checks it against a bundle."""

    entries: Mapping[str, LabelEntry] = field(default_factory=dict)
    source: str = "labels"

    @classmethod
    def read(cls, path: str | Path) -> "LabelMap":
        """Read and validate ``path`` (``.toml`` or ``.json``); ValueError with one line naming the problem."""
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source}: cannot read the label map ({getattr(exc, 'strerror', None) or exc})") from None
        if path.suffix.lower() == ".toml":
            import tomllib

            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{source}: not TOML ({exc})") from None
        elif path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{source}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        else:
            raise ValueError(f"{source}: a label map is a .toml or .json file")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "labels") -> "LabelMap":
        """Validate a parsed map (:class:`LabelMapFile`); ValueError with one line naming ``source`` and the key."""
        try:
            parsed = read_strict(LabelMapFile, data)
        except ValueError as exc:
            raise ValueError(f"{source}: {' '.join(str(exc).split())}") from None
        return cls(dict(parsed.labels), source)

    def to_dict(self) -> dict[str, Any]:
        """The map as JSON data (what ``corel-web --labels`` hands the page)."""
        return {"labels": {label: {k: v for k, v in vars(entry).items() if v is not None and v is not False}
                           for label, entry in self.entries.items()}}

    def bind(self, vocabulary: Sequence[str], kind: str) -> "LabelMap":
        """Check the map against a bundle's labels and kind (``scores`` or ``sequence``); returns self."""
        known = set(vocabulary)
        for label, entry in self.entries.items():
            if label not in known:
                close = difflib.get_close_matches(label, list(vocabulary), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{self.source}: labels.{_key(label)}: not a label of the bundle{hint}")
            if entry.threshold is not None and kind != "scores":
                raise ValueError(f"{self.source}: labels.{_key(label)}.threshold: a sequence bundle decodes its "
                                 "labels and has no thresholds")
        return self

    def display(self, label: str) -> str:
        entry = self.entries.get(label)
        return entry.name if entry is not None and entry.name else label

    def path(self, name: str) -> Optional[str]:
        """The hierarchy above display name ``name`` (``nature|water bodies``), the first one the map gives."""
        for label, entry in self.entries.items():
            if entry.path and self.display(label) == name:
                return entry.path
        return None

    def thresholds(self, vocabulary: Sequence[str], base: Sequence[float] | np.ndarray) -> np.ndarray:
        """Score bundles: ``base`` with the map's per-label thresholds put in."""
        out = np.asarray(base, dtype=np.float32).copy()
        for j, label in enumerate(vocabulary):
            entry = self.entries.get(label)
            if entry is not None and entry.threshold is not None:
                out[j] = entry.threshold
        return out

    def excluded(self, vocabulary: Sequence[str]) -> np.ndarray:
        """A boolean mask of the labels never reported."""
        return np.array([self.entries.get(label, LabelEntry()).exclude for label in vocabulary], dtype=bool)

    def apply(self, labels: Sequence[str], scores: Sequence[float]) -> tuple[list[str], list[float], list[int]]:
        """Reported labels as the map says: excluded ones dropped, the rest renamed, labels sharing a name
        merged at the first one's place with the best score.  Returns names, scores and, for each, the
        position in ``labels`` it came from (to keep attention maps or ids with their label)."""
        names: list[str] = []
        best: list[float] = []
        origin: list[int] = []
        for i, (label, score) in enumerate(zip(labels, scores)):
            if self.entries.get(label, LabelEntry()).exclude:
                continue
            name = self.display(label)
            if name in names:
                k = names.index(name)
                best[k] = max(best[k], float(score))
                continue
            names.append(name)
            best.append(float(score))
            origin.append(i)
        return names, best, origin


def _key(label: Any) -> str:
    text = str(label)
    return text if text.replace("_", "").replace("-", "").isalnum() else json.dumps(text)


def with_label_map(map_: Optional[LabelMap], annotation: Any) -> Any:
    """An :class:`~corel_annotate.runtime.annotator.Annotation` with ``map_`` applied (itself when None)."""
    if map_ is None:
        return annotation
    names, scores, origin = map_.apply(annotation.labels, annotation.scores)
    alphas = [annotation.alphas[i] for i in origin] if annotation.alphas else annotation.alphas
    return replace(annotation, labels=names, scores=scores, label_ids=[annotation.label_ids[i] for i in origin],
                   alphas=alphas)
