"""The camera head: how the motion knobs move the picture, as a global affine flow, and how it moves the world.

The dynamics learned the knobs that change the look (with the look head's help) but not the ones that fly the
camera: turning the yaw, pitch or speed knob moved the model's picture by under 0.3 px a frame where the renderer
moves it 1.5–7 px (docs/world-model, "Motion knobs"). What a motion knob does to the picture is, to first order, a
global motion: a turn shifts it sideways, a pitch change shifts it up or down, speed makes it stream outwards. The
camera head is that first-order motion, fitted by ridge regression to the renderer: for each family, the affine flow
(u = a0 + a1·x + a2·y, v = b0 + b1·x + b2·y in pixels per frame at 256×144, x, y in −1..1) measured between
consecutive rendered frames (dense optical flow, fitted per frame) as a linear function of the turn rate, the speed,
the camera's pitch change and their products with the zoom. At run time (`where`, "cells" by default) the flow
is added up and the picture moves by whole latent cells — the newest context frame and the world's memory
(vprod.world.memory), exactly, as the decoder draws a latent moved by a cell exactly 8 px further — while the rest
under a cell moves the decoded picture (`present`, folded into its upscale). Fractions of a cell moved in the latent
itself (bilinear: "output", each new latent; "context", the newest context frame, for weights trained with
`vprod train world --camera`) blur what the decoder draws, and neither beat the dynamics alone on rollout PSNR
(docs/world-model has the figures). Speed's zoom is not applied in cells mode (repeating cells cost more than it
showed); the world model flies on speed instead by magnifying the picture at the spread the fitted maps give for it
(`flight_spread`, shown through the lens) and making the world again from the renderer where the flight has taken
the camera (vprod.world.model.WorldModel.fly).

    vprod train motion --out runs/motion1 --clips 64   # renders its clips (~3 min); motion.json + held-out figures
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: The reference frame size the flow is measured in (pixels per frame at this size).
REF_W, REF_H = 256, 144
FEATURES = ("turn", "speed", "pitch_step", "turn·zoom", "speed·zoom", "pitch_step·zoom", "1")
PARAMS = ("a0", "a1", "a2", "b0", "b1", "b2")


def _pitch_rate() -> float:
    from .render import DT, PITCH_TAU

    return 1.0 - math.exp(-DT / PITCH_TAU)


def _knobs(controls) -> np.ndarray:
    """The control vector as floats in 0..1 (a NaN counts as the neutral 0.5)."""
    return np.clip(np.nan_to_num(np.asarray(controls, np.float64).reshape(-1), nan=0.5), 0.0, 1.0)


# rotation_only: the features each of the flow's numbers keeps — the shifts (a0, b0) the turn's and the pitch step's
# alone (and their products with the zoom); the spread and shear all of them
_ROTATION = np.ones((len(FEATURES), len(PARAMS)))
_ROTATION[:, PARAMS.index("a0")] = [f in ("turn", "turn·zoom") for f in FEATURES]
_ROTATION[:, PARAMS.index("b0")] = [f in ("pitch_step", "pitch_step·zoom") for f in FEATURES]


def features(controls: np.ndarray, pitch: float) -> tuple[np.ndarray, float]:
    """Features of one step (controls of the new frame) and the eased camera pitch after it (−1..1)."""
    c = _knobs(controls)
    step = ((c[1] - 0.5) * 2.0 - pitch) * _pitch_rate()
    turn, speed, zc = (c[0] - 0.5) * 2.0, c[2] ** 1.3, c[3] - 0.5
    return np.array([turn, speed, step, turn * zc, speed * zc, step * zc, 1.0]), pitch + step


class CameraHead:
    """Per-family linear maps from the motion knobs to a global affine flow; warps latents by it."""

    def __init__(self, maps: dict[str, np.ndarray], meta: dict | None = None):
        self.maps = {k: np.asarray(v, np.float64).reshape(len(FEATURES), len(PARAMS)) for k, v in maps.items()}
        self.meta = dict(meta or {})
        self.gain = 1.0  # scales the flow (0 turns the head off)
        self.tolerance = 0.25  # px: a context frame moved by a flow this close to the step's needs no second commit
        # where the flow acts: "cells" (the picture moves by whole latent cells, nearest, exact; the rest of the
        # motion, under a cell, moves the decoded picture: `view`), "output" (each new latent, bilinear) or
        # "context" (the newest context frame, bilinear, before the dynamics draws from it)
        self.where = "cells"
        self.cells = (0, 0)  # cells: the whole cells (x, y) the last step moved the picture by
        self.view = np.eye(3)  # cells: latent picture → shown picture (pixels at REF size, centred), the sub-cell rest
        self.hysteresis = 0.6  # cells: the picture moves a whole cell once the rest passes this share of a cell
        # cells: speed zooms the latent by repeating cells (nearest) — measured to cost more than it shows, so off
        self.zoom = False
        # cells: a turn goes on into the picture's mirror image and round (the memory's cylinder, with no seam)
        self.wrap = True
        self.padding = "reflection"  # what enters at the edges (for shifts under half a cell: the edge cell itself)
        self.pitch = 0.0  # the eased camera pitch, −1..1, as the renderer eases it
        # the picture's shift comes from the camera's turn alone (sideways) and its pitch alone (up / down): the
        # fitted maps also shift it a little for speed, zoom and at rest (flying forward streams the ground down,
        # clouds drift) — added up by the whole-cell moves over a stretch of held knobs they walked the view off
        # the world (a terrain flown at speed 0.97 showed nothing but sky after ~150 frames; at rest it slid
        # sideways a cell every ~24 frames). docs/world-model, "A world made at night"
        self.rotation_only = True

    # --- state ---
    def reset(self, controls) -> None:
        self.pitch = (_knobs(controls)[1] - 0.5) * 2.0
        self.view = np.eye(3)

    def flow(self, controls, family: str | dict[str, float] | None) -> np.ndarray:
        """The 6 affine numbers for the step into a frame with `controls` (advances the eased pitch). `family` is a
        name or {name: weight} (a blend); an unknown or absent family moves nothing."""
        f, self.pitch = features(controls, self.pitch)
        weights = {family: 1.0} if isinstance(family, str) else dict(family or {})
        out = np.zeros(len(PARAMS))
        for name, w in weights.items():
            m = self.maps.get(name)
            if m is not None and w:
                out += w * (f @ (m * _ROTATION if self.rotation_only else m))
        return out * self.gain

    def peek(self, controls, family: str | dict[str, float] | None) -> np.ndarray:
        """flow() without easing the pitch on: the next step's flow if the controls stay."""
        pitch = self.pitch
        try:
            return self.flow(controls, family)
        finally:
            self.pitch = pitch

    # --- the warp ---
    def warp(self, z: torch.Tensor, params: np.ndarray) -> torch.Tensor:
        """z (B, C, H, W) moved by the affine flow `params` (pixels per frame at REF size): new(p) = old(p − flow)."""
        if not np.any(params):
            return z
        p = torch.as_tensor(np.asarray(params, np.float32)).view(1, len(PARAMS)).expand(z.shape[0], -1)
        return warp_affine(z, p, self.padding)

    # --- cells: whole-cell moves of the latent, the rest on the decoded picture ---
    def advance(self, params: np.ndarray, latent_hw: tuple[int, int]) -> np.ndarray | None:
        """Adds one step's flow to `view`; where the rest reaches a cell (or a zoom step: the picture's width grows
        or shrinks by two cells) returns the 3×3 map T (new latent position → old, REF pixels, centred) that
        `resample` moves the latent by, and keeps only the remainder in `view`; else None."""
        # only the flow's shift and its even spread: a turn's or pitch's shear would pile up in the view unbounded
        a0, a1, _, b0, _, b2 = np.asarray(params, np.float64).reshape(-1)
        spread = _spread(a1, b2) if self.zoom else 0.0
        self.view = flow_matrix([a0, spread * REF_W / 2, 0.0, b0, 0.0, spread * REF_H / 2]) @ self.view
        h, w = latent_hw
        cw, ch = REF_W / w, REF_H / h  # a latent cell in REF pixels
        zoom = w / (w - 2.0)  # the zoom step: the picture's width grows by a cell at either side
        (a, b, c), (d, e, f) = self.view[:2].tolist()  # plain floats: numpy calls on 2×2 cost more than the sums
        scale = math.sqrt(abs(a * e - b * d))
        s = 1.0 / zoom if scale > math.sqrt(zoom) else zoom if scale < 1 / math.sqrt(zoom) else 1.0
        # the rest's shift in cells: the view after the zoom step (view · diag(s, s, 1)), its 2×2 part⁻¹ · its shift
        a, b, d, e = a * s, b * s, d * s, e * s
        det = a * e - b * d
        dx, dy = (e * c - b * f) / det / cw, (a * f - d * c) / det / ch
        kx = float(round(dx)) if abs(dx) >= self.hysteresis else 0.0
        ky = float(round(dy)) if abs(dy) >= self.hysteresis else 0.0
        self.cells = (int(kx), int(ky))
        if s == 1.0 and not kx and not ky:
            return None
        # T = diag(s, s, 1) · shift(−k·cell): the new latent position → the old
        t = np.array([[s, 0.0, -s * kx * cw], [0.0, s, -s * ky * ch], [0.0, 0.0, 1.0]])
        self.view = self.view @ t
        return t

    def peek_move(self, controls, family, latent_hw: tuple[int, int]) -> np.ndarray | None:
        """advance(flow(…)) without changing any state: the next step's whole-cell move if the controls stay."""
        state = self.pitch, self.view.copy(), self.cells
        try:
            return self.advance(self.flow(controls, family), latent_hw)
        finally:
            self.pitch, self.view, self.cells = state

    def clip_flows(self, controls: np.ndarray, families: list[str | None]) -> np.ndarray:
        """(T, 6) flows of a clip: row t moves frame t−1 to frame t (row 0: zeros); the pitch starts eased."""
        self.reset(controls[0])
        out = np.zeros((len(controls), len(PARAMS)), np.float32)
        for t in range(1, len(controls)):
            out[t] = self.flow(controls[t], families[t])
        return out

    # --- files ---
    def save(self, path: str | Path) -> None:
        doc = {"features": FEATURES, "params": PARAMS, "ref_size": [REF_W, REF_H], "meta": self.meta,
               "maps": {k: np.round(v, 5).tolist() for k, v in self.maps.items()}}
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CameraHead:
        doc = json.loads(Path(path).read_text())
        if tuple(doc.get("features", ())) != FEATURES or tuple(doc.get("params", ())) != PARAMS:
            raise ValueError(f"{path}: camera head made for other features/params than this vprod's")
        return cls({k: np.array(v) for k, v in doc["maps"].items()}, doc.get("meta"))


