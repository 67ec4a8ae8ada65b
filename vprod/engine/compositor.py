"""Blending layers: opacity, blend modes and an optional mask, on uint8 RGB frames.

OpenCV's saturating uint8 arithmetic keeps the common cases (normal, add, lighten, darken, difference) to one
pass over the image; float math only where a mode or a mask needs it.
"""

from __future__ import annotations

import cv2
import numpy as np

FIT_MODES = ("cover", "contain", "stretch")
BLEND_MODES = ("normal", "add", "multiply", "screen", "overlay", "difference", "lighten", "darken")


def fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """A frame at the output size (stretched) if it is not that size already."""
    return _resize(frame, width, height)


def fit_frame(img: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """`img` at width x height: `cover` fills and crops the overflow, `contain` letterboxes on black, `stretch`."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    if mode == "stretch":
        return _resize(img, width, height)
    if mode == "cover":
        s = max(width / w, height / h)
        cw, ch = min(w, max(1, round(width / s))), min(h, max(1, round(height / s)))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return _resize(img[y0 : y0 + ch, x0 : x0 + cw], width, height)  # crop first: resize only what shows
    if mode == "contain":
        s = min(width / w, height / h)
        nw, nh = min(width, max(1, round(w * s))), min(height, max(1, round(h * s)))
        out = np.zeros((height, width, 3), np.uint8)
        x0, y0 = (width - nw) // 2, (height - nh) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = _resize(img, nw, nh)
        return out
    raise ValueError(f"unknown fit {mode!r} (one of {', '.join(FIT_MODES)})")


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    if img.shape[1] == width and img.shape[0] == height:
        return np.ascontiguousarray(img)
    shrinking = width * height < img.shape[0] * img.shape[1]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _blend_full(base: np.ndarray, top: np.ndarray, mode: str) -> np.ndarray:
    """`top` blended onto `base` at full strength."""
    if mode == "normal":
        return top
    if mode == "add":
        return cv2.add(base, top)
    if mode == "difference":
        return cv2.absdiff(base, top)
    if mode == "lighten":
        return cv2.max(base, top)
    if mode == "darken":
        return cv2.min(base, top)
    if mode == "multiply":
        return cv2.multiply(base, top, scale=1 / 255)
    if mode == "screen":
        inv = cv2.multiply(cv2.bitwise_not(base), cv2.bitwise_not(top), scale=1 / 255)
        return cv2.bitwise_not(inv)
    if mode == "overlay":
        b = base.astype(np.float32) / 255
        t = top.astype(np.float32) / 255
        out = np.where(b < 0.5, 2 * b * t, 1 - 2 * (1 - b) * (1 - t))
        return (out * 255 + 0.5).astype(np.uint8)
    raise ValueError(f"unknown blend mode {mode!r} (one of {', '.join(BLEND_MODES)})")


def blend(base: np.ndarray | None, top: np.ndarray, mode: str = "normal", opacity: float = 1.0,
          mask: np.ndarray | None = None) -> np.ndarray:
    """Composite `top` over `base`. `mask` is float32 (H, W) in 0..1 (1 = top shows) or None."""
    if base is None:
        # The bottom layer blends against black.
        if mode == "normal" and opacity >= 1.0 and mask is None:
            return top
        base = np.zeros_like(top)
    if opacity <= 0.0:
        return base
    mixed = _blend_full(base, top, mode)
    if mask is None:
        if opacity >= 1.0:
            return mixed
        return cv2.addWeighted(mixed, float(opacity), base, 1.0 - float(opacity), 0.0)
    a = mask.astype(np.float32, copy=False)
    if opacity < 1.0:
        a = a * np.float32(opacity)
    a3 = a[:, :, None]
    b = base.astype(np.float32)
    out = b + (mixed.astype(np.float32) - b) * a3
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def luma_mask(frame: np.ndarray) -> np.ndarray:
    """A frame's luminance as a 0..1 mask."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)


def crossfade(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """From `a` (t=0) to `b` (t=1)."""
    if t <= 0:
        return a
    if t >= 1:
        return b
    return cv2.addWeighted(a, 1.0 - t, b, t, 0.0)
