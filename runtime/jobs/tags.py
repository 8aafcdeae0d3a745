"""Tags where photo software reads them: XMP sidecars (``dc:subject``, ``lr:hierarchicalSubject``,
``digiKam:TagsList``) written with exiftool, or caption ``.txt`` files.  The photo's own bytes are
never touched.

Merging keeps what the user had: existing tags stay, new ones join without duplicates, and a rerun
replaces only the tags under this tool's root (``corel-annotate|<label>`` by default), so a newer
bundle's labels replace an older bundle's and nothing else.  A rerun that would write the same tags
writes nothing.  exiftool writes a sidecar through a temporary file and a rename, so a reader never
sees half of one.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..preprocessing import display_path

TAG_MODES = ("xmp", "txt")
SIDECAR_NAMINGS = ("append", "replace")
"""``append``: ``photo.jpg.xmp`` (darktable, digiKam); ``replace``: ``photo.xmp`` (Adobe Lightroom/Bridge)."""
SUBJECT, HIERARCHY, TAGS_LIST = "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList"
_READ = {"Subject": SUBJECT, "HierarchicalSubject": HIERARCHY, "TagsList": TAGS_LIST}


@dataclass(frozen=True)
class TagOptions:
    """``--write-tags MODE`` and its settings; validated on construction (ValueError naming the option)."""

    mode: str
    root: str = "corel-annotate"
    sidecar: str = "append"

    def __post_init__(self) -> None:
        if self.mode not in TAG_MODES:
            raise ValueError(f"--write-tags {self.mode}: choose one of {', '.join(TAG_MODES)}")
        if self.sidecar not in SIDECAR_NAMINGS:
            raise ValueError(f"--sidecar {self.sidecar}: choose one of {', '.join(SIDECAR_NAMINGS)}")
        parts = self.root.split("|")
        if not self.root or any(not p.strip() or "/" in p for p in parts):
            raise ValueError(f"--tag-root {self.root!r}: non-empty names separated by '|', without '/'")

    def target(self, photo: Path) -> Path:
        """The file the tags go to."""
        if self.mode == "txt":
            return photo.with_suffix(".txt")
        return photo.with_name(photo.name + ".xmp") if self.sidecar == "append" else photo.with_suffix(".xmp")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def merge_tags(existing: dict[str, list[str]], labels: list[str], root: str) -> dict[str, list[str]]:
    """The three XMP lists after tagging with ``labels``: entries under ``root`` replaced, the rest kept
    in order; a flat ``dc:subject`` tag an earlier run wrote goes with its root entry unless the user
    has the same word elsewhere in the hierarchy."""
    hierarchy = existing.get(HIERARCHY, [])
    ours = [h for h in hierarchy if h == root or h.startswith(root + "|")]
    theirs = [h for h in hierarchy if h not in ours]
    their_leaves = {h.split("|")[-1] for h in theirs}
    dropped = {h.split("|")[-1] for h in ours} - their_leaves - set(labels)
    slash_root = root.replace("|", "/")
    return {
        SUBJECT: _unique([s for s in existing.get(SUBJECT, []) if s not in dropped] + labels),
        HIERARCHY: _unique(theirs + [f"{root}|{label}" for label in labels]),
        TAGS_LIST: _unique([t for t in existing.get(TAGS_LIST, []) if not (t == slash_root or t.startswith(slash_root + "/"))]
                           + [f"{slash_root}/{label}" for label in labels]),
    }


class TagWriter:
    """Writes each photo's labels as ``options`` say; one exiftool process stays open for a whole run."""

    def __init__(self, options: TagOptions) -> None:
        self.options = options
        self._tool = None
        if options.mode == "xmp":
            try:
                from exiftool import ExifToolHelper
            except ImportError:
                raise ValueError("--write-tags xmp needs pyexiftool and exiftool: pip install 'corel-annotate[tags]' "
                                 "and apt-get install libimage-exiftool-perl (or your system's exiftool)") from None
            try:
                self._tool = ExifToolHelper(common_args=["-G1", "-n"])
                self._tool.run()
            except Exception as exc:  # noqa: BLE001 - a missing binary surfaces as several types
                raise ValueError(f"--write-tags xmp: cannot start exiftool ({exc}); install it "
                                 "(apt-get install libimage-exiftool-perl)") from None

    def write(self, photo: Path, labels: list[str]) -> dict[str, Any]:
        """Tag one photo; returns what was written where (for the record).  ValueError with a one-line
        reason when the tags cannot be written (the photo and any existing sidecar are left as they were)."""
        target = self.options.target(photo)
        if self.options.mode == "txt":
            return self._write_txt(target, labels)
        return self._write_xmp(target, labels)

    def _write_txt(self, target: Path, labels: list[str]) -> dict[str, Any]:
        try:
            existing = [t.strip() for t in target.read_text(encoding="utf-8").split(",")] if target.exists() else []
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{display_path(target)}: cannot read the caption file ({exc})") from None
        tags = _unique([t for t in existing if t] + labels)
        if tags == [t for t in existing if t]:
            return {"mode": "txt", "file": display_path(target), "changed": False, "tags": tags}
        try:
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(", ".join(tags) + "\n")
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            if "tmp" in locals() and os.path.exists(tmp):
                os.unlink(tmp)
            raise ValueError(f"{display_path(target)}: cannot write the caption file ({exc.strerror or exc})") from None
        return {"mode": "txt", "file": display_path(target), "changed": True, "tags": tags}

    def _write_xmp(self, target: Path, labels: list[str]) -> dict[str, Any]:
        from exiftool.exceptions import ExifToolException

        existing: dict[str, list[str]] = {}
        exists = target.exists()
        try:
            if exists:
                found = self._tool.get_tags([str(target)], list(_READ.values()))[0]
                existing = {tag: _as_list(found.get(f"{tag.split(':')[0]}:{name}")) for name, tag in _READ.items()}
            merged = merge_tags(existing, labels, self.options.root)
            if exists and all(existing.get(k, []) == v for k, v in merged.items()):
                return {"mode": "xmp", "file": display_path(target), "changed": False, "tags": merged[SUBJECT]}
            self._tool.set_tags([str(target)], merged, params=["-overwrite_original"])
        except ExifToolException as exc:
            detail = " ".join((getattr(exc, "stderr", "") or str(exc)).split()) or type(exc).__name__
            raise ValueError(f"{display_path(target)}: cannot write the XMP sidecar ({detail})") from None
        return {"mode": "xmp", "file": display_path(target), "changed": True, "tags": merged[SUBJECT]}

    def close(self) -> None:
        if self._tool is not None and self._tool.running:
            self._tool.terminate()
        self._tool = None

    def __enter__(self) -> "TagWriter":
        return self

    def __exit__(self, *exc: Optional[object]) -> None:
        self.close()
