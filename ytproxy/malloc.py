"""The C allocator's thresholds for a process that reads sockets all day.

Every ``recv()`` of asyncio's selector transports allocates its full read size
(256 KiB for a fast listener's upstream) and then shrinks it.  glibc serves
blocks that large with ``mmap`` (or grows the heap and trims it again as soon
as they are freed, for a small heap): either way the kernel zero-fills fresh
pages for every read.  Measured on the relay, that cost a third of its
throughput (the same code ran ~1.6x faster in a process whose heap happened
to be bigger).  A fixed 512 KiB ``mmap`` threshold and a 1 MiB trim threshold
keep such blocks in the heap and reuse them; at most 1 MiB of freed heap is
kept back.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 512 << 10
TRIM_THRESHOLD = 1 << 20
# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Set the thresholds where the C library is glibc; True if it took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: bool = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                  and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    log.debug("malloc: mmap threshold %d, trim threshold %d: %s", MMAP_THRESHOLD,
              TRIM_THRESHOLD, "set" if done else "not supported here")
    return done
