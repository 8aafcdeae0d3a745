"""TensorRT rows for ``corel-bench``: measured where TensorRT and a GPU exist, explained where not."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence



def tensorrt_rows(checkpoint: Path, out_dir: Path, jpegs: list[bytes], batch_sizes: Sequence[int],
                  beams: Sequence[int], repeats: int, warmup: int, log: Callable[[str], None]) -> list[dict]:
    from corel_annotate.export.bundle import export_bundle
    from corel_annotate.export.tensorrt import EngineSettings

    from .latency import RuntimeVariant, bench_variants

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        note = "TensorRT is not installed on this machine (pip install 'corel-annotate[gpu]' on an NVIDIA GPU machine)"
        log(f"  tensorrt: {note}")
        return [{"variant": "tensorrt", "batch": 0, "threads": 0, "note": note}]
    rows = []
    for precision in ("fp32", "fp16"):
        target = out_dir / f"{checkpoint.stem}.tensorrt-{precision}.bundle"
        export_bundle(checkpoint, target, precision=precision, force=True, engine="tensorrt",
                      engine_settings=EngineSettings(1, 8, max(batch_sizes), fp16=precision == "fp16"),
                      log=lambda _m: None)
        variant = RuntimeVariant(f"tensorrt-{precision}", target, device="tensorrt")
        rows += [r.to_dict() for r in bench_variants([variant], jpegs, batch_sizes, beams, repeats, warmup, 0, log)]
    return rows
