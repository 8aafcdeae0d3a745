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
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

ENTRY_KEYS = ("name", "path", "threshold", "exclude")


@dataclass(frozen=True)
class LabelEntry:
    """What the map says about one bundle label (None: as the bundle has it)."""

    name: Optional[str] = None
    path: Optional[str] = None
    threshold: Optional[float] = None
    exclude: bool = False


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
        """Validate a parsed map: ``{"labels": {LABEL: NAME | {name, path, threshold, exclude}}}``."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a label map is a table with a 'labels' table in it")
        unknown = sorted(set(data) - {"labels"})
        if unknown:
            raise ValueError(f"{source}: {unknown[0]}: unknown key (a label map has one table, 'labels')")
        labels = data.get("labels", {})
        if not isinstance(labels, dict):
            raise ValueError(f"{source}: labels: a table of bundle label = name or {{ name, path, threshold, exclude }}")
        entries = {str(label): _entry(value, f"labels.{_key(label)}", source) for label, value in labels.items()}
        return cls(entries, source)

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


def _entry(value: Any, key: str, source: str) -> LabelEntry:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"{source}: {key}: a name or a table {{ name, path, threshold, exclude }}")
    unknown = sorted(set(value) - set(ENTRY_KEYS))
    if unknown:
        raise ValueError(f"{source}: {key}.{unknown[0]}: unknown key (use {', '.join(ENTRY_KEYS)})")
    name, path, threshold, exclude = (value.get(k) for k in ENTRY_KEYS)
    if name is not None and (not isinstance(name, str) or not name.strip() or name != name.strip()
                             or any(c in name for c in "|/,;\n")):
        raise ValueError(f"{source}: {key}.name: a non-empty name without '|', '/', ',', ';' or surrounding spaces")
    if path is not None and (not isinstance(path, str) or any(not p.strip() or "/" in p for p in path.split("|"))):
        raise ValueError(f"{source}: {key}.path: names separated by '|' (nature|sky), none empty, no '/'")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not math.isfinite(threshold) or not 0 <= threshold <= 1):
        raise ValueError(f"{source}: {key}.threshold: a number from 0 to 1")
    if not isinstance(exclude, (bool, type(None))):
        raise ValueError(f"{source}: {key}.exclude: true or false")
    return LabelEntry(name, path, None if threshold is None else float(threshold), bool(exclude))


def with_label_map(map_: Optional[LabelMap], annotation: Any) -> Any:
    """An :class:`~corel_annotate.runtime.annotator.Annotation` with ``map_`` applied (itself when None)."""
    if map_ is None:
        return annotation
    names, scores, origin = map_.apply(annotation.labels, annotation.scores)
    alphas = [annotation.alphas[i] for i in origin] if annotation.alphas else annotation.alphas
    return replace(annotation, labels=names, scores=scores, label_ids=[annotation.label_ids[i] for i in origin],
                   alphas=alphas)
