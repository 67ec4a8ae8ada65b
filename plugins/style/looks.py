"""Classic looks that need no model: cartoon, pencil, edge glow, colour transfer, LUT — OpenCV and numpy, each
with live parameters, fast at 1280×720 on one core.

The heavy filters (edge-preserving smoothing, edge detection, bloom) run on a half-size copy and are enlarged;
what must stay sharp — the dark outlines, the pencil strokes — is computed where it shows. Every function takes
an (H, W, 3) uint8 RGB frame and returns a new one; the effect classes only read parameters and call them.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from vprod.engine import BoolParam, ColorParam, Effect, FloatParam, FrameContext, IntParam, TextParam, existing_file

from .lut import LutError, apply_lut, load_cube


# --- helpers ----------------------------------------------------------------------------------------------------

def _half(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return cv2.resize(frame, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)


def _up(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def soft_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of standard deviation `sigma` (pixels) at bounded cost: wide ones run on a reduced copy."""
    if sigma <= 0.3:
        return img
    if sigma < 3.0:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    f = max(2, int(sigma / 2.0))
    small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    rest = math.sqrt(max(sigma * sigma - f * f / 4.0, 0.25)) / f  # the shrink and enlargement spread too
    small = cv2.GaussianBlur(small, (0, 0), rest)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# --- cartoon / posterize ----------------------------------------------------------------------------------------

def quantize_table(levels: int) -> np.ndarray:
    """256-entry table mapping each level to the middle of its band out of `levels` equal bands."""
    levels = max(2, int(levels))
    x = np.arange(256, dtype=np.float32)
    band = np.minimum(np.floor(x * levels / 256.0), levels - 1)
    return np.clip(np.round((band + 0.5) * 255.0 / levels), 0, 255).astype(np.uint8)


def cartoon(frame: np.ndarray, levels: int = 6, smoothing: float = 0.6, edges: float = 0.8,
            edge_detail: float = 0.5) -> np.ndarray:
    """Flat colour areas and dark outlines: bilateral smoothing (half size) + per-channel quantisation + the
    outlines of an adaptive threshold on the brightness (full size)."""
    h, w = frame.shape[:2]
    small = _half(frame)
    passes = int(round(smoothing * 3))
    for _ in range(passes):  # repeated small bilateral filters flatten areas and keep edges, cheaper than one big
        small = cv2.bilateralFilter(small, 5, 20 + 60 * smoothing, 5)
    flat = cv2.LUT(small, quantize_table(levels))
    out = _up(flat, w, h)
    if edges > 0:
        gray = cv2.medianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 5)
        c = 2 + 10 * (1.0 - edge_detail)  # the lower, the more (and fainter) edges count as lines
        lines = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, c)
        # lines are 0 on an outline: keep 1 − edges there
        keep = cv2.LUT(lines, np.array([round(255 * (1 - edges))] * 128 + [255] * 128, np.uint8).reshape(256, 1))
        out = cv2.multiply(out, cv2.merge([keep, keep, keep]), scale=1 / 255)
    return out


class CartoonEffect(Effect):
    """Cartoon / posterize: flat colour bands, dark outlines."""

    params = {
        "levels": IntParam(6, 2, 32, doc="Colour levels per channel: 2 is a poster, 16 is close to the picture"),
        "smoothing": FloatParam(0.6, 0.0, 1.0, doc="Edge-preserving smoothing before the bands: flatter areas"),
        "edges": FloatParam(0.8, 0.0, 1.0, doc="Darkness of the outlines: 0 none, 1 black"),
        "edge_detail": FloatParam(0.5, 0.0, 1.0, doc="How many edges become lines: 0 only the strongest, 1 fine "
                                                     "detail too"),
    }

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        p = self.p
        return cartoon(frame, p.levels, p.smoothing, p.edges, p.edge_detail)


# --- pencil -----------------------------------------------------------------------------------------------------