_GRIDS: dict[tuple[int, int, str], torch.Tensor] = {}


def flow_matrix(params: np.ndarray) -> np.ndarray:
    """The affine flow `params` (PARAMS, pixels per frame at REF size) as a 3×3 map of centred REF pixels:
    p → p + flow(p)."""
    a0, a1, a2, b0, b1, b2 = (float(x) for x in np.asarray(params).reshape(-1))
    sx, sy = 2.0 / REF_W, 2.0 / REF_H  # pixels → the −1..1 units the flow is fitted in
    return np.array([[1 + a1 * sx, a2 * sy, a0], [b1 * sx, 1 + b2 * sy, b0], [0.0, 0.0, 1.0]])


def mirrored(u: torch.Tensor, w: int) -> torch.Tensor:
    """Column positions `u` (in cells, any value) folded into a picture `w` cells wide that goes on sideways into
    its own mirror image and then round: the columns 0, 1, …, w−1, w−2, …, 1, 0, 1, … — a cylinder 2·(w − 1)
    cells round with no seam. (A cylinder one picture wide joined the picture's right edge to its left: a hard
    vertical seam crossed the picture whenever the camera turned; docs/world-model.)"""
    period = 2.0 * (w - 1)
    u = torch.remainder(u, period)
    return torch.where(u > w - 1, period - u, u)


