"""Animated procedural backgrounds: plasma, aurora, tunnel, clouds and a gradient sweep.

Each pattern is a pair of scalar fields computed with vectorised numpy on a small grid (the output size divided by
the `downscale` option, 320x180 for 720p): `u` picks a colour along the palette and `a` is the light intensity.
The palette is 256 entries built per frame from hue / spread / saturation / brightness, so colour changes cost
nothing per pixel; the small RGB image is then upscaled with bilinear interpolation. All patterns are smooth, which
is what makes rendering at a quarter of the resolution invisible.

Time is the frame's pts times `speed`, integrated so that a speed change does not make the animation jump, and
exactly ``pts * speed`` while the speed stays constant: equal pts give equal frames.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vprod.engine import ChoiceParam, FloatParam, FrameContext, IntParam, Source

PATTERNS = ("gradient", "plasma", "aurora", "clouds", "tunnel")
_TAU = np.float32(2 * math.pi)
_NOISE_SIZE = 128  # side of the tileable value-noise texture the clouds sample


def _noise_texture(seed: int = 7, size: int = _NOISE_SIZE) -> np.ndarray:
    """A smooth, tileable noise texture in 0..1 (float32): white noise blurred on a 3x3 tiling, centre kept."""
    rng = np.random.default_rng(seed)
    white = rng.random((size, size), dtype=np.float32)
    tiled = np.tile(white, (3, 3))  # blur across the seams so the centre tile wraps without a visible edge
    smooth = cv2.GaussianBlur(tiled, (0, 0), 2.0)[size : 2 * size, size : 2 * size]
    smooth -= smooth.min()
    smooth /= max(float(smooth.max()), 1e-6)
    return np.ascontiguousarray(smooth)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - np.float32(e0)) * np.float32(1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


# --- patterns: (X, Y, t, scale, complexity, noise) -> (u, a), both float32 in 0..1 -----------------------------
# X spans -aspect..aspect left to right, Y spans -1..1 top to bottom; `t` is animation time in seconds.


def _plasma(X, Y, t, scale, n, noise):
    f = np.float32(2.2 / scale)
    cx, cy = 0.6 * math.sin(t * 0.37), 0.5 * math.cos(t * 0.29)
    v = np.sin(X * f + np.float32(t * 0.9))
    v += np.sin(Y * (f * np.float32(1.3)) - np.float32(t * 0.7))
    v += np.sin(np.sqrt((X - np.float32(cx)) ** 2 + (Y - np.float32(cy)) ** 2) * (f * np.float32(2.0)) - np.float32(t))
    terms = 3
    for k in range(1, n):  # higher complexity: more, finer, rotated waves
        ang = 0.9 * k + 0.13 * t
        fk = f * np.float32(1.0 + 0.45 * k)
        along = X * np.float32(math.cos(ang)) + Y * np.float32(math.sin(ang))
        v += np.sin(along * fk + np.float32(t * (0.6 + 0.2 * k)))
        terms += 1
    v *= np.float32(1.0 / terms)  # -1..1
    u = v * np.float32(0.5) + np.float32(0.5)
    a = np.float32(0.55) + np.float32(0.45) * np.cos(v * np.float32(math.pi * 1.5)) ** 2
    return u, a


def _aurora(X, Y, t, scale, n, noise):
    x = X[0] * np.float32(1.0 / scale)  # curtains vary along x; the vertical falloff is per pixel
    ycol = Y[:, 0:1]
    sky = np.float32(0.04) + np.float32(0.16) * _smoothstep(-1.0, 1.0, ycol)  # lighter towards the horizon
    light = np.zeros_like(X)
    hue_sum = np.zeros_like(X)
    for k in range(max(1, n)):
        ph = 1.7 * k
        # The curtain's lower edge: a slow wave across the sky, each further curtain higher and fainter.
        edge = (np.float32(0.2 - 0.16 * k)
                + np.float32(0.12) * np.sin(x * np.float32(0.9 + 0.3 * k) + np.float32(t * 0.19 + ph))
                + np.float32(0.05) * np.sin(x * np.float32(2.7 + 0.7 * k) - np.float32(t * 0.37 + ph)))
        d = ycol - edge[None, :]  # > 0 below the edge
        # Rays: vertical striations that drift and shimmer, sharpened by squaring.
        warp = np.float32(1.4) * np.sin(x * np.float32(1.7) + np.float32(t * 0.4 + ph))
        rays = np.float32(0.5) + np.float32(0.5) * np.sin(x * np.float32(9.0 + 3 * k) + warp + np.float32(t * 0.5))
        rays *= rays
        rays = np.float32(0.35) + np.float32(0.65) * rays * (np.float32(0.7) + np.float32(0.3) * np.sin(
            x * np.float32(23.0) - np.float32(t * 0.9 + ph)))
        # A thin bright rim at the lower edge, rays fading slowly upwards, a quick fade below.
        up = np.exp(np.minimum(d, 0.0) * np.float32(1.8)) * rays[None, :]
        rim = np.exp(-(d * d) * np.float32(250.0))
        below = np.where(d > 0, np.exp(-(d * d) * np.float32(40.0)), np.float32(1.0))
        layer = (np.float32(0.65) * up * below + np.float32(0.35) * rim) * np.float32(1.0 / (1 + 0.5 * k))
        # Colour climbs the palette with height above the edge (green rim, violet tops on the default palette).
        hue_sum += layer * np.clip(np.float32(0.05) - d * np.float32(0.75), 0.0, 1.0)
        light += layer
    u = (hue_sum + sky * np.float32(0.85)) / (light + sky)
    return u, np.clip(light + sky, 0.0, 1.0)


def _tunnel(X, Y, t, scale, n, noise):
    r = np.sqrt(X * X + Y * Y) + np.float32(1e-3)
    th = np.arctan2(Y, X) * np.float32(1.0 / (2 * math.pi))
    z = np.float32(1.2 / scale) / r + np.float32(t * 0.6)
    ang = th + np.float32(t * 0.03) + z * np.float32(0.04)  # a gentle twist with depth
    rings = np.float32(0.5) + np.float32(0.5) * np.cos(z * _TAU)
    segs = np.float32(0.5) + np.float32(0.5) * np.cos(ang * _TAU * np.float32(2 + 2 * n))
    a = (np.float32(0.35) + np.float32(0.65) * rings * (np.float32(0.55) + np.float32(0.45) * segs))
    a *= _smoothstep(0.08, 0.9, r)  # the far end fades to black, which also hides the rings crowding there
    u = np.float32(0.5) + np.float32(0.5) * np.sin(z * np.float32(0.7) + ang * _TAU)
    return u, a


def _fbm(noise, gx, gy, octaves, t, drift):
    """Fractal sum of `octaves` drifting layers of the noise texture, in 0..1."""
    total = np.zeros(gx.shape, np.float32)
    amp, norm, freq = 1.0, 0.0, 1.0
    for k in range(octaves):
        # Offsets wrapped to the texture size in float64 so float32 maps stay precise however long it runs.
        ox = (t * drift * (1.0 + 0.5 * k) + 37.1 * k) % _NOISE_SIZE
        oy = (t * drift * (0.3 - 0.2 * k) + 91.7 * k) % _NOISE_SIZE
        mx = gx * np.float32(freq) + np.float32(ox)
        my = gy * np.float32(freq) + np.float32(oy)
        total += np.float32(amp) * cv2.remap(noise, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        norm += amp
        amp *= 0.45
        freq *= 2.0
    return total * np.float32(1.0 / norm)


def _clouds(X, Y, t, scale, n, noise):
    k = np.float32(_NOISE_SIZE / (16.0 * scale))  # ~28 texture pixels across the frame height at scale 1
    gx, gy = X * k, Y * k
    density = _fbm(noise, gx, gy, min(n, 5), t, 1.2)
    tint = _fbm(noise, gx * np.float32(0.3) + np.float32(50.0), gy * np.float32(0.3), 1, t, 0.4)
    # Contrast the fbm (it clusters around 0.5) into soft clouds on a dim sky.
    a = np.float32(0.3) + np.float32(0.7) * _smoothstep(0.3, 0.7, density)
    u = _smoothstep(0.25, 0.75, tint) * np.float32(0.6) + _smoothstep(0.3, 0.8, density) * np.float32(0.4)
    return u, a


def _gradient(X, Y, t, scale, n, noise):
    phi = 0.11 * t
    g = X * np.float32(math.cos(phi)) + Y * np.float32(math.sin(phi))
    u = np.float32(0.5) + np.float32(0.5) * np.sin(g * np.float32(1.1 / scale) + np.float32(0.35 * t))
    # Soft secondary bands across the sweep, more of them with complexity, and a gentle vignette.
    h = X * np.float32(-math.sin(phi * 0.7)) + Y * np.float32(math.cos(phi * 0.7))
    bands = np.float32(0.5) + np.float32(0.5) * np.sin(h * np.float32(0.8 * n / scale) - np.float32(0.23 * t))
    vig = np.float32(1.0) - np.float32(0.25) * (X * X * np.float32(0.3) + Y * Y * np.float32(0.5))
    a = (np.float32(0.75) + np.float32(0.25) * bands) * vig
    return u, a


_GENERATORS = {"plasma": _plasma, "aurora": _aurora, "tunnel": _tunnel, "clouds": _clouds, "gradient": _gradient}


def _palette(hue: float, spread: float, saturation: float, brightness: float) -> np.ndarray:
    """256 RGB colours (float32, 0..255): hue runs from `hue` to `hue + spread` degrees."""
    steps = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    hsv = np.empty((1, 256, 3), np.float32)
    hsv[0, :, 0] = (np.float32(hue) + steps * np.float32(spread)) % np.float32(360.0)
    hsv[0, :, 1] = saturation
    hsv[0, :, 2] = brightness * 255.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


class ProceduralSource(Source):
    """Animated procedural backgrounds (plasma, aurora, tunnel, clouds, gradient sweep), deterministic in pts."""

    params = {
        "pattern": ChoiceParam(default="gradient", choices=PATTERNS, doc="Which generator draws the frame"),
        "speed": FloatParam(default=1.0, min=0.0, max=5.0, unit="x", slew=0.3,
                            doc="Animation rate relative to normal; 0 freezes the picture"),
        "scale": FloatParam(default=1.0, min=0.25, max=4.0, unit="x", slew=0.3,
                            doc="Size of the features; above 1 zooms in (bigger, calmer shapes)"),
        "hue": FloatParam(default=140.0, min=0.0, max=360.0, unit="deg",
                          doc="Palette start hue (0 red, 120 green, 240 blue)"),
        "spread": FloatParam(default=150.0, min=0.0, max=360.0, unit="deg", slew=0.3,
                             doc="How far the palette runs round the colour wheel from `hue`"),
        "saturation": FloatParam(default=0.75, min=0.0, max=1.0, slew=0.2, doc="Colour intensity; 0 is greyscale"),
        "brightness": FloatParam(default=0.9, min=0.0, max=1.0, slew=0.2, doc="Overall light level; 0 is black"),
        "complexity": IntParam(default=3, min=1, max=6,
                               doc="Detail: more waves, curtains, rings or noise octaves (slightly dearer)"),
    }
    options = {
        "downscale": (4, "Render at the output size divided by this (1..16), then upscale; patterns are smooth"),
    }

    def open(self) -> None:
        ds = self.opts["downscale"]
        if not isinstance(ds, int) or isinstance(ds, bool) or not 1 <= ds <= 16:
            raise ValueError(f"option downscale={ds!r} must be an integer 1..16 ({self.label})")
        self._noise = _noise_texture()
        self._grid_key: tuple | None = None
        self._X = self._Y = None
        # Animation time: exactly anchor_time + (pts - anchor_pts) * speed, re-anchored when the speed changes.
        self._anchor_pts = 0.0
        self._anchor_time = 0.0
        self._speed = float(self.p.speed)
        self._last_pts = 0.0

    def _time(self, pts: float) -> float:
        speed = float(self.p.speed)
        if speed != self._speed:
            self._anchor_time += (self._last_pts - self._anchor_pts) * self._speed
            self._anchor_pts = self._last_pts
            self._speed = speed
        self._last_pts = pts
        return self._anchor_time + (pts - self._anchor_pts) * speed

    def _grid(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        ds = self.opts["downscale"]
        key = (width, height, ds)
        if key != self._grid_key:
            lw, lh = max(8, -(-width // ds)), max(8, -(-height // ds))
            aspect = width / height
            xs = ((np.arange(lw, dtype=np.float32) + 0.5) / lw * 2 - 1) * np.float32(aspect)
            ys = (np.arange(lh, dtype=np.float32) + 0.5) / lh * 2 - 1
            self._X, self._Y = np.meshgrid(xs, ys)
            self._grid_key = key
        return self._X, self._Y

    def render_small(self, ctx: FrameContext) -> np.ndarray:
        """The frame at reduced resolution (uint8 RGB), before upscaling."""
        X, Y = self._grid(ctx.width, ctx.height)
        t = self._time(ctx.pts)
        u, a = _GENERATORS[self.p.pattern](X, Y, t, float(self.p.scale), int(self.p.complexity), self._noise)
        pal = _palette(self.p.hue, self.p.spread, self.p.saturation, self.p.brightness)
        idx = (np.clip(u, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
        rgb = pal[idx]
        rgb *= np.clip(a, 0.0, 1.0)[..., None]
        return (rgb + np.float32(0.5)).astype(np.uint8)

    def process(self, ctx: FrameContext) -> np.ndarray:
        small = self.render_small(ctx)
        if small.shape[1] == ctx.width and small.shape[0] == ctx.height:
            return small
        return cv2.resize(small, (ctx.width, ctx.height), interpolation=cv2.INTER_LINEAR)

    def close(self) -> None:
        self._X = self._Y = None
