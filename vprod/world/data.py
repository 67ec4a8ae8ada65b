"""Training data for the world model: clips from the procedural renderer and from user footage.

Dataset format (version 1)
--------------------------
A dataset is a folder DIR::

    DIR/meta.json
    DIR/clips/000000.npz
    DIR/clips/000001.npz
    ...

``meta.json``::

    {"version": 1, "width": 256, "height": 144, "fps": 30,
     "control_names": [...CONTROL_NAMES...],      # the order of the columns of `controls`
     "families": [...],                           # renderer families; `family` indexes this list
     "clips": N, "frames": total frames over all clips,
     "source": "renderer" | "footage",
     "command": "vprod data render --out ...",    # how it was made
     "args": {...},                               # the arguments, as given
     "complete": true,                            # false while a run is still writing clips
     "events": {"glide": n, "jump": n, "switch": n} | {"cut": n},   # renderer | footage
     "seconds": wall time of the run}

Each ``clips/NNNNNN.npz`` (a zip of .npy members, readable with ``np.load(path)``; no pickles) holds:

=============  ======================  ============================================================
``frames``     uint8   [T, H, W, 3]    RGB frames
``controls``   float32 [T, C]          the control vector in force for each frame (C = NUM_CONTROLS);
                                       ``frames[t]`` is the renderer's ``step(controls[t])``
``family``     int16   [T]             index into ``meta["families"]`` per frame; -1 for footage
``captions``   unicode [T]             the caption of each frame (renderer ``caption(family, controls)``
                                       or ``"user footage: <file name>"``)
``seed``       int64   scalar          the renderer seed of the clip (-1 for footage)
``events``     int32   [K, 2]          rows (frame index, kind): 0 glide start, 1 jump / cut,
                                       2 family switch. A jump row's frame is the first frame showing
                                       the new values; a glide row's frame is the first frame that moved.
=============  ======================  ============================================================

Footage clips also carry ``source`` (unicode scalar, the file name) and ``start`` (int64, the first frame's
index in the source video after frame-rate reduction). Clips are written to a temporary name and renamed, so a
clip file that exists is complete; :class:`ClipDataset` lists the clip files, so a dataset whose run was cut
short is still readable.

Control schedules (renderer clips)
----------------------------------
Each clip plays like a live show: the controls start near NEUTRAL (each knob within +-0.15), then a random
sequence of segments until the clip is full:

* hold   - knobs still for 0.25-1.5 s;
* glide  - 1-3 knobs move to new values over 1-4 s with smoothstep easing (at most 0.05 per frame);
* jump   - 1-3 knobs change instantly by at least 0.2 (a cut), then a hold;
* switch - the renderer's family changes (``Renderer.set_family``: time and camera carry on), then a hold.

That is the "show" schedule (the default). The "knobs" schedule (``--schedule knobs``, SCHEDULES) has the same
segments, shorter and denser in changes: holds 4-15 frames, glides 8-30 frames, jumps of 1-4 knobs in 45 % of
segments, switches in 5 %, knobs starting anywhere within NEUTRAL +- 0.5.

(chosen with probabilities SEGMENT_P = hold .25, glide .35, jump .22, switch .18; over 1500 clips of 64 frames:
0.77 glides, 0.25 jumps and 0.22 switches per clip, each family 16-17 % of the frames.)

Everything follows from the clip's seed (``np.random.default_rng(seed)``); clip i of a dataset with seed S
has seed ``clip_seed(S, i)``. Starting families are balanced: every block of ``len(FAMILIES)`` consecutive
clips starts once in each family (in a seeded order).

Footage pseudo-actions
----------------------
Global motion between consecutive frames (after resizing to the model size) comes from corners tracked by
pyramidal Lucas-Kanade (forward-backward checked; dense Farneback flow where a frame has too few corners), on
frames scaled to at most 192 px wide, fitted with a robust similarity transform (``cv2.estimateAffinePartial2D``,
RANSAC, so people moving inside the frame do not count as camera motion). Per frame t (motion from t-1 to t):

* pan  = -dx / width   (content moving left = camera panning right = positive)
* tilt = +dy / height  (content moving down = camera tilting up = positive)
* zoom = ln(scale)     (content growing = zooming in = positive)

smoothed over 5 frames (weights 1-2-3-2-1, never across a detected cut), then mapped onto the controls with the
meaning CONTROL_NAMES gives them, with scales taken from the renderer's camera (vprod.world.render: turn rate
(yaw-0.5)*2*1.1 rad/s, horizon row height*(0.42 + 0.55*2*(pitch-0.5)), field of view 100-66*zoom degrees) so
that the estimator reading the renderer's own frames gives back its knobs (`estimate_controls`; measured at
256x144, speed 0: yaw 0.25 / 0.75 / 1.0 read 0.23-0.26 / 0.74-0.77 / 1.0 in terrain, city, starfield and ocean;
pitch 0.5 -> 0.8 over a second reads 0.75-0.83 at the end in those, and zoom 0.5 -> 0.8 reads 0.80-0.85 in all
six; tunnel and plasma do not turn with yaw):

* ``yaw`` is a turn *rate*:  yaw = 0.5 + YAW_PER_PAN * pan, YAW_PER_PAN = 18 (at the neutral 67 deg field of
  view yaw 1 turns 0.037 rad = 2.8 % of the width per frame; so a pan of 2.8 % of the width per frame, ~0.8
  widths a second, reaches 0 or 1)
* ``pitch`` is an *angle*:   pitch = 0.5 + PITCH_PER_TILT * sum(tilt), PITCH_PER_TILT = 0.9 (the renderer's
  horizon moves 1.1 frame heights from pitch 0.5 to 1)
* ``zoom`` is a *level*:     the summed ln(scale) changes the focal length from the neutral 67 deg field of view;
  zoom = (100 - fov) / 66 as in the renderer (a 1.5x zoom-in from neutral reads 0.79, 2x 0.96)
* ``speed`` = SPEED_PER_MOTION * mean |track motion - fitted translation| / width, SPEED_PER_MOTION = 150: the motion
  that is not a pan or tilt (moving forward expands the view and adds parallax; moving things add too). A rough
  level: the renderer's families at speed 0.4 read 0.18 (starfield), 0.35 (terrain), 0.43 (plasma), 0.44
  (city), 0.66 (tunnel), 0.92 (ocean), since the knob moves each family's picture differently
* ``energy`` = ENERGY_PER_RESIDUAL * mean |track motion - fitted similarity| / width, ENERGY_PER_RESIDUAL = 60: the
  motion of things in the scene rather than of the camera (a residual of 0.5 % of the width per frame reads
  0.3, the neutral energy)

all clipped to 0..1. A camera moving forward also reads partly as a zoom-in (a similarity fit cannot tell a dolly
from a zoom: the renderer's tunnel at the neutral speed reads zoom 0.87 after a second), and energy is the
roughest of all (the renderer's energy knob 0 -> 1 reads 0.25 -> 0.51 in ocean, 0.09 -> 0.26 in plasma, and
barely moves elsewhere). Pitch and zoom restart from 0.5 at each clip and each detected cut (the absolute angle
of user footage is unknown). Other knobs stay NEUTRAL. Cuts (colour histograms of consecutive frames unlike) are
logged as events of kind 1 and carry no motion. Videos above 30 fps keep every round(fps/30)-th frame; a video's
last partial clip is kept when it has at least half of ``frames_per_clip`` frames.

Module import is light (numpy only); OpenCV, tqdm and the renderer load when used.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import CONTROL_NAMES, NEUTRAL, NUM_CONTROLS

FORMAT_VERSION = 1
FPS = 30

# event kinds
GLIDE, JUMP, SWITCH = 0, 1, 2
CUT = JUMP  # a cut in footage is logged like a jump
EVENT_NAMES = {GLIDE: "glide", JUMP: "jump", SWITCH: "switch"}

# schedule shape
START_SPREAD = 0.15  # knobs start within NEUTRAL +- this
HOLD_S = (0.25, 1.5)
GLIDE_S = (1.0, 4.0)
MIN_JUMP = 0.2  # a jump moves each chosen knob at least this far; a glide moves < 0.05 per frame
SEGMENT_P = {"hold": 0.25, "glide": 0.35, "jump": 0.22, "switch": 0.18}


@dataclass(frozen=True)
class ScheduleShape:
    """How a clip's controls move: segment probabilities, hold and glide lengths (s), knobs per change, start."""

    segment_p: dict
    hold_s: tuple[float, float]
    glide_s: tuple[float, float]
    knobs_p: tuple[float, ...]  # P(1, 2, 3, … knobs change) in a glide or a jump
    start_spread: float  # knobs start within NEUTRAL +- this


