"""`vprod eval`: numbers for a world, measured against the procedural renderer (the ground truth).

Every world honours the contract of vprod/world/__init__.py (`reset(seed, controls, family) -> frame`,
`step(controls) -> frame`). Two optional methods let the harness do more:

- ``observe(frame)``: "the frame you just produced (by reset or by the last step) truly was this one". The
  harness teacher-forces a world with the ground truth's first `context` frames this way:

      truth.reset(seed, c[0], family) → g0        world.reset(seed, c[0], family); world.observe(g0)
      truth.step(c[k])                → gk        world.step(c[k]);                 world.observe(gk)   k < context
      truth.step(c[k])                → gk        world.step(c[k]) → prediction at horizon k − context + 1

  A world without `observe` (the renderer itself) simply runs from the seed. The baselines have nothing but what
  they observe; the world model replaces the frame in its context.
- ``set_family(family)``: a family (later: prompt) switch in the middle of a stream.

What is measured (all against renderer output at the same size):

- rollout: PSNR and SSIM per horizon 1..H, averaged over `starts` starts (seeds, families, random-walk controls);
  PSNR of identical frames is +inf and is capped at metrics.PSNR_CAP_DB (100 dB) everywhere, before averaging.
- ΔtPSNR: mean over horizons of rollout PSNR with the true controls minus PSNR when the world is given the
  horizon controls permuted across time and starts (the truth keeps the true ones). 0 means the world ignores
  its controls; the renderer's own value is the ceiling.
- drift: one long free-running stream (`drift_frames`, random-walk controls, a family switch every
  ~`switch_every` frames). Per window of `window` frames: per-channel mean and std, saturation, sharpness,
  frame-to-frame change (metrics.STAT_NAMES). The band per statistic is the 1st–99th percentile of the same
  windows (overlapping, stride window/4) over `reference_repeats` reference renderer streams that play the same
  control and family schedule from other seeds (other palettes, content and camera paths under the same knobs),
  edges widened by the factor 1 + `band_margin`. A statistic passes when at least `pass_fraction` of the
  world's windows lie inside the band. Measured at the defaults (256×144, 10k frames, seeds 0–3): the renderer's
  own stream kept 92–100 % of its windows inside for its worst statistic (85–97 % without the margin, which
  failed 2 of 4 seeds); copy-last failed `change` (0 %) and linear failed std, sharpness and change (0 %) on
  every seed. A frozen picture passes every statistic but `change`: drift is about pictures leaving the
  renderer's range, controllability is measured by ΔtPSNR and read-back.
- Fréchet distance between the world's stream frames and the reference renderer streams' frames, per feature
  function in FEATURES (start: "pixel" = metrics.pixel_features; register more with `register_feature`).
  Measured at the defaults, seeds 0–3: renderer 0.02–0.05 (the floor: two seeds), copy-last 2.2–3.3,
  linear 3.8–5.8.
- control read-back: a per-family ridge regressor trained on renderer frame pairs (seen at 64×36) predicts the
  control vector from two consecutive frames. Both training and probing use jump_schedule (knobs jump to fresh
  random values every 8 frames, so they are uncorrelated and each R² means something). Its R² per control on
  held-out renderer streams is the ceiling; its R² on a world driven through the same protocol says whether the
  world's pictures respond to the controls the way the renderer's do. Trained once, cached in a folder
  (`readback.npz` + `readback.json` with the command that trained it); retrained when the renderer's source or
  the frame size changes.
- switch jump ratio: around each family switch, the largest frame-to-frame change within ±`jump_window` frames
  divided by the median change elsewhere in the stream; the reference renderer stream's value beside it.
- timing: milliseconds per `step` over the stream, p50/p99 (the machine is shared: a rough figure).

Module import is light (numpy only); OpenCV, matplotlib, tqdm and the renderer load when used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import CONTROL_NAMES, NEUTRAL, NUM_CONTROLS
from . import metrics as M

#: Version of results.json's layout.
RESULTS_VERSION = 1

#: Frame size the control read-back regressor sees (both frames of a pair are resized to it).
READBACK_SIZE = (64, 36)


# ---------------------------------------------------------------------------------------------------------------
# Worlds
# ---------------------------------------------------------------------------------------------------------------

class CopyLastWorld:
    """Baseline: every step repeats the last frame it observed (grey before it has observed any). Ignores controls."""

    name = "copy-last"

    def __init__(self, width: int = 256, height: int = 144):
        self.width, self.height = width, height
        self.last = np.full((height, width, 3), 128, np.uint8)

    def reset(self, seed: int, controls: np.ndarray, family: str | None = None) -> np.ndarray:
        self.last = np.full((self.height, self.width, 3), 128, np.uint8)
        return self.last.copy()

    def observe(self, frame: np.ndarray) -> None:
        self.last = np.array(frame, np.uint8, copy=True)

    def step(self, controls: np.ndarray) -> np.ndarray:
        return self.last.copy()


class LinearExtrapolationWorld:
    """Baseline: frame[t+1] = clip(2·frame[t] − frame[t−1]) per pixel; with one frame known, it repeats it.

    Predictions feed back: free-running, it keeps extrapolating its own frames (and saturates). Ignores controls.
    """

    name = "linear"

    def __init__(self, width: int = 256, height: int = 144):
        self.width, self.height = width, height
        self.prev: np.ndarray | None = None
        self.last = np.full((height, width, 3), 128, np.uint8)

    def reset(self, seed: int, controls: np.ndarray, family: str | None = None) -> np.ndarray:
        self.prev = None
        self.last = np.full((self.height, self.width, 3), 128, np.uint8)
        return self.last.copy()

    def observe(self, frame: np.ndarray) -> None:
        self.last = np.array(frame, np.uint8, copy=True)  # replaces the newest frame of its history

    def step(self, controls: np.ndarray) -> np.ndarray:
        if self.prev is None:
            nxt = self.last.copy()
        else:
            nxt = np.clip(2 * self.last.astype(np.int16) - self.prev.astype(np.int16), 0, 255).astype(np.uint8)
        self.prev, self.last = self.last, nxt
        return nxt.copy()


def _renderer_world(width: int, height: int):
    from .render import RendererWorld

    return RendererWorld(width=width, height=height)


#: name → factory(width, height) of every world `vprod eval --world` knows. "all" evaluates them all.
WORLDS: dict[str, Callable[[int, int], Any]] = {
    "renderer": _renderer_world,
    "copy-last": lambda w, h: CopyLastWorld(w, h),
    "linear": lambda w, h: LinearExtrapolationWorld(w, h),
}


def register_world(name: str, factory: Callable[[int, int], Any]) -> None:
    """Add a world to `vprod eval --world` (e.g. the world model: a factory(width, height) that loads it)."""
    WORLDS[name] = factory


def make_world(name: str, width: int, height: int):
    if name not in WORLDS:
        raise KeyError(f"unknown world {name!r}; known: {', '.join(WORLDS)}")
    return WORLDS[name](width, height)


def world_names(spec: str | Sequence[str]) -> list[str]:
    """'all' → every registered world; 'a,b' or ['a', 'b'] → those (checked)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(WORLDS)
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise KeyError(f"unknown world(s) {', '.join(unknown)}; known: {', '.join(WORLDS)}, all")
    return names


def renderer_families() -> tuple[str, ...]:
    from .render import FAMILIES

    return tuple(FAMILIES)


def renderer_fingerprint() -> str:
    """A hash of the renderer's source (render.py and the families it draws): cached read-back regressors follow
    the renderer."""
    from . import render

    h = hashlib.sha1()
    here = Path(render.__file__).parent
    for name in ("render.py", "families.py"):
        if (here / name).exists():
            h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------------
# Feature functions for the Fréchet distance
# ---------------------------------------------------------------------------------------------------------------

#: name → fn((N, H, W, 3) uint8) -> (N, D) float features. The world model's encoder registers itself here.
FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"pixel": M.pixel_features}


