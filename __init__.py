"""corel-annotate: train image annotation models in PyTorch, export them to ONNX bundles, run them anywhere.

The installed distribution has one top-level package, ``corel_annotate``; this file is its
``__init__`` (the repository's top-level folders ``runtime/``, ``training/``, ``export/`` and
``benchmarks/`` are its subpackages).  The Python API::

    from corel_annotate import Annotator
    annotations = Annotator.load("model.bundle").annotate(["photo.jpg"])

Names are imported on first use, so ``import corel_annotate.training`` does not load onnxruntime
and ``import corel_annotate`` does not load torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corel_annotate.runtime.annotator import Annotation, Annotator
    from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
    from corel_annotate.runtime.bundle.manifest import BundleManifest, load_manifest

_EXPORTS = {
    "Annotator": "corel_annotate.runtime.annotator",
    "Annotation": "corel_annotate.runtime.annotator",
    "BundleManifest": "corel_annotate.runtime.bundle.manifest",
    "load_manifest": "corel_annotate.runtime.bundle.manifest",
    "DecodingConfig": "corel_annotate.runtime.bundle.decoding_config",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "__version__":   # the installed distribution's metadata (pyproject.toml's version)
        from corel_annotate.__main__ import version

        return version()
    raise AttributeError(f"module 'corel_annotate' has no attribute {name!r}")
