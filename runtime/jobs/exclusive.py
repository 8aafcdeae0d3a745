"""One writer per output file: a lock beside it (``.NAME.lock``, holding the writer's pid) taken before
the file is looked at, so two runs started at once with the same ``-o`` cannot both write it.  The
lock is the operating system's (``flock``): it goes with the process, so a killed run leaves no
stale lock behind."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; the exists check still applies
    fcntl = None  # type: ignore[assignment]


class ExclusiveOutput:
    """Hold the lock of ``path`` (ValueError naming the file and the process that holds it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self._fd: Optional[int] = None
        if fcntl is None:
            return
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ValueError(f"{path}: another corel-infer (pid {holder}) is writing it; wait for it to "
                                 "finish or choose another --output") from None
            except OSError as exc:
                os.close(fd)
                raise ValueError(f"{path}: cannot lock it ({exc.strerror or exc})") from None
            try:   # the lock file we hold must still be the one at the path (a writer that finished removes it)
                if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the lock file goes first, so the next writer starts from a fresh one)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
