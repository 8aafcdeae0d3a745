"""One registry from method name to model class, in the manner of timm's ``create_model``."""
from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from .config import ModelConfig

_REGISTRY: dict[str, type] = {}
M = TypeVar("M", bound=type)


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make ``--method name`` build this class."""
    def wrap(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.method_name = name  # type: ignore[attr-defined]
        return cls
    return wrap


def model_class(name: str) -> type:
    from . import models  # noqa: F401 - importing registers every method

    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_methods() -> list[str]:
    from . import models  # noqa: F401

    return sorted(_REGISTRY)


def create_model(config: ModelConfig, backbone: nn.Module, **extra) -> nn.Module:
    """Build the model for ``config.method`` around ``backbone``."""
    return model_class(config.method)(config, backbone, **extra)
