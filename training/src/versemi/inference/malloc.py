"""Keep glibc from handing large buffers back to the OS between sliding windows.

Every window allocates and frees the same large activation tensors; above glibc's mmap threshold each
is a fresh ``mmap``, so every window page-faults the same memory in again. Serving them from the heap,
trimmed only above a large threshold, avoids that at the cost of RSS staying near its peak: fine for a
prediction process, so the CLI enables it; library users decide for their own process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from versemi.environment import malloc_tuning_disabled

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def tune_malloc(trim_threshold_bytes: int = 512 * 2**20) -> bool:
    """Serve large allocations from the heap and keep up to ``trim_threshold_bytes`` of freed memory.

    A no-op (returns False) outside Linux/glibc or when ``$VERSEMI_NO_MALLOC_TUNING`` is set.

    Args:
        trim_threshold_bytes: Free memory at the heap top beyond this is returned to the OS.

    Returns:
        True when the settings were applied (now or by an earlier call).
    """
    global _applied
    if _applied:
        return True
    if malloc_tuning_disabled() or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_bytes)))
    _applied = ok
    return ok
