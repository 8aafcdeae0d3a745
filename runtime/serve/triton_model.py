"""A bundle as a Triton model: the function that serves a dynamic batch of requests (photos as
encoded bytes, per-request decoding options), with the inputs and outputs ``tensors.py`` declares.

The declaration is read by both sides: ``corel-serve`` binds it, the ``--server`` client reads the
model's metadata (``/v2/models/NAME``) and knows from the inputs declared whether it is a sequence
bundle (``beam_width``) or a scores one (``top_k``, ``threshold``), and from the outputs whether
attention maps can be asked for.  Everything here is numpy and the runtime; no Triton import."""
from __future__ import annotations

import threading

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..annotator import Annotator
from ..bundle.limits import RequestLimits
from ..photos import photo_tensor
from ..preprocessing import MAX_PIXELS
from .tensors import (ATTENTION, BEAM_WIDTH, ERROR, IMAGE, LABELS, SCORES, THRESHOLD, TOP_K, model_inputs,
                      model_outputs, option_value)

@dataclass
class _Row:
    request: int
    array: Optional[np.ndarray] = None
    error: str = ""
    labels: Sequence[str] = ()
    scores: Sequence[float] = ()
    alphas: Sequence[np.ndarray] = ()


class BundleModel:
    """The callable bound to Triton for one bundle: decodes every photo of a dynamic batch in
    threads, groups rows by their decoding options, runs each group through the Annotator in
    chunks that keep a search within the limits' memory bound, and answers each request with its
    own rows.  A photo that cannot be read, or is too large, is an error in its own row; a request
    over a limit (too many photos or bytes, too wide a beam) gets an error in each of its rows; the
    other rows of the batch are annotated.  ``limits`` None: those of the bundle's manifest."""

    def __init__(self, annotator: Annotator, name: str, limits: RequestLimits | None = None,
                 max_pixels: int = MAX_PIXELS, decode_threads: int = 2) -> None:
        self.annotator, self.name = annotator, name
        self.limits = limits or RequestLimits.for_manifest(annotator.manifest)
        self.max_pixels = max_pixels
        self.is_sequence = annotator.manifest.is_sequence
        self.inputs = model_inputs(self.is_sequence)
        self.outputs = model_outputs(annotator.has_attention)
        self._pool = ThreadPoolExecutor(max_workers=max(1, decode_threads), thread_name_prefix=f"{name}-decode")
        self.batch_sizes: list[int] = []
        self._busy = 0
        self._busy_lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Batches this callable is answering now (a stopping server waits for 0)."""
        return self._busy

    def warm_up(self) -> None:
        """Run one photo through every graph so the first request pays no compilation or allocation."""
        pre = self.annotator.preprocess_config
        self.annotator.annotate_batch(np.zeros((1, *pre.input_shape), pre.input_dtype))

    def _decode(self, index: int, data: bytes) -> _Row:
        row = _Row(index)
        name = "image"   # the client puts the file's name in its place
        too_big = self.limits.check_image(len(data))
        if too_big:
            row.error = f"{name}: {too_big}"
            return row
        if not data:
            row.error = f"{name}: empty image"
            return row
        tensor = photo_tensor((name, data), self.annotator.preprocess_config, self.max_pixels)
        if isinstance(tensor, str):
            row.error = tensor
        else:
            row.array = tensor
        return row

    def _options(self, request) -> tuple[dict, str]:
        """A request's decoding options as ``annotate_batch`` keywords, or the reason they are refused."""
        try:
            if self.is_sequence:
                beam = option_value(request, BEAM_WIDTH)
                beam = None if beam is None else int(beam)
                self.annotator.check_overrides(beam_width=beam)
                self.limits.check_beam(beam)
                return {"beam_width": beam}, ""
            top_k, threshold = option_value(request, TOP_K), option_value(request, THRESHOLD)
            top_k = None if top_k is None else int(top_k)
            threshold = None if threshold is None else float(threshold)
            self.annotator.check_overrides(top_k=top_k, threshold=threshold)
            return {"top_k": top_k, "threshold": threshold}, ""
        except ValueError as exc:
            return {}, f"bad decoding options: {exc}"

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        with self._busy_lock:
            self._busy += 1
        try:
            return self._answer(requests)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _answer(self, requests: list) -> list[dict[str, np.ndarray]]:
        images: list[tuple[int, bytes]] = []
        missing: list[_Row] = []
        for r, request in enumerate(requests):
            data = request.data if hasattr(request, "data") else request
            if IMAGE.name not in data:   # Triton lets a python-backend request omit a required input
                missing.append(_Row(r, error=f"the request has no {IMAGE.name!r} input (one encoded photo per row)"))
                continue
            items = np.asarray(data[IMAGE.name]).reshape(-1)
            refused = self.limits.check_request([len(item) for item in items])
            if refused:   # nothing of it is decoded
                missing.extend(_Row(r, error=refused) for _ in items)
                continue
            images.extend((r, bytes(item)) for item in items)
        rows = list(self._pool.map(lambda item: self._decode(*item), images)) + missing
        want_attention = [ATTENTION.name in (getattr(q, "requested_output_names", None) or ()) for q in requests]
        groups: dict[tuple, list[_Row]] = {}
        for request_index, request in enumerate(requests):
            kwargs, refused = self._options(request)
            for row in (row for row in rows if row.request == request_index):
                if refused:
                    row.error = refused
                elif row.array is not None:
                    key = (tuple(sorted(kwargs.items())), want_attention[request_index])
                    groups.setdefault(key, []).append(row)
        for (kwargs, alphas), group in groups.items():
            kwargs = dict(kwargs)
            self.batch_sizes.append(len(group))
            chunk = self.limits.chunk_photos(kwargs.get("beam_width"))
            for start in range(0, len(group), chunk):
                part = group[start:start + chunk]
                batch = np.stack([row.array for row in part])
                for row, result in zip(part, self.annotator.annotate_batch(batch, keep_alphas=alphas, **kwargs)):
                    row.labels, row.scores, row.alphas = result.labels, result.scores, result.alphas
        return [self._response([row for row in rows if row.request == r], want_attention[r])
                for r in range(len(requests))]

    def _response(self, rows: list[_Row], attention: bool) -> dict[str, np.ndarray]:
        width = max([len(row.labels) for row in rows] + [1])
        labels = np.full((len(rows), width), b"", dtype=object)
        scores = np.zeros((len(rows), width), np.float32)
        for i, row in enumerate(rows):
            labels[i, :len(row.labels)] = [label.encode() for label in row.labels]
            scores[i, :len(row.scores)] = row.scores
        out = {LABELS.name: labels, SCORES.name: scores,
               ERROR.name: np.array([[row.error.encode()] for row in rows], dtype=object)}
        if attention and ATTENTION in self.outputs:
            cells = max([np.asarray(a).size for row in rows for a in row.alphas] + [1])
            maps = np.zeros((len(rows), width, cells), np.float32)
            for i, row in enumerate(rows):
                for j, alpha in enumerate(row.alphas[:len(row.labels)]):   # the stop step has one too
                    maps[i, j, :np.asarray(alpha).size] = np.asarray(alpha).reshape(-1)
            out[ATTENTION.name] = maps
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False)