#: "show" plays like a live show (long holds and glides: the controls change in ~5 % of frames, so a model can read
#: most of the picture's look from the frames before). "knobs" is dense in control changes (a jump or a fast glide
#: every ~0.4 s, knobs anywhere in 0..1): clips in which the controls carry what the past frames do not — measured
#: need: a world model trained on "show" clips alone changed its picture by < 1.2 grey levels when a knob moved
#: from 0.5 to 0.95, where the renderer changed by 7-51.
SCHEDULES = {
    "show": ScheduleShape(SEGMENT_P, HOLD_S, GLIDE_S, (0.5, 0.35, 0.15), START_SPREAD),
    "knobs": ScheduleShape({"hold": 0.15, "glide": 0.35, "jump": 0.45, "switch": 0.05}, (0.13, 0.5), (0.27, 1.0),
                           (0.4, 0.3, 0.2, 0.1), 0.5),
}

# footage: scale factors from image motion to controls (see the module docstring)
YAW_PER_PAN = 18.0
PITCH_PER_TILT = 0.9
NEUTRAL_FOV_DEG, FOV_PER_ZOOM_DEG = 67.0, 66.0  # the renderer's field of view: 100 - 66 * zoom degrees
SPEED_PER_MOTION = 150.0
ENERGY_PER_RESIDUAL = 60.0
CUT_HIST_CORREL = 0.5  # consecutive frames whose colour histograms correlate less than this are a cut
SMOOTH_WEIGHTS = np.array([1, 2, 3, 2, 1], np.float64)

# render_dataset's default (workers=None) is one process per idle core, sampled at the start: measured at 256x144
# (64-frame clips, compressed) on this 2-core machine, 2 workers rendered 440-485 frames/s against 265-300 for 1
# when the machine was otherwise idle, but 205-250 against 255-300 while another process kept a core busy.
IDLE_SAMPLE_S = 0.3

# ---------------------------------------------------------------------------------------------------------------
# Clip files


def clip_path(root: str | os.PathLike, idx: int) -> Path:
    return Path(root) / "clips" / f"{idx:06d}.npz"


