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
        return fov_deg(self.zoom)


def fov_deg(zoom: float) -> float:
    """The camera's horizontal field of view for a zoom knob: 0 wide (100 deg) .. 1 narrow (34 deg); 67 at neutral."""
    return 100.0 - 66.0 * zoom


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


_LOGF: dict[tuple[int, int], np.ndarray] = {}


def _log_freq(m: int, n: int) -> np.ndarray:
    """log of the radial frequency of an m x n real FFT grid (cached; the DC term is 0)."""
    key = (m, n)
    if key not in _LOGF:
        fy = np.fft.fftfreq(m).astype(F32)[:, None]
        fx = np.fft.rfftfreq(n).astype(F32)[None, :]
        f = np.sqrt(fx * fx + fy * fy)
        f[0, 0] = 1.0
        _LOGF[key] = np.log(f)
    return _LOGF[key]


def tileable_noise(rng: np.random.Generator, n: int, beta: float, m: int | None = None) -> np.ndarray:
    """Seamlessly tiling 1/f^beta noise (m x n, float32, 0..1) by spectral synthesis."""
    m = m or n
    white = rng.standard_normal((m, n), dtype=F32)
    spec = np.fft.rfft2(white)
    amp = np.exp(_log_freq(m, n) * F32(-beta / 2.0))
    amp[0, 0] = 0.0
    spec *= amp
    out = np.fft.irfft2(spec, s=(m, n)).astype(F32)
    out -= out.min()
    out /= max(float(out.max()), 1e-6)
    return out


