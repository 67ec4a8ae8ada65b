"""Blur with a radius in output pixels, at a cost that stays bounded however large the radius.

Gaussian: the radius is the standard deviation (as in CSS `blur()`); the visible spread is about three times that.
Box: the radius is the half-width of the square averaging window (2r+1 pixels a side).

A wide Gaussian would need a kernel hundreds of pixels long. From 3 pixels on, the frame is instead shrunk by a
whole-number factor (preferably one dividing both sides) so that the blur is about 2 pixels there, blurred, and
enlarged with bilinear interpolation. The shrink (an area average) and the enlargement add their own spread, which
is subtracted from the blur done at the small size, so the result matches a full-size Gaussian closely. A box
filter costs the same at any width (running sums), so the box mode always runs at full size.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vprod.engine import ChoiceParam, Effect, FloatParam, FrameContext

#: From this standard deviation (pixels) on, the Gaussian runs on a reduced copy of the frame.
FULL_SIZE_BELOW_SIGMA = 3.0
#: The standard deviation aimed for at the reduced size; the reduction factor is a whole number near sigma / this.
SMALL_SIGMA = 2.0


def gaussian_blur(frame: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation `sigma` in pixels (uint8 RGB in, new array out)."""
    if sigma < FULL_SIZE_BELOW_SIGMA:
        return cv2.GaussianBlur(frame, (0, 0), sigma)
    h, w = frame.shape[:2]
    # A whole-number factor keeps OpenCV on its fast area-averaging path. The largest one up to the ideal factor
    # that divides both sides avoids padding (1280x720 has 2, 4, 5, 8, 10, 16, 20, 40, 80); failing that, pad.
    ideal = max(2, int(sigma / SMALL_SIGMA))
    f = next((d for d in range(ideal, max(2, ideal // 2) - 1, -1) if w % d == 0 and h % d == 0), ideal)
    ph, pw = -h % f, -w % f
    src = cv2.copyMakeBorder(frame, 0, ph, 0, pw, cv2.BORDER_REFLECT) if ph or pw else frame
    sw, sh = (w + pw) // f, (h + ph) // f
    small = cv2.resize(src, (sw, sh), interpolation=cv2.INTER_AREA)
    # Area averaging adds a spread of ~f^2/12, bilinear enlargement ~f^2/6 (in full-size pixels squared).
    rest = math.sqrt(max(sigma * sigma - f * f / 4.0, 0.25)) / f
    # Mirror about the image edge itself, which at the small size is where the full-size mirror line lies.
    small = cv2.GaussianBlur(small, (0, 0), rest, borderType=cv2.BORDER_REFLECT)
    out = cv2.resize(small, (w + pw, h + ph), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[:h, :w]) if ph or pw else out


def box_blur(frame: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2*radius+1)-pixel square window."""
    k = 2 * radius + 1
    return cv2.blur(frame, (k, k))


class BlurEffect(Effect):
    """Gaussian or box blur; radius 0 passes the frame through untouched."""

    params = {
        "radius": FloatParam(default=0.0, min=0.0, max=200.0, unit="px",
                             doc="Blur size in output pixels: the Gaussian's standard deviation, or the box's "
                                 "half-width; 0 passes the frame through"),
        "mode": ChoiceParam(default="gaussian", choices=("gaussian", "box"),
                            doc="gaussian: soft, natural falloff; box: flat average over a square window"),
    }

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        r = float(self.p.radius)
        if self.p.mode == "box":
            ri = int(round(r))
            return frame if ri <= 0 else box_blur(frame, ri)
        if r < 0.1:  # a Gaussian this narrow leaves uint8 pixels as they are
            return frame
        return gaussian_blur(frame, r)
