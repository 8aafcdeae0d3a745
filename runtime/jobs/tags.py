"""Tags where photo software reads them, written with exiftool: an XMP sidecar (``dc:subject``,
``lr:hierarchicalSubject``, ``digiKam:TagsList``), the same fields and IPTC Keywords inside the photo
(``embed``, only when asked), or a caption ``.txt`` file.

Merging keeps what the user had: existing tags stay, new ones join without duplicates, and a rerun
replaces only the tags under this tool's root (``corel-annotate|<label>`` by default), so a newer
bundle's labels replace an older bundle's and nothing else.  A rerun that would write the same tags
writes nothing, and a photo whose tags under the root came from the same bundle (by its manifest
digest, kept in ``XMP-corelannotate:Tagged``) is not even annotated again unless asked.

Nothing is lost: ``xmp`` and ``txt`` never touch the photo's bytes; ``embed`` writes a copy beside
the photo and renames it over the original (times and permissions kept, ``--backup`` keeps the
original as ``photo.jpg_original``).  A read-only photo or folder, a corrupt sidecar or a full disk is
a ValueError for that photo, which is left as it was.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..preprocessing import display_path

TAG_MODES = ("xmp", "embed", "txt")
SIDECAR_NAMINGS = ("append", "replace")
"""``append``: ``photo.jpg.xmp`` (darktable, digiKam); ``replace``: ``photo.xmp`` (Adobe Lightroom/Bridge)."""
SUBJECT, HIERARCHY, TAGS_LIST = "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList"
KEYWORDS = "IPTC:Keywords"
TAGGED = "XMP-corelannotate:Tagged"
"""One ``BUNDLE-ID ROOT`` entry per root: which bundle wrote the tags under it (see exiftool.config)."""
EXIFTOOL_CONFIG = Path(__file__).with_name("exiftool.config")
FLAT = (SUBJECT, KEYWORDS)


@dataclass(frozen=True)
class TagOptions:
    """``--write-tags MODE`` and its settings; validated on construction (ValueError naming the option)."""

    mode: str
    root: str = "corel-annotate"
    sidecar: str = "append"
    backup: bool = False
    retag: bool = False

    def __post_init__(self) -> None:
        if self.mode not in TAG_MODES:
            raise ValueError(f"--write-tags {self.mode}: choose one of {', '.join(TAG_MODES)}")
        if self.sidecar not in SIDECAR_NAMINGS:
            raise ValueError(f"--sidecar {self.sidecar}: choose one of {', '.join(SIDECAR_NAMINGS)}")
        parts = self.root.split("|")
        if not self.root or any(not p.strip() or "/" in p for p in parts):
            raise ValueError(f"--tag-root {self.root!r}: non-empty names separated by '|', without '/'")
        if self.backup and self.mode != "embed":
            raise ValueError("--backup keeps the original of a photo --write-tags embed changes; "
                             f"--write-tags {self.mode} never changes the photo")

    def target(self, photo: Path) -> Path:
        """The file the tags go to."""
        if self.mode == "txt":
            return photo.with_suffix(".txt")
        if self.mode == "embed":
            return photo
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


def merge_tags(existing: dict[str, list[str]], labels: list[str], root: str,
               path: Optional[Callable[[str], Optional[str]]] = None, keywords: bool = False) -> dict[str, list[str]]:
    """The XMP lists (and IPTC Keywords with ``keywords``) after tagging with ``labels``: entries under
    ``root`` replaced, the rest kept in order; a flat tag an earlier run wrote goes with its root entry
    unless the user has the same word elsewhere in the hierarchy.  ``path(label)`` gives a label's
    place under the root (a label map's ``path``), as in ``ROOT|nature|water``."""
    hierarchy = existing.get(HIERARCHY, [])
    ours = [h for h in hierarchy if h == root or h.startswith(root + "|")]
    theirs = [h for h in hierarchy if h not in ours]
    their_leaves = {h.split("|")[-1] for h in theirs}
    dropped = {h.split("|")[-1] for h in ours} - their_leaves - set(labels)
    slash_root = root.replace("|", "/")
    placed = [f"{root}|{path(label)}|{label}" if path is not None and path(label) else f"{root}|{label}"
              for label in labels]
    merged = {
        SUBJECT: _unique([s for s in existing.get(SUBJECT, []) if s not in dropped] + labels),
        HIERARCHY: _unique(theirs + placed),
        TAGS_LIST: _unique([t for t in existing.get(TAGS_LIST, []) if not (t == slash_root or t.startswith(slash_root + "/"))]
                           + [p.replace("|", "/") for p in placed]),
    }
    if keywords:
        merged[KEYWORDS] = _unique([s for s in existing.get(KEYWORDS, []) if s not in dropped] + labels)
    return merged


def tagged_entries(existing: list[str], bundle_id: Optional[str], root: str) -> list[str]:
    """``XMP-corelannotate:Tagged`` after this bundle tagged under ``root`` (other roots' entries kept)."""
    others = [e for e in existing if e.partition(" ")[2] != root]
    return others + ([f"{bundle_id} {root}"] if bundle_id else [])


class TagWriter:
    """Writes each photo's labels as ``options`` say; one exiftool process stays open for a whole run.
    ``bundle_id`` (the job's manifest digest) is recorded with the tags, so a rerun can skip photos
    this bundle already tagged; ``path(label)`` places a label in the hierarchy (a label map's)."""

    def __init__(self, options: TagOptions, bundle_id: Optional[str] = None,
                 path: Optional[Callable[[str], Optional[str]]] = None) -> None:
        self.options, self.bundle_id, self.path = options, bundle_id, path
        self._tool = None
        if options.mode in ("xmp", "embed"):
            try:
                from exiftool import ExifToolHelper
            except ImportError:
                raise ValueError(f"--write-tags {options.mode} needs pyexiftool and exiftool: pip install "
                                 "'corel-annotate[tags]' and apt-get install libimage-exiftool-perl "
                                 "(or your system's exiftool)") from None
            try:
                self._tool = ExifToolHelper(common_args=["-G1", "-n"], config_file=str(EXIFTOOL_CONFIG))
                self._tool.run()
            except Exception as exc:  # noqa: BLE001 - a missing binary surfaces as several types
                raise ValueError(f"--write-tags {options.mode}: cannot start exiftool ({exc}); install it "
                                 "(apt-get install libimage-exiftool-perl)") from None

    def _fields(self) -> list[str]:
        return [SUBJECT, HIERARCHY, TAGS_LIST, TAGGED] + ([KEYWORDS] if self.options.mode == "embed" else [])

    def _read(self, files: list[Path]) -> list[dict[str, list[str]]]:
        found = self._tool.get_tags([str(f) for f in files], self._fields())
        return [{tag: _as_list(row.get(tag)) for tag in self._fields()} for row in found]

    def already_tagged(self, photos: Iterable[Path]) -> set[Path]:
        """The photos whose tags under the root this bundle wrote (skipped unless ``retag``)."""
        if self._tool is None or self.bundle_id is None or self.options.retag:
            return set()
        from exiftool.exceptions import ExifToolException

        entry = f"{self.bundle_id} {self.options.root}"
        pending = [p for p in photos if self.options.target(p).is_file()]
        done: set[Path] = set()
        for start in range(0, len(pending), 256):
            chunk = pending[start:start + 256]
            try:
                rows = self._read([self.options.target(p) for p in chunk])
            except ExifToolException:   # one unreadable file: ask one by one; those are not skipped
                rows = []
                for p in chunk:
                    try:
                        rows.extend(self._read([self.options.target(p)]))
                    except ExifToolException:
                        rows.append({})
            done.update(p for p, row in zip(chunk, rows) if entry in row.get(TAGGED, []))
        return done

    def write(self, photo: Path, labels: list[str]) -> dict[str, Any]:
        """Tag one photo; returns what was written where (for the record).  ValueError with a one-line
        reason when the tags cannot be written (the photo and any existing sidecar are left as they were)."""
        target = self.options.target(photo)
        _refuse_read_only(target)
        if self.options.mode == "txt":
            return self._write_txt(target, labels)
        return self._write_exif(target, labels)

    def _write_txt(self, target: Path, labels: list[str]) -> dict[str, Any]:
        try:
            existing = [t.strip() for t in target.read_text(encoding="utf-8").split(",")] if target.exists() else []
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{display_path(target)}: cannot read the caption file ({exc})") from None
        tags = _unique([t for t in existing if t] + labels)
        if tags == [t for t in existing if t]:
            return {"mode": "txt", "file": display_path(target), "changed": False, "tags": tags}
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
        with _replacing(target, "the caption file") as tmp:
            tmp.write_text(", ".join(tags) + "\n", encoding="utf-8")
            os.chmod(tmp, mode)
        return {"mode": "txt", "file": display_path(target), "changed": True, "tags": tags}

    def _write_exif(self, target: Path, labels: list[str]) -> dict[str, Any]:
        from exiftool.exceptions import ExifToolException

        embed = self.options.mode == "embed"
        what = "the photo's metadata" if embed else "the XMP sidecar"
        record = {"mode": self.options.mode, "file": display_path(target)}
        try:
            existing = self._read([target])[0] if target.exists() else {}
        except ExifToolException as exc:
            raise ValueError(f"{display_path(target)}: cannot read {what} ({_detail(exc)})") from None
        merged = merge_tags(existing, labels, self.options.root, self.path, keywords=embed)
        merged[TAGGED] = tagged_entries(existing.get(TAGGED, []), self.bundle_id, self.options.root)
        if target.exists() and all(existing.get(k, []) == v for k, v in merged.items()):
            return {**record, "changed": False, "tags": merged[SUBJECT]}
        params = ["-overwrite_original"] + (["-codedcharacterset=utf8"] if embed else [])
        try:
            if not embed:   # exiftool writes a sidecar through a temporary file and a rename itself
                self._tool.set_tags([str(target)], merged, params=params)
            else:
                with _replacing(target, what, copy=True, backup=self.options.backup) as tmp:
                    self._tool.set_tags([str(tmp)], merged, params=params)
        except ExifToolException as exc:
            raise ValueError(f"{display_path(target)}: cannot write {what} ({_detail(exc)})") from None
        return {**record, "changed": True, "tags": merged[SUBJECT]}

    def close(self) -> None:
        if self._tool is not None and self._tool.running:
            self._tool.terminate()
        self._tool = None

    def __enter__(self) -> "TagWriter":
        return self

    def __exit__(self, *exc: Optional[object]) -> None:
        self.close()


def _detail(exc: Exception) -> str:
    return " ".join((getattr(exc, "stderr", "") or str(exc)).split()) or type(exc).__name__


def _refuse_read_only(target: Path) -> None:
    """A file or folder without write permission is left alone, even for root (who could write it):
    the user made it read-only to protect it."""
    folder = target.parent
    try:
        if target.exists() and not target.stat().st_mode & 0o222:
            raise ValueError(f"{display_path(target)}: read-only; left as it was")
        if not folder.stat().st_mode & 0o222 or not os.access(folder, os.W_OK):
            raise ValueError(f"{display_path(folder)}: read-only folder; {target.name} left as it was")
    except OSError as exc:
        raise ValueError(f"{display_path(target)}: {exc.strerror or exc}") from None


class _replacing:
    """``with _replacing(target, what) as tmp``: write ``tmp`` beside ``target``, then rename it over
    ``target`` (atomic on one filesystem); on any failure ``tmp`` goes and ``target`` is untouched.
    ``copy`` starts ``tmp`` as a copy of ``target`` and gives it back ``target``'s times, permissions
    and owner before the rename; ``backup`` first links the original to ``NAME_original`` (exiftool's
    name; an existing backup, the oldest original, is kept)."""

    def __init__(self, target: Path, what: str, copy: bool = False, backup: bool = False) -> None:
        self.target, self.what, self.copy, self.backup = target, what, copy, backup
        self.tmp: Optional[Path] = None

    def __enter__(self) -> Path:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.target.stem}.", suffix=self.target.suffix + ".tmp"
                                        if not self.copy else self.target.suffix, dir=self.target.parent)
            os.close(fd)
            self.tmp = Path(name)
            if self.copy:
                shutil.copyfile(self.target, self.tmp)
        except OSError as exc:
            self._discard()
            raise ValueError(f"{display_path(self.target)}: cannot write {self.what} ({exc.strerror or exc})") from None
        return self.tmp

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            self._discard()
            if issubclass(kind, OSError):
                raise ValueError(f"{display_path(self.target)}: cannot write {self.what} "
                                 f"({exc.strerror or exc})") from None
            return
        try:
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if self.copy:
                st = self.target.stat()
                shutil.copystat(self.target, self.tmp)
                if hasattr(os, "chown") and (st.st_uid, st.st_gid) != (self.tmp.stat().st_uid, self.tmp.stat().st_gid):
                    try:
                        os.chown(self.tmp, st.st_uid, st.st_gid)
                    except PermissionError:
                        pass
            if self.backup:
                kept = self.target.with_name(self.target.name + "_original")
                if not kept.exists():
                    try:
                        os.link(self.target, kept)
                    except OSError:
                        shutil.copy2(self.target, kept)
            os.replace(self.tmp, self.target)
            self.tmp = None
        except OSError as exc:
            self._discard()
            raise ValueError(f"{display_path(self.target)}: cannot write {self.what} ({exc.strerror or exc})") from None

    def _discard(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
