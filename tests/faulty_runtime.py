"""Our runtime with one rule of docs/bundle-format.md broken, as a command for ``corel-eval conformance``:
``python tests/faulty_runtime.py FAULT BUNDLE PHOTOS OUT``.  The conformance tests check that the kit
fails exactly the cases of the broken rule."""
from __future__ import annotations

import sys

import numpy as np
from PIL import ImageOps


def drop_alpha() -> None:
    from corel_annotate.runtime import preprocessing

    keep = preprocessing.to_rgb
    preprocessing.to_rgb = lambda img: keep(img.convert("RGB")) if img.mode in ("RGBA", "LA", "PA", "P") else keep(img)


def ignore_orientation() -> None:
    from corel_annotate.runtime import preprocessing

    ImageOps.exif_transpose = lambda img, **_: img            # the Pillow path
    preprocessing._upright = lambda pixels, header: pixels    # the one-call JPEG path


def above_threshold() -> None:
    from corel_annotate.runtime import annotator, scoring

    def strict(probs, thresholds, top_k=None, min_labels=0):
        thr = np.nextafter(np.asarray(thresholds, dtype=np.float32), np.float32(2))   # '>' instead of '>='
        return scoring.select_labels(probs, thr, top_k, min_labels)

    annotator.select_labels = strict


def always_greedy() -> None:
    from corel_annotate.runtime import annotator

    keep = annotator.search_labels
    annotator.search_labels = lambda step, state, config, *a, **k: keep(step, state, config.greedy(), *a, **k)


def sixteen_bit_range() -> None:
    """The old heuristic: a 16-bit image whose maximum is at most 255 read as 8-bit."""
    from PIL import Image

    from corel_annotate.runtime import preprocessing

    keep = preprocessing.to_rgb

    def guess(img):
        if img.mode.startswith("I"):
            arr = np.asarray(img).astype(np.float64)
            peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
            return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
        return keep(img)

    preprocessing.to_rgb = guess


FAULTS = {"drop-alpha": drop_alpha, "ignore-orientation": ignore_orientation, "above-threshold": above_threshold,
          "always-greedy": always_greedy, "sixteen-bit-range": sixteen_bit_range}

if __name__ == "__main__":
    fault, bundle, photos, out = sys.argv[1:5]
    FAULTS[fault]()
    from corel_annotate.runtime.cli.infer import infer_app

    infer_app([photos, "--model", bundle, "-o", out, "--overwrite", "--no-progress", "--device", "cpu"])