def pencil(frame: np.ndarray, radius: float = 8.0, darkness: float = 0.4, color: float = 0.0) -> np.ndarray:
    """A pencil sketch: the colour-dodge of the brightness with its blurred negative (strokes where brightness
    changes), darkened by a gamma, optionally over the picture's own colours."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    inv_blur = soft_blur(cv2.bitwise_not(gray), radius)
    sketch = cv2.divide(gray, cv2.bitwise_not(inv_blur), scale=256)  # dodge: flat areas go white
    if darkness > 0:
        gamma = 1.0 + 4.0 * darkness
        sketch = cv2.LUT(sketch, (255.0 * (np.arange(256) / 255.0) ** gamma).round().astype(np.uint8))
    s3 = cv2.merge([sketch, sketch, sketch])
    if color <= 0:
        return s3
    tinted = cv2.multiply(frame, s3, scale=1 / 255)
    return cv2.addWeighted(s3, 1.0 - color, tinted, color, 0.0)


class PencilEffect(Effect):
    """Pencil sketch, grey or coloured."""

    params = {
        "radius": FloatParam(8.0, 1.0, 40.0, unit="px", doc="Stroke width: the blur behind the sketch"),
        "darkness": FloatParam(0.4, 0.0, 1.0, doc="How dark the strokes are"),
        "color": FloatParam(0.0, 0.0, 1.0, doc="0 grey pencil on paper, 1 coloured pencil (the picture's colours)"),
    }

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        return pencil(frame, self.p.radius, self.p.darkness, self.p.color)


# --- edge glow --------------------------------------------------------------------------------------------------

def edge_glow(frame: np.ndarray, color=(0.2, 0.9, 1.0), threshold: float = 0.15, glow: float = 8.0,
              intensity: float = 1.5, darken: float = 0.7, own_colors: bool = False) -> np.ndarray:
    """Edges as light: the gradient magnitude (half size) above `threshold`, tinted, bloomed and added onto the
    darkened picture."""
    h, w = frame.shape[:2]
    small = _half(frame)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    gray = cv2.GaussianBlur(gray, (0, 0), 0.8)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.magnitude(gx, gy) * (1.0 / (4 * 255))  # 0..~1.4 for a black/white step
    t = float(threshold)
    e = np.clip((mag - t) * (2.0 / max(0.05, 1.0 - t)), 0.0, 1.0)
    if glow > 0:
        e = e + 1.5 * soft_blur(e, glow / 4.0)  # halo around the line (glow is in output pixels; this is half size)
    # the light is made at half size in 8 bits, enlarged, and added with saturation: float work stays small
    if own_colors:
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)  # the picture's hue at full saturation and brightness
        hsv[..., 1] = 255
        hsv[..., 2] = 255
        tint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32) * float(intensity)
        light = tint * e[..., None]
    else:
        light = e[..., None] * (np.asarray(color, np.float32) * (255.0 * float(intensity)))[None, None, :]
    light = _up(np.clip(light, 0, 255).astype(np.uint8), w, h)
    base = frame if darken <= 0 else cv2.convertScaleAbs(frame, alpha=1.0 - float(darken))
    return cv2.add(base, light)


class EdgeGlowEffect(Effect):
    """The picture's edges as glowing lines over a darkened picture."""

    params = {
        "color": ColorParam((0.2, 0.9, 1.0), doc="Colour of the light (ignored with own_colors)"),
        "own_colors": BoolParam(False, doc="Light each edge in the picture's own hue instead of `color`"),
        "threshold": FloatParam(0.15, 0.0, 0.9, doc="Weakest edge that lights up (gradient, 0..1)"),
        "glow": FloatParam(8.0, 0.0, 60.0, unit="px", doc="Size of the bloom around the lines"),
        "intensity": FloatParam(1.5, 0.0, 4.0, doc="Brightness of the lines"),
        "darken": FloatParam(0.7, 0.0, 1.0, doc="How much the picture under the lines is darkened"),
    }

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        p = self.p
        return edge_glow(frame, p.color, p.threshold, p.glow, p.intensity, p.darken, p.own_colors)


# --- colour transfer --------------------------------------------------------------------------------------------

def lab_stats(rgb: np.ndarray, max_pixels: int = 160_000) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each Lab channel (OpenCV's 8-bit Lab), on a sample of the pixels if large
    (every k-th pixel each way: averaging pixels down would shrink the spread and the transfer overshoot it)."""
    h, w = rgb.shape[:2]
    if h * w > max_pixels:
        k = math.ceil(math.sqrt(h * w / max_pixels))
        rgb = np.ascontiguousarray(rgb[k // 2::k, k // 2::k])
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    return lab.mean(axis=0), lab.std(axis=0)


def transfer_table(mean: np.ndarray, std: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray,
                   amount: float = 1.0) -> np.ndarray:
    """The Reinhard map as a per-channel 256-entry table (256, 1, 3): (x − m)·(σ_ref/σ) + m_ref, by `amount`."""
    x = np.arange(256, dtype=np.float32)[:, None]
    scale = ref_std / np.maximum(std, 1.0)
    scale = 1.0 + amount * (np.minimum(scale, 8.0) - 1.0)  # a flat frame must not explode
    target = (x - mean) * scale + mean + amount * (ref_mean - mean)
    return np.clip(np.round(target), 0, 255).astype(np.uint8).reshape(256, 1, 3)


def color_transfer(frame: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray, amount: float = 1.0,
                   stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Reinhard et al. (2001) colour transfer in Lab: each channel's mean and spread moved to the reference's."""
    mean, std = stats if stats is not None else lab_stats(frame)
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB)
    lab = cv2.LUT(lab, transfer_table(mean, std, ref_mean, ref_std, amount))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