def write_clip(root: str | os.PathLike, idx: int, frames: np.ndarray, controls: np.ndarray, family: np.ndarray,
               captions: Sequence[str], seed: int, events: np.ndarray | Sequence[Sequence[int]] = (),
               compress: bool = True, **extra: Any) -> Path:
    """Write clip `idx` of the dataset in `root` (see the module docstring); returns its path.

    `frames` uint8 [T,H,W,3]; `controls` [T, NUM_CONTROLS]; `family` [T] (or one int for the whole clip);
    `captions` T strings (or one string); `events` rows (frame, kind). `compress` deflates at level 1 (fast;
    the frames dominate the size). `extra` arrays are stored beside the standard members.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T,H,W,3], not {frames.dtype} {frames.shape}")
    t = len(frames)
    controls = np.asarray(controls, np.float32)
    if controls.shape != (t, NUM_CONTROLS):
        raise ValueError(f"controls must be [{t}, {NUM_CONTROLS}], not {controls.shape}")
    family = np.asarray(family, np.int16)
    family = np.full(t, family, np.int16) if family.ndim == 0 else family
    captions = [captions] * t if isinstance(captions, str) else list(captions)
    if family.shape != (t,) or len(captions) != t:
        raise ValueError(f"family and captions need {t} entries, not {family.shape} and {len(captions)}")
    events = np.asarray(events, np.int32).reshape(-1, 2)
    arrays = {"frames": frames, "controls": controls, "family": family,
              "captions": np.array(captions, dtype=str) if t else np.zeros(0, "<U1"),
              "seed": np.int64(seed), "events": events}
    for k, v in extra.items():
        arrays[k] = np.asarray(v)
    path = clip_path(root, idx)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # deflate level 1: on rendered frames it kept 45 % of the bytes against 42 % at np.savez_compressed's level 6,
    # in 70 % of the time
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED,
                         compresslevel=1 if compress else None) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    os.replace(tmp, path)
    return path


def read_clip(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The members of one clip file as a dict (all, or only `keys`: reading `controls` alone skips the frames)."""
    with np.load(path, allow_pickle=False) as z:
        names = z.files if keys is None else [k for k in keys if k in z.files]
        out = {k: z[k] for k in names}
    if "seed" in out:
        out["seed"] = int(out["seed"])
    for k in ("source", "start"):
        if k in out and out[k].ndim == 0:
            out[k] = out[k].item()
    return out


class ClipDataset:
    """A dataset folder read lazily: ``len(ds)``, ``ds[i]`` (one clip as a dict), ``ds.iter_windows(...)``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists() and not (self.root / "clips").is_dir():
            raise FileNotFoundError(f"{self.root} is not a dataset (no meta.json, no clips/)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if self.meta.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"{self.root}: dataset version {self.meta['version']}, this reader knows {FORMAT_VERSION}")
        self.paths = sorted((self.root / "clips").glob("[0-9]*.npz"))

    @property
    def families(self) -> list[str]:
        return list(self.meta.get("families", []))

    @property
    def control_names(self) -> list[str]:
        return list(self.meta.get("control_names", CONTROL_NAMES))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return int(self.meta["width"]), int(self.meta["height"])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return {**read_clip(self.paths[i]), "index": i % len(self)}

    def load(self, i: int, keys: Sequence[str]) -> dict[str, Any]:
        """Only some members of clip `i` (e.g. ``("controls", "events")`` without decoding frames)."""
        return read_clip(self.paths[i], keys)

    def iter_windows(self, length: int, stride: int | None = None, shuffle: bool = False, seed: int = 0,
                     keys: Sequence[str] = ("frames", "controls", "family", "captions")) -> Iterator[dict[str, Any]]:
        """Windows of `length` consecutive frames, every `stride` frames (default `length`: no overlap).

        Each window is a dict with the `keys` members cut to the window, ``events`` (rows inside the window,
        frame index relative to its start), ``clip`` and ``start``. Each clip file is read once for all of its
        windows. `shuffle` visits clips, and the windows in a clip, in a seeded random order. Clips shorter than
        `length` give no window.
        """
        if length < 1:
            raise ValueError("length must be at least 1")
        stride = length if stride is None else stride
        if stride < 1:
            raise ValueError("stride must be at least 1")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self)) if shuffle else range(len(self))
        for ci in order:
            clip = read_clip(self.paths[ci], tuple(dict.fromkeys(tuple(keys) + ("family", "events"))))
            t = len(clip["family"])
            starts = np.arange(0, t - length + 1, stride)
            if shuffle:
                starts = rng.permutation(starts)
            ev = clip["events"]
            for s in starts:
                s = int(s)
                w = {k: clip[k][s:s + length] for k in keys}
                inside = (ev[:, 0] >= s) & (ev[:, 0] < s + length)
                w["events"] = ev[inside] - np.array([s, 0], np.int32)
                w["clip"] = int(ci)
                w["start"] = s
                yield w


def _prepare_out(out: Path, overwrite: bool) -> None:
    if (out / "meta.json").exists() or any((out / "clips").glob("*.npz")):
        if not overwrite:
            raise FileExistsError(f"{out} already holds a dataset (pass overwrite=True / --overwrite to replace it)")
        shutil.rmtree(out / "clips", ignore_errors=True)
        (out / "meta.json").unlink(missing_ok=True)
    (out / "clips").mkdir(parents=True, exist_ok=True)


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / "meta.json")


# ---------------------------------------------------------------------------------------------------------------
# Control schedules


@dataclass
class Schedule:
    """What one renderer clip plays: controls [T, C] float32, family [T] int16, events [K, 2] int32."""

    controls: np.ndarray
    family: np.ndarray
    events: np.ndarray


def clip_seed(seed: int, idx: int) -> int:
    """The seed of clip `idx` in a dataset rendered with `seed` (31 bits, fine for any RNG)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(idx)]).generate_state(1)[0] & 0x7FFFFFFF)


