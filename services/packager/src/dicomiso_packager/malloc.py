"""glibc's malloc arenas, limited for the packager's big buffers (docs/benchmarks.md).

glibc gives threads that contend for the allocator arenas of their own, up to 8 per CPU.
The packager's threads (image writer, part upload, the ZIP's upload, prefetch, build
workers) each allocate and free MiB-sized buffers; memory freed in one arena is not reused
by another, and an arena returns it to the system only from its top. Measured at 1,000 x
512x512 CT with the online page: 26-33 MiB of freed heap kept, peak RSS 231 MiB with
glibc's default; 8 MiB kept, 215 MiB with 2 arenas, and no more CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # malloc.h


def limit_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at `arenas` (0: leave the default); call before threads
    start. Returns whether the limit was set (False off glibc, e.g. musl or macOS)."""
    if arenas <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("malloc arenas not limited: no glibc mallopt")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