def resample(z: torch.Tensor, t: np.ndarray, padding: str = "reflection", wrap: bool = True) -> torch.Tensor:
    """z (N, C, H, W) with each cell taken, nearest, from where the 3×3 map `t` (new → old position, REF pixels,
    centred) sends the cell's centre: a whole-cell shift moves cells exactly, a zoom step repeats or drops a few.
    wrap: what enters at a side is the picture's mirror image (`mirrored`), else `padding`."""
    n, _, h, w = z.shape
    key = (h, w, str(z.device))
    base = _GRIDS.get(key)
    if base is None:
        base = _GRIDS[key] = _base_grid(h, w, z.device)
    px = torch.stack([base[..., 0] * (REF_W / 2), base[..., 1] * (REF_H / 2)], -1)
    m = torch.as_tensor(t, dtype=torch.float32, device=z.device)
    q = px @ m[:2, :2].T + m[:2, 2]
    if wrap and w > 1:  # x goes on into the picture's mirror image and round (see mirrored); y reflects
        cw = REF_W / w
        u = mirrored((q[..., 0] + REF_W / 2) / cw - 0.5, w)  # in cells
        q = torch.stack([(u + 0.5) * cw - REF_W / 2, q[..., 1]], -1)
    grid = torch.stack([q[..., 0] / (REF_W / 2), q[..., 1] / (REF_H / 2)], -1).expand(n, -1, -1, -1)
    out = F.grid_sample(z.float(), grid, mode="nearest", padding_mode=padding, align_corners=False)
    return out.to(z.dtype)