def blur_wrap(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a tiling image (OpenCV's blur has no wrap-around border)."""
    pad = int(math.ceil(3 * sigma)) + 1
    ext = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_WRAP)
    return cv2.GaussianBlur(ext, (0, 0), sigma)[pad:-pad, pad:-pad]


def wrap(x: np.ndarray, n: float) -> np.ndarray:
    """x modulo n for float32 arrays (np.mod is ~20x slower)."""
    return x - np.floor(x * F32(1.0 / n)) * F32(n)


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


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float32 0..1 RGB -> uint8, saturating, C-contiguous."""
    out = cv2.convertScaleAbs(img, alpha=255.0)
    return np.ascontiguousarray(out)


# --- light and sky ---------------------------------------------------------------------------------------------

# Keyframes over `daylight`: night, blue hour, sunset, afternoon, noon. Colours are display-space RGB 0..1.
_DAY = np.array([0.0, 0.25, 0.5, 0.7, 1.0])
_SUN_EL = np.array([-30.0, -7.0, 2.5, 24.0, 62.0])
_ZENITH = np.array([(0.02, 0.03, 0.085), (0.05, 0.07, 0.2), (0.16, 0.2, 0.42), (0.2, 0.4, 0.78), (0.17, 0.42, 0.88)])
_HORIZON = np.array([(0.06, 0.08, 0.15), (0.3, 0.24, 0.38), (0.98, 0.55, 0.32), (0.72, 0.82, 0.92),
                     (0.74, 0.86, 0.97)])
_SUNCOL = np.array([(0.0, 0.0, 0.0), (0.05, 0.03, 0.04), (1.0, 0.55, 0.28), (1.0, 0.92, 0.8), (1.0, 0.98, 0.93)])
_AMBIENT = np.array([(0.09, 0.11, 0.2), (0.12, 0.12, 0.2), (0.32, 0.26, 0.32), (0.36, 0.42, 0.52),
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
            el, az, col = self.moon_el, self.moon_az, self.moon_col * (0.6 * self.moon)
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
    """A level pinhole camera (pitch is a vertical shear of the image: the horizon row moves). Its optical centre
    is the picture's middle column and the horizon row: a zoom magnifies the picture about that point."""

    PITCH_SHEAR = 0.55  # the horizon row moves this share of the picture's height per unit of pitch

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
        hor = height * (base + cls.PITCH_SHEAR * pitch)
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
        self.stars = blur_wrap(stars, 0.6)
        self.pano = (pw, ph)

    def render(self, v: View, rows: int, L: Light, k: Knobs, anim: float, cam: tuple[float, float]) -> list:
        """The sky for screen rows [0, rows) as three float32 planes (rows, W): R, G, B."""
        w = v.width
        y = np.arange(rows, dtype=F32) + 0.5
        vv = (v.hor - y) / F32(v.f)  # tangent of elevation per row
        el = np.arctan(np.maximum(vv, 0.0))
        g = np.sqrt(np.clip(el * (1.0 / 0.9), 0.0, 1.0))
        below = vv < 0
        planes = []
        for c in range(3):
            col = L.horizon[c] + (L.zenith[c] - L.horizon[c]) * g
            col[below] = L.fog_col[c]
            planes.append(np.repeat(col[:, None], w, axis=1))
        az = v.yaw + np.arctan(v.u)
        if L.glow > 0.01:  # warm band along the horizon towards the sun
            toward = pow_fast(np.maximum(np.cos(az - L.sun_az), 0.0).astype(F32), 2)
            band = np.exp(np.maximum(vv, 0.0) * -7.0) * F32(L.glow * 0.5)
            add_rgb(planes, band[:, None] * toward[None, :], L.glow_col)
        # Stars at night (fixed to the sky: they scroll with yaw and pitch).
        if L.night > 0.02:
            pw, ph = self.pano
            sx = pw / TAU
            sy = ph / 1.1
            m = np.array([[sx / v.f, 0.0, (v.yaw % TAU) * sx - (w / 2.0) * sx / v.f],
                          [0.0, -sy / v.f, v.hor * sy / v.f]], np.float64)
            st = cv2.warpAffine(self.stars, m, (w, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_WRAP)
            tw = 0.75 + 0.25 * math.sin(anim * 3.1)  # a faint common twinkle
            fade = smoothstep(0.0, 0.12, vv) * F32(L.night * (1.0 - 0.9 * k.fog) * tw)
            add_rgb(planes, st * fade[:, None], (0.9, 0.93, 1.0))
        # Clouds on a plane above the camera (parallax: they drift slower than the ground).
        up = int(np.count_nonzero(vv > 0.015))
        if up > 0 and self.cover > 0.0:
            n = self.CLOUD_N
            dist = (1.0 / vv[:up]).astype(F32)
            sc = 22.0
            ox = (cam[0] * 0.08 + anim * 3.0 * self.wind[0]) % n
            oy = (cam[1] * 0.08 + anim * 3.0 * self.wind[1]) % n
            mx = dist[:, None] * (v.dx * sc)[None, :] + F32(ox)
            my = dist[:, None] * (v.dy * sc)[None, :] + F32(oy)
            dens = cv2.remap(self.clouds, wrap(mx, n), wrap(my, n), **_LINEAR_WRAP)
            thr = 1.0 - self.cover
            cov = smoothstep(thr - 0.05, thr + 0.22, dens) * (smoothstep(0.015, 0.2, vv[:up]) * 0.92)[:, None]
            lit = 0.4 + 0.6 * max(math.sin(L.sun_el) + 0.25, 0.0)
            ccol = (L.ambient * 1.6 + L.sun_col * (0.75 * lit) + L.horizon * 0.25) * (1.0 - 0.6 * L.night)
            shade = 0.75 + 0.35 * dens
            for c in range(3):
                p = planes[c][:up]
                p += (shade * F32(ccol[c]) - p) * cov
        # Sun and moon discs with halos.
        for is_sun, az0, el0, col, vis, size in ((True, L.sun_az, L.sun_el, L.sun_col, 1.0, 0.035),
                                                 (False, L.moon_az, L.moon_el, L.moon_col, L.moon, 0.03)):
            if vis <= 0.02 or el0 < -0.08:
                continue
            p = v.screen_of(az0, el0)
            if p is None or not (-0.8 * w < p[0] < 1.8 * w):
                continue
            xs = ((np.arange(w, dtype=F32) + 0.5 - F32(p[0])) / F32(v.f)) ** 2
            ys = ((y - F32(p[1])) / F32(v.f)) ** 2
            d2 = ys[:, None] + xs[None, :]
            r2 = size * size
            disc = smoothstep(r2 * 1.3, r2 * 0.7, d2)
            if is_sun:
                amt = disc * 1.5 + (np.exp(d2 * -30.0) * 0.55 + np.exp(d2 * -3.0) * 0.3) * F32(1.0 - 0.5 * L.fog)
            else:
                amt = disc * 0.9 + np.exp(d2 * -60.0) * 0.12
            add_rgb(planes, amt, col * (vis * (1.0 - 0.7 * L.fog)))
        if L.fog > 0.0:  # fog veils the sky towards its own colour
            a = 0.75 * L.fog ** 1.5
            for c in range(3):
                planes[c] += (F32(L.fog_col[c]) - planes[c]) * F32(a)
        return planes


def add_rgb(planes: list, amount: np.ndarray, rgb) -> None:
    """planes[c] += amount * rgb[c] for the three colour planes (in place)."""
    for c in range(3):
        planes[c] += amount * F32(rgb[c])


def merge(planes: list) -> np.ndarray:
    """Three float32 planes 0..1 -> (H, W, 3) uint8 RGB."""
    return to_uint8(cv2.merge(planes))


def fog_factor(depth, density: float):
    return 1.0 - np.exp(depth * (-density))


# --- terrain ---------------------------------------------------------------------------------------------------


class Terrain:
    """Camera flight over mountains: a height-field column renderer with lakes and sea, sky, sun and fog."""

    HORIZON = 0.40  # the horizon row at level pitch, a share of the picture's height (View.make)
    N = 512  # map side in texels (world units), tiling
    HEIGHT = 62.0  # world units for a normalised height of 1
    SAMPLES = 150
    UNIT_SPEED = 70.0  # world units per second at speed 1

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.width, self.height = width, height
        n = self.N
        self.sky = Sky(rng)
        base = tileable_noise(rng, n, 3.6)
        ridge = 1.0 - np.abs(tileable_noise(rng, n, 3.2) * 2.0 - 1.0)
        detail = tileable_noise(rng, n, 2.4)
        h = base * 0.75 + ridge * 0.25 * (0.3 + base) + detail * 0.025
        h = (h - h.min()) / (h.max() - h.min())
        h = h ** 1.6
        self.sea = float(np.quantile(h, float(rng.uniform(0.18, 0.32))))
        hu = (h * self.HEIGHT).astype(F32)
        gx = (np.roll(hu, -1, 1) - np.roll(hu, 1, 1)) * 0.5
        gy = (np.roll(hu, -1, 0) - np.roll(hu, 1, 0)) * 0.5
        inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
        nz = inv
        sa, ca = math.sin(self.sky.sun_az), math.cos(self.sky.sun_az)
        na = (-gx * ca - gy * sa) * inv
        slope = np.sqrt(gx * gx + gy * gy)
        cav = np.clip(0.75 + (hu - blur_wrap(hu, 6.0)) * 0.05, 0.35, 1.1)
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
        return max(float(self.hmap[math.floor(y) % n, math.floor(x) % n]), self.sea_u)

    def altitude_target(self, st, k: Knobs) -> float:
        c, s = math.cos(st.yaw), math.sin(st.yaw)
        top = max(self.ground(st.x + c * d, st.y + s * d) for d in (0.0, 8.0, 20.0, 40.0, 70.0))
        return top + 18.0

    def render(self, st, k: Knobs) -> np.ndarray:
        w, hgt = self.width, self.height
        sway = k.energy * 0.06 * math.sin(st.anim * 0.9)
        v = View.make(w, hgt, k, st.yaw + sway, st.pitch + k.energy * 0.05 * math.sin(st.anim * 1.3),
                      base=self.HORIZON)
        L = Light(k, self.sky.sun_az)
        n = self.N
        cx, cy = st.x % n, st.y % n
        cz = st.z + k.energy * 4.0 * math.sin(st.anim * 1.7)
        z = self.depth
        mx = wrap(z[:, None] * v.dx[None, :] + F32(cx), n)
        my = wrap(z[:, None] * v.dy[None, :] + F32(cy), n)
        ha, nz, na, cav = cv2.split(cv2.remap(self.tex_a, mx, my, **_LINEAR_WRAP))
        r, g, b, sp = cv2.split(cv2.remap(self.tex_b, mx, my, **_LINEAR_WRAP))
        sea = F32(self.sea_u)
        water = ha < sea
        hs = np.maximum(ha, sea)
        invz = (v.f / z).astype(F32)
        sy = (F32(cz) - hs) * invz[:, None] + F32(v.hor)
        kstar, run = span_fill(sy, hgt)
        # Shade the samples: albedo (hue-rotated) x (direct light + ambient); water; fog. All per colour plane.
        hm = hue_matrix(k.hue_deg)
        alb = [r * hm[c, 0] + g * hm[c, 1] + b * hm[c, 2] for c in range(3)]
        se, ce = math.sin(L.light_el), math.cos(L.light_el)
        d_az = L.light_az - self.sky.sun_az  # the normal map's horizontal term is baked for the sun's azimuth
        lam = np.clip(nz * F32(se) + na * F32(ce * math.cos(d_az)), 0.0, 1.0)
        amb = (nz * 0.45 + 0.55) * cav
        # Water: depth-tinted body, sky reflection growing at grazing angles, glitter along the light's path.
        depth_w = np.clip((sea - ha) * 0.08, 0.0, 1.0)
        shallow, deep = rotate((0.12, 0.32, 0.36), hm), rotate((0.02, 0.08, 0.16), hm)
        wl = L.ambient * 1.4 + L.light_col * 0.35
        graze = ((F32(cz) - sea) / z).astype(F32)  # tangent of the downward angle, per depth
        fres = (0.03 + 0.97 * (1.0 - np.clip(graze * 1.6, 0.0, 1.0)) ** 5).astype(F32)
        gr = np.clip(graze * 2.5, 0.0, 1.0)
        az = v.yaw + np.arctan(v.u)
        toward = np.maximum(np.cos(az - L.light_az), 0.0).astype(F32)
        el_match = np.exp(-((graze - math.tan(L.light_el)) / (0.04 + 0.12 * k.energy)) ** 2).astype(F32)
        spark = smoothstep(0.45, 0.8, np.sin(sp * 60.0 + F32(st.anim * 2.5)) * 0.5 + 0.5) * 0.65 + 0.35
        glit = spark * (pow_fast(toward, 5)[None, :] * (el_match * 1.6)[:, None])
        dens = 0.0011 + 0.011 * k.fog ** 1.3
        ff = fog_factor(z, dens)[:, None]
        glowc = (L.glow * 0.35) * pow_fast(toward, 3)
        wmask = water.astype(F32)
        flat = (kstar * w + np.arange(w, dtype=np.int32)).ravel()
        rows = int(min(hgt, max(0.0, math.ceil(float(run[-1].max())))))
        sky = self.sky.render(v, rows, L, k, st.anim, (st.x, st.y)) if rows > 0 else None
        skymask = kstar[:rows] == self.SAMPLES
        out = []
        for c in range(3):
            land = alb[c] * (lam * F32(L.light_col[c] * 1.05) + amb * F32(L.ambient[c]))
            body = (shallow[c] + (deep[c] - shallow[c]) * depth_w) * F32(wl[c])
            refl = (L.horizon[c] + (L.zenith[c] - L.horizon[c]) * gr)[:, None]
            wat = body + (refl - body) * fres[:, None] + glit * F32(L.light_col[c])
            col = land + (wat - land) * wmask
            fogc = (F32(L.fog_col[c]) + glowc * F32(L.glow_col[c]))[None, :]
            col += (fogc - col) * ff
            table = np.concatenate([col, np.zeros((1, w), F32)], 0)
            plane = np.take(table.ravel(), flat).reshape(hgt, w)
            if sky is not None:
                np.copyto(plane[:rows], sky[c], where=skymask)
            out.append(plane)
        return merge(out)


# --- city ------------------------------------------------------------------------------------------------------


def _hash(a: np.ndarray) -> np.ndarray:
    """Integer hash (int32 in, 0..255 out) for per-window randomness."""
    a = a * np.int32(-1640531535)
    a ^= a >> 15
    a = a * np.int32(0x2C1B3C6D)
    a ^= a >> 12
    return (a >> 8) & 255


class City:
    """Flight over a grid city: exact ray-grid traversal per column, facades with windows, lit at night."""

    HORIZON = 0.42  # the horizon row at level pitch (View.make)
    G = 128  # cells per side (tiling); one cell is one world unit
    BLOCK = 5  # every 5th row / column of cells is a street
    UNIT_SPEED = 14.0
    TMAX = 46.0  # view distance in cells
    WPU = 4.0  # windows per unit along a facade
    FPU = 4.0  # floors per unit of height

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.width, self.height = width, height
        g = self.G
        self.sky = Sky(rng, cloudiness=float(rng.uniform(0.15, 0.45)))
        district = tileable_noise(rng, g, 3.0)
        h = (0.45 + 2.6 * district ** 1.6) * rng.lognormal(0.0, 0.35, (g, g))
        towers = rng.random((g, g)) < 0.01 + 0.07 * district
        h = np.where(towers, h * rng.uniform(1.8, 3.2, (g, g)) + 2.0, h)
        idx = np.arange(g)
        street = (idx[:, None] % self.BLOCK == 0) | (idx[None, :] % self.BLOCK == 0)
        park = (~street) & (rng.random((g, g)) < 0.05)
        h = np.where(street | park, 0.0, np.clip(h, 0.35, 13.0))
        self.hmap = h.astype(F32)
        self.kind = np.where(street, 0, np.where(park, 1, 2)).astype(np.int32)  # 0 street, 1 park, 2 building
        tints = np.array([(0.62, 0.6, 0.56), (0.72, 0.63, 0.48), (0.46, 0.53, 0.62), (0.58, 0.38, 0.3),
                          (0.8, 0.79, 0.76), (0.34, 0.38, 0.45), (0.66, 0.66, 0.7)], F32)
        pick = rng.integers(0, len(tints), (g, g))
        tint = tints[pick] * rng.uniform(0.85, 1.1, (g, g, 1))
        tint[street] = (0.2, 0.2, 0.22)  # asphalt
        tint[park] = (0.16, 0.3, 0.12)
        # Per-cell tables, with one more entry for "no cell" (the sky), indexed by cell id.
        self.tint = np.concatenate([tint.reshape(-1, 3), [(0.0, 0.0, 0.0)]], 0).astype(F32)
        lit = rng.uniform(0.25, 0.75, (g, g)) * (h > 0)
        self.lit_frac = np.append(lit.ravel(), 0.0).astype(F32)
        self.kind = np.append(self.kind.ravel(), 2).astype(np.int32)
        self.cols = np.arange(width, dtype=np.int32)

    def ground(self, x: float, y: float) -> float:
        g = self.G
        return float(self.hmap[int(math.floor(y)) % g, int(math.floor(x)) % g])

    def altitude_target(self, st, k: Knobs) -> float:
        c, s = math.cos(st.yaw), math.sin(st.yaw)
        top = max(self.ground(st.x + c * d + ox, st.y + s * d + oy)
                  for d in (0.0, 2.0, 4.0, 7.0) for ox, oy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)))
        return max(top + 2.2, 5.5)

    def render(self, st, k: Knobs) -> np.ndarray:
        w, hgt, g = self.width, self.height, self.G
        sway = k.energy * 0.05 * math.sin(st.anim * 1.1)
        v = View.make(w, hgt, k, st.yaw + sway, st.pitch + k.energy * 0.04 * math.sin(st.anim * 1.6),
                      base=self.HORIZON)
        L = Light(k, self.sky.sun_az)
        cx, cy = st.x % g, st.y % g
        cz = st.z + k.energy * 0.35 * math.sin(st.anim * 2.1)
        dx, dy = v.dx, v.dy
        tmax = self.TMAX
        nk = int(math.ceil(tmax * float(max(np.abs(dx).max(), np.abs(dy).max())))) + 1
        j = np.arange(nk, dtype=F32)[None, :]
        # Grid-line crossing distances along each column's ray, x lines then y lines, merged by sorting.
        with np.errstate(divide="ignore"):
            ix_, iy_ = 1.0 / dx, 1.0 / dy
        bx = np.where(dx > 0, math.floor(cx) + 1.0, math.floor(cx)).astype(F32)
        by = np.where(dy > 0, math.floor(cy) + 1.0, math.floor(cy)).astype(F32)
        tx = (bx[:, None] - F32(cx) + np.sign(dx)[:, None] * j) * np.abs(ix_)[:, None] * np.sign(dx)[:, None]
        ty = (by[:, None] - F32(cy) + np.sign(dy)[:, None] * j) * np.abs(iy_)[:, None] * np.sign(dy)[:, None]
        t = np.concatenate([tx, ty], 1)
        t = np.nan_to_num(t, nan=tmax, posinf=tmax)
        np.minimum(t, F32(tmax), out=t)
        t.sort(axis=1)
        bnd = np.empty((t.shape[1] + 2, w), F32)  # boundaries near -> far, (M, W)
        bnd[0] = 0.25
        bnd[1:-1] = t.T
        bnd[-1] = tmax
        np.maximum(bnd, F32(0.25), out=bnd)
        tf, tb = bnd[:-1], bnd[1:]  # segment front / back distance
        tm = (tf + tb) * 0.5
        px = tm * dx + F32(cx)
        py = tm * dy + F32(cy)
        cid = (np.floor(py).astype(np.int32) & (g - 1)) * g + (np.floor(px).astype(np.int32) & (g - 1))
        hseg = self.hmap.ravel()[cid]
        nseg = hseg.shape[0]
        # Which grid line made each front boundary: an x line when x is on an integer there.
        fx = tf * dx + F32(cx)
        fy = tf * dy + F32(cy)
        on_x = np.abs(fx - np.round(fx)) < np.abs(fy - np.round(fy))
        # Samples: front top edge (tf, h) then back top edge (tb, h) of every segment.
        sy = np.empty((2 * nseg, w), F32)
        f = F32(v.f)
        sy[0::2] = (F32(cz) - hseg) * f / tf + F32(v.hor)
        sy[1::2] = (F32(cz) - hseg) * f / tb + F32(v.hor)
        kstar, run = span_fill(sy, hgt)
        seg = kstar >> 1
        nsamp = 2 * nseg
        cols = self.cols

        def pick(a, fill=0):  # per-segment table -> per pixel (the sky row reads `fill`)
            t = np.concatenate([a, np.full((1, w), fill, a.dtype)], 0)
            return np.take(t.ravel(), flat).reshape(hgt, w)

        flat = (seg * w + cols).ravel()
        h_p = pick(hseg)
        tf_p = pick(tf, tmax)
        cid_p = pick(cid, g * g)
        onx_p = pick(on_x.astype(F32))
        # Direct and ambient light per sample: facades by their orientation, roofs and ground by the sun's height.
        ldir = L.light_dir
        face = np.where(on_x, -np.sign(dx)[None, :] * ldir[0], -np.sign(dy)[None, :] * ldir[1])
        face = np.maximum(face, 0.0) * F32(1.3 * math.cos(L.light_el))
        sun_up = max(float(ldir[2]), 0.0)
        bld = hseg > 0
        direct = np.empty((nsamp + 1, w), F32)
        ambient = np.empty((nsamp + 1, w), F32)
        direct[0:-1:2] = np.where(bld, face, F32(sun_up))
        direct[1:-1:2] = F32(sun_up) * np.where(bld, F32(0.75), F32(1.0))
        ambient[0:-1:2] = np.where(bld, F32(0.9), F32(1.0))
        ambient[1:-1:2] = np.where(bld, F32(0.75), F32(1.0))
        direct[-1] = 0.0
        ambient[-1] = 0.0
        sflat = (kstar * w + cols).ravel()
        direct_p = np.take(direct.ravel(), sflat).reshape(hgt, w)
        amb_p = np.take(ambient.ravel(), sflat).reshape(hgt, w)
        wall = (h_p > 0) & ((kstar & 1) == 0)
        wallf = wall.astype(F32)
        rows_y = np.arange(hgt, dtype=F32) + F32(0.5 - v.hor)  # pixel row minus horizon
        inv_row = (1.0 / np.maximum(rows_y, 0.05))[:, None]
        flatd = (F32(cz) - h_p) * (f * inv_row)  # depth of a roof or ground pixel
        tp = flatd + (tf_p - flatd) * wallf  # pixel depth
        wx = tp * dx[None, :] + F32(cx)
        wy = tp * dy[None, :] + F32(cy)
        # Facades: floors and window columns; windows blur to their average coverage far away.
        hp = F32(cz) - rows_y[:, None] * tf_p * F32(1.0 / v.f)
        fu = (wx + (wy - wx) * onx_p) * F32(self.WPU)
        fv = hp * F32(self.FPU)
        ppp = f / (tf_p * F32(self.WPU))  # pixels per window period
        sharp = np.maximum(ppp, 1.0)
        box = (np.clip((0.3 - np.abs(fu - np.floor(fu) - 0.5)) * sharp, 0.0, 1.0)
               * np.clip((0.27 - np.abs(fv - np.floor(fv) - 0.55)) * sharp, 0.0, 1.0))
        near = smoothstep(0.9, 2.6, ppp)
        win = (box * near + F32(0.3) * (1.0 - near)) * wallf
        hv = _hash(cid_p * 977 + fu.astype(np.int32) * 131 + fv.astype(np.int32) * 7919)
        litp = np.take(self.lit_frac, cid_p)
        lit = (hv < (litp * 256.0)).astype(F32) * near + litp * (1.0 - near)
        glow_on = float(smoothstep(0.55, 0.25, k.daylight))  # windows and streets light up from dusk
        warm = hsv(40.0 + k.hue_deg, 0.55, 1.0)
        flick = 0.85 + 0.15 * math.sin(st.anim * 7.0) * k.energy
        dens = 0.008 + 0.06 * k.fog ** 1.3
        ff = np.maximum(fog_factor(tp, dens), smoothstep(0.6 * tmax, 0.97 * tmax, tp))
        hm = hue_matrix(k.hue_deg, 0.5)
        tint = self.tint @ hm.T
        tint_p = [np.take(tint[:, c], cid_p) for c in range(3)]
        rows = int(min(hgt, max(0.0, math.ceil(float(run[-1].max())))))
        sky = self.sky.render(v, rows, L, k, st.anim, (st.x, st.y)) if rows > 0 else None
        skymask = kstar[:rows] >= nsamp
        night_haze = np.array([0.14, 0.08, 0.05], F32) * F32(L.night)
        lights = None
        if glow_on > 0.0:
            # Streets at night: lamp pools at each street cell's centre and car lights moving along the lanes.
            kind_p = np.take(self.kind, cid_p)
            sel = np.flatnonzero((kind_p == 0) & (kstar < nsamp))
            sx, sy_ = wx.ravel()[sel], wy.ravel()[sel]
            gx, gy = sx - np.floor(sx) - 0.5, sy_ - np.floor(sy_) - 0.5
            pool = np.exp((gx * gx + gy * gy) * F32(-9.0))
            ewx = np.abs(gy) < 0.32  # cars run along x on east-west streets, along y on north-south ones
            lane = np.where(ewx, gy, gx)
            pos = np.where(ewx, sx, sy_) * np.sign(lane)
            traffic = 0.25 + 0.6 * k.energy
            cars = smoothstep(1.0 - 0.12 * traffic, 1.0, np.sin(pos * 2.3 - F32(st.anim * 3.0)))
            cars *= smoothstep(0.2, 0.12, np.abs(np.abs(lane) - 0.18))
            lights = (sel, pool * F32(glow_on), cars * F32(0.9 * glow_on))
        wmix = lit * F32(glow_on)
        out = []
        for c in range(3):
            col = tint_p[c] * (direct_p * F32(L.light_col[c]) + amb_p * F32(L.ambient[c]))
            glass = F32((L.horizon[c] * 0.5 + 0.05) * 0.8)
            wcol = wmix * F32(warm[c] * 1.4 * flick - glass) + glass
            col += (wcol - col) * win
            if lights is not None:
                sel, pool, cars = lights
                flat_col = col.reshape(-1)
                flat_col[sel] += pool * F32(0.55 * warm[c] + 0.1) + cars
            fc = F32(L.fog_col[c] + night_haze[c])
            col += (fc - col) * ff
            if sky is not None:
                np.copyto(col[:rows], sky[c], where=skymask)
            out.append(col)
        return merge(out)


