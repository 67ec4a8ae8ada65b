"""Image and stream metrics for judging worlds against the procedural renderer — pure functions on numpy arrays.

Frames are (H, W, 3) uint8 RGB unless said otherwise; a stack of frames is (N, H, W, 3). Nothing here keeps
state or imports more than numpy, so the harness (vprod/world/eval.py), the tests and a notebook all compute the
same numbers.

- psnr / ssim: per-frame fidelity. PSNR of identical frames is +inf; JSON cannot say inf, so reports cap it at
  PSNR_CAP_DB (`cap_db`) and say so.
- frame_stats / window_stats / band / fraction_inside: drift over long streams — per-window colour, contrast,
  saturation, sharpness and motion, checked against the band that real renderer windows span.
- gaussian_stats / frechet_distance / pixel_features: Fréchet distance between two feature sets (matrix square
  root by symmetric eigen-decomposition; no scipy).
- switch_jump_ratio: how abruptly a stream changes around a family / prompt switch.
- r2_scores / circular_r2: coefficient of determination per output column, and on a circle (control read-back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: PSNR of identical frames is infinite; reports cap it here (and say so).
PSNR_CAP_DB = 100.0

#: Per-frame drift statistics, in order (see frame_stats).
STAT_NAMES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation", "sharpness", "change")

_LUMA = np.array([0.299, 0.587, 0.114], np.float64)  # ITU-R BT.601, the Y of YCbCr / OpenCV's gray


# ---------------------------------------------------------------------------------------------------------------
# Fidelity
# ---------------------------------------------------------------------------------------------------------------

def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over every pixel and channel (in the images' own units, 0..255 for uint8)."""
    a, b = _check_pair(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr(a: np.ndarray, b: np.ndarray, max_value: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(max² / MSE). Identical images give +inf."""
    m = mse(a, b)
    if m == 0.0:
        return math.inf
    return 10.0 * math.log10(max_value * max_value / m)


def cap_db(value: float, cap: float = PSNR_CAP_DB) -> float:
    """A dB value JSON can carry: +inf (identical frames) becomes `cap`; anything above the cap is the cap."""
    return float(min(value, cap))


def psnr_capped(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP_DB) -> float:
    return cap_db(psnr(a, b), cap)


def luminance(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (…, 3) RGB array as float64, same units as the input."""
    return np.asarray(img, np.float64) @ _LUMA


def gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalized 1-D Gaussian taps (SSIM's standard 11 taps, σ = 1.5)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def _filter_valid(maps: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (..., H, W) maps with 1-D taps k along H and W (no padding, as Wang et al.)."""
    n = len(k)
    h, w = maps.shape[-2:]
    rows = sum(k[i] * maps[..., i:h - n + 1 + i, :] for i in range(n))
    return sum(k[i] * rows[..., :, i:w - n + 1 + i] for i in range(n))


def ssim(a: np.ndarray, b: np.ndarray, *, channels: str = "luma", data_range: float = 255.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
    """Structural similarity (Wang et al. 2004) with an 11-tap Gaussian window (σ 1.5), C1 = (0.01·L)², C2 = (0.03·L)².

    channels="luma" compares BT.601 luminance (the usual video convention); "rgb" averages the three channels.
    The mean is over 'valid' window positions (no padding). Identical images give exactly 1.
    Images must be at least win_size pixels on each side; 2-D (gray) images are accepted as they are.
    """
    a, b = _check_pair(a, b)
    if a.ndim == 3 and channels == "luma":
        x, y = luminance(a)[None], luminance(b)[None]
    elif a.ndim == 3 and channels == "rgb":
        x, y = np.moveaxis(a.astype(np.float64), -1, 0), np.moveaxis(b.astype(np.float64), -1, 0)
    elif a.ndim == 2:
        x, y = a.astype(np.float64)[None], b.astype(np.float64)[None]
    else:
        raise ValueError(f"ssim wants (H, W) or (H, W, 3) images and channels luma|rgb, got {a.shape}, {channels!r}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images of {x.shape[-2:]} are smaller than the {win_size}-pixel SSIM window")
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    k = gaussian_kernel(win_size, sigma)
    # One filtering pass over the five maps (x, y, x², y², xy) of every channel.
    f = _filter_valid(np.stack([x, y, x * x, y * y, x * y]), k)
    mx, my = f[0], f[1]
    vx = f[2] - mx * mx
    vy = f[3] - my * my
    cxy = f[4] - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


# ---------------------------------------------------------------------------------------------------------------
# Drift statistics
# ---------------------------------------------------------------------------------------------------------------

def saturation(frame: np.ndarray) -> float:
    """Mean HSV saturation, 0..1: (max − min) / max per pixel, 0 where the pixel is black."""
    f = np.asarray(frame)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    mx = np.maximum(np.maximum(r, g), b).astype(np.float32)
    mn = np.minimum(np.minimum(r, g), b).astype(np.float32)
    s = np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)
    return float(s.mean())


def laplacian(gray: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian of a 2-D array on its interior (H−2, W−2)."""
    g = np.asarray(gray, np.float64)
    return g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the luma (0..255 units): falls when frames blur, rises with noise."""
    return float(laplacian(luminance(frame)).var())


def mean_abs_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference between two frames, 0..255: how much the picture moved in one tick."""
    a, b = _check_pair(a, b)
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def frame_stats(frame: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """The STAT_NAMES of one frame as a float64 vector: per-channel mean and std (0..255), mean HSV saturation
    (0..1), variance of the Laplacian, and the mean absolute change from `prev` (NaN without one)."""
    f = np.asarray(frame)
    px = f.reshape(-1, 3).astype(np.float64)
    ones = np.ones(len(px))
    mean = ones @ px / len(px)  # BLAS sums: ~30x faster than reducing the short axis of an (N, 3) array
    out = np.empty(len(STAT_NAMES), np.float64)
    out[0:3] = mean
    out[3:6] = np.sqrt(np.maximum(ones @ (px * px) / len(px) - mean * mean, 0.0))
    out[6] = saturation(f)
    out[7] = sharpness(f)
    out[8] = mean_abs_change(f, prev) if prev is not None else np.nan
    return out


def window_stats(per_frame: np.ndarray, window: int, stride: int | None = None) -> np.ndarray:
    """Average per-frame statistics (N, S) over windows of `window` frames every `stride` (default: no overlap).

    Returns (n_windows, S); NaNs (the first frame's missing change) are ignored. A trailing partial window is
    dropped; a stream shorter than one window gives one window over all of it.
    """
    x = np.asarray(per_frame, np.float64)
    n = len(x)
    stride = stride or window
    if n == 0:
        return np.zeros((0, x.shape[1] if x.ndim == 2 else 0))
    if n < window:
        starts = [0]
        window = n
    else:
        starts = range(0, n - window + 1, stride)
    return np.stack([np.nanmean(x[s:s + window], axis=0) for s in starts])


def band(reference_windows: np.ndarray, lo: float = 1.0, hi: float = 99.0,
         margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The band per statistic: the lo-th and hi-th percentiles (linear interpolation) over reference windows,
    widened by the factor 1 + margin (lower edge divided, upper edge multiplied, for the non-negative statistics
    here; a negative edge is moved outward the same way). A relative margin keeps a lower edge above 0 above 0,
    so a frozen stream (change 0) stays outside however wide the margin."""
    r = np.asarray(reference_windows, np.float64)
    a, b = np.nanpercentile(r, lo, axis=0), np.nanpercentile(r, hi, axis=0)
    f = 1.0 + margin
    return np.where(a >= 0, a / f, a * f), np.where(b >= 0, b * f, b / f)


def fraction_inside(windows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per statistic, the fraction of windows whose value lies in [lo, hi] (NaN counts as outside)."""
    w = np.asarray(windows, np.float64)
    if len(w) == 0:
        return np.zeros(w.shape[1] if w.ndim == 2 else 0)
    inside = (w >= lo) & (w <= hi)
    return inside.mean(axis=0)


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------------------------

def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N−1) covariance of an (N, D) feature set."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need an (N ≥ 2, D) feature array, got {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def sqrtm_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped to 0)."""
    m = (np.asarray(m, np.float64) + np.asarray(m, np.float64).T) / 2.0
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2): |mu1 − mu2|² + Tr(C1 + C2 − 2 (C1 C2)^½).

    Tr (C1 C2)^½ = Tr (C1^½ C2 C1^½)^½, and C1^½ C2 C1^½ is symmetric PSD, so two symmetric eigen-decompositions
    do it without scipy. Round-off can make the result a hair below zero; it is clipped at 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    s1 = sqrtm_psd(c1)
    w = np.linalg.eigvalsh((s1 @ c2 @ s1 + (s1 @ c2 @ s1).T) / 2.0)
    tr_covmean = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    d = mu1 - mu2
    return max(0.0, float(d @ d + np.trace(c1) + np.trace(c2) - 2.0 * tr_covmean))


def frechet_distance_features(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))


def _area_down(f: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, C) → (N, H//k, W//k, C) by k×k block means (edges cropped)."""
    n, h, w, c = f.shape
    h2, w2 = h // k, w // k
    return f[:, :h2 * k, :w2 * k].reshape(n, h2, k, w2, k, c).mean(axis=(2, 4))


def _grid_mean_std(f: np.ndarray, g: int) -> np.ndarray:
    """Per-channel mean and std in each cell of a g×g grid of (N, H, W, C) float frames → (N, g·g·C·2)."""
    n, h, w, c = f.shape
    hs = np.linspace(0, h, g + 1).astype(int)
    ws = np.linspace(0, w, g + 1).astype(int)
    out = []
    for i in range(g):
        for j in range(g):
            cell = f[:, hs[i]:hs[i + 1], ws[j]:ws[j + 1]].reshape(n, -1, c)
            ones = np.ones((1, cell.shape[1]), cell.dtype)
            mean = (ones @ cell)[:, 0] / cell.shape[1]  # batched BLAS sums, far faster than .mean(axis=1)
            sq = (ones @ (cell * cell))[:, 0] / cell.shape[1]
            out += [mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))]
    return np.concatenate(out, axis=1)


#: Histogram bins per colour channel in pixel_features.
PIXEL_HIST_BINS = 8


def pixel_features(frames: np.ndarray) -> np.ndarray:
    """Hand-made image features for the Fréchet distance, (N, H, W, 3) uint8 (or one frame) → (N, 57) float64.

    - per-channel mean and std over the whole frame and in each cell of a 2×2 grid (30): colour and contrast at
      two scales, with coarse layout (sky above, ground below);
    - colour histogram, PIXEL_HIST_BINS bins per channel, as fractions (24);
    - gradient energy (mean |∇ luma|) at full, ½ and ¼ scale (3): detail at three scales.
    Values are in 0..1 units (pixels / 255) so no feature dominates by unit alone.
    """
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    if f.dtype != np.uint8:
        raise ValueError(f"pixel_features wants uint8 frames, got {f.dtype}")
    x = f.astype(np.float64) / 255.0
    n = len(x)
    parts = [_grid_mean_std(x, 1), _grid_mean_std(x, 2)]
    # One bincount for every (frame, channel, bin): bin = value // (256 / bins).
    b = PIXEL_HIST_BINS
    q = (f.reshape(n, -1, 3).astype(np.int64) * b) >> 8
    q += (np.arange(3) * b)[None, None, :] + (np.arange(n) * 3 * b)[:, None, None]
    hist = np.bincount(q.ravel(), minlength=n * 3 * b).reshape(n, 3 * b) / (f.shape[1] * f.shape[2])
    parts.append(hist)
    y = x @ _LUMA  # (N, H, W)
    for k in (1, 2, 4):
        yk = y if k == 1 else _area_down(y[..., None], k)[..., 0]
        gx = np.abs(np.diff(yk, axis=2)).mean(axis=(1, 2))
        gy = np.abs(np.diff(yk, axis=1)).mean(axis=(1, 2))
        parts.append((gx + gy)[:, None])
    return np.concatenate(parts, axis=1).astype(np.float64)


# ---------------------------------------------------------------------------------------------------------------
# Switches, regression
# ---------------------------------------------------------------------------------------------------------------

def switch_jump_ratio(changes: np.ndarray, switches: Sequence[int], window: int = 4,
                      eps: float = 1e-3, before: int = 0) -> list[float]:
    """For each switch index, (largest change within ±window frames of it + eps) / (median change elsewhere + eps).

    `changes[t]` is the change from frame t−1 to frame t (NaN where unknown, ignored); "elsewhere" excludes the
    neighbourhoods of every switch. eps (in the changes' units, 0..255) keeps a frozen stream at 1.0 instead of 0/0.
    ~1 means the switch is as smooth as ordinary motion; a hard cut gives a large ratio.
    before > 0: "elsewhere" is, for each switch, the `before` frames just ahead of its neighbourhood (the motion the
    switch interrupts: a switch during a fast turn is measured against the turn, not against the whole stream's calm).
    """
    c = np.asarray(changes, np.float64)
    n = len(c)
    near = np.zeros(n, bool)
    spans = []
    for s in switches:
        lo, hi = max(0, s - window), min(n, s + window + 1)
        near[lo:hi] = True
        spans.append((lo, hi))
    rest = c[~near]
    rest = rest[np.isfinite(rest)]
    base = float(np.median(rest)) if len(rest) else 0.0
    out = []
    for lo, hi in spans:
        seg = c[lo:hi]
        seg = seg[np.isfinite(seg)]
        peak = float(seg.max()) if len(seg) else 0.0
        here = base
        if before > 0:
            ahead = c[max(0, lo - before):lo][~near[max(0, lo - before):lo]]
            ahead = ahead[np.isfinite(ahead)]
            here = float(np.median(ahead)) if len(ahead) else base
        out.append((peak + eps) / (here + eps))
    return out


def r2_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: 1 − SS_res / SS_tot (NaN where the truth is constant)."""
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if t.ndim == 1:
        t, p = t[:, None], p[:, None]
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def circular_r2(y_true: np.ndarray, y_pred: np.ndarray, period: float = 1.0) -> float:
    """R² for a quantity on a circle (0 and `period` are the same): errors are wrapped into ±period/2, and the
    spread of the truth is measured around its circular mean. 1 perfect, 0 no better than the circular mean."""
    t = np.asarray(y_true, np.float64).ravel()
    p = np.asarray(y_pred, np.float64).ravel()
    ang = 2 * np.pi * t / period
    mean = np.arctan2(np.sin(ang).mean(), np.cos(ang).mean()) * period / (2 * np.pi)

    def wrap(d):
        return (d + period / 2) % period - period / 2

    ss_tot = float((wrap(t - mean) ** 2).sum())
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float((wrap(t - p) ** 2).sum()) / ss_tot
