"""Result records streamed as JSON lines, CSV or one JSON array."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import IO

FORMATS = ("jsonl", "csv", "json")


class ResultWriter:
    """Writes one record per image as it is produced and flushes it, so nothing computed is lost."""

    def __init__(self, stream: IO[str], fmt: str, header: bool = True) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        self.stream, self.fmt, self.count = stream, fmt, 0
        if fmt == "csv":
            self._csv = csv.writer(stream)
            if header:
                self._csv.writerow(["image", "status", "labels", "scores", "error"])
        elif fmt == "json":
            stream.write("[")

    def write(self, record: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.fmt == "json":
            self.stream.write(("," if self.count else "") + "\n " + json.dumps(record, ensure_ascii=False))
        else:
            # ";" between labels: a label map's display names may hold spaces
            self._csv.writerow([record["image"], record["status"], ";".join(record.get("labels", [])),
                                ";".join(f"{s:.6f}" for s in record.get("scores", [])), record.get("error", "")])
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
        self.stream.flush()


def completed_images(path: Path, fmt: str) -> set[str]:
    """Images that already have a record in a results file, for ``--resume``.

    A last line cut short by a kill is removed from the file first, so appending continues on a
    clean line and every image ends up with exactly one record."""
    if fmt == "json":
        raise ValueError(f"{path}: --resume needs --format jsonl or csv (a JSON array cannot be appended to)")
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        with path.open("r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    text = data.decode("utf-8", errors="replace")
    done: set[str] = set()
    if fmt == "jsonl":
        for line in text.splitlines():
            try:
                done.add(json.loads(line)["image"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    else:
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("image"):
                done.add(row["image"])
    return done