def present(frame: np.ndarray, view: np.ndarray | None, size: tuple[int, int] | None = None) -> np.ndarray:
    """The decoded picture `frame` (H, W, 3) shown through `view` (latent picture → shown picture, centred REF
    pixels) at `size` (w, h; default: the frame's). The move is made at the frame's own size and then upscaled: a
    warp straight to 1280×720 cost 2.9 ms, this 0.5 ms more than the plain resize. Bicubic: the flight magnifies the
    picture a little every frame, and bilinear resampling at 1 % took a third of its detail (the luma Laplacian's
    variance 53 → 34; bicubic 46, for ~0.1 ms more at 256×144)."""
    import cv2

    h, w = frame.shape[:2]
    ow, oh = size or (w, h)
    if view is not None and not np.allclose(view, np.eye(3), atol=1e-6):
        # frame pixel index → centred REF pixels → view → back to frame pixel index
        to_ref = np.array([[REF_W / w, 0, -REF_W / 2 + 0.5 * REF_W / w],
                           [0, REF_H / h, -REF_H / 2 + 0.5 * REF_H / h], [0, 0, 1.0]])
        m = (np.linalg.inv(to_ref) @ view @ to_ref)[:2]
        frame = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    return frame if (ow, oh) == (w, h) else cv2.resize(frame, (ow, oh), interpolation=cv2.INTER_LINEAR)


def lens(zoom_made: float, zoom: float, row: float = 0.5) -> np.ndarray:
    """How a camera at `zoom` shows a picture taken at `zoom_made`: magnified by the ratio of the two fields of
    view's half-angle tangents (shrunk for a wider one) about the middle column and the row `row` (a share of the
    height from the top: the optical centre, vprod.world.render.optical_row) — a pinhole camera's zoom, exactly,
    where nothing comes into view from beyond the picture. A 3×3 map, picture → shown picture, centred REF pixels
    (present's `view`)."""
    from .families import fov_deg

    return magnify(math.tan(math.radians(fov_deg(zoom_made)) / 2) / math.tan(math.radians(fov_deg(zoom)) / 2), row)