class ColorTransferEffect(Effect):
    """The colours of a reference picture: Reinhard mean/spread matching in Lab."""

    params = {
        "reference": TextParam("", max_len=500, doc="Reference picture (PNG, JPEG, …); a relative path is looked "
                                                    "up next to the preset, then in the working directory"),
        "amount": FloatParam(1.0, 0.0, 1.0, doc="0 leaves the colours, 1 matches the reference fully"),
        "smoothing": FloatParam(0.3, 0.0, 2.0, unit="s", doc="Time constant of the frame statistics: steadier "
                                                             "colours when the picture changes"),
    }

    def open(self) -> None:
        self._ref_key: str | None = None
        self._ref = None
        self._ref_error = ""
        self._stats = None

    def _load_reference(self, raw: str) -> None:
        self._ref_key, self._ref, self._ref_error = raw, None, ""
        try:
            if not raw:
                raise RuntimeError(f"no reference picture: set `reference` of {self.label}")
            path = existing_file(raw, self.config.preset_dir, "reference picture")
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise RuntimeError(f"reference picture {path} cannot be read (not an image OpenCV decodes)")
        except RuntimeError as e:
            self._ref_error = str(e)
            return
        self._ref = lab_stats(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self.log.info("%s: colours from %s", self.label, path)

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        raw = str(self.p.reference or "")
        if raw != self._ref_key:  # read once per path; a live change reads the new one
            self._load_reference(raw)
        if self._ref is None:
            raise RuntimeError(self._ref_error)  # the pipeline passes the picture through and reports this once
        m, s = lab_stats(frame, 40_000)
        if self._stats is None or self.p.smoothing <= 0:
            self._stats = (m, s)
        else:
            k = 1.0 - math.exp(-ctx.dt / float(self.p.smoothing))
            self._stats = (self._stats[0] + k * (m - self._stats[0]), self._stats[1] + k * (s - self._stats[1]))
        return color_transfer(frame, self._ref[0], self._ref[1], float(self.p.amount), self._stats)


# --- LUT ----------------------------------------------------------------------------------------------------------

class LutEffect(Effect):
    """A colour look from a .cube file (1D or 3D LUT, Adobe/Resolve format)."""

    params = {
        "file": TextParam("", max_len=500, doc=".cube file; a relative path is looked up next to the preset, then "
                                               "in the working directory"),
        "amount": FloatParam(1.0, 0.0, 1.0, doc="Mix of the graded picture over the original"),
    }

    def open(self) -> None:
        self._lut = None
        self._error = ""
        self._key = str(self.p.file or "")
        self._load(self._key)  # the first LUT before the loop starts: nothing to show meanwhile but the original
        self._loading: threading.Thread | None = None

    def _load(self, raw: str) -> None:
        try:
            if not raw:
                raise LutError(f"no LUT file: set `file` of {self.label}")
            path = existing_file(raw, self.config.preset_dir, "LUT file", LutError)
            lut = load_cube(path)
            lut.prepare()
            self._lut, self._error = lut, ""
            self.log.info("%s: %s", self.label, lut.describe())
        except LutError as e:
            self._lut, self._error = None, str(e)

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        raw = str(self.p.file or "")
        busy = self._loading is not None and self._loading.is_alive()
        if raw != self._key and not busy:
            # A 3D LUT is expanded into its full table (~0.7 s) off the frame loop; until then the old one applies.
            self._key = raw
            self._loading = threading.Thread(target=self._load, args=(raw,), name="lut-load", daemon=True)
            self._loading.start()
            busy = True
        if self._error and not busy:
            raise RuntimeError(self._error)  # the pipeline passes the picture through and reports this once
        if self._lut is None:
            return frame
        out = apply_lut(self._lut, frame)
        a = float(self.p.amount)
        return out if a >= 1.0 else cv2.addWeighted(out, a, frame, 1.0 - a, 0.0)


__all__ = ["CartoonEffect", "ColorTransferEffect", "EdgeGlowEffect", "LutEffect", "PencilEffect"]
