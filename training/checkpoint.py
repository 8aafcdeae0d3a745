"""Self-describing checkpoints: tensors plus a JSON config, loadable with ``weights_only=True``.

Writes are atomic (temporary file in the same directory, fsync, rename), so a
kill at any moment leaves either the old checkpoint or the new one.
"""
from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbones import RANDOM, build_backbone
from .config import CheckpointConfig
from .factory import create_model
from corel_annotate.runtime.reasons import one_line

FORMAT = "corel-annotate/checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """Versions of what produced a checkpoint."""
    import timm

    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("corel-annotate")
    except PackageNotFoundError:
        own = "unknown"
    return {"corel-annotate": own, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version()}


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, config: CheckpointConfig, model: nn.Module, **extra: Any) -> None:
    """Write the model's tensors, its config as JSON, and any extra tensors/plain values (optimizer state)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    payload.update(extra)
    atomic_save(payload, path)


def extra_tensors(payload: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint carries besides its format, config and weights (``oof_scores``, optimiser
    state), so a rewrite of the config keeps it."""
    return {k: v for k, v in payload.items() if k not in ("format", "format_version", "config", "state_dict")}


def load_checkpoint(path: str | Path) -> tuple[CheckpointConfig, dict[str, Any]]:
    """Read a checkpoint with ``weights_only=True``; a file that needs unpickling code is refused."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds
        # the safe unpickler's own reason ("... unsupported GLOBAL posix.system ...", "Unsupported operand
        # 110"), not torch's advice to load with weights_only=False, which this refusal exists to prevent
        reasons = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or line.strip().startswith("Unsupported ")]
        first = reasons[0] if reasons else one_line(exc)
        # torch names weights_only in every failure of the safe unpickler; a global it will not import
        # is what marks a pickle that needs code (a text or truncated file is merely unreadable)
        if "GLOBAL" in str(exc):
            raise ValueError(f"{path}: refused, the file holds pickled objects beyond tensors ({first[:200]})") from exc
        raise ValueError(f"{path}: not a readable checkpoint ({first[:200]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a corel-annotate checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {payload.get('format_version')} is not supported (expected {FORMAT_VERSION})")
    try:
        config = CheckpointConfig.from_json(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint config is invalid ({exc})") from exc
    return config, payload


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointConfig]:
    """Rebuild the model a checkpoint describes and load its weights, in eval mode."""
    config, payload = load_checkpoint(path)
    backbone, _ = build_backbone(config.model.backbone, RANDOM)
    model = create_model(config.model, backbone)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the config ({str(exc).splitlines()[0]})") from exc
    model.eval()
    return model, config
