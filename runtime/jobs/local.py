"""The in-process job: the bundle's own sessions in this process (``corel-infer`` without
``--server`` or ``--ray``)."""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Iterator, Optional, Sequence

from ..annotator import Annotator
from ..bundle.facts import BundleFacts
from ..bundle.label_map import LabelMap
from ..photos import prefetch_batches
from .records import InferOptions, Produced, error_record, ok_record


class LocalJob(BundleFacts):
    """An :class:`Annotator` as a :class:`~corel_annotate.runtime.jobs.Job`: records in input order,
    the next batches decoding in background threads."""

    def __init__(self, annotator: Annotator) -> None:
        self.annotator = annotator
        self.manifest = annotator.manifest

    @classmethod
    def load(cls, bundle: Path, device: str = "auto", threads: int = 0, precision: str = "auto",
             labels: Optional[LabelMap] = None) -> "LocalJob":
        """Verify and open ``bundle`` (ValueError naming the problem); ``labels``: a run-time label map."""
        return cls(Annotator.load(bundle, device=device, threads=threads, precision=precision, labels=labels))

    @property
    def engine(self) -> str:
        return self.annotator.engine

    def records(self, files: list[Path], options: InferOptions, uris: Sequence[str] = (),
                done: Collection[str] = frozenset()) -> Iterator[Produced]:
        if uris:
            raise ValueError(f"{uris[0]}: a URI input needs --ray (Ray reads it); give a local path otherwise")
        annotator = self.annotator
        kwargs = options.decoding_kwargs(annotator.manifest.is_sequence)
        for batch in prefetch_batches(files, annotator.preprocess_config, options.batch_size,
                                      max_pixels=options.max_pixels, previews=options.previews):
            for path, reason in batch.failed:
                yield Produced(path, error_record(path, reason))
            if batch.array is not None:
                results = annotator.annotate_batch(batch.array, keep_alphas=options.keep_alphas, **kwargs)
                for path, result in zip(batch.paths, results):
                    yield Produced(path, ok_record(path, result.labels, result.scores),
                                   result.alphas if options.keep_alphas else None)

    def close(self) -> None:
        """Nothing to release: the sessions go with the annotator."""