def register_feature(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    FEATURES[name] = fn


# ---------------------------------------------------------------------------------------------------------------
# Control schedules
# ---------------------------------------------------------------------------------------------------------------

def control_walk(rng: np.random.Generator, n: int, start: np.ndarray | None = None, sigma: float = 0.005,
                 jump_prob: float = 0.002) -> np.ndarray:
    """(n, NUM_CONTROLS) float32: a random walk (step N(0, sigma) per knob, reflected into 0..1) where each knob
    jumps to a fresh uniform value with probability `jump_prob` per frame (a knob turned fast)."""
    c = np.empty((n, NUM_CONTROLS), np.float32)
    x = rng.uniform(0.1, 0.9, NUM_CONTROLS) if start is None else np.asarray(start, np.float64).copy()
    for t in range(n):
        if t:
            x = x + rng.normal(0.0, sigma, NUM_CONTROLS)
            jump = rng.random(NUM_CONTROLS) < jump_prob
            x[jump] = rng.uniform(0.0, 1.0, int(jump.sum()))
            x = np.abs(x)  # reflect at 0 …
            x = 1.0 - np.abs(1.0 - x)  # … and at 1
        c[t] = x
    return c


def family_schedule(rng: np.random.Generator, n: int, families: Sequence[str], every: int,
                    first: str | None = None, not_before: int = 0) -> tuple[list[str], list[int]]:
    """Per-frame family names and the frame indices where it switches (every 0.5–1.5 × `every` frames, never
    before `not_before`, always to a different family). every <= 0: no switches."""
    fam = first if first is not None else families[int(rng.integers(len(families)))]
    per_frame: list[str] = []
    switches: list[int] = []
    nxt = max(not_before, int(rng.uniform(0.5, 1.5) * every)) if every > 0 and len(families) > 1 else n
    for t in range(n):
        if t == nxt:
            fam = [f for f in families if f != fam][int(rng.integers(len(families) - 1))]
            switches.append(t)
            nxt = t + max(1, int(rng.uniform(0.5, 1.5) * every))
        per_frame.append(fam)
    return per_frame, switches


@dataclass
class RolloutPlan:
    """What every world is asked in the rollout test: per start a seed, a family and K+H control vectors."""

    seeds: list[int]
    families: list[str]
    controls: np.ndarray  # (starts, context + horizon, NUM_CONTROLS) float32, the truth's controls
    shuffled: np.ndarray  # same shape: context rows true, horizon rows permuted across time and starts
    context: int
    horizon: int


def plan_rollouts(families: Sequence[str], starts: int, horizon: int, context: int = 2, seed: int = 0,
                  sigma: float = 0.01, jump_prob: float = 0.005) -> RolloutPlan:
    if context < 1 or horizon < 1 or starts < 1:
        raise ValueError("context, horizon and starts must be at least 1 (the reset frame is the first context)")
    rng = np.random.default_rng([seed, 1])
    n = context + horizon
    controls = np.stack([control_walk(rng, n, sigma=sigma, jump_prob=jump_prob) for _ in range(starts)])
    flat = controls[:, context:].reshape(-1, NUM_CONTROLS)
    perm = rng.permutation(len(flat))
    shuffled = controls.copy()
    shuffled[:, context:] = flat[perm].reshape(starts, horizon, NUM_CONTROLS)
    seeds = [int(seed) * 100003 + 7919 * i + 1 for i in range(starts)]
    fams = [families[i % len(families)] for i in range(starts)]
    return RolloutPlan(seeds, fams, controls, shuffled, context, horizon)


# ---------------------------------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------------------------------

def _observe(world, frame: np.ndarray) -> None:
    fn = getattr(world, "observe", None)
    if fn is not None:
        fn(frame)


def truth_frames(truth, seed: int, family: str, controls: np.ndarray) -> list[np.ndarray]:
    """The truth's frames for a start: reset with controls[0], then one step per further row."""
    frames = [np.asarray(truth.reset(seed, controls[0], family))]
    frames += [np.asarray(truth.step(c)) for c in controls[1:]]
    return frames


def start_world(world, seed: int, family: str, controls: np.ndarray, truth: Sequence[np.ndarray],
                context: int) -> None:
    """Reset `world` and teacher-force it through the first `context` truth frames (see the module docstring)."""
    world.reset(seed, controls[0], family)
    _observe(world, truth[0])
    for k in range(1, context):
        world.step(controls[k])
        _observe(world, truth[k])


def rollout(world, seed: int, family: str, controls: np.ndarray, truth: Sequence[np.ndarray],
            context: int) -> list[np.ndarray]:
    """The world's predictions for horizons 1..len(controls) − context after `context` truth frames."""
    start_world(world, seed, family, controls, truth, context)
    return [np.asarray(world.step(c)) for c in controls[context:]]


@dataclass
class RolloutResult:
    psnr: np.ndarray  # (starts, horizon) dB, capped at PSNR_CAP_DB
    ssim: np.ndarray  # (starts, horizon), NaN when not computed
    psnr_shuffled: np.ndarray  # (starts, horizon) dB with shuffled controls, NaN when not computed
    samples: dict[int, np.ndarray] = field(default_factory=dict)  # horizon → frame of start 0

    def summary(self, at: Sequence[int] = (1, 4, 16, 64)) -> dict[str, Any]:
        h = self.psnr.shape[1]
        p = self.psnr.mean(axis=0)
        s = np.nanmean(self.ssim, axis=0) if np.isfinite(self.ssim).any() else np.full(h, np.nan)
        ps = np.nanmean(self.psnr_shuffled, axis=0) if np.isfinite(self.psnr_shuffled).any() else np.full(h, np.nan)
        at = [a for a in at if a <= h]
        return {
            "horizons": list(range(1, h + 1)),
            "psnr": p.tolist(), "ssim": s.tolist(), "psnr_shuffled": ps.tolist(),
            "psnr_at": {str(a): float(p[a - 1]) for a in at},
            "ssim_at": {str(a): float(s[a - 1]) for a in at},
            "psnr_shuffled_at": {str(a): float(ps[a - 1]) for a in at},
            "psnr_mean": float(p.mean()),
            "delta_tpsnr": float(np.mean(p - ps)) if np.isfinite(ps).all() else None,
            "delta_tpsnr_at": {str(a): float(p[a - 1] - ps[a - 1]) for a in at} if np.isfinite(ps).all() else None,
        }


def rollout_scores(worlds: dict[str, Any], truth, plan: RolloutPlan, *, with_ssim: bool = True,
                   with_shuffled: bool = True, sample_horizons: Sequence[int] = (1, 4, 16, 64),
                   progress: bool = False) -> tuple[dict[str, RolloutResult], dict[int, np.ndarray]]:
    """Roll every world out from every start of `plan` against `truth` (frames rendered once per start).

    Returns ({name: RolloutResult}, truth samples {horizon: frame} of start 0, horizon 0 = last context frame).
    """
    from tqdm import tqdm

    n, h, k = len(plan.seeds), plan.horizon, plan.context
    res = {name: RolloutResult(np.zeros((n, h)), np.full((n, h), np.nan), np.full((n, h), np.nan))
           for name in worlds}
    truth_samples: dict[int, np.ndarray] = {}
    keep = [x for x in sample_horizons if x <= h]
    for i in tqdm(range(n), desc="rollouts", unit="start", disable=not progress, file=sys.stderr):
        seed, fam, ctl = plan.seeds[i], plan.families[i], plan.controls[i]
        gt = truth_frames(truth, seed, fam, ctl)
        if i == 0:
            truth_samples = {0: gt[k - 1], **{x: gt[k - 1 + x] for x in keep}}
        for name, world in worlds.items():
            r = res[name]
            pred = rollout(world, seed, fam, ctl, gt, k)
            for t in range(h):
                r.psnr[i, t] = M.psnr_capped(gt[k + t], pred[t])
                if with_ssim:
                    r.ssim[i, t] = M.ssim(gt[k + t], pred[t])
            if i == 0:
                r.samples = {x: pred[x - 1] for x in keep}
            if with_shuffled:
                pred = rollout(world, seed, fam, plan.shuffled[i], gt, k)
                for t in range(h):
                    r.psnr_shuffled[i, t] = M.psnr_capped(gt[k + t], pred[t])
    return res, truth_samples


# ---------------------------------------------------------------------------------------------------------------
# Control read-back
# ---------------------------------------------------------------------------------------------------------------

def _affine_flow(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Global affine motion (u = a0 + a1·x + a2·y, v = b0 + b1·x + b2·y, x, y in −1..1) by least squares on the
    brightness-constancy equations Ix·u + Iy·v + It = 0 of two gray frames; 6 numbers in pixels per frame."""
    g = (prev + cur) / 2.0
    iy, ix = np.gradient(g)
    it = cur - prev
    h, w = g.shape
    y, x = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
    a = np.stack([ix, ix * x, ix * y, iy, iy * x, iy * y], -1).reshape(-1, 6)
    ata = a.T @ a + 1e-3 * np.eye(6) * (np.trace(a.T @ a) / 6 + 1e-9)
    return np.linalg.solve(ata, -(a.T @ it.ravel()))


def readback_features(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Features of one frame pair for the control read-back: colour, layout, detail and global motion of
    `cur` relative to `prev`. Both frames are resized to READBACK_SIZE first (any world size works)."""
    import cv2

    w, h = READBACK_SIZE
    p = cv2.resize(np.ascontiguousarray(prev), (w, h), interpolation=cv2.INTER_AREA)
    c = cv2.resize(np.ascontiguousarray(cur), (w, h), interpolation=cv2.INTER_AREA)
    cf = c.astype(np.float64) / 255.0
    pf = p.astype(np.float64) / 255.0
    out = []
    px = cf.reshape(-1, 3)
    out += [px.mean(0), px.std(0), px.mean(0) - pf.reshape(-1, 3).mean(0)]
    hsv = cv2.cvtColor(c, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float64) / 255.0
    ang = hsv[:, 0] * 2 * np.pi
    sat = hsv[:, 1]
    out.append([np.mean(sat * np.cos(ang)), np.mean(sat * np.sin(ang)), sat.mean(), hsv[:, 2].mean()])
    hue_hist = np.bincount(np.minimum((hsv[:, 0] * 12).astype(int), 11), weights=sat, minlength=12) / len(sat)
    out.append(hue_hist)
    # layout: a 3×3 grid of per-channel means and a 3×3 grid of luma std (horizon height, fog, contrast)
    gy, gx = np.linspace(0, h, 4).astype(int), np.linspace(0, w, 4).astype(int)
    lum = cf @ np.array([0.299, 0.587, 0.114])
    lum_p = pf @ np.array([0.299, 0.587, 0.114])
    for i in range(3):
        for j in range(3):
            cell = cf[gy[i]:gy[i + 1], gx[j]:gx[j + 1]].reshape(-1, 3)
            out += [cell.mean(0), [lum[gy[i]:gy[i + 1], gx[j]:gx[j + 1]].std()]]
    # vertical profile: where the horizon / ground / sky sit (pitch), in 12 bands
    rows = np.linspace(0, h, 13).astype(int)
    out.append([lum[rows[i]:rows[i + 1]].mean() for i in range(12)])
    gy_abs = np.abs(np.diff(lum, axis=0))
    out.append([gy_abs[rows[i]:max(rows[i] + 1, min(rows[i + 1], h - 1))].mean() for i in range(12)])
    # detail
    lap = M.laplacian(lum)
    gxm, gym = np.abs(np.diff(lum, axis=1)).mean(), np.abs(np.diff(lum, axis=0)).mean()
    out.append([np.log1p(1e3 * lap.var()), gxm, gym])
    # motion: change magnitude (overall and on a 3×3 grid), global affine flow at two scales, phase correlation
    d = np.abs(lum - lum_p)
    out.append([d.mean()] + [d[gy[i]:gy[i + 1], gx[j]:gx[j + 1]].mean() for i in range(3) for j in range(3)])
    sm_c, sm_p = cv2.GaussianBlur(lum, (5, 5), 1.0), cv2.GaussianBlur(lum_p, (5, 5), 1.0)
    out.append(np.clip(_affine_flow(sm_p, sm_c), -20, 20) / 10.0)
    half_c = cv2.resize(sm_c, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    half_p = cv2.resize(sm_p, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    out.append(np.clip(_affine_flow(half_p, half_c), -20, 20) / 10.0)
    win = cv2.createHanningWindow((w, h), cv2.CV_64F)
    (dx, dy), resp = cv2.phaseCorrelate(np.ascontiguousarray(lum_p), np.ascontiguousarray(lum), win)
    out.append([np.clip(dx, -w / 4, w / 4) / 8.0, np.clip(dy, -h / 4, h / 4) / 8.0, resp])
    return np.concatenate([np.ravel(np.asarray(o, np.float64)) for o in out])


#: Controls whose 0 and 1 look the same (the renderer's hue rotates the palette by (hue − 0.5)·360°).
CIRCULAR_CONTROLS = ("hue",)


def _encode_targets(y: np.ndarray) -> np.ndarray:
    """Controls → regression targets: a circular control becomes (cos, sin) of its angle, appended at the end."""
    y = np.asarray(y, np.float64)
    extra = [f(2 * np.pi * y[:, CONTROL_NAMES.index(n)]) for n in CIRCULAR_CONTROLS for f in (np.cos, np.sin)]
    return np.column_stack([y] + extra) if extra else y


def _decode_targets(t: np.ndarray) -> np.ndarray:
    y = np.clip(t[:, :NUM_CONTROLS], 0.0, 1.0)
    for i, n in enumerate(CIRCULAR_CONTROLS):
        c, s_ = t[:, NUM_CONTROLS + 2 * i], t[:, NUM_CONTROLS + 2 * i + 1]
        y[:, CONTROL_NAMES.index(n)] = np.mod(np.arctan2(s_, c) / (2 * np.pi), 1.0)
    return y


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """Ridge on standardized features: (weights, bias, mean, scale)."""
    mean, scale = x.mean(0), x.std(0) + 1e-8
    z = (x - mean) / scale
    ym = y.mean(0)
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - ym))
    return w, ym, mean, scale


class ControlReadback:
    """Per-family ridge regression from readback_features(prev, cur) to the control vector in force for `cur`.

    The harness knows which family it asked a world for, so each family gets its own linear map (one map for all
    six families reads far less). A circular control (CIRCULAR_CONTROLS) is regressed as (cos, sin) of its angle
    and scored with metrics.circular_r2; the others with the ordinary R².
    """

    def __init__(self, families: Sequence[str], weights: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                 scale: np.ndarray, meta: dict[str, Any] | None = None):
        self.families = list(families)
        self.weights, self.bias, self.mean, self.scale = weights, bias, mean, scale  # leading axis: family
        self.meta = meta or {}

    @classmethod
    def fit(cls, feats: np.ndarray, targets: np.ndarray, fam: np.ndarray, families: Sequence[str],
            alpha: float | Sequence[float] = 10.0, meta: dict | None = None) -> ControlReadback:
        """`fam` holds each row's index into `families`; `alpha` is one ridge strength or one per family."""
        x = np.asarray(feats, np.float64)
        y = _encode_targets(targets)
        alphas = np.broadcast_to(np.asarray(alpha, np.float64), (len(families),))
        parts = []
        for f in range(len(families)):
            rows = fam == f
            if rows.sum() < 2:  # a family it never saw: predict the overall mean
                parts.append((np.zeros((x.shape[1], y.shape[1])), y.mean(0), x.mean(0), x.std(0) + 1e-8))
            else:
                parts.append(_ridge(x[rows], y[rows], float(alphas[f])))
        w, b, m, sc = (np.stack(p) for p in zip(*parts))
        return cls(families, w, b, m, sc, meta)

    def family_index(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.families.index(n) for n in names], np.int64)

    def predict(self, feats: np.ndarray, fam: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(feats, np.float64))
        fam = np.asarray(fam, np.int64)
        z = (x - self.mean[fam]) / self.scale[fam]
        return _decode_targets(np.einsum("nd,ndt->nt", z, self.weights[fam]) + self.bias[fam])

    def r2(self, feats: np.ndarray, targets: np.ndarray, fam: np.ndarray) -> dict[str, float | None]:
        t = np.asarray(targets, np.float64)
        p = self.predict(feats, fam)
        r = M.r2_scores(t, p)
        for n in CIRCULAR_CONTROLS:
            j = CONTROL_NAMES.index(n)
            r[j] = M.circular_r2(t[:, j], p[:, j])
        return {n: (None if not np.isfinite(v) else float(v)) for n, v in zip(CONTROL_NAMES, r)}

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "readback.npz", weights=self.weights, bias=self.bias, mean=self.mean, scale=self.scale)
        meta = {**self.meta, "families": self.families}
        (folder / "readback.json").write_text(json.dumps(_jsonable(meta), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ControlReadback:
        folder = Path(folder)
        meta = json.loads((folder / "readback.json").read_text())
        with np.load(folder / "readback.npz") as z:
            parts = (z["weights"], z["bias"], z["mean"], z["scale"])
        return cls(meta["families"], *parts, meta=meta)


def jump_schedule(rng: np.random.Generator, segments: int, seg_len: int = 8, pairs_per_segment: int = 3,
                  pitch_step: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """The read-back protocol's controls: (1 + segments·seg_len, NUM_CONTROLS) and a mask of the frames t whose
    pair (t−1, t) is read.

    Row 0 is the reset's controls. At each segment's start every knob but pitch jumps to a fresh uniform value;
    pitch walks (N(0, pitch_step) per segment) because the renderer eases the camera towards it over ~0.2 s.
    The last `pairs_per_segment` frames of each segment are read, once the jump has settled. Jumps decorrelate
    the knobs, so each control's R² means something on its own.
    """
    pitch_i = CONTROL_NAMES.index("pitch")
    n = 1 + segments * seg_len
    c = np.empty((n, NUM_CONTROLS), np.float32)
    keep = np.zeros(n, bool)
    cur = rng.uniform(0.0, 1.0, NUM_CONTROLS)
    c[0] = cur
    for s_ in range(segments):
        pitch = 1.0 - abs(1.0 - abs(cur[pitch_i] + rng.normal(0.0, pitch_step)))
        cur = rng.uniform(0.0, 1.0, NUM_CONTROLS)
        cur[pitch_i] = pitch
        lo = 1 + s_ * seg_len
        c[lo:lo + seg_len] = cur
        keep[lo + seg_len - pairs_per_segment:lo + seg_len] = True
    return c, keep


def readback_pairs(width: int, height: int, families: Sequence[str], seeds_per_family: int = 5,
                   segments: int = 40, seed: int = 0, progress: bool = False) -> dict[str, np.ndarray]:
    """Training pairs for the read-back regressor: one renderer stream per (family, seed) under jump_schedule
    (one reset per stream: some families take 100+ ms to build; long streams move the camera through the world).
    Returns x (features), y (controls), fam (family index), split (the stream's seed number within its family:
    train_readback holds the last out for testing and tunes on the one before)."""
    from tqdm import tqdm

    world = _renderer_world(width, height)
    rng = np.random.default_rng([seed, 2])
    xs, ys, fams, splits = [], [], [], []
    bar = tqdm(total=len(families) * seeds_per_family, desc="read-back training streams", unit="stream",
               disable=not progress, file=sys.stderr)
    for si in range(seeds_per_family):
        for f, fam in enumerate(families):
            ctl, keep = jump_schedule(rng, segments)
            prev = np.asarray(world.reset(int(rng.integers(1 << 31)), ctl[0], fam))
            for t in range(1, len(ctl)):
                cur = np.asarray(world.step(ctl[t]))
                if keep[t]:
                    xs.append(readback_features(prev, cur))
                    ys.append(ctl[t])
                    fams.append(f)
                    splits.append(si)
                prev = cur
            bar.update()
    bar.close()
    return {"x": np.array(xs), "y": np.array(ys), "fam": np.array(fams), "split": np.array(splits)}


def readback_probe(world, model: ControlReadback, width: int, height: int, segments: int = 20, seed: int = 0,
                   context: int = 2, progress: bool = False, desc: str = "read-back probe") -> dict[str, Any]:
    """Drive `world` through jump_schedule in every family (after `context` teacher-forced renderer frames) and
    read its controls back from its frames: R² per control, comparable with the regressor's held-out R²."""
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 4])
    truth = _renderer_world(width, height)
    xs, ys, fams = [], [], []
    for f, fam in enumerate(tqdm(model.families, desc=desc, unit="family", disable=not progress, file=sys.stderr)):
        ctl, keep = jump_schedule(rng, segments)
        s_ = int(rng.integers(1 << 31))
        k = max(1, context)
        head = truth_frames(truth, s_, fam, ctl[:k])
        start_world(world, s_, fam, ctl, head, k)
        prev = head[-1]
        for t in range(k, len(ctl)):
            cur = np.asarray(world.step(ctl[t]))
            if keep[t]:
                xs.append(readback_features(prev, cur))
                ys.append(ctl[t])
                fams.append(f)
            prev = cur
    r2 = model.r2(np.array(xs), np.array(ys), np.array(fams))
    return {"r2": r2, "r2_mean": _r2_mean(r2), "pairs": len(xs)}


def _r2_mean(r2: dict[str, float | None]) -> float | None:
    """The mean of max(R², 0) over the controls that have one (0 = nothing readable)."""
    vals = [max(v, 0.0) for v in r2.values() if v is not None]
    return float(np.mean(vals)) if vals else None


#: The knobs the prompt probe sets through words (render.caption names them), the motion knobs held neutral.
PROMPT_PROBE_CONTROLS = ("daylight", "hue", "energy", "fog")


def prompt_probe(world, model: ControlReadback, width: int, height: int, segments: int = 3, seed: int = 0,
                 settle: int = 20, frames: int = 48, progress: bool = False, desc: str = "prompt probe") -> dict:
    """Do a world's prompts steer it? Per family and segment: a random look (PROMPT_PROBE_CONTROLS) is asked for
    once in words — the renderer's caption of it as the prompt, the knobs left at NEUTRAL — and once by the knobs
    alone; frames `settle`..`frames` after the change are read back. R² per control of what was asked for (hue:
    circular), for both, so the words compare with the knobs under one protocol. Worlds without set_prompt: {}."""
    from tqdm import tqdm

    from .render import caption

    if not hasattr(world, "set_prompt"):
        return {}
    rng = np.random.default_rng([seed, 5])
    idx = [CONTROL_NAMES.index(n) for n in PROMPT_PROBE_CONTROLS]
    out: dict[str, Any] = {}
    jobs = [(f, fam, int(rng.integers(1 << 31)), rng.uniform(0.05, 0.95, len(idx))) for f, fam in
            enumerate(model.families) for _ in range(segments)]
    for how in ("prompt", "knobs"):
        xs, ys, fams = [], [], []
        for f, fam, s_, look in tqdm(jobs, desc=f"{desc} ({how})", unit="segment", disable=not progress,
                                     file=sys.stderr):
            asked = NEUTRAL.copy()
            asked[idx] = look
            world.set_prompt(None)
            world.reset(s_, NEUTRAL, fam)
            prev = None
            for _ in range(8):
                prev = np.asarray(world.step(NEUTRAL))
            if how == "prompt":
                world.set_prompt(caption(fam, asked))
            for t in range(frames):
                cur = np.asarray(world.step(asked if how == "knobs" else NEUTRAL))
                if t >= settle:
                    xs.append(readback_features(prev, cur))
                    ys.append(asked)
                    fams.append(f)
                prev = cur
        world.set_prompt(None)
        r2 = model.r2(np.array(xs), np.array(ys), np.array(fams))
        r2 = {n: r2[n] for n in PROMPT_PROBE_CONTROLS}
        out[how] = {"r2": r2, "r2_mean": _r2_mean(r2)}
    out["pairs"] = len(jobs) * (frames - settle)
    return out


def default_readback_dir(width: int, height: int) -> Path:
    root = Path(os.environ.get("VPROD_CACHE") or Path.home() / ".cache" / "vprod")
    return root / "eval" / f"readback-{width}x{height}"


def train_readback(folder: str | os.PathLike, width: int = 256, height: int = 144, segments: int = 40,
                   seeds_per_family: int = 8, seed: int = 0, progress: bool = True) -> ControlReadback:
    """Train the control read-back regressor on renderer streams and save it in `folder`.

    Per family: the last seed's stream is held out for the reported R², the one before picks the ridge strength,
    then the model is refitted on every stream but the held-out one. readback.json records the held-out R² per
    control and the command that reproduces the folder.
    """
    if seeds_per_family < 3:
        raise ValueError("the read-back regressor needs at least 3 streams per family (train, tune, test)")
    t0 = time.perf_counter()
    families = renderer_families()
    d = readback_pairs(width, height, families, seeds_per_family, segments, seed=seed, progress=progress)
    x, y, fam, split = d["x"], d["y"], d["fam"], d["split"]
    test = split == seeds_per_family - 1
    val = split == seeds_per_family - 2
    fit_rows = ~test & ~val
    grid = (1.0, 10.0, 100.0, 1000.0)
    best = []
    for f in range(len(families)):
        scores = []
        for a in grid:
            m = ControlReadback.fit(x[fit_rows], y[fit_rows], fam[fit_rows], families, a)
            rows = val & (fam == f)
            r2 = m.r2(x[rows], y[rows], fam[rows])
            scores.append(_r2_mean(r2))
        best.append(grid[int(np.argmax(scores))])
    meta = {
        "what": "per-family ridge regression: readback_features(prev, cur) → controls in force for cur",
        "control_names": list(CONTROL_NAMES), "circular": list(CIRCULAR_CONTROLS), "frame_size": [width, height],
        "features_size": list(READBACK_SIZE), "seeds_per_family": seeds_per_family, "segments": segments,
        "seed": seed, "alpha": dict(zip(families, best)), "pairs": len(x), "heldout_pairs": int(test.sum()),
        "renderer": renderer_fingerprint(),
        "train_command": (f"vprod eval --train-readback --size {width}x{height} --readback-dir {folder} "
                          f"--readback-segments {segments} --readback-seeds {seeds_per_family} --seed {seed}"),
    }
    model = ControlReadback.fit(x[~test], y[~test], fam[~test], families, best, meta)
    meta["r2_heldout"] = model.r2(x[test], y[test], fam[test])
    meta["r2_heldout_mean"] = _r2_mean(meta["r2_heldout"])
    meta["r2_heldout_per_family"] = {fname: model.r2(x[test & (fam == f)], y[test & (fam == f)],
                                                     fam[test & (fam == f)]) for f, fname in enumerate(families)}
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    model.save(folder)
    return model


def load_or_train_readback(folder: str | os.PathLike | None, width: int, height: int, segments: int = 40,
                           seeds_per_family: int = 8, seed: int = 0, retrain: bool = False,
                           progress: bool = True) -> ControlReadback:
    """The cached regressor in `folder` when it was trained on this renderer at this size; else train it now."""
    folder = Path(folder) if folder else default_readback_dir(width, height)
    if not retrain and (folder / "readback.npz").exists():
        try:
            model = ControlReadback.load(folder)
            if (model.meta.get("renderer") == renderer_fingerprint()
                    and list(model.meta.get("frame_size", [])) == [width, height]
                    and model.families == list(renderer_families())):
                return model
        except (OSError, ValueError, KeyError):
            pass
    return train_readback(folder, width, height, segments=segments, seeds_per_family=seeds_per_family, seed=seed,
                          progress=progress)


# ---------------------------------------------------------------------------------------------------------------
# Long streams
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class StreamPlan:
    seed: int
    controls: np.ndarray  # (n, NUM_CONTROLS)
    families: list[str]  # per frame
    switches: list[int]  # frame indices where the family changes


def plan_stream(families: Sequence[str], frames: int, seed: int, switch_every: int = 1000,
                not_before: int = 0) -> StreamPlan:
    rng = np.random.default_rng([seed, 3])
    controls = control_walk(rng, frames)
    fams, switches = family_schedule(rng, frames, families, switch_every, not_before=not_before)
    return StreamPlan(int(seed) * 100003 + 17, controls, fams, switches)


@dataclass
class StreamRecord:
    stats: np.ndarray  # (n, len(STAT_NAMES)) per frame
    step_ms: np.ndarray  # (n − 1,) milliseconds per step
    features: dict[str, np.ndarray]  # feature name → (m, D) on every `feature_stride`-th frame
    switches: list[int]
    samples: list[np.ndarray]  # a few frames spread over the stream (for a person to look at)


def run_stream(world, plan: StreamPlan, *, truth=None, context: int = 2, features: Sequence[str] = ("pixel",),
               feature_frames: int = 1000, n_samples: int = 6,
               progress: bool = False, desc: str = "stream") -> StreamRecord:
    """Run `world` free for len(plan.controls) frames, after `context` teacher-forced truth frames when a
    `truth` world is given (the same seed, controls and family), switching family at plan.switches.

    Per frame it keeps only statistics, and features for the Fréchet distance on ≤ feature_frames frames evenly
    spread; frames are not kept (10k frames would not fit in memory).
    """
    from tqdm import tqdm

    n = len(plan.controls)
    ctl = plan.controls
    if truth is not None:
        k = max(1, min(context, n))
        head = truth_frames(truth, plan.seed, plan.families[0], ctl[:k])
        start_world(world, plan.seed, plan.families[0], ctl, head, k)
    else:
        k = 1
        head = [np.asarray(world.reset(plan.seed, ctl[0], plan.families[0]))]
    stats = np.empty((n, len(M.STAT_NAMES)))
    step_ms = []
    f_stride = max(1, n // max(1, feature_frames))
    s_at = set(np.linspace(0, n - 1, n_samples).astype(int).tolist()) if n_samples else set()
    feat_buf: list[np.ndarray] = []
    feats: dict[str, list[np.ndarray]] = {name: [] for name in features}
    samples = []
    switch_set = set(plan.switches)
    set_family = getattr(world, "set_family", None)

    def flush():
        if feat_buf:
            batch = np.stack(feat_buf)
            for name in features:
                feats[name].append(np.asarray(FEATURES[name](batch), np.float64))
            feat_buf.clear()

    prev = None
    for t in tqdm(range(n), desc=desc, unit="frame", disable=not progress, file=sys.stderr, mininterval=0.5):
        if t < k:  # the (teacher-forced) head: truth frames, or the world's own first frame
            frame = head[t]
        else:
            if t in switch_set and set_family is not None:
                set_family(plan.families[t])
            t0 = time.perf_counter()
            frame = np.asarray(world.step(ctl[t]))
            step_ms.append((time.perf_counter() - t0) * 1e3)
        stats[t] = M.frame_stats(frame, prev)
        if t % f_stride == 0:
            feat_buf.append(frame)
            if len(feat_buf) >= 64:
                flush()
        if t in s_at:
            samples.append(frame.copy())
        prev = frame
    flush()
    return StreamRecord(
        stats=stats, step_ms=np.asarray(step_ms),
        features={name: np.concatenate(v) if v else np.zeros((0, 0)) for name, v in feats.items()},
        switches=list(plan.switches), samples=samples)


def drift_report(rec: StreamRecord, lo: np.ndarray, hi: np.ndarray, window: int,
                 pass_fraction: float) -> dict[str, Any]:
    w = M.window_stats(rec.stats, window)
    frac = M.fraction_inside(w, lo, hi)
    stats = {}
    for j, name in enumerate(M.STAT_NAMES):
        stats[name] = {"fraction_inside": float(frac[j]), "pass": bool(frac[j] >= pass_fraction),
                       "band": [float(lo[j]), float(hi[j])], "windows": w[:, j].tolist()}
    return {"frames": len(rec.stats), "window": window, "n_windows": len(w),
            "pass": bool(all(s["pass"] for s in stats.values())),
            "passed": [n for n, s in stats.items() if s["pass"]],
            "failed": [n for n, s in stats.items() if not s["pass"]],
            "stats": stats}


def _jump_report(rec: StreamRecord, window: int, before: int = 0) -> dict[str, Any]:
    if not rec.switches:
        return {"switches": 0, "median": None, "max": None, "per_switch": []}
    r = M.switch_jump_ratio(rec.stats[:, M.STAT_NAMES.index("change")], rec.switches, window, before=before)
    return {"switches": len(r), "median": float(np.median(r)), "max": float(np.max(r)), "per_switch": r}


def _timing(rec: StreamRecord) -> dict[str, Any]:
    if not len(rec.step_ms):
        return {}
    p50, p99 = np.percentile(rec.step_ms, [50, 99])
    return {"step_ms_p50": float(p50), "step_ms_p99": float(p99), "fps_p50": float(1e3 / max(p50, 1e-9)),
            "fps_p99": float(1e3 / max(p99, 1e-9)), "steps": len(rec.step_ms)}


# ---------------------------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class EvalConfig:
    """Sizes of one evaluation run. Defaults keep a baseline's whole run around two minutes on two cores."""

    width: int = 256
    height: int = 144
    seed: int = 0
    starts: int = 12  # rollout starts (seeds × families × control walks)
    horizon: int = 64  # rollout steps after the context
    context: int = 2  # truth frames every world observes before it predicts
    drift_frames: int = 10000  # length of the free-running stream
    window: int = 256  # drift window (frames)
    switch_every: int = 1000  # mean frames between family switches in streams
    reference_repeats: int = 1  # reference streams (the schedule replayed from other seeds): short runs want more
    band_lo: float = 1.0  # band percentiles over reference renderer windows
    band_hi: float = 99.0
    band_margin: float = 0.1  # band edges widened by the factor 1 + margin (seeds differ in palette)
    pass_fraction: float = 0.9  # a drift statistic passes when this fraction of windows lies in the band
    jump_window: int = 4  # ± frames around a switch for the jump ratio
    jump_window_wide: int = 30  # … and ± frames for the same ratio over a whole dissolve (the world model's memory)
    jump_before: int = 60  # … and the frames ahead of a switch that its local ratio measures it against
    feature_frames: int = 1000  # frames per stream for the Fréchet distance
    features: tuple[str, ...] = ("pixel",)
    readback: bool = True
    readback_dir: str | None = None  # default: $VPROD_CACHE or ~/.cache/vprod, /eval/readback-WxH
    readback_segments: int = 40  # jump segments per read-back training stream …
    readback_seeds: int = 8  # … and streams per family (≈45 s once at 256×144; the last one is held out)
    readback_probe_segments: int = 20  # jump segments per family when reading a world's controls back
    prompt_probe_segments: int = 3  # looks per family asked for in words (and by the knobs) by the prompt probe
    sample_horizons: tuple[int, ...] = (1, 4, 16, 64)
    ssim: bool = True
    plots: bool = True


def run_eval(world_name: str | Sequence[str], out_dir: str | os.PathLike, config: EvalConfig | None = None,
             progress: bool = True, **overrides) -> dict[str, Any]:
    """Evaluate one world, several ('a,b' or a list) or 'all' against the renderer; write out_dir/results.json
    and PNG plots; return the results dict. Keyword overrides set EvalConfig fields."""
    cfg = config or EvalConfig()
    if overrides:
        cfg = EvalConfig(**{**asdict(cfg), **overrides})
    t_start = time.perf_counter()
    names = world_names(world_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    families = renderer_families()
    w, h = cfg.width, cfg.height
    results: dict[str, Any] = {
        "version": RESULTS_VERSION, "worlds_evaluated": names, "config": _jsonable(asdict(cfg)),
        "families": list(families), "control_names": list(CONTROL_NAMES), "renderer": renderer_fingerprint(),
        "notes": {
            "psnr": f"dB; identical frames (+inf) are capped at {M.PSNR_CAP_DB:g} dB before averaging",
            "ssim": "Gaussian-window SSIM (11 taps, σ 1.5, K1 0.01, K2 0.03) on BT.601 luma",
            "delta_tpsnr": "mean over horizons of PSNR(true controls) − PSNR(controls permuted across time "
                           "and starts); 0 = the world ignores its controls",
            "drift": "per window: means of per-frame statistics; band = percentiles of overlapping windows of "
                     "renderer streams with the same controls and families from other seeds, edges widened "
                     "by the factor 1 + band_margin; "
                     "pass = fraction of windows inside ≥ pass_fraction",
            "frechet": "Fréchet distance between the world's stream frames and the reference renderer stream's "
                       "frames, per feature set; the renderer's own value is the floor (two seeds)",
            "readback_r2": "R² per control (hue: circular R²) of the read-back regressor on frame pairs of the "
                           "world driven by jump_schedule in every family; readback.r2_heldout is the same on "
                           "held-out renderer streams (the ceiling); *_mean averages max(R², 0) over controls "
                           "(0 = nothing readable)",
            "switch_jump_ratio": "largest change within ±jump_window frames of a family switch / median "
                                 "change elsewhere; compare with reference.switch_jump_ratio",
            "switch_jump_ratio_wide": "the same within ±jump_window_wide frames: a dissolve longer than jump_window",
            "switch_jump_ratio_local": "the same within ±jump_window frames, against the median change of the "
                                       "jump_before frames ahead of it (the motion the switch interrupts: a "
                                       "fast turn's own motion is not a jump)",
            "prompt_readback": "worlds that take prompts: R² of the read-back of a look asked for in words (the "
                               "renderer's caption as the prompt, knobs neutral) and, under the same protocol, by "
                               "the knobs (prompt_probe)",
        },
        "worlds": {name: {} for name in names},
    }

    worlds = {name: make_world(name, w, h) for name in names}
    truth = _renderer_world(w, h)

    # 1. rollouts
    plan = plan_rollouts(families, cfg.starts, cfg.horizon, cfg.context, cfg.seed)
    roll, truth_samples = rollout_scores(worlds, truth, plan, with_ssim=cfg.ssim, with_shuffled=True,
                                         sample_horizons=cfg.sample_horizons, progress=progress)
    for name in names:
        summ = roll[name].summary(cfg.sample_horizons)
        results["worlds"][name]["rollout"] = summ
        results["worlds"][name]["delta_tpsnr"] = summ["delta_tpsnr"]

    # 2. read-back regressor (cached)
    rb = None
    if cfg.readback:
        rb = load_or_train_readback(cfg.readback_dir, w, h, segments=cfg.readback_segments,
                                    seeds_per_family=cfg.readback_seeds, seed=cfg.seed, progress=progress)
        results["readback"] = {k: rb.meta.get(k) for k in ("r2_heldout", "r2_heldout_mean", "train_command",
                                                           "pairs", "heldout_pairs", "renderer")}
        results["readback"]["dir"] = str(cfg.readback_dir or default_readback_dir(w, h))

    # 3. the reference renderer stream(s): the band, the Fréchet reference set, the renderer's jump ratio. They
    # play the worlds' own control and family schedule from other seeds (other palettes, content, camera paths):
    # the band holds what the renderer does under these knobs, not the luck of which families a walk visited.
    stream_plan = plan_stream(families, cfg.drift_frames, cfg.seed, cfg.switch_every,
                              not_before=cfg.context + cfg.jump_window + 1)
    refs = []
    for i in range(max(1, cfg.reference_repeats)):
        ref_plan = replace(stream_plan, seed=stream_plan.seed + 1_000_003 * (i + 1))
        refs.append(run_stream(_renderer_world(w, h), ref_plan, truth=None, features=cfg.features,
                               feature_frames=cfg.feature_frames, n_samples=0, progress=progress,
                               desc="reference renderer stream"))
    ref = refs[0]
    ref_windows = np.concatenate([M.window_stats(r.stats, cfg.window, stride=max(1, cfg.window // 4))
                                  for r in refs])
    ref_features = {f: np.concatenate([r.features[f] for r in refs]) for f in cfg.features}
    lo, hi = M.band(ref_windows, cfg.band_lo, cfg.band_hi, cfg.band_margin)
    results["reference"] = {
        "frames": cfg.drift_frames * len(refs), "streams": len(refs), "n_windows": len(ref_windows),
        "band": {n: [float(lo[j]), float(hi[j])] for j, n in enumerate(M.STAT_NAMES)},
        "switch_jump_ratio": _jump_report(ref, cfg.jump_window),
        "switch_jump_ratio_local": _jump_report(ref, cfg.jump_window, before=cfg.jump_before),
        "timing": _timing(ref),
    }

    # 4. each world's free-running stream
    recs: dict[str, StreamRecord] = {}
    for name in names:
        world = worlds[name]  # reset() starts it afresh (a model need not be loaded twice)
        rec = run_stream(world, stream_plan, truth=_renderer_world(w, h), context=cfg.context,
                         features=cfg.features, feature_frames=cfg.feature_frames, progress=progress,
                         desc=f"{name} stream")
        recs[name] = rec
        r = results["worlds"][name]
        r["drift"] = drift_report(rec, lo, hi, cfg.window, cfg.pass_fraction)
        r["frechet"] = {f: M.frechet_distance_features(rec.features[f], ref_features[f]) for f in cfg.features
                        if len(rec.features[f]) > 1 and len(ref_features[f]) > 1}
        if rb is not None:
            probe = readback_probe(world, rb, w, h, segments=cfg.readback_probe_segments,
                                   seed=cfg.seed, context=cfg.context, progress=progress,
                                   desc=f"{name} read-back probe")
            r["readback_r2"], r["readback_r2_mean"] = probe["r2"], probe["r2_mean"]
            if cfg.prompt_probe_segments > 0 and hasattr(world, "set_prompt"):
                r["prompt_readback"] = prompt_probe(world, rb, w, h, segments=cfg.prompt_probe_segments,
                                                    seed=cfg.seed, progress=progress, desc=f"{name} prompt probe")
        r["switch_jump_ratio"] = _jump_report(rec, cfg.jump_window)
        r["switch_jump_ratio_wide"] = _jump_report(rec, cfg.jump_window_wide)
        r["switch_jump_ratio_local"] = _jump_report(rec, cfg.jump_window, before=cfg.jump_before)
        r["timing"] = _timing(rec)

    # 5. pictures
    if cfg.plots:
        results["plots"] = write_plots(out, results, roll, truth_samples, recs,
                                       M.window_stats(ref.stats, cfg.window), lo, hi, cfg)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1) + "\n")
    return results


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a results dict (what `vprod eval` prints)."""
    s: dict[str, Any] = {"results": results.get("results_path"), "seconds": results.get("seconds"), "worlds": {}}
    if "readback" in results:
        s["readback_r2_heldout_renderer"] = results["readback"].get("r2_heldout")
    s["reference_switch_jump_ratio"] = results.get("reference", {}).get("switch_jump_ratio", {}).get("median")
    for name, r in results["worlds"].items():
        ro = r.get("rollout", {})
        d = r.get("drift", {})
        s["worlds"][name] = {
            "psnr_at": ro.get("psnr_at"), "ssim_at": ro.get("ssim_at"), "delta_tpsnr": r.get("delta_tpsnr"),
            "drift_pass": d.get("pass"), "drift_failed": d.get("failed"),
            "frechet": r.get("frechet"), "readback_r2_mean": r.get("readback_r2_mean"),
            "prompt_readback_r2_mean": r.get("prompt_readback", {}).get("prompt", {}).get("r2_mean"),
            "switch_jump_ratio": r.get("switch_jump_ratio", {}).get("median"),
            "step_ms_p50": r.get("timing", {}).get("step_ms_p50"),
        }
    return _jsonable(s)


def _jsonable(x: Any) -> Any:
    """Plain JSON types; NaN and ±inf become None (dB values are capped at PSNR_CAP_DB before they get here)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    return x


# ---------------------------------------------------------------------------------------------------------------
# Plots (matplotlib loads only here)
# ---------------------------------------------------------------------------------------------------------------

_DPI = 80


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Save a figure as a small PNG: 256-colour palette when Pillow is there (it comes with matplotlib)."""
    import io

    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    try:
        from PIL import Image

        buf.seek(0)
        Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    except ImportError:  # pragma: no cover - Pillow is a matplotlib dependency
        Path(path).write_bytes(buf.getvalue())


def plot_rollout(path: Path, results: dict[str, Any]) -> None:
    """PSNR (true controls solid, shuffled dashed) and SSIM against horizon, every world on the same axes."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=_DPI)
    cap = M.PSNR_CAP_DB
    finite = [v for r in results["worlds"].values() for key in ("psnr", "psnr_shuffled")
              for v in r["rollout"][key] if v is not None and np.isfinite(v) and v < cap]
    top = min(cap, (max(finite) if finite else 40.0) + 8.0)
    bottom = max(0.0, (min(finite) if finite else 0.0) - 3.0)
    for i, (name, r) in enumerate(results["worlds"].items()):
        ro = r["rollout"]
        col = f"C{i}"
        x = np.array(ro["horizons"])
        p = np.array(ro["psnr"], np.float64)
        capped = np.all(p >= cap)
        label = f"{name} (= truth: ∞, capped)" if capped else name
        ax1.plot(x, np.minimum(p, top - 0.5), col, lw=2, label=label)
        ps = np.array([np.nan if v is None else v for v in ro["psnr_shuffled"]], np.float64)
        if np.isfinite(ps).any():
            ax1.plot(x, np.minimum(ps, top - 0.5), col, ls="--", lw=1.2,
                     label=f"{name}, shuffled controls (ΔtPSNR {r['delta_tpsnr']:.1f} dB)")
        sv = np.array([np.nan if v is None else v for v in ro["ssim"]], np.float64)
        ax2.plot(x, sv, col, lw=2, label=name)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("horizon (frames after the context)")
        ax.grid(alpha=0.3)
    ax1.set_ylim(bottom, top)
    ax1.set_ylabel("PSNR vs renderer (dB)")
    ax1.set_title("rollout PSNR (mean over starts)")
    ax1.legend(fontsize=7)
    ax2.set_ylabel("SSIM (luma)")
    ax2.set_title("rollout SSIM")
    ax2.set_ylim(top=1.02)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_drift(path: Path, results: dict[str, Any], ref_windows: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               cfg: EvalConfig) -> None:
    """Per statistic: the band (shaded), the first reference renderer stream's windows (grey: the same knobs and
    families from another seed), each world's windows."""
    plt = _plt()
    fig, axes = plt.subplots(3, 3, figsize=(11, 7), dpi=_DPI)
    ref_x = np.arange(len(ref_windows)) * cfg.window + cfg.window / 2
    for j, (name, ax) in enumerate(zip(M.STAT_NAMES, axes.ravel())):
        ax.axhspan(lo[j], hi[j], color="tab:green", alpha=0.15, label=f"band (p{cfg.band_lo:g}–p{cfg.band_hi:g}"
                   f"{f', ×/÷ {1 + cfg.band_margin:g}' if cfg.band_margin else ''})")
        ax.plot(ref_x, ref_windows[:, j], color="0.6", lw=0.8, label="renderer, other seed")
        fr = []
        for i, (wname, r) in enumerate(results["worlds"].items()):
            st = r["drift"]["stats"][name]
            y = np.array(st["windows"], np.float64)
            x = np.arange(len(y)) * cfg.window + cfg.window / 2
            ax.plot(x, y, f"C{i}", marker="o", ms=2.5, lw=1.2, label=wname)
            fr.append(f"{wname} {100 * st['fraction_inside']:.0f}%")
        if name == "sharpness":
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylim(bottom=0.0)
        ax.set_title(f"{name}\ninside: " + ", ".join(fr), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("frame", fontsize=8)
    fig.suptitle(f"drift over {cfg.drift_frames} frames, windows of {cfg.window}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_strip(path: Path, roll: dict[str, RolloutResult], truth_samples: dict[int, np.ndarray]) -> None:
    """Ground truth row above one row per world, at the last context frame and the sample horizons."""
    plt = _plt()
    hs = sorted(truth_samples)
    rows = [("renderer (truth)", truth_samples)] + [(n, {0: truth_samples[0], **r.samples}) for n, r in roll.items()]
    fig, axes = plt.subplots(len(rows), len(hs), figsize=(1.9 * len(hs), 1.25 * len(rows) + 0.3), dpi=_DPI,
                             squeeze=False)
    for i, (name, frames) in enumerate(rows):
        for j, hz in enumerate(hs):
            ax = axes[i, j]
            ax.imshow(frames[hz])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("context" if hz == 0 else f"h = {hz}", fontsize=8)
            elif hz:
                ax.set_title(f"{M.psnr_capped(truth_samples[hz], frames[hz]):.1f} dB", fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_stream(path: Path, recs: dict[str, StreamRecord], cfg: EvalConfig) -> None:
    """Frames spread over each world's free-running stream (drift you can see)."""
    plt = _plt()
    rows = [(n, r.samples) for n, r in recs.items() if r.samples]
    if not rows:
        return
    cols = max(len(s) for _, s in rows)
    at = np.linspace(0, cfg.drift_frames - 1, cols).astype(int)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 1.25 * len(rows) + 0.3), dpi=_DPI, squeeze=False)
    for i, (name, frames) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(frames):
                ax.imshow(frames[j])
            if i == 0:
                ax.set_title(f"frame {at[j]}", fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_readback(path: Path, results: dict[str, Any]) -> None:
    """R² per control: the regressor on held-out renderer streams (its ceiling) and on each world's stream."""
    plt = _plt()
    groups = [("renderer, held-out streams (ceiling)", results["readback"]["r2_heldout"])]
    groups += [(n, r["readback_r2"]) for n, r in results["worlds"].items() if r.get("readback_r2")]
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=_DPI)
    x = np.arange(len(CONTROL_NAMES))
    wbar = 0.8 / len(groups)
    for i, (name, r2) in enumerate(groups):
        y = np.array([np.nan if r2.get(c) is None else r2[c] for c in CONTROL_NAMES], np.float64)
        ax.bar(x + (i - (len(groups) - 1) / 2) * wbar, np.clip(y, -1, 1), wbar,
               color="0.4" if i == 0 else f"C{i - 1}", label=name)
    ax.set_xticks(x, CONTROL_NAMES, fontsize=8)
    ax.set_ylim(-1, 1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("R² (clipped to −1..1)")
    ax.set_title("control read-back: can the controls be read from the frames?")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    _save(fig, path)


def write_plots(out: Path, results: dict[str, Any], roll: dict[str, RolloutResult],
                truth_samples: dict[int, np.ndarray], recs: dict[str, StreamRecord], ref_windows: np.ndarray,
                lo: np.ndarray, hi: np.ndarray, cfg: EvalConfig) -> dict[str, str]:
    paths = {"rollout": out / "rollout_psnr.png", "drift": out / "drift_bands.png", "strip": out / "samples.png",
             "stream": out / "stream.png"}
    plot_rollout(paths["rollout"], results)
    plot_drift(paths["drift"], results, ref_windows, lo, hi, cfg)
    plot_strip(paths["strip"], roll, truth_samples)
    plot_stream(paths["stream"], recs, cfg)
    if "readback" in results:
        paths["readback"] = out / "readback_r2.png"
        plot_readback(paths["readback"], results)
    return {k: str(v) for k, v in paths.items() if v.exists()}


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def add_commands(subparsers) -> None:
    """Add `vprod eval` to the CLI's subparsers."""
    from functools import partial

    from ..cli import size_arg

    _size_any = partial(size_arg, even=False)  # the harness accepts odd sizes
    d = EvalConfig()
    p = subparsers.add_parser("eval", help="measure worlds against the procedural renderer (JSON + PNG plots)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="all",
                   help=f"world(s) to evaluate, comma-separated, or all (known: {', '.join(WORLDS)})")
    p.add_argument("--out", default="eval-out", help="folder for results.json and the plots")
    p.add_argument("--starts", type=int, default=d.starts, help="rollout starts")
    p.add_argument("--horizon", type=int, default=d.horizon, help="rollout horizon (frames)")
    p.add_argument("--context", type=int, default=d.context, help="true frames observed before predicting")
    p.add_argument("--drift-frames", type=int, default=d.drift_frames, help="length of the free-running stream")
    p.add_argument("--window", type=int, default=d.window, help="drift window (frames)")
    p.add_argument("--switch-every", type=int, default=d.switch_every, help="mean frames between family switches")
    p.add_argument("--size", type=_size_any, default=(d.width, d.height), help="frame size WIDTHxHEIGHT")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds every schedule, start and stream")
    p.add_argument("--reference-repeats", type=int, default=d.reference_repeats,
                   help="reference renderer streams for the drift band (short runs want 4 or more)")
    p.add_argument("--features", default=",".join(d.features),
                   help=f"feature sets for the Fréchet distance, comma-separated (known: {', '.join(FEATURES)})")
    p.add_argument("--no-ssim", action="store_true", help="skip SSIM (faster)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-readback", action="store_true", help="skip the control read-back regressor")
    p.add_argument("--readback-dir", help="where the read-back regressor is cached (default ~/.cache/vprod/eval/…)")
    p.add_argument("--readback-segments", type=int, default=d.readback_segments,
                   help="jump segments per renderer training stream (more: slower, better read-back)")
    p.add_argument("--readback-seeds", type=int, default=d.readback_seeds,
                   help="renderer training streams per family (at least 3: one tunes, one is held out)")
    p.add_argument("--train-readback", action="store_true",
                   help="(re)train the read-back regressor, print its held-out R², and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_eval)


def cmd_eval(args) -> int:
    w, h = args.size
    progress = not args.quiet
    if args.train_readback:
        folder = args.readback_dir or default_readback_dir(w, h)
        model = train_readback(folder, w, h, segments=args.readback_segments, seeds_per_family=args.readback_seeds,
                               seed=args.seed, progress=progress)
        print(json.dumps(_jsonable({"dir": str(folder), **model.meta}), indent=2))
        return 0
    try:
        names = world_names(args.world)
    except KeyError as e:
        print(f"vprod eval: {e.args[0]}", file=sys.stderr)
        return 2
    unknown = [f for f in args.features.split(",") if f.strip() and f.strip() not in FEATURES]
    if unknown:
        print(f"vprod eval: unknown feature set(s) {', '.join(unknown)}; known: {', '.join(FEATURES)}",
              file=sys.stderr)
        return 2
    cfg = EvalConfig(width=w, height=h, seed=args.seed, starts=args.starts, horizon=args.horizon,
                     context=args.context, drift_frames=args.drift_frames,
                     window=args.window, reference_repeats=args.reference_repeats,
                     features=tuple(f.strip() for f in args.features.split(",") if f.strip()),
                     switch_every=args.switch_every, ssim=not args.no_ssim, plots=not args.no_plots,
                     readback=not args.no_readback, readback_dir=args.readback_dir,
                     readback_segments=args.readback_segments, readback_seeds=args.readback_seeds)
    res = run_eval(names, args.out, cfg, progress=progress)
    res["results_path"] = str(Path(args.out) / "results.json")
    print(json.dumps(summarize(res), indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The world model and its encoder (loaded only when asked for)
# ---------------------------------------------------------------------------------------------------------------
def _weights(name: str, env: str):
    import os

    from .model import WEIGHTS_DIR

    return os.environ.get(env) or str(WEIGHTS_DIR / name)


def _model_world(width: int, height: int):
    """The world model (shipped weights, or VPROD_WORLD_WEIGHTS / VPROD_TOKENIZER_WEIGHTS / VPROD_LOOK_WEIGHTS /
    VPROD_CAMERA_WEIGHTS),
    2 steps (VPROD_WORLD_STEPS), WorldModel's default dtypes."""
    from .model import WorldModel, load_dynamics, load_tokenizer

    tok = load_tokenizer(_weights("tokenizer.safetensors", "VPROD_TOKENIZER_WEIGHTS"))
    dyn, meta = load_dynamics(_weights("world.safetensors", "VPROD_WORLD_WEIGHTS"))
    if (dyn.cfg.latent_w * tok.cfg.downsample, dyn.cfg.latent_h * tok.cfg.downsample) != (width, height):
        raise ValueError(f"the world model makes {dyn.cfg.latent_w * tok.cfg.downsample}x"
                         f"{dyn.cfg.latent_h * tok.cfg.downsample} frames; evaluate it with --size to match")
    import os

    from .look import load_look

    env = os.environ.get("VPROD_LOOK_WEIGHTS", "")  # "" the shipped look head, "none" without one, or a file
    look = True if env == "" else None if env == "none" else load_look(env)
    camera = os.environ.get("VPROD_CAMERA_WEIGHTS") or True  # the shipped camera head where the weights use one
    return WorldModel(tok, dyn, steps=int(os.environ.get("VPROD_WORLD_STEPS", "2")),
                      families=tuple(meta["trained"].get("families", ())), look=look, camera=camera)


_ENCODER = {}


def encoder_features(frames: np.ndarray) -> np.ndarray:
    """Features from the tokenizer's encoder: per-channel latent mean/std overall and on a 2×2 grid (N, 80)."""
    import torch

    from .model import load_tokenizer
    from .tokenizer import frames_to_tensor

    if "tok" not in _ENCODER:
        _ENCODER["tok"] = load_tokenizer(_weights("tokenizer.safetensors", "VPROD_TOKENIZER_WEIGHTS"))
    tok = _ENCODER["tok"]
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), 64):
            z = tok.encode(frames_to_tensor(frames[i:i + 64])).float()
            h, w = z.shape[2] // 2, z.shape[3] // 2
            parts = [z.mean(dim=(2, 3)), z.std(dim=(2, 3))]
            for cell in (z[:, :, :h, :w], z[:, :, :h, w:], z[:, :, h:, :w], z[:, :, h:, w:]):
                parts += [cell.mean(dim=(2, 3)), cell.std(dim=(2, 3))]
            out.append(torch.cat(parts, dim=1).double().numpy())
    return np.concatenate(out)


register_world("model", _model_world)
register_feature("encoder", encoder_features)
