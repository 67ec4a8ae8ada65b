"""Thread settings for two cores shared with OBS or ffmpeg.

Measured here (RECIPES.md): with another process busy, 2 torch threads ran 2–5× slower than 1. So each pipeline
stage gets one thread by default (the model on one core; decode, composite and encode on the other).
`VPROD_THREADS` or `vprod run --threads N` overrides, e.g. on a machine with more cores.
"""

from __future__ import annotations

import os
import sys


def thread_count(requested: int | None = None) -> int:
    if requested:
        return max(1, int(requested))
    env = os.environ.get("VPROD_THREADS", "")
    return max(1, int(env)) if env.isdigit() else 1


def configure_threads(requested: int | None = None) -> int:
    """Apply the thread count to OpenCV and (if loaded, or when it loads) torch. Returns the count."""
    n = thread_count(requested)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    import cv2

    cv2.setNumThreads(n)
    if "torch" in sys.modules:
        configure_torch(n)
    return n


def configure_torch(n: int | None = None) -> None:
    import torch

    n = thread_count(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
