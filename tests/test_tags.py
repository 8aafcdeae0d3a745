"""Tags where photo software reads them, read back by the real exiftool; and one writer per output file.

``corel-infer --write-tags xmp`` writes sidecars (dc:subject, lr:hierarchicalSubject, digiKam:TagsList),
``embed`` the same and IPTC Keywords into the photo (atomically, times and permissions kept), ``txt``
caption files; xmp and txt never change the photos' bytes, the user's tags stay, a rerun skips what
the same bundle tagged, a newer bundle replaces only the tags under the tool's root, and read-only
photos, read-only folders and a full disk give error records with every photo as it was."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO
from corel_annotate.runtime.jobs.exclusive import ExclusiveOutput
from corel_annotate.runtime.jobs.tags import HIERARCHY, KEYWORDS, SUBJECT, TAGS_LIST, TagOptions, merge_tags

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None and not os.environ.get("CI"),
                                    reason="exiftool is not installed (apt-get install libimage-exiftool-perl)")


def infer(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.infer", *map(str, args), "--no-progress",
                           "--device", "cpu", "--precision", "fp32"], capture_output=True, text=True, cwd=REPO, **kwargs)


def records(path: Path) -> dict[str, dict]:
    return {Path(r["image"]).name: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def exif(path: Path) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject",
                          "-XMP-digiKam:TagsList", "-IPTC:Keywords", str(path)],
                         capture_output=True, text=True, check=True).stdout
    found = json.loads(out)[0]
    as_list = lambda v: v if isinstance(v, list) else ([] if v is None else [str(v)])   # noqa: E731
    return {k: as_list(found.get(k)) for k in (SUBJECT, HIERARCHY, TAGS_LIST, KEYWORDS)}


def pixels(path: Path) -> bytes:
    with Image.open(path) as img:
        return img.convert("RGB").tobytes()


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

    # a rerun of the same bundle skips every photo; --retag annotates them again and writes nothing;
    # another bundle replaces only the tags under the root
    stamps = {n: (photos / (n + ".xmp")).stat().st_mtime_ns for n in names}
    again = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp", "-o", tmp_path / "again.jsonl")
    assert again.returncode == 0, again.stderr
    assert f"skipped {len(names)} photos this bundle already tagged" in again.stderr
    assert records(tmp_path / "again.jsonl") == {}
    retag = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp", "--retag", "-o", tmp_path / "re.jsonl")
    assert retag.returncode == 0, retag.stderr
    assert sorted(records(tmp_path / "re.jsonl")) == names
    assert all(not r["tags"]["changed"] for r in records(tmp_path / "re.jsonl").values())
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


@needs_exiftool
def test_embed_writes_iptc_and_xmp_into_the_photo_atomically(bundles, photos, tmp_path) -> None:
    names = sorted(p.name for p in photos.glob("*.jpeg"))
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-IPTC:Keywords=holiday", str(photos / names[0])], check=True)
    for i, name in enumerate(names):
        os.chmod(photos / name, 0o640 if i else 0o604)
        os.utime(photos / name, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
    before = {n: (sha(photos / n), pixels(photos / n), (photos / n).stat()) for n in names}
    out = tmp_path / "embed.jsonl"
    result = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "embed", "--backup", "-o", out)
    assert result.returncode == 0, result.stderr
    for name, record in records(out).items():
        photo, (_, picture, stat) = photos / name, before[name]
        tags = exif(photo)
        user = ["holiday"] if name == names[0] else []
        assert tags[SUBJECT] == record["labels"] and tags[KEYWORDS] == user + record["labels"]
        assert tags[HIERARCHY] == [f"corel-annotate|{label}" for label in record["labels"]]
        assert tags[TAGS_LIST] == [f"corel-annotate/{label}" for label in record["labels"]]
        assert record["tags"] == {"mode": "embed", "file": str(photo), "changed": True, "tags": record["labels"]}
        assert pixels(photo) == picture, "the picture itself changed"
        now = photo.stat()
        assert (now.st_mode, now.st_mtime_ns, now.st_uid) == (stat.st_mode, stat.st_mtime_ns, stat.st_uid)
        original = photo.with_name(name + "_original")
        assert sha(original) == before[name][0], "--backup kept the original"
    assert not [p for p in photos.iterdir() if p.name.startswith(".")], "a temporary file was left behind"

    again = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "embed", "-o", tmp_path / "again.jsonl")
    assert again.returncode == 0 and f"skipped {len(names)} photos this bundle already tagged" in again.stderr
    newer = infer(photos, "--model", bundles["cnn"][1], "--write-tags", "embed", "-o", tmp_path / "newer.jsonl")
    assert newer.returncode == 0, newer.stderr
    for name, record in records(tmp_path / "newer.jsonl").items():
        keywords = exif(photos / name)[KEYWORDS]
        assert keywords[:1] == (["holiday"] if name == names[0] else keywords[:1])
        assert set(record["labels"]) <= set(keywords)


@needs_exiftool
def test_read_only_photos_and_folders_are_left_as_they_were(bundles, photos, tmp_path) -> None:
    names = sorted(p.name for p in photos.glob("*.jpeg"))
    os.chmod(photos / names[0], 0o444)
    before = {n: sha(photos / n) for n in names}
    out = tmp_path / "ro.jsonl"
    result = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "embed", "-o", out)
    assert result.returncode == 1, result.stderr
    got = records(out)
    assert got[names[0]]["status"] == "error" and got[names[0]]["labels"]
    assert got[names[0]]["error"] == f"{photos / names[0]}: read-only; left as it was"
    assert sha(photos / names[0]) == before[names[0]]
    assert all(got[n]["status"] == "ok" for n in names[1:])

    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy2(photos / names[1], locked / names[1])
    os.chmod(locked, 0o555)
    try:
        result = infer(locked, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp")
    finally:
        os.chmod(locked, 0o755)
    assert result.returncode == 1
    [record] = map(json.loads, result.stdout.splitlines())
    assert record["error"] == f"{locked}: read-only folder; {names[1]}.xmp left as it was"
    assert sorted(p.name for p in locked.iterdir()) == [names[1]]


def _mount_small_filesystem(where: Path, size_kb: int) -> bool:
    """A tmpfs of ``size_kb`` at ``where`` where this machine lets the test mount one (root in a container)."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@needs_exiftool
