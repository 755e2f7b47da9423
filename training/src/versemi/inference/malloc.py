"""Keep glibc from handing large buffers back to the OS between windows.

Sliding-window inference allocates and frees the same large tensors (activations of 10-100 MB) for
every window. glibc serves allocations above its mmap threshold (at most 32 MB) with fresh ``mmap``
calls and returns them with ``munmap`` on free, so every window pays page faults again to zero-fill
the same memory; in a measured CPU forward of the default model that was ~1 M minor page faults
per 3 windows and 10-20 % of the CPU time. Serving everything from the heap and trimming it only
above a large threshold removes nearly all of them (~30 k faults), at the cost of RSS staying near
its peak until the process ends - fine for a prediction process, so the CLI enables it; library
users decide for their own process.
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
