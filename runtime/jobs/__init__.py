"""One ``corel-infer`` job, three ways to run it: in this process (``local``), on a corel-serve
server (``triton_job``) or on Ray Data (``ray_job``).  Each is a :class:`Job`: the CLI opens one,
checks the options against it, streams its records into one :class:`~.records.RecordOutput`, and
closes it.  Importing this package loads no engine."""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Iterator, Optional, Protocol, Sequence, runtime_checkable

from .records import InferOptions, Produced


@runtime_checkable
class Job(Protocol):
    """What the CLI needs of a job: the bundle's facts to check options against, and its records."""

    @property
    def kind(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def has_attention(self) -> bool: ...

    @property
    def engine(self) -> str: ...

    @property
    def bundle_id(self) -> Optional[str]:
        """The bundle's identity (its manifest's digest), or None where the job cannot see the manifest."""
        ...

    def check_overrides(self, beam_width: Optional[int] = None, top_k: Optional[int] = None,
                        threshold: Optional[float] = None) -> None:
        """Refuse options the bundle cannot honour, before any image is read (ValueError)."""
        ...

    def records(self, files: list[Path], options: InferOptions, uris: Sequence[str] = (),
                done: Collection[str] = frozenset()) -> Iterator[Produced]:
        """One record per image of ``files`` (and, where the job reads URIs, of those under ``uris``
        not in ``done``); streamed as they are produced."""
        ...

    def close(self) -> None:
        """Release what the job holds (sessions, connections, a Ray it started)."""
        ...
