"""Builds a folder of the files an unattended annotator meets: good photos in every mode, and bad ones.

Everything is generated here (no downloads).  ``build_corpus`` returns, for each file name it
wrote, whether ``corel-infer`` must annotate it (``"ok"``) or give it an error record (``"error"``),
when an unprivileged user reads the corpus: ``locked.jpg`` (mode 0) is unreadable then.  Root reads
it anyway (CI runs as root), so run ``corel-infer`` through :func:`unprivileged`.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    arr[: size[1] // 2, :, 0] = 220
    return Image.fromarray(arr)


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def unprivileged(cmd: list[str]) -> list[str] | None:
    """``cmd`` run so that file permissions apply: as is for an ordinary user; as root, through ``setpriv``
    as ``nobody`` (None where ``setpriv`` is missing).  The files it reads must be readable by others."""
    if os.geteuid() != 0:
        return list(cmd)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]


def build_corpus(root: Path) -> dict[str, str]:
    """Write the corpus into ``root`` and return {relative file name: expected status}."""
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    def save(name: str, img: Image.Image, status: str = "ok", **kw) -> Path:
        path = root / name
        img.save(path, **kw)
        expected[name] = status
        return path

    for i in range(3):
        save(f"photo{i}.jpg", _photo(i), quality=90)
    rgba = _photo(10).convert("RGBA")
    rgba.putalpha(128)
    save("alpha.png", rgba)
    save("palette.png", _photo(11).convert("P", palette=Image.Palette.ADAPTIVE))
    pal = _photo(12).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    save("palette-transparent.png", pal, transparency=0)
    save("gray.png", _photo(13).convert("L"))
    save("gray16.png", Image.fromarray((np.arange(96 * 72).reshape(72, 96) * 9).astype(np.uint16)))
    save("cmyk.jpg", _photo(14).convert("CMYK"), quality=90)
    rotated = _photo(15)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif-rotated.jpg", rotated, exif=exif.tobytes(), quality=90)
    save("tiny-1x1.png", Image.new("RGB", (1, 1), (10, 200, 30)))
    frames = [_photo(20 + k, (40, 30)) for k in range(3)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    expected["animated.gif"] = "ok"
    save("bitmap.bmp", _photo(16))
    good = (root / "photo0.jpg").read_bytes()

    (root / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image\n")
    (root / "bomb.png").write_bytes(_png_with_size(100_000, 100_000))
    Image.new("1", (20_000, 20_000)).save(root / "huge-20000.png")
    expected.update({n: "error" for n in ("truncated.jpg", "empty.jpg", "text.jpg", "bomb.png", "huge-20000.png")})

    locked = root / "locked.jpg"
    locked.write_bytes(good)
    locked.chmod(0)
    expected["locked.jpg"] = "error"   # for the unprivileged reader (see unprivileged)
    (root / "broken-link.jpg").symlink_to(root / "does-not-exist.jpg")
    expected["broken-link.jpg"] = "error"
    (root / "good-link.jpg").symlink_to(root / "photo1.jpg")
    expected["good-link.jpg"] = "ok"
    os.mkfifo(root / "fifo.jpg")
    expected["fifo.jpg"] = "error"
    sub = root / "nested"
    sub.mkdir()
    (sub / "inner.jpg").write_bytes(good)
    expected["nested/inner.jpg"] = "ok"
    (sub / "loop").symlink_to(root, target_is_directory=True)
    raw_name = os.fsencode(root) + b"/caf\xe9-latin1.jpg"
    with open(raw_name, "wb") as fh:
        fh.write(good)
    expected[os.fsdecode(b"caf\xe9-latin1.jpg")] = "ok"
    return expected