def magnify(s: float, row: float = 0.5) -> np.ndarray:
    """The picture magnified `s` times about the middle column and the row `row` (a share of the height from the
    top), as a 3×3 map, picture → shown picture, centred REF pixels."""
    return np.array([[s, 0.0, 0.0], [0.0, s, (1.0 - s) * (row - 0.5) * REF_H], [0.0, 0.0, 1.0]])


def _spread(a1: float, b2: float) -> float:
    """The even spread (a share of the picture a frame) of an affine flow that moves x by a1 and y by b2 pixels a
    frame at the picture's right and bottom edges (REF size)."""
    return 0.5 * (a1 * 2.0 / REF_W + b2 * 2.0 / REF_H)


#: the features the speed alone brings (its own and its product with the zoom)
_SPEED = [FEATURES.index("speed"), FEATURES.index("speed·zoom")]


def flight_spread(maps: dict[str, np.ndarray], controls, weights: dict) -> float:
    """How much a step at `controls` magnifies the picture flying forward (a share of it, e.g. 0.01: 1 % larger),
    from the camera head's fitted `maps`: the flow's even spread the speed alone brings, for the families `weights`
    ({name: weight})."""
    f = features(controls, 0.0)[0][_SPEED]
    out = 0.0
    for name, w in weights.items():
        m = maps.get(name)
        if m is not None and w:
            p = f @ m[_SPEED]
            out += w * _spread(p[PARAMS.index("a1")], p[PARAMS.index("b2")])
    return out / max(1e-9, sum(w for w in weights.values() if w))


def _base_grid(h: int, w: int, device) -> torch.Tensor:
    """(H, W, 2) cell centres in −1..1 units (x, y)."""
    ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)