def start_family(seed: int, idx: int, num_families: int) -> int:
    """Balanced starting family: each block of `num_families` clips starts once in each family."""
    block, pos = divmod(idx, num_families)
    return int(np.random.default_rng([int(seed) & 0xFFFFFFFF, block, 7]).permutation(num_families)[pos])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def make_schedule(seed: int, frames: int, num_families: int, first_family: int | None = None,
                  fps: int = FPS, style: str = "show") -> Schedule:
    """A control schedule for one clip of `frames` frames in the given style (SCHEDULES; module docstring)."""
    shape = SCHEDULES[style]
    rng = np.random.default_rng(seed)
    fam = int(rng.integers(num_families)) if first_family is None else int(first_family)
    c = np.clip(NEUTRAL + rng.uniform(-shape.start_spread, shape.start_spread, NUM_CONTROLS), 0.0, 1.0)
    controls = np.empty((frames, NUM_CONTROLS), np.float64)
    family = np.empty(frames, np.int16)
    events: list[tuple[int, int]] = []
    kinds, probs = list(shape.segment_p), np.array(list(shape.segment_p.values()))
    n_knobs = np.arange(1, len(shape.knobs_p) + 1)
    hold_n = (max(1, round(shape.hold_s[0] * fps)), max(1, round(shape.hold_s[1] * fps)))
    glide_n = (max(2, round(shape.glide_s[0] * fps)), max(2, round(shape.glide_s[1] * fps)))
    t = 0
    while t < frames:
        kind = kinds[rng.choice(len(kinds), p=probs)]
        if t == 0 and kind in ("jump", "switch"):  # nothing before frame 0 to cut from
            kind = "hold"
        if kind == "switch" and num_families < 2:
            kind = "jump"
        if kind == "glide":
            n = int(rng.integers(glide_n[0], glide_n[1] + 1))
            knobs = rng.choice(NUM_CONTROLS, size=int(rng.choice(n_knobs, p=shape.knobs_p)), replace=False)
            target = c.copy()
            for k in knobs:
                target[k] = (np.clip(NEUTRAL[k] + rng.normal(0, 0.05), 0, 1) if rng.random() < 0.25
                             else rng.uniform(0.0, 1.0))
            ease = _smoothstep(np.arange(1, n + 1) / n)[:, None]
            seg = c + (target - c) * ease
            m = min(n, frames - t)
            controls[t:t + m] = seg[:m]
            family[t:t + m] = fam
            if np.any(seg[0].astype(np.float32) != c.astype(np.float32)):
                events.append((t, GLIDE))
            c = seg[m - 1].copy()
            t += m
            continue
        if kind == "jump":
            size = int(rng.integers(1, 4)) if style == "show" else int(rng.choice(n_knobs, p=shape.knobs_p))
            for k in rng.choice(NUM_CONTROLS, size=size, replace=False):
                room = [d for d, r in ((1.0, 1.0 - c[k]), (-1.0, c[k])) if r >= MIN_JUMP]
                d = room[int(rng.integers(len(room)))]
                c[k] += d * rng.uniform(MIN_JUMP, 1.0 - c[k] if d > 0 else c[k])
                c[k] = min(1.0, max(0.0, c[k]))
            events.append((t, JUMP))
        elif kind == "switch":
            fam = int((fam + rng.integers(1, num_families)) % num_families)
            events.append((t, SWITCH))
        n = int(rng.integers(hold_n[0], hold_n[1] + 1))
        m = min(n, frames - t)
        controls[t:t + m] = c
        family[t:t + m] = fam
        t += m
    return Schedule(controls.astype(np.float32), family, np.array(events, np.int32).reshape(-1, 2))


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _load_renderer_module():
    from . import render  # the procedural renderer; imported only when rendering

    return render


def _caption_fn(module, renderer):
    fn = getattr(module, "caption", None) or getattr(renderer, "caption", None)
    if fn is None:
        return lambda family, controls: family
    return fn


def render_clip(renderer, module, families: Sequence[str], seed: int, frames: int, first_family: int,
                style: str = "show") -> dict:
    """Render one clip with an existing Renderer: the dict of write_clip's arguments (without root/idx)."""
    s = make_schedule(seed, frames, len(families), first_family, style=style)
    caption = _caption_fn(module, renderer)
    renderer.reset(seed, families[int(s.family[0])], s.controls[0])
    out = None
    captions = []
    for t in range(frames):
        if t and s.family[t] != s.family[t - 1]:
            renderer.set_family(families[int(s.family[t])])
        img = np.asarray(renderer.step(s.controls[t]))
        if out is None:
            out = np.empty((frames,) + img.shape, np.uint8)
        out[t] = img
        captions.append(str(caption(families[int(s.family[t])], s.controls[t])))
    return {"frames": out, "controls": s.controls, "family": s.family, "captions": captions, "seed": seed,
            "events": s.events}


# per-process state of a worker (and of the main process when workers=1)
_WORKER: dict[str, Any] = {}


def _worker_init(width: int, height: int, one_thread: bool = False) -> None:
    if one_thread:  # a worker process among others: OpenCV's own thread pool would only oversubscribe the cores
        import cv2

        cv2.setNumThreads(1)
    module = _load_renderer_module()
    _WORKER.update(module=module, renderer=module.Renderer(width=width, height=height), size=(width, height),
                   families=tuple(module.FAMILIES))


