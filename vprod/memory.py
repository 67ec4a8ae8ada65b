"""Keep freed frame memory in the process instead of handing it back to the kernel after every frame.

glibc serves a large allocation (a 1280x720 frame is 2.7 MB, a float matte 3.7 MB) with a fresh mmap or trims the
heap after freeing it, so the next frame's arrays are new pages: ~2,000 page faults per frame for segmentation +
composite, measured here at ~5 ms of a 10 ms frame (with the thresholds raised: 0 faults, 5 ms). Raising glibc's
mmap and trim thresholds keeps freed blocks for reuse; the process keeps its peak working set, which a frame loop
reaches on its first frames anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("vprod.memory")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's ceiling for the mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): larger blocks are still mmapped.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process). False where there is no glibc (macOS, musl)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the thresholds; frames are allocated the default way")
    _done = ok
    return ok
