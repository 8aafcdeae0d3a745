"""The CPU's instruction sets that decide engine speed (AVX2, AVX-512, VNNI, BF16, AMX), read from
``/proc/cpuinfo``: the one place the runtime, the exporter and the benchmarks learn them.

int8 convolutions are fast only with VNNI (AVX-512 VNNI or AVX-VNNI): without it onnxruntime's CPU
provider runs an int8 encoder slower than its fp32 twin (measured 2.3x slower on an AVX2-only EPYC),
while OpenVINO still runs int8 well."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
         "amx_tile", "amx_bf16", "amx_int8")
"""The ``/proc/cpuinfo`` flags recorded."""
ISA = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx512vnni", "avx_vnni"),
    "BF16": ("avx512_bf16", "amx_bf16"),
    "AMX": ("amx_tile", "amx_bf16", "amx_int8"),
}
"""Short names and the raw flags that give each."""


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """The CPU model and the flag set of a ``/proc/cpuinfo`` text (the first processor's; ARM's
    ``Features`` line counts as flags)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def isa_names(flags) -> list[str]:
    """The short ISA names of a flag set, in the order of :data:`ISA`, e.g. ``["AVX2"]`` or
    ``["AVX2", "AVX-512", "VNNI", "BF16", "AMX"]``."""
    flags = set(flags)
    return [name for name, raw in ISA.items() if flags & set(raw)]


@lru_cache(maxsize=1)
def this_cpu() -> tuple[str, frozenset[str]]:
    """This machine's CPU model and flags (empty where there is no ``/proc/cpuinfo``)."""
    path = Path("/proc/cpuinfo")
    model, flags = parse_cpuinfo(path.read_text(errors="replace")) if path.is_file() else ("", set())
    return model, frozenset(flags)


def int8_without_vnni(precision: str, device: str, flags=None) -> str | None:
    """One line when an int8 bundle is about to run on onnxruntime's CPU provider on a CPU without VNNI,
    where it is slower than the fp32 bundle it came from; None otherwise (and where the flags are unknown)."""
    flags = this_cpu()[1] if flags is None else set(flags)
    if precision != "int8" or device != "cpu" or not flags or "VNNI" in isa_names(flags):
        return None
    have = ", ".join(isa_names(flags)) or "no AVX2"
    return (f"note: this int8 bundle runs on onnxruntime's CPU provider on a CPU without VNNI ({have}), where "
            "int8 is slower than fp32 (its encoder measured 2.3x slower on an AVX2-only CPU); "
            "`pip install openvino` (picked by --device auto) runs int8 fast, or use the fp32 bundle")