@pytest.mark.parametrize("mode", ["embed", "xmp"])
def test_a_full_disk_gives_error_records_and_every_photo_as_it_was(bundles, photos, tmp_path, mode) -> None:
    disk = tmp_path / "disk"
    if not _mount_small_filesystem(disk, 256):
        pytest.skip("cannot mount a small filesystem here (the RLIMIT_FSIZE test covers a full disk)")
    try:
        names = sorted(p.name for p in photos.glob("*.jpeg"))[:3]
        for name in names:
            shutil.copy2(photos / name, disk / name)
        before = {n: sha(disk / n) for n in names}
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)   # fill the disk to the last block
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        result = infer(disk, "--model", bundles["ml-gcn"][1], "--write-tags", mode)
        assert result.returncode == 1, result.stderr
        got = {Path(r["image"]).name: r for r in map(json.loads, result.stdout.splitlines())}
        assert sorted(got) == names
        for name in names:
            assert got[name]["status"] == "error" and got[name]["labels"], got[name]
            assert got[name]["error"].startswith(str(disk / name)), got[name]["error"]
            assert sha(disk / name) == before[name]
        assert sorted(p.name for p in disk.iterdir()) == sorted(names + ["filler"]), "a partial file was left"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_file_size_limit_gives_error_records_and_keeps_the_captions(bundles, photos, tmp_path) -> None:
    """The full disk seen through RLIMIT_FSIZE (any machine): the caption writes fail, the photos and the
    captions the user had are untouched, and the records still come out."""
    import resource

    names = sorted(p.name for p in photos.glob("*.jpeg"))
    (photos / names[0]).with_suffix(".txt").write_text("my cat\n", encoding="utf-8")
    result = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "txt",
                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4)))
    assert result.returncode == 1, result.stderr
    got = {Path(r["image"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(got) == names
    assert all(r["status"] == "error" and "cannot write the caption file (File too large)" in r["error"]
               for r in got.values()), got
    assert (photos / names[0]).with_suffix(".txt").read_text(encoding="utf-8") == "my cat\n"
    assert sorted(p.suffix for p in photos.iterdir()) == [".jpeg"] * len(names) + [".txt"]


@needs_exiftool
def test_resume_with_write_tags_tags_each_photo_once(bundles, photos, tmp_path) -> None:
    names = sorted(p.name for p in photos.glob("*.jpeg"))
    first = tmp_path / "first.txt"
    first.write_text("\n".join(str(photos / n) for n in names[:2]), encoding="utf-8")
    out = tmp_path / "run.jsonl"
    assert infer(first, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp", "-o", out).returncode == 0
    stamps = {n: (photos / (n + ".xmp")).stat().st_mtime_ns for n in names[:2]}
    resumed = infer(photos, "--model", bundles["ml-gcn"][1], "--write-tags", "xmp", "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(Path(r["image"]).name for r in got) == names, "one record per photo"
    assert {n: (photos / (n + ".xmp")).stat().st_mtime_ns for n in names[:2]} == stamps
    for record in got:
        assert exif(Path(record["image"] + ".xmp"))[SUBJECT] == record["labels"]


@needs_exiftool
def test_a_label_map_places_tags_in_the_hierarchy(bundles, photos, tmp_path) -> None:
    vocabulary = json.loads((bundles["ml-gcn"][1] / "manifest.json").read_text(encoding="utf-8"))["vocabulary"]
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": {label: {"name": f"{label} photo", "path": "nature|outdoors"}
                                             for label in vocabulary}}), encoding="utf-8")
    out = tmp_path / "mapped.jsonl"
    result = infer(photos, "--model", bundles["ml-gcn"][1], "--labels", labels, "--write-tags", "xmp", "-o", out)
    assert result.returncode == 0, result.stderr
    for name, record in records(out).items():
        assert record["labels"] and all(label.endswith(" photo") for label in record["labels"])
        tags = exif(photos / (name + ".xmp"))
        assert tags[SUBJECT] == record["labels"]
        assert tags[HIERARCHY] == [f"corel-annotate|nature|outdoors|{label}" for label in record["labels"]]
        assert tags[TAGS_LIST] == [f"corel-annotate/nature/outdoors/{label}" for label in record["labels"]]