def _worker_clip(task: tuple) -> tuple[int, int, list[int]]:
    out, idx, seed, frames, first_family, compress, style = task
    clip = render_clip(_WORKER["renderer"], _WORKER["module"], _WORKER["families"], seed, frames, first_family,
                       style)
    write_clip(out, idx, compress=compress, **clip)
    return idx, frames, np.bincount(clip["events"][:, 1], minlength=3).tolist()


def _env_one_thread() -> dict[str, str | None]:
    """Pin BLAS/OpenMP pools of child processes to one thread (two workers on two cores); returns the old env."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {n: os.environ.get(n) for n in names}
    for n in names:
        os.environ[n] = "1"
    return old


def _env_restore(old: dict[str, str | None]) -> None:
    for n, v in old.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def idle_cores(sample_s: float = IDLE_SAMPLE_S) -> float | None:
    """How many cores were idle over the last `sample_s` seconds (Linux /proc/stat), or None where unknown."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[3] + v[4], sum(v)  # idle + iowait, all

    try:
        i0, t0 = read()
        time.sleep(sample_s)
        i1, t1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return (i1 - i0) / max(1, t1 - t0) * (os.cpu_count() or 1)  # /proc/stat's first line sums every core


def auto_workers(clips: int) -> int:
    """The default number of render processes: one per idle core (at least 1, at most one per clip)."""
    idle = idle_cores()
    n = _cpu_count() if idle is None else int(idle + 0.3)
    return max(1, min(n, _cpu_count(), clips))


def render_dataset(out: str | os.PathLike, clips: int, frames_per_clip: int = 64, width: int = 256,
                   height: int = 144, seed: int = 0, workers: int | None = None, progress: bool = True,
                   overwrite: bool = False, compress: bool = True, command: str | None = None,
                   schedule: str = "show") -> dict[str, Any]:
    """Render `clips` clips of `frames_per_clip` frames into the dataset folder `out`; returns a summary dict.

    `workers` processes render in parallel (spawn start method); None picks one per idle core (auto_workers:
    on a 2-core machine two workers were ~1.6x faster when it was otherwise idle and ~20 % slower while another
    process held a core). The result is the same for any number of workers. With workers > 1 a calling script
    needs the usual ``if __name__ == "__main__":`` guard (spawn re-imports it; ``vprod`` and ``python -m vprod``
    are safe). `overwrite` replaces a dataset
    already in `out`. `command` is recorded in meta.json (the CLI passes its command line).
    """
    if clips < 0 or frames_per_clip < 1:
        raise ValueError("clips must be >= 0 and frames_per_clip >= 1")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r} (one of {', '.join(SCHEDULES)})")
    workers = auto_workers(clips) if workers is None else max(1, min(int(workers), max(1, clips)))
    out = Path(out)
    _prepare_out(out, overwrite)
    module = _load_renderer_module()
    families = tuple(module.FAMILIES)
    args = {"clips": clips, "frames_per_clip": frames_per_clip, "width": width, "height": height, "seed": seed,
            "workers": workers, "compress": compress, "schedule": schedule}
    meta = {"version": FORMAT_VERSION, "width": width, "height": height, "fps": FPS,
            "control_names": list(CONTROL_NAMES), "families": list(families), "clips": 0, "frames": 0,
            "source": "renderer", "command": command or f"render_dataset({out!s})", "args": args,
            "complete": False}
    _write_meta(out, meta)
    tasks = [(str(out), i, clip_seed(seed, i), frames_per_clip, start_family(seed, i, len(families)), compress,
              schedule) for i in range(clips)]
    from tqdm import tqdm

    counts = np.zeros(3, np.int64)
    t0 = time.perf_counter()
    bar = tqdm(total=clips * frames_per_clip, unit="frame", desc="render", disable=not progress, smoothing=0.1)
    try:
        if workers == 1:
            import cv2

            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # measured: one OpenCV thread renders 5-15 % faster here than the default pool
            try:
                _worker_init(width, height)
                for _, n, ev in map(_worker_clip, tasks):
                    counts += ev
                    bar.update(n)
            finally:
                cv2.setNumThreads(threads)
        else:
            import multiprocessing as mp

            old = _env_one_thread()
            try:
                pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(width, height, True))
            finally:
                _env_restore(old)
            with pool:  # imap_unordered: a slow clip does not hold back the progress bar
                for _, n, ev in pool.imap_unordered(_worker_clip, tasks, chunksize=1):
                    counts += ev
                    bar.update(n)
    finally:
        bar.close()
        _WORKER.clear()
    seconds = time.perf_counter() - t0
    total = clips * frames_per_clip
    meta.update(clips=clips, frames=total, complete=True, seconds=round(seconds, 3),
                events={"glide": int(counts[GLIDE]), "jump": int(counts[JUMP]), "switch": int(counts[SWITCH])})
    _write_meta(out, meta)
    return {"out": str(out), "source": "renderer", "clips": clips, "frames": total, "seconds": round(seconds, 3),
            "frames_per_s": round(total / seconds, 1) if seconds > 0 else None, "workers": workers,
            "events": meta["events"]}


# ---------------------------------------------------------------------------------------------------------------
# Footage


@dataclass
class Motion:
    """Global motion from one frame to the next, in frame units (see the module docstring)."""

    pan: float = 0.0  # camera right +, fraction of the width per frame
    tilt: float = 0.0  # camera up +, fraction of the height per frame
    zoom: float = 0.0  # ln(scale) per frame, zoom in +
    motion: float = 0.0  # mean |flow - fitted translation| / width (all but pan and tilt)
    residual: float = 0.0  # mean |flow - camera model| / width
    cut: bool = False


