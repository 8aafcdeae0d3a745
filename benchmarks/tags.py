"""Tags per second, and which metadata library to write them with: exiftool (one stay-open process,
through pyexiftool, as ``corel-infer --write-tags`` uses it) against pyexiv2 (libexiv2 in process),
each writing the same three XMP lists into sidecars of the same photos, and each one's sidecars
read back by the other library.  Also the ``txt`` caption files, for scale."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from .hardware import machine

EMPTY_XMP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
             '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"></rdf:RDF></x:xmpmeta>'
             '<?xpacket end="w"?>')
VOCAB = ("sky", "water", "tree", "people", "grass", "building", "clouds", "mountain")


def _labels(i: int) -> list[str]:
    return [VOCAB[(i + k) % len(VOCAB)] for k in range(1 + i % 4)]


def _photos(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (192, 128), (90, 140, 200))
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        image.save(path, quality=85)
        paths.append(path)
    return paths


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _timed(paths: list[Path], write: Callable[[int, Path], None]) -> float:
    start = time.perf_counter()
    for i, path in enumerate(paths):
        write(i, path)
    return len(paths) / (time.perf_counter() - start)


def run_tags(images: int, out_dir: Path, command: str, log: Callable[[str], None]) -> dict:
    """Write sidecars for ``images`` generated photos with each library (new, then rewritten with other
    labels), read each library's sidecars back with the other one, and return photos/s per mode."""
    import pyexiv2

    from corel_annotate.runtime.jobs.tags import HIERARCHY, SUBJECT, TAGS_LIST, TagOptions, TagWriter, merge_tags

    work = out_dir / "tags-work"
    shutil.rmtree(work, ignore_errors=True)
    rows, mismatches = [], {}

    # exiftool through corel-infer's own writer (read, merge, write; unchanged sidecars are not rewritten)
    photos = _photos(work / "exiftool", images)
    with TagWriter(TagOptions("xmp")) as writer:
        first = _timed(photos, lambda i, p: writer.write(p, _labels(i)))
        again = _timed(photos, lambda i, p: writer.write(p, _labels(i + 1)))
        same = _timed(photos, lambda i, p: writer.write(p, _labels(i + 1)))
    rows += [{"library": "exiftool (pyexiftool, stay-open)", "mode": "xmp sidecar", "pass": "new sidecars", "photos_per_s": first},
             {"library": "exiftool (pyexiftool, stay-open)", "mode": "xmp sidecar", "pass": "rewritten (other labels)", "photos_per_s": again},
             {"library": "exiftool (pyexiftool, stay-open)", "mode": "xmp sidecar", "pass": "rerun (nothing to change)", "photos_per_s": same}]
    log(f"exiftool: {first:.1f} photos/s new, {again:.1f} rewritten, {same:.1f} unchanged")

    # pyexiv2: the same merge, the same three lists, into the same kind of sidecar
    keys = {SUBJECT: "Xmp.dc.subject", HIERARCHY: "Xmp.lr.hierarchicalSubject", TAGS_LIST: "Xmp.digiKam.TagsList"}
    photos2 = _photos(work / "pyexiv2", images)

    def exiv2_write(i: int, photo: Path, labels: list[str]) -> None:
        sidecar = photo.with_name(photo.name + ".xmp")
        if not sidecar.exists():
            sidecar.write_text(EMPTY_XMP, encoding="utf-8")
        with pyexiv2.Image(str(sidecar)) as img:
            found = img.read_xmp()
            existing = {tag: list(found.get(key, [])) if isinstance(found.get(key), list) else
                        ([found[key]] if key in found else []) for tag, key in keys.items()}
            merged = merge_tags(existing, labels, "corel-annotate")
            img.modify_xmp({keys[tag]: values for tag, values in merged.items()})

    first2 = _timed(photos2, lambda i, p: exiv2_write(i, p, _labels(i)))
    again2 = _timed(photos2, lambda i, p: exiv2_write(i, p, _labels(i + 1)))
    rows += [{"library": "pyexiv2 (libexiv2 in process)", "mode": "xmp sidecar", "pass": "new sidecars", "photos_per_s": first2},
             {"library": "pyexiv2 (libexiv2 in process)", "mode": "xmp sidecar", "pass": "rewritten (other labels)", "photos_per_s": again2}]
    log(f"pyexiv2: {first2:.1f} photos/s new, {again2:.1f} rewritten")

    # read back by the other library: every list as written
    from exiftool import ExifToolHelper

    want = {i: merge_tags({}, _labels(i + 1), "corel-annotate") for i in range(images)}
    bad = 0
    for i, photo in enumerate(photos):
        with pyexiv2.Image(str(photo.with_name(photo.name + ".xmp"))) as img:
            found = img.read_xmp()
        got = {tag: found.get(key) if isinstance(found.get(key), list) else [found.get(key)] for tag, key in keys.items()}
        bad += got != want[i]
    mismatches["exiftool sidecars read by pyexiv2"] = bad
    bad = 0
    with ExifToolHelper(common_args=["-G1"]) as tool:
        found_all = tool.get_tags([str(p.with_name(p.name + ".xmp")) for p in photos2], list(keys))
    for i, found in enumerate(found_all):
        got = {tag: found.get(tag) if isinstance(found.get(tag), list) else [found.get(tag)] for tag in keys}
        bad += got != want[i]
    mismatches["pyexiv2 sidecars read by exiftool"] = bad
    log(f"read back by the other library: {mismatches}")

    # embed: the same lists and IPTC Keywords inside the JPEG (a copy renamed over it), read back by pyexiv2
    photos4 = _photos(work / "embed", images)
    with TagWriter(TagOptions("embed"), bundle_id="bench") as writer:
        first = _timed(photos4, lambda i, p: writer.write(p, _labels(i)))
        again = _timed(photos4, lambda i, p: writer.write(p, _labels(i + 1)))
        same = _timed(photos4, lambda i, p: writer.write(p, _labels(i + 1)))
        start = time.perf_counter()
        skipped = writer.already_tagged(photos4)
        skip = len(photos4) / (time.perf_counter() - start)
    assert len(skipped) == len(photos4), "every photo was tagged by this bundle"
    rows += [{"library": "exiftool (pyexiftool, stay-open)", "mode": "embed", "pass": "new tags in the photo", "photos_per_s": first},
             {"library": "exiftool (pyexiftool, stay-open)", "mode": "embed", "pass": "rewritten (other labels)", "photos_per_s": again},
             {"library": "exiftool (pyexiftool, stay-open)", "mode": "embed", "pass": "rerun (nothing to change)", "photos_per_s": same},
             {"library": "exiftool (pyexiftool, stay-open)", "mode": "embed", "pass": "skip check (tagged by this bundle)", "photos_per_s": skip}]
    bad = 0
    for i, photo in enumerate(photos4):
        with pyexiv2.Image(str(photo)) as img:
            xmp, iptc = img.read_xmp(), img.read_iptc()
        want = _labels(i + 1)
        bad += _as_list(xmp.get("Xmp.dc.subject")) != want or _as_list(iptc.get("Iptc.Application2.Keywords")) != want
    mismatches["embedded tags read by pyexiv2"] = bad
    log(f"embed: {first:.1f} photos/s new, {again:.1f} rewritten, {same:.1f} unchanged, {skip:.1f} skip checks; "
        f"{bad} read-back mismatches")

    photos3 = _photos(work / "txt", images)
    with TagWriter(TagOptions("txt")) as writer:
        txt = _timed(photos3, lambda i, p: writer.write(p, _labels(i)))
    rows.append({"library": "corel-annotate (captions)", "mode": "txt", "pass": "new caption files", "photos_per_s": txt})
    shutil.rmtree(work, ignore_errors=True)
    versions = {"exiftool": _exiftool_version(), "pyexiv2": pyexiv2.__version__}
    return {"command": command, "images": images, "rows": rows, "read_back_mismatches": mismatches,
            "versions": versions, "machine": machine().to_dict()}


def _exiftool_version() -> str:
    import subprocess

    return subprocess.run(["exiftool", "-ver"], capture_output=True, text=True).stdout.strip()


def write(result: dict, out_dir: Path) -> list[Path]:
    from .report import write_json_and_markdown

    lines = [f"`{result['command']}`", "",
             f"{result['images']} photos; exiftool {result['versions']['exiftool']}, pyexiv2 "
             f"{result['versions']['pyexiv2']}.", "",
             "| library | mode | pass | photos/s |", "| --- | --- | --- | ---: |"]
    lines += [f"| {r['library']} | {r['mode']} | {r['pass']} | {r['photos_per_s']:.1f} |" for r in result["rows"]]
    lines += ["", "Read back by the other library (photos whose three lists differ from what was written): "
              + ", ".join(f"{k}: {v}" for k, v in result["read_back_mismatches"].items()) + "."]
    return write_json_and_markdown(result, out_dir, "tags", "\n".join(lines) + "\n")
