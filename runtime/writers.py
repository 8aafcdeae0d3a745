"""Result records streamed as JSON lines, CSV or one JSON array."""
from __future__ import annotations

import csv
import io
import json
from typing import IO

FORMATS = ("jsonl", "csv", "json")


class ResultWriter:
    """Writes one record per image as it is produced and flushes it, so nothing computed is lost."""

    def __init__(self, stream: IO[str], fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        self.stream, self.fmt, self.count = stream, fmt, 0
        if fmt == "csv":
            self._csv = csv.writer(stream)
            self._csv.writerow(["image", "status", "labels", "scores", "error"])
        elif fmt == "json":
            stream.write("[")

    def write(self, record: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.fmt == "json":
            self.stream.write(("," if self.count else "") + "\n " + json.dumps(record, ensure_ascii=False))
        else:
            self._csv.writerow([record["image"], record["status"], " ".join(record.get("labels", [])),
                                " ".join(f"{s:.6f}" for s in record.get("scores", [])), record.get("error", "")])
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
        self.stream.flush()


def render(records: list[dict], fmt: str) -> str:
    """All records in one string (for tests and small outputs)."""
    buffer = io.StringIO()
    writer = ResultWriter(buffer, fmt)
    for r in records:
        writer.write(r)
    writer.close()
    return buffer.getvalue()