class MotionEstimator:
    """Global camera motion between consecutive RGB frames.

    Corners (``cv2.goodFeaturesToTrack``) tracked by pyramidal Lucas-Kanade with a forward-backward check, then a
    RANSAC similarity fit (``cv2.estimateAffinePartial2D``). Frames with too few trackable corners fall back to
    dense Farneback flow on a grid. (Farneback alone misread the renderer's starfield at 128x72 - the sign of a
    tilt flipped on point-like stars - while the tracker read every family within a few hundredths.)
    """

    MIN_TRACKS = 12

    def __init__(self, width: int, height: int, work_width: int = 192, grid: int = 4):
        import cv2

        self.cv2 = cv2
        self.scale = min(1.0, work_width / width)
        self.w = max(16, round(width * self.scale))
        self.h = max(16, round(height * self.scale))
        self.centre = np.array([(self.w - 1) / 2, (self.h - 1) / 2], np.float32)
        m = max(2, round(0.06 * min(self.w, self.h)))  # dense flow at the border is unreliable
        ys, xs = np.mgrid[m:self.h - m:grid, m:self.w - m:grid]
        self.grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        self.lk = dict(winSize=(13, 13), maxLevel=3,
                       criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        self.prev_gray: np.ndarray | None = None
        self.prev_hist: np.ndarray | None = None

    def reset(self) -> None:
        self.prev_gray = self.prev_hist = None

    def _hist(self, small: np.ndarray) -> np.ndarray:
        cv2 = self.cv2
        return np.stack([cv2.calcHist([small], [ch], None, [16], [0, 256]).ravel() for ch in range(3)])

    def _tracks(self, prev: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Corner positions in prev and gray (N, 2), or None when too few track both ways."""
        cv2 = self.cv2
        p0 = cv2.goodFeaturesToTrack(prev, maxCorners=400, qualityLevel=0.005, minDistance=3, blockSize=5)
        if p0 is None or len(p0) < self.MIN_TRACKS:
            return None
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, gray, p0, None, **self.lk)
        pb, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev, p1, None, **self.lk)
        p0, p1, pb = p0.reshape(-1, 2), p1.reshape(-1, 2), pb.reshape(-1, 2)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm(pb - p0, axis=1) < 0.5)
        return (p0[ok], p1[ok]) if ok.sum() >= self.MIN_TRACKS else None

    def _dense(self, prev: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cv2 = self.cv2
        a, b = cv2.GaussianBlur(prev, (0, 0), 1.0), cv2.GaussianBlur(gray, (0, 0), 1.0)
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        f = flow[self.grid[:, 1].astype(int), self.grid[:, 0].astype(int)]
        return self.grid, self.grid + f

    def __call__(self, frame: np.ndarray) -> Motion | None:
        """Motion from the previous frame to `frame` (None for the first frame)."""
        cv2 = self.cv2
        small = cv2.resize(frame, (self.w, self.h), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        hist = self._hist(small)
        prev, prev_hist = self.prev_gray, self.prev_hist
        self.prev_gray, self.prev_hist = gray, hist
        if prev is None:
            return None
        correl = min(cv2.compareHist(prev_hist[c], hist[c], cv2.HISTCMP_CORREL) for c in range(3))
        if correl < CUT_HIST_CORREL:
            return Motion(cut=True)
        pts = self._tracks(prev, gray) or self._dense(prev, gray)
        a, b = pts[0] - self.centre, pts[1] - self.centre  # centred: the fit's translation is the centre's
        f = b - a
        m, _inliers = cv2.estimateAffinePartial2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=0.5, maxIters=500,
                                                  confidence=0.99, refineIters=10)
        if m is None:  # degenerate: translation only
            m = np.array([[1, 0, float(np.median(f[:, 0]))], [0, 1, float(np.median(f[:, 1]))]], np.float64)
        s = float(math.hypot(m[0, 0], m[1, 0]))
        model = a @ m[:, :2].T + m[:, 2] - a
        return Motion(pan=-float(m[0, 2]) / self.w, tilt=float(m[1, 2]) / self.h, zoom=math.log(max(s, 1e-6)),
                      motion=float(np.linalg.norm(f - m[:, 2], axis=1).mean()) / self.w,
                      residual=float(np.linalg.norm(f - model, axis=1).mean()) / self.w)


def _smooth(values: np.ndarray, shot: np.ndarray, cuts: np.ndarray, i: int) -> np.ndarray:
    """values[i] averaged with its neighbours (SMOOTH_WEIGHTS) of the same shot; cut frames carry no motion."""
    r = len(SMOOTH_WEIGHTS) // 2
    lo, hi = max(0, i - r), min(len(values), i + r + 1)
    w = SMOOTH_WEIGHTS[lo - i + r:hi - i + r] * (shot[lo:hi] == shot[i]) * ~cuts[lo:hi]
    total = w.sum()
    return (values[lo:hi] * w[:, None]).sum(0) / total if total > 0 else np.zeros(values.shape[1])


class MotionTrack:
    """Per-frame camera motion of one continuous video, fed frame by frame; smoothed rates on demand.

    Holds only the raw numbers of frames not yet forgotten (`forget`), so hour-long videos stream.
    """

    RADIUS = len(SMOOTH_WEIGHTS) // 2

    def __init__(self, width: int, height: int):
        self.est = MotionEstimator(width, height)
        self.raw: list[np.ndarray] = []  # pan, tilt, zoom, motion, residual of frames base, base+1, ...
        self.cut: list[bool] = []
        self.base = 0

    def __len__(self) -> int:
        return self.base + len(self.raw)

    def add(self, frame: np.ndarray) -> None:
        m = self.est(frame)
        if m is None:  # the first frame: it moves like the second (filled in when that arrives)
            self.raw.append(np.zeros(5))
            self.cut.append(False)
            return
        self.raw.append(np.array([m.pan, m.tilt, m.zoom, m.motion, m.residual]))
        self.cut.append(m.cut)
        if len(self) == 2 and not m.cut:
            self.raw[0] = self.raw[1].copy()

    def rates(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed rates [hi-lo, 5] and cut flags [hi-lo] of frames lo..hi-1 (needs RADIUS frames beyond hi
        for the final values, where the video goes on)."""
        a, b = max(self.base, lo - self.RADIUS), min(len(self), hi + self.RADIUS)
        vals = np.array(self.raw[a - self.base:b - self.base], np.float64)
        cuts = np.array(self.cut[a - self.base:b - self.base], bool)
        shot = np.cumsum(cuts)
        rates = np.stack([_smooth(vals, shot, cuts, i - a) for i in range(lo, hi)]).reshape(hi - lo, 5)
        own = cuts[lo - a:hi - a]
        rates[own] = 0.0
        return rates, own

    def forget(self, before: int) -> None:
        """Drop what frames before `before` - RADIUS hold (no later clip reads them)."""
        drop = max(0, before - self.RADIUS - self.base)
        del self.raw[:drop], self.cut[:drop]
        self.base += drop


def estimate_controls(frames: Sequence[np.ndarray] | Iterator[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-actions of one continuous sequence of RGB frames, as footage_to_dataset makes them for a clip:
    controls [T, NUM_CONTROLS] float32 and cut flags [T]. Also a control read-back for any world's frames."""
    track = None
    for f in frames:
        if track is None:
            track = MotionTrack(f.shape[1], f.shape[0])
        track.add(f)
    if track is None:
        return np.zeros((0, NUM_CONTROLS), np.float32), np.zeros(0, bool)
    rates, cuts = track.rates(0, len(track))
    return motion_to_controls(rates, cuts), cuts


def zoom_from_log_scale(log_scale: float) -> float:
    """The zoom knob whose field of view is the neutral one magnified by exp(log_scale) (unclipped)."""
    half = math.atan(math.tan(math.radians(NEUTRAL_FOV_DEG) / 2.0) * math.exp(-log_scale))
    return (100.0 - 2.0 * math.degrees(half)) / FOV_PER_ZOOM_DEG  # 0.5 at log_scale 0: 100 - 67 = 66 * 0.5


def motion_to_controls(rates: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Controls [T, C] for one clip from smoothed per-frame rates [T, 5] (pan, tilt, zoom, motion,
    residual) and cut flags [T] (pitch and zoom, integrated, restart at the clip's start and at each cut)."""
    t = len(rates)
    c = np.tile(NEUTRAL.astype(np.float64), (t, 1))
    idx = {n: CONTROL_NAMES.index(n) for n in ("yaw", "pitch", "zoom", "speed", "energy")}
    c[:, idx["yaw"]] = 0.5 + YAW_PER_PAN * rates[:, 0]
    tilt = rates[:, 1].copy()
    zoom = rates[:, 2].copy()
    pitch_acc = zoom_acc = 0.0
    for i in range(t):
        if cuts[i]:
            pitch_acc = zoom_acc = 0.0
        pitch_acc += tilt[i]
        zoom_acc += zoom[i]
        c[i, idx["pitch"]] = 0.5 + PITCH_PER_TILT * pitch_acc
        c[i, idx["zoom"]] = zoom_from_log_scale(zoom_acc)
    c[:, idx["speed"]] = SPEED_PER_MOTION * rates[:, 3]
    c[:, idx["energy"]] = ENERGY_PER_RESIDUAL * rates[:, 4]
    return np.clip(c, 0.0, 1.0).astype(np.float32)


def _video_frames(path: Path, width: int, height: int):
    """(frame step, estimated kept frames, generator of RGB frames at width x height, 'cover' fit). The video is
    checked now and decoded only when the generator runs (many videos are never open at once)."""
    import cv2

    from ..engine.compositor import fit_frame

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    step = max(1, round(fps / FPS)) if fps > 0 else 1

    def frames():
        cap = cv2.VideoCapture(str(path))
        try:
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                if i % step == 0:
                    yield cv2.cvtColor(fit_frame(bgr, width, height, "cover"), cv2.COLOR_BGR2RGB)
                i += 1
        finally:
            cap.release()

    return step, (n + step - 1) // step if n > 0 else 0, frames()


def footage_to_dataset(videos: Sequence[str | os.PathLike], out: str | os.PathLike, frames_per_clip: int = 64,
                       width: int = 256, height: int = 144, progress: bool = True, overwrite: bool = False,
                       compress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Cut videos into clips of `frames_per_clip` frames with pseudo-actions from camera motion; returns a summary.

    Frames are fitted to width x height ('cover': scaled to fill, centre-cropped). See the module docstring for
    the mapping from motion to controls. Clips of all videos are numbered in order in one dataset.
    """
    if frames_per_clip < 1:
        raise ValueError("frames_per_clip must be >= 1")
    videos = [Path(v) for v in videos]
    for v in videos:
        if not v.is_file():
            raise FileNotFoundError(f"no video {v}")
    opened = [(v, *_video_frames(v, width, height)) for v in videos]  # every video opens before anything is written
    out = Path(out)
    _prepare_out(out, overwrite)
    args = {"videos": [str(v) for v in videos], "frames_per_clip": frames_per_clip, "width": width,
            "height": height, "compress": compress}
    meta = {"version": FORMAT_VERSION, "width": width, "height": height, "fps": FPS,
            "control_names": list(CONTROL_NAMES), "families": [], "clips": 0, "frames": 0, "source": "footage",
            "command": command or f"footage_to_dataset({out!s})", "args": args, "complete": False}
    _write_meta(out, meta)
    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=sum(n for _, _, n, _ in opened) or None, unit="frame", desc="footage", disable=not progress)
    n_clips = n_frames = n_cuts = 0
    min_tail = max(1, frames_per_clip // 2)
    try:
        for path, _step, _n, frames in opened:
            track = MotionTrack(width, height)
            buf: list[np.ndarray] = []  # frames of the clip being gathered
            clip_start = 0
            caption = f"user footage: {path.name}"

            def flush(end: int) -> None:
                nonlocal n_clips, n_frames, n_cuts, clip_start
                count = end - clip_start
                rates, cuts = track.rates(clip_start, end)
                events = [(int(i), CUT) for i in np.flatnonzero(cuts) if i > 0]
                write_clip(out, n_clips, np.stack(buf[:count]), motion_to_controls(rates, cuts), -1, caption, -1,
                           events, compress=compress, source=path.name, start=np.int64(clip_start))
                n_clips += 1
                n_frames += count
                n_cuts += len(events)
                del buf[:count]
                clip_start = end
                track.forget(clip_start)

            for frame in frames:
                track.add(frame)
                buf.append(frame)
                bar.update(1)
                # a clip is final once the frames its smoothing reads beyond its end are in
                if len(track) >= clip_start + frames_per_clip + MotionTrack.RADIUS:
                    flush(clip_start + frames_per_clip)
            while len(track) - clip_start >= frames_per_clip:
                flush(clip_start + frames_per_clip)
            if len(track) - clip_start >= min_tail:
                flush(len(track))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    meta.update(clips=n_clips, frames=n_frames, complete=True, seconds=round(seconds, 3), events={"cut": n_cuts})
    _write_meta(out, meta)
    return {"out": str(out), "source": "footage", "clips": n_clips, "frames": n_frames,
            "seconds": round(seconds, 3), "frames_per_s": round(n_frames / seconds, 1) if seconds > 0 else None,
            "events": meta["events"]}


# ---------------------------------------------------------------------------------------------------------------
# CLI (wired by vprod.cli: `data.add_commands(sub)`)


def _command_line(args) -> str:
    """The command as it would be typed again (from the parsed arguments, not sys.argv)."""
    import shlex

    w, h = args.size
    words = ["vprod", "data", args.data_command] + [str(v) for v in getattr(args, "videos", [])]
    words += ["--out", str(args.out)]
    if args.data_command == "render":
        words += ["--clips", str(args.clips)]
    words += ["--frames", str(args.frames), "--size", f"{w}x{h}"]
    if args.data_command == "render":
        words += ["--seed", str(args.seed)] + (["--workers", str(args.workers)] if args.workers else [])
        words += ["--no-compress"] if args.no_compress else []
        words += ["--schedule", args.schedule] if args.schedule != "show" else []
    return shlex.join(words)


def cmd_render(args) -> int:
    w, h = args.size
    try:
        summary = render_dataset(args.out, args.clips, frames_per_clip=args.frames, width=w, height=h,
                                 seed=args.seed, workers=args.workers, progress=not args.quiet,
                                 overwrite=args.overwrite, compress=not args.no_compress, command=_command_line(args),
                                 schedule=args.schedule)
    except (FileExistsError, ValueError) as e:
        print(f"vprod: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def cmd_footage(args) -> int:
    w, h = args.size
    try:
        summary = footage_to_dataset(args.videos, args.out, frames_per_clip=args.frames, width=w, height=h,
                                     progress=not args.quiet, overwrite=args.overwrite, command=_command_line(args))
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"vprod: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def add_commands(subparsers) -> None:
    """Add `data render` and `data footage` to an argparse subparsers object; each sets ``fn(args) -> int``."""
    from ..cli import size_arg
    p = subparsers.add_parser("data", help="make world-model training data: renderer clips, user footage")
    sub = p.add_subparsers(dest="data_command", required=True)

    r = sub.add_parser("render", help="render clips with live-show control schedules (prints a JSON summary)")
    r.add_argument("--out", required=True, help="dataset folder to create")
    r.add_argument("--clips", type=int, required=True, help="number of clips")
    r.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    r.add_argument("--size", type=size_arg, default=(256, 144), help="WIDTHxHEIGHT (default 256x144)")
    r.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    r.add_argument("--schedule", choices=sorted(SCHEDULES), default="show",
                   help="how the controls move: show (live-show holds and glides, default) or knobs (a jump or a "
                        "fast glide every ~0.4 s: clips that teach a model to follow its controls)")
    r.add_argument("--workers", type=int, default=None,
                   help="render processes (default: one per idle core; 2 on an idle 2-core machine)")
    r.add_argument("--no-compress", action="store_true",
                   help="store frames uncompressed: ~2x the disk, ~1 ms less per frame")
    r.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(fn=cmd_render)

    f = sub.add_parser("footage", help="cut videos into clips with pseudo-actions from camera motion")
    f.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (anything OpenCV reads)")
    f.add_argument("--out", required=True, help="dataset folder to create")
    f.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    f.add_argument("--size", type=size_arg, default=(256, 144), help="WIDTHxHEIGHT (default 256x144)")
    f.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(fn=cmd_footage)