# --- tunnel ----------------------------------------------------------------------------------------------------


class Tunnel:
    """Flight down an endless bending tunnel: panels, strip and ring lights, pulses that race past with energy."""

    UNIT_SPEED = 6.0  # tunnel radius is 1
    TA, TL = 256, 256  # texture texels around, along one period
    PERIOD = 8.0  # world units per texture period along the tunnel

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.width, self.height = width, height
        self.sides = int(rng.choice([0, 0, 4, 6, 8]))  # 0: round
        self.jitter = float(rng.uniform(-12.0, 12.0))
        ta, tl = self.TA, self.TL
        nseg = (self.sides * 2) if self.sides else int(rng.choice([10, 12, 16]))
        nring = int(rng.choice([2, 4]))
        u = np.arange(ta)[None, :]
        vv = np.arange(tl)[:, None]
        pu = (u * nseg) // ta
        pv = (vv * nring) // tl
        shade = rng.uniform(0.55, 0.95, (nring, nseg))[pv, pu]
        grain = tileable_noise(rng, ta, 1.0, tl) * 0.18
        su = (u * nseg) % ta
        sv = (vv * nring) % tl
        seam = ((np.minimum(su, ta - su) < 2 * nseg / 8 + 1) | (np.minimum(sv, tl - sv) < 2)).astype(F32)
        alb = (shade + grain) * (1.0 - 0.7 * seam)
        # Emissive: dashed strips along the tunnel on a few seams, and rings.
        strips = rng.choice(nseg, size=min(nseg, int(rng.integers(2, 4))), replace=False)
        em = np.zeros((tl, ta), F32)
        dash = ((vv * 16 // tl) % 3 != 0).astype(F32)
        for s_ in strips:
            cu = s_ * ta / nseg
            d = np.minimum(np.abs(u - cu), ta - np.abs(u - cu))
            em += np.clip(1.6 - d * 0.6, 0.0, 1.0) * dash
        ring_v = int(rng.integers(0, tl // nring))
        dv = (vv - ring_v) % (tl // nring)
        dv = np.minimum(dv, tl // nring - dv)
        em += np.clip(3.0 - dv * 1.0, 0.0, 1.0) * (((u * 24 // ta) % 2) == 0) * 0.9
        self.tex = np.ascontiguousarray(np.stack([alb.astype(F32), np.clip(em, 0, 1).astype(F32)], -1))
        self.mean_alb = float(alb.mean())
        xs = (np.arange(width, dtype=F32) + 0.5 - width / 2.0) / (width / 2.0)
        ys = (np.arange(height, dtype=F32) + 0.5 - height / 2.0) / (width / 2.0)
        self.X = np.repeat(xs[None, :], height, 0)
        self.Y = np.repeat(ys[:, None], width, 1)

    def _depth(self, qx, qy, roll):
        mag, ang = cv2.cartToPolar(qx, qy)
        if self.sides:
            n = self.sides
            sector = TAU / n
            a = ang + F32(roll)
            a = a - np.floor(a * F32(1.0 / sector)) * F32(sector) - F32(sector / 2)
            r = F32(math.cos(math.pi / n)) / np.cos(a)
        else:
            r = F32(1.0)
        return r / np.maximum(mag, F32(1e-3)), ang

    def render(self, st, k: Knobs) -> np.ndarray:
        th = F32(math.tan(math.radians(k.fov_deg) / 2.0))
        X, Y = self.X * th, self.Y * th
        bx = F32(k.turn * 0.12 + k.energy * 0.025 * math.sin(st.anim * 0.7))
        by = F32(st.pitch * 0.12 + k.energy * 0.025 * math.sin(st.anim * 0.9))
        roll = st.yaw * 0.35
        # Depth along the tunnel for each pixel: the wall at depth z projects to a circle (polygon) of radius 1/z
        # whose centre drifts by o(z) = b z / (1 + z / 4) as the tunnel bends away (saturating, so the far end stays
        # in view and |p - o(z)| = r / z has one root near the straight-tunnel guess): fixed-point iteration.
        z, ang = self._depth(X, Y, roll)
        for _ in range(3):
            np.minimum(z, F32(60.0), out=z)
            sat = z / (1.0 + z * F32(0.25))
            z, ang = self._depth(X - bx * sat, Y - by * sat, roll)
        np.minimum(z, F32(60.0), out=z)
        twist = F32(k.energy * 0.05) * np.sin(z * F32(0.35) + F32(st.anim * 1.3))
        ta, tl = self.TA, self.TL
        mu = wrap((ang * F32(1.0 / TAU) + F32(roll / TAU) + twist) * F32(ta), ta)
        zoff = (st.dist % self.PERIOD) * (tl / self.PERIOD)
        mv = wrap(z * F32(tl / self.PERIOD) + F32(zoff), tl)
        alb, em = cv2.split(cv2.remap(self.tex, mu, mv, **_LINEAR_WRAP))
        far = smoothstep(8.0, 30.0, z)  # texture detail averages out with depth (no shimmer at the centre)
        alb += (F32(self.mean_alb) - alb) * far
        em *= 1.0 - far * 0.7
        pulse = pow_fast(np.sin(z * F32(0.55) - F32(st.anim * 4.0)) * 0.5 + 0.5, 3)
        glow = em * (0.55 + 0.45 * k.daylight) + pulse * F32(0.15 + 1.1 * k.energy) * (0.3 + em)
        light = F32(0.12 + 0.9 * k.daylight) / (1.0 + z * F32(0.09))
        c1 = hsv(205.0 + self.jitter + k.hue_deg, 0.8, 1.0)  # light colour
        c2 = hsv(265.0 + self.jitter + k.hue_deg, 0.45, 1.0)  # panel tint
        dens = 0.03 + 0.22 * k.fog ** 1.2
        ff = 1.0 - np.exp(z * F32(-dens))
        fogc = c1 * (0.04 + 0.45 * k.fog * (0.3 + 0.7 * k.daylight)) + c2 * 0.03
        out = []
        for c in range(3):
            col = alb * light * F32(c2[c]) + glow * F32(c1[c] * 1.2)
            col += (F32(fogc[c]) - col) * ff
            out.append(col)
        return merge(out)


# --- plasma ----------------------------------------------------------------------------------------------------


class Plasma:
    """A flowing, domain-warped colour field seen as a plane the camera glides over (smooth: drawn at half size)."""

    UNIT_SPEED = 2.5

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.width, self.height = width, height
        self.sw, self.sh = max(16, (width + 1) // 2), max(9, (height + 1) // 2)
        aspect = width / height
        xs = ((np.arange(self.sw, dtype=F32) + 0.5) / self.sw * 2.0 - 1.0) * F32(aspect)
        ys = (np.arange(self.sh, dtype=F32) + 0.5) / self.sh * 2.0 - 1.0
        self.X = np.repeat(xs[None, :], self.sh, 0)
        self.Y = np.repeat(ys[:, None], self.sw, 1)
        self.ph = rng.uniform(0.0, TAU, 8)
        self.fq = rng.uniform(0.8, 1.25, 6)
        self.jitter = float(rng.uniform(-12.0, 12.0))
        self.layout = int(rng.integers(0, 3))

    def _palette(self, k: Knobs) -> np.ndarray:
        h1, h2 = 320.0 + self.jitter + k.hue_deg, 25.0 + self.jitter + k.hue_deg
        keys = [(h1, 0.9, 0.12), (h1, 0.85, 0.75), (h1 + 20, 0.55, 1.0), (h2, 0.75, 1.0), (h2 - 15, 0.9, 0.45),
                (h1 - 30, 0.8, 0.2)]
        if self.layout == 1:
            keys = keys[::-1]
        elif self.layout == 2:
            keys = keys[2:] + keys[:2]
        cols = np.array([hsv(*kk) for kk in keys], F32)
        t = np.linspace(0.0, 1.0, len(keys))
        s = np.linspace(0.0, 1.0, 256)
        return np.stack([np.interp(s, t, cols[:, c]) for c in range(3)], 0).astype(F32)  # (3, 256)

    def render(self, st, k: Knobs) -> np.ndarray:
        tilt = F32(-st.pitch * 0.75)
        d = np.maximum(self.Y * tilt + 1.0, F32(0.2))
        xp, yp = self.X / d, self.Y / d
        scale = 1.6 * 2.0 ** ((0.5 - k.zoom) * 2.4)
        sy, cy = math.sin(st.yaw), math.cos(st.yaw)
        ox, oy = st.x * 0.6, st.y * 0.6  # not wrapped: the field has no period (float32 is fine for hours)
        # Screen up is the heading: moving forward scrolls the field down the screen.
        wx = (xp * F32(-sy) - yp * F32(cy)) * F32(scale) + F32(ox)
        wy = (xp * F32(cy) - yp * F32(sy)) * F32(scale) + F32(oy)
        a = st.anim * 1.6
        amp = F32(0.3 + 1.25 * k.energy)
        ph, fq = self.ph, self.fq
        x1 = wx + amp * np.sin(wy * F32(1.6 * fq[0]) + F32(a * 0.7 + ph[0]))
        y1 = wy + amp * np.sin(x1 * F32(1.4 * fq[1]) + F32(-a * 0.6 + ph[1]))
        x2 = x1 + amp * F32(0.5) * np.sin(y1 * F32(2.7 * fq[2]) + F32(a * 1.1 + ph[2]))
        y2 = y1 + amp * F32(0.5) * np.sin(x2 * F32(2.4 * fq[3]) + F32(-a * 0.9 + ph[3]))
        val = np.sin(x2 * F32(fq[4]) + F32(ph[4])) * np.cos(y2 * F32(fq[5]) + F32(ph[5] + a * 0.2))
        idx = np.clip(val * 127.5 + 128.0, 0.0, 255.0).astype(np.uint8)
        sheen = np.cos(val * F32(7.0) + F32(a * 0.5)) * F32(0.18) + F32(0.9)
        gain = F32(0.2 + 0.95 * k.daylight)
        pal = self._palette(k)
        mean = pal.mean(1)
        fogk = F32(0.7 * k.fog)
        out = []
        for c in range(3):
            col = pal[c][idx] * sheen
            col += (F32(mean[c] * 0.9 + 0.08) - col) * fogk
            out.append(col * gain)
        small = cv2.merge(out)
        if k.fog > 0.05:
            small = cv2.GaussianBlur(small, (0, 0), 0.3 + 2.0 * k.fog)
        big = cv2.resize(small, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return to_uint8(big)


# --- starfield -------------------------------------------------------------------------------------------------


class Starfield:
    """Flight through 3D stars (parallax, streaks at speed) in front of a nebula panorama and drifting dust."""

    UNIT_SPEED = 3.0
    BOX = 4.0  # stars fill a box this size that wraps around the camera
    NSTARS = 5000

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.width, self.height = width, height
        n = self.NSTARS
        self.pos = rng.uniform(0.0, self.BOX, (n, 3)).astype(F32)
        self.mag = (rng.random(n) ** 3 * 2.6 + 0.3).astype(F32)
        self.phase = rng.uniform(0.0, TAU, n).astype(F32)
        temps = np.array([(0.7, 0.8, 1.0), (0.95, 0.95, 1.0), (1.0, 0.92, 0.75), (1.0, 0.75, 0.5)], F32)
        self.scol = temps[rng.choice(4, n, p=[0.25, 0.4, 0.22, 0.13])]
        # Nebula panorama (azimuth across, elevation down): two coloured gas densities, dark dust lanes and the
        # distant stars, which turn with the camera but show no parallax.
        pw, ph = 1024, 384
        self.pano_size = (pw, ph)
        big1 = tileable_noise(rng, pw, 3.6, ph)
        big2 = tileable_noise(rng, pw, 3.4, ph)
        fine = tileable_noise(rng, pw, 2.6, ph)
        lanes = tileable_noise(rng, pw, 3.1, ph)
        band = np.exp(-((np.arange(ph) - ph * rng.uniform(0.35, 0.65)) / (ph * 0.3)) ** 2)[:, None]
        n1 = smoothstep(0.35, 0.85, big1) * (0.55 + 0.9 * fine) * (0.25 + 0.75 * band)
        n2 = smoothstep(0.45, 0.9, big2) * (0.5 + 0.9 * (1.0 - fine)) * (0.2 + 0.8 * band)
        dk = smoothstep(0.55, 0.8, lanes) * band
        far = np.zeros((ph, pw), F32)
        nf = 5000
        far[rng.integers(0, ph, nf), rng.integers(0, pw, nf)] = rng.random(nf) ** 4 * 1.4 + 0.12
        far = blur_wrap(far, 0.55) * 2.2
        self.pano = np.ascontiguousarray(np.stack([n1, n2, dk, far], -1).astype(F32))
        self.dust = tileable_noise(rng, 256, 3.3)
        self.jitter = float(rng.uniform(-12.0, 12.0))
        self.npix = width * height

    def render(self, st, k: Knobs) -> np.ndarray:
        w, hgt = self.width, self.height
        f = (w / 2.0) / math.tan(math.radians(k.fov_deg) / 2.0)
        yaw = st.yaw
        pit = st.pitch * 0.6
        cp, sp, cyw, syw = math.cos(pit), math.sin(pit), math.cos(yaw), math.sin(yaw)
        fwd = np.array([cp * cyw, cp * syw, sp], F32)
        right = np.array([-syw, cyw, 0.0], F32)
        up = np.cross(right, fwd).astype(F32)
        box = self.BOX
        cam = np.array([st.x % box, st.y % box, st.z % box], F32)
        rel = self.pos - cam
        rel -= np.floor(rel * F32(1.0 / box) + F32(0.5)) * F32(box)  # nearest copy: -box/2 .. box/2
        zc = rel @ fwd
        vis = zc > 0.03
        rel, zc = rel[vis], zc[vis]
        xc, yc = rel @ right, rel @ up
        r2 = (rel * rel).sum(1)
        h = box / 2.0
        bright = self.mag[vis] * smoothstep(h * h, (0.6 * h) ** 2, r2) * np.minimum(F32(0.9) / (zc + 0.15), 3.0)
        bright *= F32(0.75 + 0.5 * k.energy) + F32(0.6 * k.energy) * np.sin(self.phase[vis] + F32(st.anim * 6.0))
        scol = self.scol[vis]
        # Streaks: the star's apparent path over the last moment, sampled at a few points.
        v = k.speed ** 1.3 * self.UNIT_SPEED * (0.08 + 0.25 * k.energy)
        nsub = 1 + int(min(5, v * 12))
        sxs, sys_, ws = [], [], []
        for i in range(nsub):
            back = v * i / max(1, nsub - 1) if nsub > 1 else 0.0
            zz = zc + F32(back)
            sxs.append(F32(w / 2.0) + F32(f) * xc / zz)
            sys_.append(F32(hgt / 2.0) - F32(f) * yc / zz)
            ws.append(bright * F32(1.0 / nsub) * F32(1.0 - 0.5 * i / nsub))
        sx, sy, wt = np.concatenate(sxs), np.concatenate(sys_), np.concatenate(ws)
        scol = np.tile(scol, (nsub, 1))
        # Bilinear splat into an image with bincount.
        x0, y0 = np.floor(sx - 0.5), np.floor(sy - 0.5)
        fx, fy = sx - 0.5 - x0, sy - 0.5 - y0
        x0, y0 = x0.astype(np.int32), y0.astype(np.int32)
        idxs, wts = [], []
        for ddx, ddy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                             (1, 1, fx * fy)):
            xi, yi = x0 + ddx, y0 + ddy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < hgt)
            idxs.append((yi * w + xi)[ok])
            wts.append((wt * ww)[ok])
            scol_ok = scol[ok]
            wts[-1] = (wts[-1], scol_ok)
        idx = np.concatenate(idxs)
        layers = []
        for c in range(3):
            wc = np.concatenate([a * s[:, c] for a, s in wts])
            layers.append(np.bincount(idx, weights=wc, minlength=self.npix).astype(F32).reshape(hgt, w))
        stars = cv2.merge(layers)
        stars = stars + cv2.GaussianBlur(stars, (0, 0), 1.3) * F32(1.2)
        # Nebula: the panorama by view direction (yaw across, pitch up/down), then a near dust layer that zooms
        # with the distance flown (two copies crossfading: flying into it forever).
        pw, ph = self.pano_size
        sxp = pw / TAU
        m = np.array([[sxp / f, 0.0, (yaw % TAU) * sxp - (w / 2.0) * sxp / f],
                      [0.0, sxp / f, ph / 2.0 - pit * sxp - (hgt / 2.0) * sxp / f]], np.float64)
        neb = cv2.warpAffine(self.pano, m, (w, hgt), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_WRAP)
        n1, n2, dk, farstars = cv2.split(neb)
        ph_ = (st.dist * 0.35) % 1.0
        near = np.zeros((hgt, w), F32)
        for off in (0.0, 0.5):
            p = (ph_ + off) % 1.0
            s = 2.0 ** p
            wgt = 1.0 - abs(2.0 * p - 1.0)
            sc = 0.35 * (f / 200.0) * s
            a = 1.0 / (sc * 1.0)
            md = np.array([[a, 0.0, 128.0 + (yaw % TAU) * 40.0 + off * 77.0 - a * w / 2.0],
                           [0.0, a, 128.0 - pit * 40.0 + off * 31.0 - a * hgt / 2.0]], np.float64)
            layer = cv2.warpAffine(self.dust, md, (w, hgt), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_WRAP)
            near += layer * F32(wgt)
        wisps = smoothstep(0.45, 0.9, near) * F32(0.15 + 0.6 * k.fog + 0.7 * k.energy)
        c1 = hsv(275.0 + self.jitter + k.hue_deg, 0.75, 1.0)
        c2 = hsv(200.0 + self.jitter + k.hue_deg, 0.7, 1.0)
        expo = 0.25 + 0.75 * k.daylight
        haze = k.fog
        dim = 1.0 - 0.6 * dk
        veil = (c1 + c2) * (0.5 * (0.08 + 0.3 * expo))  # dust glow that fog lays over everything
        out = []
        st_l = cv2.split(stars)
        for c in range(3):
            col = (n1 * F32(c1[c] * 0.55) + n2 * F32(c2[c] * 0.45)) * F32(expo) * dim
            col += wisps * F32((c1[c] * 0.5 + c2[c] * 0.5) * (0.15 + 0.3 * k.daylight))
            col += (st_l[c] + farstars) * F32(1.0 - 0.6 * haze) * dim
            col += (F32(veil[c]) - col) * F32(0.65 * haze)
            out.append(col)
        return merge(out)


# --- ocean -----------------------------------------------------------------------------------------------------


class Ocean:
    """Sailing over open sea: wave normals from two drifting wave maps, sky reflection, sun glitter and foam."""

    HORIZON = 0.45  # the horizon row at level pitch (View.make)
    UNIT_SPEED = 26.0
    N = 256  # wave map texels (tiling)

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.width, self.height = width, height
        self.sky = Sky(rng, cloudiness=float(rng.uniform(0.2, 0.6)))
        n = self.N
        # Directional wave spectrum: long swell across the wind, short chop on top.
        white = rng.standard_normal((n, n))
        spec = np.fft.rfft2(white)
        fy = np.fft.fftfreq(n)[:, None]
        fx = np.fft.rfftfreq(n)[None, :]
        fr = np.sqrt(fx * fx + fy * fy)
        fr[0, 0] = 1.0
        ang = float(rng.uniform(0, math.pi))
        dirn = np.abs(fx * math.cos(ang) + fy * math.sin(ang)) / fr
        spec *= fr ** -1.9 * (0.25 + dirn ** 2) * np.exp(-((fr * n / 90.0) ** 2))
        spec[0, 0] = 0
        h = np.fft.irfft2(spec, s=(n, n)).astype(F32)
        h /= np.abs(h).max()
        gx = (np.roll(h, -1, 1) - np.roll(h, 1, 1)) * (n / 16.0)
        gy = (np.roll(h, -1, 0) - np.roll(h, 1, 0)) * (n / 16.0)
        foam = tileable_noise(rng, n, 1.6)
        self.tex = np.ascontiguousarray(np.stack([gx, gy, h, foam], -1).astype(F32))

    def render(self, st, k: Knobs) -> np.ndarray:
        w, hgt = self.width, self.height
        bob = k.energy * 0.05 * math.sin(st.anim * 1.3)
        v = View.make(w, hgt, k, st.yaw + k.energy * 0.03 * math.sin(st.anim * 0.8), st.pitch + bob, base=self.HORIZON)
        L = Light(k, self.sky.sun_az)
        cz = 2.2 + k.energy * 0.6 * math.sin(st.anim * 1.7)
        r0 = int(min(hgt, max(0, math.ceil(v.hor - 0.5 + 0.6))))  # first row fully below the horizon
        sky_rows = r0
        out = [np.empty((hgt, w), F32) for _ in range(3)]
        if sky_rows > 0:
            sky = self.sky.render(v, sky_rows, L, k, st.anim, (st.x, st.y))
            for c in range(3):
                out[c][:sky_rows] = sky[c]
        if r0 < hgt:
            n = self.N
            f = F32(v.f)
            rows = np.arange(r0, hgt, dtype=F32) + F32(0.5 - v.hor)
            tr = np.minimum(F32(cz) * f / rows, F32(900.0))[:, None]  # depth per row
            px = tr * v.dx[None, :]
            py = tr * v.dy[None, :]
            a = st.anim
            s1, s2 = 3.5, 9.0
            ox1, oy1 = (st.x * s1 + a * 9.0) % n, (st.y * s1 + a * 4.0) % n
            ox2, oy2 = (st.x * s2 - a * 13.0) % n, (st.y * s2 + a * 17.0) % n
            t1 = cv2.remap(self.tex, wrap(px * F32(s1) + F32(ox1), n), wrap(py * F32(s1) + F32(oy1), n),
                           **_LINEAR_WRAP)
            t2 = cv2.remap(self.tex, wrap(py * F32(s2) + F32(ox2), n), wrap(px * F32(-s2) + F32(oy2), n),
                           **_LINEAR_WRAP)
            g1x, g1y, h1, fo = cv2.split(t1)
            g2x, g2y, h2, _ = cv2.split(t2)
            amp = F32(0.12 + 0.45 * k.energy) / (1.0 + tr * F32(0.012))
            nx = (g1x * F32(s1) - g2y * F32(0.35 * s2)) * amp * F32(0.1)
            ny = (g1y * F32(s1) + g2x * F32(0.35 * s2)) * amp * F32(0.1)
            inv = 1.0 / np.sqrt(nx * nx + ny * ny + 1.0)
            nx *= inv
            ny *= inv
            nz = inv
            # View ray to the sea point, its reflection about the wave normal, Fresnel.
            vl = 1.0 / np.sqrt(tr * tr * (v.dx * v.dx + v.dy * v.dy)[None, :] + F32(cz * cz))
            vx, vy, vz = px * vl, py * vl, -F32(cz) * vl
            vn = vx * nx + vy * ny + vz * nz
            rx, ry, rz = vx - 2.0 * vn * nx, vy - 2.0 * vn * ny, np.abs(vz - 2.0 * vn * nz)
            fres = F32(0.02) + F32(0.98) * pow_fast(np.clip(1.0 + vn, 0.0, 1.0), 2) * np.clip(1.0 + vn, 0.0, 1.0)
            ld = L.light_dir
            rs = rx * F32(ld[0]) + ry * F32(ld[1]) + rz * F32(ld[2])
            sharp = 900.0 - 700.0 * k.energy
            spec = np.exp((rs - 1.0) * F32(sharp)) * F32(1.6 * (1.0 - 0.8 * k.fog))
            g = np.sqrt(np.clip(np.arcsin(np.clip(rz, 0.0, 1.0)) * F32(1.0 / 0.9), 0.0, 1.0))
            crest = np.clip(h1 + h2 * 0.5, 0.0, 1.0)
            thr = 0.95 - 0.55 * k.energy
            foam = smoothstep(thr, thr + 0.25, crest * 0.8 + fo * 0.45) * F32(0.3 + 0.7 * k.energy)
            foam /= 1.0 + tr * F32(0.02)
            hm = hue_matrix(k.hue_deg)
            deep = rotate((0.0, 0.07, 0.13), hm)
            scat = rotate((0.0, 0.22, 0.2), hm)
            dens = 0.0025 + 0.03 * k.fog ** 1.3
            ff = 1.0 - np.exp(tr * F32(-dens))
            lit = F32(max(ld[2], 0.0))
            for c in range(3):
                lc, am = F32(L.light_col[c]), F32(L.ambient[c])
                body = F32(deep[c]) * (am * 2.0 + lc * 0.4) + F32(scat[c]) * crest * (am + lc * 0.6)
                refl = F32(L.horizon[c]) + F32(L.zenith[c] - L.horizon[c]) * g
                col = body + (refl - body) * fres + spec * lc
                col += (F32(0.9) * (am + lc * lit) - col) * foam
                col += (F32(L.fog_col[c]) - col) * ff
                out[c][r0:] = col
        return merge(out)
