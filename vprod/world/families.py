"""The world families of the procedural renderer: each turns a camera state and the control knobs into a frame.

Everything here is vectorised numpy + OpenCV on float32 and written for a 256x144 frame in a few milliseconds on
one core. The 3D families (terrain, city, ocean) share one idea, a column renderer: for every screen column a ray
is sampled at increasing depth; each sample projects to a screen row; a running minimum over depth gives, for each
pixel, the nearest sample that covers it (the "voxel space" renderer, done for all columns at once by `span_fill`).
The sky, the sun and the light come from `Light` and `Sky`, shared by every outdoor family.

Per-seed content (height maps, star fields, textures, palettes) is built once from ``np.random.default_rng`` and is
read-only afterwards, so a frame is a pure function of (seed, family, camera state, controls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

F32 = np.float32
TAU = 2.0 * math.pi
_LINEAR_WRAP = dict(interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


# --- small helpers ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """The control vector as named floats, already clipped to 0..1 (see vprod.world.CONTROL_NAMES)."""

    yaw: float
    pitch: float
    speed: float
    zoom: float
    daylight: float
    hue: float
    energy: float
    fog: float

    @property
    def turn(self) -> float:
        """Yaw rate in -1..1 (negative turns left)."""
        return (self.yaw - 0.5) * 2.0

    @property
    def hue_deg(self) -> float:
        """Palette rotation in degrees, 0 at the neutral 0.5."""
        return (self.hue - 0.5) * 360.0

    @property
    def fov_deg(self) -> float:
        return 100.0 - 66.0 * self.zoom  # 0 wide (100 deg) .. 1 narrow (34 deg); 67 at neutral


def smoothstep(e0: float, e1: float, x):
    t = np.clip((x - e0) * (1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def lerp(a, b, t):
    return a + (b - a) * t


def hue_matrix(deg: float, amount: float = 1.0) -> np.ndarray:
    """3x3 matrix rotating RGB colours about the grey axis by `deg` (red -> yellow -> green for positive)."""
    a = math.radians(deg * amount)
    c, s = math.cos(a), math.sin(a)
    k, q = (1.0 - c) / 3.0, s / math.sqrt(3.0)
    return np.array([[c + k, k - q, k + q], [k + q, c + k, k - q], [k - q, k + q, c + k]], F32)


def rotate(rgb, m: np.ndarray):
    """Apply a hue matrix to colours (..., 3); works for tuples and arrays."""
    return np.asarray(rgb, F32) @ m.T


def hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    """One RGB colour (float32, 0..1) from hue in degrees, saturation and value."""
    h = (h_deg % 360.0) / 60.0
    i, f = int(h), h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6], F32)


def tileable_noise(rng: np.random.Generator, n: int, beta: float, m: int | None = None) -> np.ndarray:
    """Seamlessly tiling 1/f^beta noise (m x n, float32, 0..1) by spectral synthesis."""
    m = m or n
    white = rng.standard_normal((m, n))
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(m)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec *= f ** (-beta / 2.0)
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(m, n)).astype(F32)
    out -= out.min()
    out /= max(float(out.max()), 1e-6)
    return out


def pow_fast(x, n_squarings: int):
    """x ** (2 ** n) by repeated squaring (cheaper than np.power on float32 arrays)."""
    for _ in range(n_squarings):
        x = x * x
    return x


def scan_min(a: np.ndarray) -> np.ndarray:
    """Running minimum down axis 0 (log-step scan; numpy's minimum.accumulate on axis 0 is 5x slower)."""
    a = a.copy()
    s = 1
    while s < a.shape[0]:
        np.minimum(a[s:], a[:-s].copy(), out=a[s:])
        s *= 2
    return a


def span_fill(sy: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """For samples ordered near to far down axis 0 (S, W) with screen rows `sy`, the nearest sample per pixel.

    Returns (kstar, run): kstar (height, W) int32 is the sample index each pixel shows (S where nothing covers it:
    sky), run is the running minimum of `sy` (the top edge of what is drawn so far). A sample k covers the rows from
    ceil(run[k]) down to the previous run; so pixel row y shows the first k whose ceil(run[k]) <= y.
    """
    n, w = sy.shape
    run = scan_min(sy)
    r = np.clip(np.ceil(run), 0, height).astype(np.int32)
    flat = (r * w + np.arange(w, dtype=np.int32)).ravel()
    m = np.full((height + 1) * w, n, np.int32)
    np.minimum.at(m, flat, _sample_index(n, w))
    kstar = scan_min(m.reshape(height + 1, w)[:height])
    return kstar, run


_INDEX_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _sample_index(n: int, w: int) -> np.ndarray:
    key = (n, w)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = np.repeat(np.arange(n, dtype=np.int32), w)
    return _INDEX_CACHE[key]


def gather(table: np.ndarray, kstar: np.ndarray) -> np.ndarray:
    """Per-pixel values table[kstar[y, x], x] for a per-sample table (S+1, W[, C])."""
    w = table.shape[1]
    flat = (kstar * w + np.arange(w, dtype=np.int32)).ravel()
    rest = table.shape[2:]
    return np.take(table.reshape((-1,) + rest), flat, axis=0).reshape(kstar.shape + rest)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float32 0..1 RGB -> uint8, saturating, C-contiguous."""
    out = cv2.convertScaleAbs(img, alpha=255.0)
    return np.ascontiguousarray(out)


# --- light and sky ---------------------------------------------------------------------------------------------

# Keyframes over `daylight`: night, blue hour, sunset, afternoon, noon. Colours are display-space RGB 0..1.
_DAY = np.array([0.0, 0.25, 0.5, 0.7, 1.0])
_SUN_EL = np.array([-30.0, -7.0, 2.5, 24.0, 62.0])
_ZENITH = np.array([(0.01, 0.015, 0.045), (0.05, 0.07, 0.2), (0.16, 0.2, 0.42), (0.2, 0.4, 0.78), (0.17, 0.42, 0.88)])
_HORIZON = np.array([(0.03, 0.04, 0.09), (0.3, 0.24, 0.38), (0.98, 0.55, 0.32), (0.72, 0.82, 0.92),
                     (0.74, 0.86, 0.97)])
_SUNCOL = np.array([(0.0, 0.0, 0.0), (0.05, 0.03, 0.04), (1.0, 0.55, 0.28), (1.0, 0.92, 0.8), (1.0, 0.98, 0.93)])
_AMBIENT = np.array([(0.035, 0.045, 0.09), (0.12, 0.12, 0.2), (0.32, 0.26, 0.32), (0.36, 0.42, 0.52),
                     (0.42, 0.48, 0.58)])


def _interp(keys: np.ndarray, d: float) -> np.ndarray:
    if keys.ndim == 1:
        return np.float32(np.interp(d, _DAY, keys))
    return np.array([np.interp(d, _DAY, keys[:, i]) for i in range(keys.shape[1])], F32)


class Light:
    """Sky colours and the light source for one frame, from daylight, fog and hue (outdoor families).

    By day the light is the sun; at night a moon fades in elsewhere in the sky and lights the scene dimly.
    """

    def __init__(self, k: Knobs, sun_az: float, sky_hue: float = 0.3):
        d = k.daylight
        m = hue_matrix(k.hue_deg, sky_hue)
        self.zenith = rotate(_interp(_ZENITH, d), m)
        self.horizon = rotate(_interp(_HORIZON, d), m)
        self.ambient = _interp(_AMBIENT, d)
        self.sun_el = math.radians(float(_interp(_SUN_EL, d)))
        self.sun_az = sun_az
        self.sun_col = _interp(_SUNCOL, d)
        self.moon = float(smoothstep(0.32, 0.1, d))  # moon visibility
        self.moon_az = sun_az + 0.7
        self.moon_el = 0.32
        self.moon_col = np.array([0.55, 0.62, 0.8], F32)
        self.night = float(smoothstep(0.33, 0.08, d))
        # The light that shades the scene: the sun above the horizon, else the moon.
        if self.sun_el > -0.03 or self.moon <= 0.0:
            el, az, col = max(self.sun_el, 0.03), sun_az, self.sun_col
        else:
            el, az, col = self.moon_el, self.moon_az, self.moon_col * (0.35 * self.moon)
        self.light_el, self.light_az, self.light_col = el, az, col.astype(F32)
        self.light_dir = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)], F32)
        # Fog: thicker and greyer with the knob, coloured by the horizon.
        self.fog = k.fog
        grey = np.float32(self.horizon.mean())
        self.fog_col = lerp(self.horizon, np.array([grey, grey, grey], F32) * 1.05, 0.35 * k.fog).astype(F32)
        # Dusk glow towards the sun along the horizon.
        self.glow = float(smoothstep(0.22, 0.45, d) * smoothstep(0.8, 0.55, d))
        self.glow_col = np.array([1.0, 0.45, 0.2], F32) @ m.T


@dataclass
class View:
    """A level pinhole camera (pitch is a vertical shear of the image: the horizon row moves)."""

    width: int
    height: int
    f: float  # focal length in pixels
    hor: float  # horizon row
    yaw: float
    u: np.ndarray  # (W,) horizontal offset per column / f
    dx: np.ndarray  # (W,) world ray direction per column (forward + right * u), not normalised
    dy: np.ndarray

    @classmethod
    def make(cls, width: int, height: int, k: Knobs, yaw: float, pitch: float, base: float = 0.42):
        f = (width / 2.0) / math.tan(math.radians(k.fov_deg) / 2.0)
        hor = height * (base + 0.55 * pitch)
        u = ((np.arange(width, dtype=F32) + 0.5 - width / 2.0) / f).astype(F32)
        c, s = math.cos(yaw), math.sin(yaw)
        return cls(width, height, f, hor, yaw, u, (c - s * u).astype(F32), (s + c * u).astype(F32))

    def screen_of(self, az: float, el: float) -> tuple[float, float] | None:
        """Screen position of a direction (azimuth, elevation), or None when behind the camera."""
        a = (az - self.yaw + math.pi) % TAU - math.pi
        if math.cos(a) < 0.1:
            return None
        x = self.width / 2.0 + math.tan(a) * self.f
        y = self.hor - math.tan(el) * self.f / math.cos(a)
        return x, y


class Sky:
    """Gradient sky with sun, moon, dusk glow, drifting clouds and stars at night."""

    CLOUD_N = 256

    def __init__(self, rng: np.random.Generator, cloudiness: float | None = None):
        self.sun_az = float(rng.uniform(-0.55, 0.55))
        self.clouds = tileable_noise(rng, self.CLOUD_N, 3.0)
        self.cover = float(rng.uniform(0.3, 0.6) if cloudiness is None else cloudiness)
        self.wind = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
        # Star panorama: azimuth 0..2pi across, elevation 0..~60 deg up; soft dots so sampling is stable.
        pw, ph = 1024, 192
        stars = np.zeros((ph, pw), F32)
        n = 900
        ys, xs = rng.integers(0, ph, n), rng.integers(0, pw, n)
        stars[ys, xs] = (rng.random(n) ** 3 * 2.2 + 0.25).astype(F32)
        self.stars = cv2.GaussianBlur(stars, (0, 0), 0.6, borderType=cv2.BORDER_WRAP if False else cv2.BORDER_REFLECT)
        self.pano = (pw, ph)

    def render(self, v: View, rows: int, L: Light, k: Knobs, anim: float, cam: tuple[float, float]) -> np.ndarray:
        """The sky for screen rows [0, rows): (rows, W, 3) float32."""
        w = v.width
        if rows <= 0:
            return np.zeros((0, w, 3), F32)
        y = np.arange(rows, dtype=F32) + 0.5
        vv = (v.hor - y) / v.f  # tangent of elevation per row
        el = np.arctan(np.maximum(vv, 0.0))
        g = np.sqrt(np.clip(el * (1.0 / 0.9), 0.0, 1.0))
        row_col = L.horizon[None, :] + (L.zenith - L.horizon)[None, :] * g[:, None]
        row_col = np.where((vv < 0)[:, None], L.horizon * 0.85, row_col).astype(F32)
        sky = np.broadcast_to(row_col[:, None, :], (rows, w, 3)).copy()
        az = v.yaw + np.arctan(v.u)
        if L.glow > 0.01:  # warm band along the horizon towards the sun
            toward = pow_fast(np.maximum(np.cos(az - L.sun_az), 0.0).astype(F32), 2)
            band = np.exp(-np.maximum(vv, 0.0) * 7.0).astype(F32) * F32(L.glow * 0.5)
            sky += (band[:, None] * toward[None, :])[..., None] * L.glow_col
        # Stars at night (fixed to the sky: they scroll with yaw and pitch).
        if L.night > 0.02:
            pw, ph = self.pano
            sx = pw / TAU
            sy = ph / 1.1
            m = np.array([[sx / v.f, 0.0, (v.yaw % TAU) * sx - (w / 2.0) * sx / v.f],
                          [0.0, -sy / v.f, v.hor * sy / v.f]], np.float64)
            st = cv2.warpAffine(self.stars, m, (w, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_WRAP)
            fade = smoothstep(0.0, 0.12, vv) * F32(L.night * (1.0 - 0.9 * k.fog))
            tw = 0.75 + 0.25 * math.sin(anim * 3.1)  # a faint common twinkle
            sky += (st * fade[:, None] * F32(tw))[..., None] * np.array([0.9, 0.93, 1.0], F32)
        # Clouds on a plane above the camera (parallax: they drift slower than the ground).
        up = int(np.count_nonzero(vv > 0.015))
        if up > 0 and self.cover > 0.0:
            n = self.CLOUD_N
            dist = (1.0 / vv[:up]).astype(F32)
            sc = 22.0
            ox = (cam[0] * 0.08 + anim * 3.0 * self.wind[0]) % n
            oy = (cam[1] * 0.08 + anim * 3.0 * self.wind[1]) % n
            mx = (dist[:, None] * (v.dx * sc)[None, :] + F32(ox)).astype(F32)
            my = (dist[:, None] * (v.dy * sc)[None, :] + F32(oy)).astype(F32)
            dens = cv2.remap(self.clouds, mx, my, **_LINEAR_WRAP)
            thr = 1.0 - self.cover
            cov = smoothstep(thr - 0.05, thr + 0.22, dens) * smoothstep(0.015, 0.2, vv[:up])[:, None]
            lit = np.float32(0.4 + 0.6 * max(math.sin(L.sun_el) + 0.25, 0.0))
            ccol = (L.ambient * 1.6 + L.sun_col * 0.75 * lit + L.horizon * 0.25) * np.float32(1.0 - 0.6 * L.night)
            shade = (0.75 + 0.35 * dens)[..., None] * ccol
            c = (cov * 0.92)[..., None]
            sky[:up] += (shade - sky[:up]) * c
        # Sun and moon discs with halos.
        for az0, el0, col, vis, size in ((L.sun_az, L.sun_el, L.sun_col, 1.0, 0.035),
                                          (L.moon_az, L.moon_el, L.moon_col, L.moon, 0.03)):
            if vis <= 0.02 or el0 < -0.08:
                continue
            p = v.screen_of(az0, el0)
            if p is None or not (-0.8 * w < p[0] < 1.8 * w):
                continue
            xs = ((np.arange(w, dtype=F32) + 0.5 - p[0]) / v.f) ** 2
            ys = ((y - p[1]) / v.f) ** 2
            d2 = ys[:, None] + xs[None, :]
            r2 = size * size * (1.0 + 0.3 * (1.0 - v.f / 200.0))
            disc = smoothstep(r2 * 1.3, r2 * 0.7, d2)
            if az0 == L.sun_az:
                halo = np.exp(d2 * -30.0) * 0.55 + np.exp(d2 * -3.0) * 0.3
                amt = disc * 1.5 + halo * (1.0 - 0.5 * L.fog)
            else:
                amt = disc * 0.9 + np.exp(d2 * -60.0) * 0.12
            amt *= F32(vis * (1.0 - 0.7 * L.fog))
            sky += amt[..., None] * col
        if L.fog > 0.0:  # fog veils the sky towards its own colour
            sky += (L.fog_col - sky) * F32(0.75 * L.fog ** 1.5)
        return sky


def fog_factor(depth, density: float):
    return 1.0 - np.exp(depth * (-density))


# --- terrain ---------------------------------------------------------------------------------------------------


class Terrain:
    """Camera flight over mountains: a height-field column renderer with lakes and sea, sky, sun and fog."""

    N = 512  # map side in texels (world units), tiling
    HEIGHT = 95.0  # world units for a normalised height of 1
    SAMPLES = 150
    UNIT_SPEED = 110.0  # world units per second at speed 1

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.width, self.height = width, height
        n = self.N
        self.sky = Sky(rng)
        base = tileable_noise(rng, n, 2.5)
        ridge = 1.0 - np.abs(tileable_noise(rng, n, 2.1) * 2.0 - 1.0)
        h = base * 0.72 + ridge * 0.28 * (0.4 + base)
        h = (h - h.min()) / (h.max() - h.min())
        h = h ** 1.35
        self.sea = float(np.quantile(h, float(rng.uniform(0.18, 0.32))))
        hu = (h * self.HEIGHT).astype(F32)
        gx = (np.roll(hu, -1, 1) - np.roll(hu, 1, 1)) * 0.5
        gy = (np.roll(hu, -1, 0) - np.roll(hu, 1, 0)) * 0.5
        inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
        nz = inv
        sa, ca = math.sin(self.sky.sun_az), math.cos(self.sky.sun_az)
        na = (-gx * ca - gy * sa) * inv
        slope = np.sqrt(gx * gx + gy * gy)
        cav = np.clip(0.75 + (hu - cv2.GaussianBlur(hu, (0, 0), 6.0, borderType=cv2.BORDER_WRAP)) * 0.05, 0.35, 1.1)
        self.tex_a = np.ascontiguousarray(np.stack([hu, nz, na, cav], -1).astype(F32))
        # Albedo by height and slope: sand, grass, forest, rock, snow, with noise variation.
        var = tileable_noise(rng, n, 1.2)
        patch = tileable_noise(rng, n, 2.0)
        sea = self.sea
        rel = (h - sea) / (1.0 - sea)
        grass = np.stack([0.28 + 0.1 * var, 0.46 + 0.08 * var, 0.16 + 0.04 * var], -1)
        forest = np.stack([0.1 + 0.04 * var, 0.24 + 0.05 * var, 0.09 + 0.02 * var], -1)
        rock = np.stack([0.42 + 0.12 * var, 0.37 + 0.1 * var, 0.33 + 0.08 * var], -1)
        sand = np.array([0.78, 0.71, 0.52], F32)
        snow = np.array([0.95, 0.96, 1.0], F32)
        seabed = np.array([0.3, 0.33, 0.25], F32)
        wf = smoothstep(0.45, 0.6, patch) * smoothstep(0.55, 0.3, rel)
        col = grass * (1 - wf[..., None]) + forest * wf[..., None]
        rk = np.clip(smoothstep(0.9, 1.6, slope) + smoothstep(0.45, 0.6, rel), 0, 1)
        col = col * (1 - rk[..., None]) + rock * rk[..., None]
        sn = smoothstep(0.66, 0.74, rel + 0.12 * (var - 0.5)) * smoothstep(2.2, 1.2, slope)
        col = col * (1 - sn[..., None]) + snow * sn[..., None]
        sd = smoothstep(0.035, 0.01, rel)[..., None]
        col = col * (1 - sd) + sand * sd
        col = np.where((rel < 0)[..., None], seabed, col)
        sparkle = tileable_noise(rng, n, 0.3)
        self.tex_b = np.ascontiguousarray(np.concatenate([col, sparkle[..., None]], -1).astype(F32))
        s = self.SAMPLES
        kk = np.arange(s, dtype=np.float64)
        self.depth = (1.5 + 0.7 * kk + 0.0255 * kk * kk).astype(F32)  # ~1.5 .. 680 units
        self.hmap = hu
        self.sea_u = float(sea * self.HEIGHT)

    def ground(self, x: float, y: float) -> float:
        n = self.N
        return max(float(self.hmap[int(y) % n, int(x) % n]), self.sea_u)

    def altitude_target(self, st, k: Knobs) -> float:
        c, s = math.cos(st.yaw), math.sin(st.yaw)
        top = max(self.ground(st.x + c * d, st.y + s * d) for d in (0.0, 8.0, 20.0, 40.0, 70.0))
        return top + 18.0

    def render(self, st, k: Knobs) -> np.ndarray:
        w, hgt = self.width, self.height
        sway = k.energy * 0.06 * math.sin(st.anim * 0.9)
        v = View.make(w, hgt, k, st.yaw + sway, st.pitch + k.energy * 0.05 * math.sin(st.anim * 1.3), base=0.4)
        L = Light(k, self.sky.sun_az)
        n = self.N
        cx, cy = st.x % n, st.y % n
        cz = st.z + k.energy * 4.0 * math.sin(st.anim * 1.7)
        z = self.depth
        mx = (z[:, None] * v.dx[None, :] + F32(cx)).astype(F32)
        my = (z[:, None] * v.dy[None, :] + F32(cy)).astype(F32)
        a = cv2.remap(self.tex_a, mx, my, **_LINEAR_WRAP)
        b = cv2.remap(self.tex_b, mx, my, **_LINEAR_WRAP)
        hh = a[..., 0]
        sea = F32(self.sea_u)
        water = hh < sea
        hs = np.maximum(hh, sea)
        invz = (v.f / z).astype(F32)
        sy = F32(v.hor) + (F32(cz) - hs) * invz[:, None]
        kstar, run = span_fill(sy, hgt)
        # Shade the samples: albedo (hue-rotated) x (direct light + ambient), then water, then fog.
        hm = hue_matrix(k.hue_deg)
        alb = b[..., :3] @ hm.T
        se, ce = math.sin(L.light_el), math.cos(L.light_el)
        d_az = L.light_az - self.sky.sun_az  # the normal map's horizontal term is baked for the sun's azimuth
        lam = np.clip(a[..., 1] * F32(se) + a[..., 2] * F32(ce * math.cos(d_az)), 0.0, 1.0)
        amb = (0.55 + 0.45 * a[..., 1]) * a[..., 3]
        col = alb * (lam[..., None] * (L.light_col * 1.05) + amb[..., None] * L.ambient)
        # Water: depth-tinted body, sky reflection growing at grazing angles, glitter along the sun's path.
        depth_w = np.clip((sea - hh) * 0.08, 0.0, 1.0)
        body = lerp(rotate((0.12, 0.32, 0.36), hm), rotate((0.02, 0.08, 0.16), hm), depth_w[..., None])
        body = body * (L.ambient * 1.4 + L.light_col * 0.35)
        graze = ((F32(cz) - sea) / z).astype(F32)  # tangent of the downward angle, per depth
        fres = (0.03 + 0.97 * (1.0 - np.clip(graze * 1.6, 0.0, 1.0)) ** 5).astype(F32)
        refl = lerp(L.horizon, L.zenith, np.clip(graze * 2.5, 0.0, 1.0)[:, None])
        wcol = body * (1.0 - fres[:, None, None]) + refl[:, None, :] * fres[:, None, None]
        az = v.yaw + np.arctan(v.u)
        toward = np.maximum(np.cos(az - L.light_az), 0.0).astype(F32)
        el_match = np.exp(-((graze - math.tan(L.light_el)) / (0.04 + 0.12 * k.energy)) ** 2).astype(F32)
        spark = 0.35 + 0.65 * smoothstep(0.45, 0.8, 0.5 + 0.5 * np.sin(b[..., 3] * 60.0 + F32(st.anim * 2.5)))
        glit = pow_fast(toward, 5)[None, :] * el_match[:, None] * spark
        wcol = wcol + (glit * 1.6)[..., None] * L.light_col
        col = np.where(water[..., None], wcol, col)
        dens = 0.0011 + 0.011 * k.fog ** 1.3
        ff = fog_factor(z, dens)[:, None]
        fogc = L.fog_col[None, :] + (L.glow * 0.35 * pow_fast(toward, 3))[:, None] * L.glow_col
        col = col + (fogc[None, :, :] - col) * ff[..., None]
        table = np.concatenate([col.astype(F32), np.zeros((1, w, 3), F32)], 0)
        img = gather(table, kstar)
        rows = int(min(hgt, max(0.0, math.ceil(float(run[-1].max())))))
        if rows > 0:
            sky = self.sky.render(v, rows, L, k, st.anim, (st.x, st.y))
            top = img[:rows]
            np.copyto(top, sky, where=(kstar[:rows] == self.SAMPLES)[..., None])
        return to_uint8(img)