def warp_affine(z: torch.Tensor, params: torch.Tensor, padding: str = "reflection") -> torch.Tensor:
    """Each latent of z (N, C, H, W) moved by its own affine flow params (N, 6) in pixels per frame at REF size
    (see PARAMS): new(p) = old(p − flow(p)), bilinear. Differentiable in z."""
    n, _, h, w = z.shape
    key = (h, w, str(z.device))
    base = _GRIDS.get(key)
    if base is None:
        base = _GRIDS[key] = _base_grid(h, w, z.device)
    gx, gy = base[..., 0], base[..., 1]
    p = params.to(z.device, torch.float32).view(n, 6, 1, 1)
    u = (p[:, 0] + p[:, 1] * gx + p[:, 2] * gy) * (2.0 / REF_W)  # pixels → normalised units
    v = (p[:, 3] + p[:, 4] * gx + p[:, 5] * gy) * (2.0 / REF_H)
    grid = torch.stack([gx - u, gy - v], -1)
    out = F.grid_sample(z.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.to(z.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------------------------

_YX: dict[tuple[int, int], np.ndarray] = {}


def affine_flow(prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, float]:
    """The global affine flow (6 numbers, PARAMS) from `prev` to `cur` (RGB uint8, REF size): dense Farnebäck
    flow, fitted by least squares weighted towards textured pixels (flat sky says nothing about motion); and
    `prev`'s texture (mean absolute Laplacian of its grey)."""
    import cv2

    a, b = (cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY) for x in (prev, cur))
    h, w = a.shape
    basis = _YX.get((h, w))
    if basis is None:
        y, x = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
        basis = _YX[(h, w)] = np.stack([np.ones_like(x), x, y], -1).reshape(-1, 3)
    f = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    lap = np.abs(cv2.Laplacian(a.astype(np.float32), cv2.CV_32F)).reshape(-1)
    wt = np.sqrt(lap + 1.0)
    aw = basis * wt[:, None]
    cu = np.linalg.lstsq(aw, f[..., 0].reshape(-1) * wt, rcond=None)[0]
    cv = np.linalg.lstsq(aw, f[..., 1].reshape(-1) * wt, rcond=None)[0]
    return np.concatenate([cu, cv]), float(lap.mean())


def motion_clips(family: str, clips: int, rng: np.random.Generator, frames: int = 24, seed0: int = 2000
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, flows and texture of consecutive frame pairs: each clip holds random knobs (pitch in 0.3–0.7, so the
    ground stays in view) and moves the pitch knob once half-way."""
    from . import eval as E
    from .render import RendererWorld

    truth = RendererWorld(REF_W, REF_H)
    xs, ys, tex = [], [], []
    for k in range(clips):
        c0 = rng.uniform(0, 1, 8)
        c0[1] = rng.uniform(0.3, 0.7)
        ctl = np.tile(c0.astype(np.float32), (frames, 1))
        ctl[frames // 2:, 1] = rng.uniform(0.3, 0.7)
        fr = E.truth_frames(truth, seed0 + 37 * k, family, ctl)
        pitch = (ctl[0, 1] - 0.5) * 2.0
        for t in range(1, len(fr)):
            f, pitch = features(ctl[t], pitch)
            flow, texture = affine_flow(fr[t - 1], fr[t])
            xs.append(f)
            ys.append(flow)
            tex.append(texture)
    return np.array(xs), np.array(ys), np.array(tex)


def ridge(x: np.ndarray, y: np.ndarray, strength: float = 0.01) -> np.ndarray:
    """Least squares on features scaled to unit RMS, with a ridge of `strength` × rows: directions the clips hardly
    vary (a pitch step times the zoom, in a family the pitch barely moves) stay small instead of absorbing noise."""
    scale = np.sqrt((x ** 2).mean(0)) + 1e-9
    xs = x / scale
    m = np.linalg.solve(xs.T @ xs + strength * len(x) * np.eye(x.shape[1]), xs.T @ y)
    return m / scale[:, None]


def robust_fit(x: np.ndarray, y: np.ndarray, tex: np.ndarray, trim: float = 0.15, rounds: int = 2) -> np.ndarray:
    """A ridge fit on the textured 80 % of pairs, then refitted `rounds` times without the worst `trim`."""
    textured = tex > np.percentile(tex, 20)
    keep = textured
    m = ridge(x[keep], y[keep])
    for _ in range(rounds):
        r = np.abs(y - x @ m).sum(1)
        keep = textured & (r < np.percentile(r[keep], 100 * (1 - trim)))
        m = ridge(x[keep], y[keep])
    return m


def fit(out: str | Path, clips: int = 24, heldout: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Fit the camera head on the renderer; writes motion.json and returns held-out figures per family."""
    from tqdm import tqdm

    from .render import FAMILIES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heldout = max(2, clips // 3) if heldout is None else heldout
    t0 = time.time()
    rng = np.random.default_rng(seed)
    maps, report = {}, {}
    for fam in tqdm(FAMILIES, desc="camera head", unit="family", disable=not progress, file=sys.stderr):
        x, y, tex = motion_clips(fam, clips, rng)
        xh, yh, th = motion_clips(fam, heldout, rng, seed0=9000)
        m = maps[fam] = robust_fit(x, y, tex)
        ok = th > np.percentile(th, 20)
        err = np.abs(yh[ok] - xh[ok] @ m)
        report[fam] = {"pairs": len(x), "heldout_pairs": int(ok.sum()),
                       "median_abs_error_px": dict(zip(PARAMS, np.round(np.median(err, 0), 3).tolist())),
                       "median_abs_flow_px": dict(zip(PARAMS, np.round(np.median(np.abs(yh[ok]), 0), 3).tolist())),
                       "turn_px_per_frame": round(float(-m[0, 0]), 3), "speed_divergence": round(float(m[1, 1]), 3)}
    meta = {"how": f"vprod train motion --clips {clips} --seed {seed}", "seconds": round(time.time() - t0, 1),
            "renderer_size": [REF_W, REF_H], "heldout": report}
    CameraHead(maps, meta).save(out / "motion.json")
    (out / "heldout.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
