"""Tags where photo software reads them, read back by the real exiftool; and one writer per output file.

``corel-infer --write-tags xmp`` writes sidecars (dc:subject, lr:hierarchicalSubject, digiKam:TagsList),
``txt`` caption files; the photos' own bytes never change, the user's tags stay, a rerun changes
nothing, and a newer bundle replaces only the tags under the tool's root."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from corel_annotate.runtime.jobs.exclusive import ExclusiveOutput
from corel_annotate.runtime.jobs.tags import HIERARCHY, SUBJECT, TAGS_LIST, TagOptions, merge_tags

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None and not os.environ.get("CI"),
                                    reason="exiftool is not installed (apt-get install libimage-exiftool-perl)")


def infer(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", *map(str, args), "--no-progress",
                           "--device", "cpu", "--precision", "fp32"], capture_output=True, text=True, cwd=REPO)


def records(path: Path) -> dict[str, dict]:
    return {Path(r["image"]).name: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def exif(path: Path) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject",
                          "-XMP-digiKam:TagsList", str(path)], capture_output=True, text=True, check=True).stdout
    found = json.loads(out)[0]
    as_list = lambda v: v if isinstance(v, list) else ([] if v is None else [v])   # noqa: E731
    return {k: as_list(found.get(k)) for k in (SUBJECT, HIERARCHY, TAGS_LIST)}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def photos(synth_data, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((synth_data / "images").glob("*.jpeg"))[:5]:
        shutil.copy2(src, folder / src.name)
    return folder


def test_merge_keeps_the_users_tags_and_replaces_only_its_root() -> None:
    user = {SUBJECT: ["Alice", "sky"], HIERARCHY: ["people|Alice", "weather|sky"], TAGS_LIST: ["people/Alice"]}
    first = merge_tags(user, ["sky", "water"], "corel-annotate")
    assert first[SUBJECT] == ["Alice", "sky", "water"]
    assert first[HIERARCHY] == ["people|Alice", "weather|sky", "corel-annotate|sky", "corel-annotate|water"]
    assert first[TAGS_LIST] == ["people/Alice", "corel-annotate/sky", "corel-annotate/water"]
    second = merge_tags(first, ["tree"], "corel-annotate")
    # "water" was only ours and goes; "sky" is also the user's (weather|sky) and stays
    assert second[SUBJECT] == ["Alice", "sky", "tree"]
    assert second[HIERARCHY] == ["people|Alice", "weather|sky", "corel-annotate|tree"]
    assert merge_tags(second, ["tree"], "corel-annotate") == second


def test_tag_options_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="--write-tags"):
        TagOptions("iptc")
    with pytest.raises(ValueError, match="--tag-root"):
        TagOptions("xmp", root="a/b")
    assert TagOptions("xmp", sidecar="replace").target(Path("d/p.jpg")) == Path("d/p.xmp")
    assert TagOptions("xmp").target(Path("d/p.jpg")) == Path("d/p.jpg.xmp")


@needs_exiftool
def test_xmp_sidecars_carry_the_labels_and_keep_the_users_tags(bundles, photos, tmp_path) -> None:
    names = sorted(p.name for p in photos.glob("*.jpeg"))
    before = {n: sha(photos / n) for n in names}
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Subject=Alice", "-XMP-lr:HierarchicalSubject=people|Alice",
                    str(photos / (names[0] + ".xmp"))], check=True)
    out = tmp_path / "tags.jsonl"
    result = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp", "-o", out)
    assert result.returncode == 0, result.stderr
    got = records(out)
    assert sorted(got) == names
    for name in names:
        labels, tags = got[name]["labels"], exif(photos / (name + ".xmp"))
        assert labels and got[name]["tags"]["file"].endswith(name + ".xmp")
        user = ["Alice"] if name == names[0] else []
        assert tags[SUBJECT] == user + labels
        assert tags[HIERARCHY] == (["people|Alice"] if user else []) + [f"corel-annotate|{label}" for label in labels]
        assert tags[TAGS_LIST] == [f"corel-annotate/{label}" for label in labels]
        assert sha(photos / name) == before[name], "the photo's own bytes changed"

    # a rerun writes nothing; another bundle replaces only the tags under the root
    stamps = {n: (photos / (n + ".xmp")).stat().st_mtime_ns for n in names}
    again = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp", "-o", tmp_path / "again.jsonl")
    assert again.returncode == 0, again.stderr
    assert all(not r["tags"]["changed"] for r in records(tmp_path / "again.jsonl").values())
    assert {n: (photos / (n + ".xmp")).stat().st_mtime_ns for n in names} == stamps
    newer = infer(photos, "--model", bundles["cnn"][1], "--write-tags", "xmp", "-o", tmp_path / "newer.jsonl")
    assert newer.returncode == 0, newer.stderr
    for name, record in records(tmp_path / "newer.jsonl").items():
        tags = exif(photos / (name + ".xmp"))
        assert [h for h in tags[HIERARCHY] if h.startswith("corel-annotate|")] == \
            [f"corel-annotate|{label}" for label in record["labels"]]
        if name == names[0]:
            assert "Alice" in tags[SUBJECT] and "people|Alice" in tags[HIERARCHY]


@needs_exiftool
def test_a_corrupt_sidecar_is_an_error_record_and_is_left_alone(bundles, photos, tmp_path) -> None:
    names = sorted(p.name for p in photos.glob("*.jpeg"))
    broken = photos / (names[1] + ".xmp")
    broken.write_text("<x:xmpmeta this is not XMP", encoding="utf-8")
    out = tmp_path / "tags.jsonl"
    result = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp", "-o", out)
    assert result.returncode == 1, result.stderr   # some photos failed
    got = records(out)
    assert got[names[1]]["status"] == "error" and names[1] + ".xmp" in got[names[1]]["error"]
    assert got[names[1]]["labels"], "the labels computed are kept in the record"
    assert broken.read_text(encoding="utf-8") == "<x:xmpmeta this is not XMP"
    assert all(got[n]["status"] == "ok" for n in names if n != names[1])


def test_txt_captions_merge_and_leave_the_photos_alone(bundles, photos, tmp_path) -> None:
    names = sorted(p.name for p in photos.glob("*.jpeg"))
    before = {n: sha(photos / n) for n in names}
    (photos / names[0]).with_suffix(".txt").write_text("my cat\n", encoding="utf-8")
    out = tmp_path / "tags.jsonl"
    result = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "txt", "-o", out)
    assert result.returncode == 0, result.stderr
    for name, record in records(out).items():
        caption = (photos / name).with_suffix(".txt").read_text(encoding="utf-8").strip().split(", ")
        assert caption == (["my cat"] if name == names[0] else []) + record["labels"]
        assert sha(photos / name) == before[name]


def test_a_second_writer_of_the_same_output_is_refused(bundles, photos, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    held = ExclusiveOutput(out)            # another process's run, as far as corel-infer can tell
    try:
        refused = infer(photos, "--model", bundles["ml-gcn"][1], "-o", out)
    finally:
        held.release()
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert str(out) in line and f"pid {os.getpid()}" in line
    assert not out.exists()

    cmd = [sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(photos), "--model", str(bundles["ml-gcn"][1]),
           "-o", str(tmp_path / "both.jsonl"), "--no-progress", "--device", "cpu", "--precision", "fp32"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 2], codes
    lines = (tmp_path / "both.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["image"] for line in lines) == sorted(str(p) for p in photos.glob("*.jpeg"))
