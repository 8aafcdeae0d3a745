"""The machine a benchmark ran on, recorded with its results: CPU model, cores, the ISA flags that
decide engine speed (AVX2, AVX-512, VNNI, BF16, AMX) and the engine versions."""
from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict:
    """CPU model, usable cores, ISA flags of interest and engine versions, as a JSON-ready dict."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    engines = {}
    for package in ("onnxruntime", "openvino"):
        try:
            engines[package] = version(package)
        except PackageNotFoundError:
            pass
    return {"cpu": model, "cores": cores, "isa": [f for f in FLAGS if f in flags], "engines": engines}
