"""Colour correction in one pass over the frame.

Brightness, contrast, saturation and hue are all affine in RGB, so they compose into one 3x4 matrix applied with a
single `cv2.transform` (saturating uint8 output); gamma is not affine and follows as a 256-entry `cv2.LUT`. At the
identity the input frame is returned as is, so a colour effect left at its defaults costs nothing.

Hue rotates colours about the grey axis (white and greys stay put): +120 deg takes red to green, 180 red to cyan.
Saturation mixes each pixel with its Rec. 709 luma.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vprod.engine import Effect, FloatParam, FrameContext

_LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 weights, the same as sRGB's


def color_matrix(brightness: float, contrast: float, saturation: float, hue_deg: float) -> np.ndarray:
    """The 3x4 matrix (float32) for uint8 RGB: hue rotation, then saturation, contrast, brightness."""
    th = math.radians(hue_deg)
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = math.cos(th) * np.eye(3) + math.sin(th) * cross + (1 - math.cos(th)) * np.outer(k, k)  # Rodrigues
    sat = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), _LUMA)
    m = np.empty((3, 4))
    m[:, :3] = contrast * (sat @ rot)
    m[:, 3] = 127.5 * (1 - contrast) + 255.0 * brightness  # contrast pivots on mid grey
    return m.astype(np.float32)


def gamma_table(gamma: float) -> np.ndarray:
    """256-entry uint8 table for out = in^(1/gamma): gamma above 1 lifts the midtones."""
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.round(255.0 * x ** (1.0 / gamma)), 0, 255).astype(np.uint8)


class ColorEffect(Effect):
    """Brightness, contrast, saturation, hue and gamma; the input unchanged at the defaults."""

    params = {
        "brightness": FloatParam(default=0.0, min=-1.0, max=1.0,
                                 doc="Light added to every channel, as a fraction of full scale (0.1 = +10 %)"),
        "contrast": FloatParam(default=1.0, min=0.0, max=3.0, unit="x",
                               doc="Gain about mid grey: 1 unchanged, 0 flat grey, 2 twice the contrast"),
        "saturation": FloatParam(default=1.0, min=0.0, max=3.0, unit="x",
                                 doc="Colourfulness: 1 unchanged, 0 greyscale (Rec. 709 luma), 2 twice as vivid"),
        "hue": FloatParam(default=0.0, min=-180.0, max=180.0, unit="deg",
                          doc="Rotate all hues about the grey axis: +120 turns red to green, 180 red to cyan"),
        "gamma": FloatParam(default=1.0, min=0.2, max=5.0,
                            doc="Midtone curve out = in^(1/gamma): above 1 brightens midtones, below darkens; "
                                "black and white stay"),
    }

    def open(self) -> None:
        self._mkey: tuple | None = None
        self._matrix: np.ndarray | None = None
        self._gkey: float | None = None
        self._table: np.ndarray | None = None

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        p = self.p
        mkey = (p.brightness, p.contrast, p.saturation, p.hue)
        affine = mkey != (0.0, 1.0, 1.0, 0.0)
        curve = p.gamma != 1.0
        if not affine and not curve:
            return frame
        out = frame
        if affine:
            if mkey != self._mkey:  # rebuilt only when a value moves
                self._matrix, self._mkey = color_matrix(*mkey), mkey
            out = cv2.transform(frame, self._matrix)
        if curve:
            if p.gamma != self._gkey:
                self._table, self._gkey = gamma_table(p.gamma), p.gamma
            # In place when `out` is the transform's fresh array (never the input): one allocation less per frame.
            out = cv2.LUT(out, self._table, dst=out if out is not frame else None)
        return out
