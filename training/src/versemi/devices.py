"""Devices and numeric precision: what the hardware runs well.

bf16 autocast on a CPU is only worth it where the CPU has native bf16 arithmetic (AVX-512-BF16 or
AMX on x86): there it ran the training step of the CPU recipe ~2x faster than float32
(``bench/train_speed.py``); without it bf16 is emulated and slower.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux x86: ``/proc/cpuinfo`` flags; elsewhere False)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in _NATIVE_BF16_FLAGS)
    return False
