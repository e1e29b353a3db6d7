"""Allocator settings of an agent process: keep big receive buffers instead of re-faulting them.

A task tensor of 256 KiB or more arrives in a buffer ZeroMQ allocates per message. glibc serves
blocks above its mmap threshold (128 KiB at start, raised dynamically up to 32 MiB) with a fresh
``mmap`` and returns them to the kernel on ``free``, and trims the heap top above its trim
threshold, so every message pays a page fault per 4 KiB page and the kernel's zeroing: 20-40
faults per 1 MiB message at the receiver against ~1 with the thresholds raised
(``bench/big_tensors.py``). ``tune_allocator`` sets ``M_MMAP_THRESHOLD`` and
``M_TRIM_THRESHOLD`` with ``mallopt`` once at start-up (the ``run`` command), the same as the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables would; the cost
is that up to that much freed memory stays mapped in the process.

Only on Linux with glibc: elsewhere (musl, macOS, another allocator) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import sys
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above 4 MiB * sizeof(long): 32 MiB on 64-bit, 16 on 32-bit
THRESHOLD_BYTES = (4 << 20) * ctypes.sizeof(ctypes.c_long)


def _glibc_mallopt() -> Optional[Callable[[int, int], int]]:
    """glibc's ``mallopt``, or None when this process does not run on glibc."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def tune_allocator(threshold_bytes: int = THRESHOLD_BYTES,
                   mallopt: Any = _glibc_mallopt) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold_bytes``; True when both were set.

    ``mallopt`` returns the function to call (None: not glibc, nothing is done); tests pass
    their own.
    """
    fn = mallopt()
    if fn is None:
        log.debug("allocator not tuned: not glibc on Linux")
        return False
    ok = bool(fn(M_MMAP_THRESHOLD, int(threshold_bytes))) and bool(
        fn(M_TRIM_THRESHOLD, int(threshold_bytes)))
    if not ok:
        log.debug("allocator not tuned: mallopt refused %d bytes", threshold_bytes)
    return ok
