"""`vprod bench effects`: what the live camera effects cost per frame, and the engine running them over the world.

Per-frame cases (CASES, a list of named cases: add one to measure another effect) run one after another on real
frames — presets/media/person.mp4, a person on a "webcam", enlarged to the output size — on one thread (OpenCV,
LiteRT and torch each set to 1), interleaved with the baseline (a frame copy: the floor any frame pays) so both see
the same machine; p50 and p99 in milliseconds.

The pipeline runs presets/call-background.toml as it ships (the webcam source falls back to the clip where there is
no camera) in a real engine at its frame rate, with the world model's threads running, for `seconds`; the baseline
is the same preset with the camera layer switched off (the world alone), in the same run. Reported: output frames
per second, dropped ticks, the loop's work per frame, and the world model's own new pictures per second.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "presets" / "media" / "person.mp4"
PRESET = REPO / "presets" / "call-background.toml"

#: Set-up once, then called per frame with (frame, index): what one frame of the case costs.
Step = Callable[[np.ndarray, int], object]


@dataclass
class Case:
    """One per-frame measurement: `setup(frames)` returns the function timed on each frame."""

    name: str
    doc: str
    setup: Callable[[Frames], Step]
    group: str = "segmentation"


@dataclass
class Frames:
    """The frames every case sees: the person clip at the output size, and a second picture as a background."""

    width: int
    height: int
    person: list[np.ndarray] = field(default_factory=list)
    background: np.ndarray | None = None

    @classmethod
    def load(cls, width: int, height: int, count: int = 60) -> Frames:
        from .engine import fit_frame

        cap = cv2.VideoCapture(str(CLIP))
        person = []
        while len(person) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            person.append(fit_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height, "cover"))
        cap.release()
        if not person:
            raise RuntimeError(f"cannot read the bench clip {CLIP}")
        # a background as busy as a world picture: the clip's first frame, flipped and colour-rotated
        bg = np.ascontiguousarray(person[0][::-1, ::-1, ::-1])
        return cls(width, height, person, bg)


# --- the cases -------------------------------------------------------------------------------------------------------
def _segmentation(frames: Frames) -> Step:
    from .segment import Segmenter

    seg = Segmenter()
    return lambda f, i: seg(f)


def _segmentation_composite(frames: Frames) -> Step:
    from .segment import Segmenter, composite

    seg = Segmenter()
    bg = frames.background
    return lambda f, i: composite(f, bg, seg(f))


def _effect(background: str) -> Callable[[Frames], Step]:
    """The virtual_background effect as the engine runs it (parameters, background fetch, matte published)."""

    def setup(frames: Frames) -> Step:
        from .engine import ElementConfig, FrameContext
        from .plugins import PluginRegistry

        cls = PluginRegistry().load("virtual_background")
        el = cls(ElementConfig(layer="cam", width=frames.width, height=frames.height,
                               options={"background_layer": "world"}), {"background": background})
        el.open()

        def step(f, i):
            ctx = FrameContext(index=i, width=frames.width, height=frames.height,
                               layers={"world": {"frame": frames.background}, "cam": {}})
            return el.process(f, ctx)

        return step

    return setup


CASES: list[Case] = [
    Case("segmentation", "person matte: model + smoothing + feather + upsampling to the frame", _segmentation),
    Case("segmentation+composite", "the matte, then the person over a background frame", _segmentation_composite),
    Case("virtual_background:layer", "the effect, background = another layer's picture", _effect("layer")),
    Case("virtual_background:blur", "the effect, background = the camera blurred", _effect("blur")),
]

# the style plugin's looks, alone and with the world model running (vprod/bench_styles.py)
from .bench_styles import style_cases  # noqa: E402

CASES += [Case(name, doc, setup, group) for name, doc, setup, group in style_cases()]


def _baseline(frames: Frames) -> Step:
    return lambda f, i: f.copy()


def _time(step: Step, frames: Frames, n: int, start: int) -> list[float]:
    out = []
    person = frames.person
    for i in range(start, start + n):
        f = person[i % len(person)]
        t0 = time.perf_counter()
        step(f, i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _stats(ms: list[float]) -> dict:
    return {"ms_p50": round(statistics.median(ms), 3), "ms_p99": round(float(np.percentile(ms, 99)), 3),
            "ms_mean": round(statistics.fmean(ms), 3), "frames": len(ms)}


def run_cases(frames: Frames, n: int, rounds: int, only: list[str] | None = None, progress=None) -> dict:
    base_step = _baseline(frames)
    res = {}
    base_all: list[float] = []
    for case in CASES:
        if only and case.name not in only and case.group not in only:
            continue
        step = case.setup(frames)
        for i in range(5):  # warm-up: first calls allocate, load, fill the smoothing state
            step(frames.person[i % len(frames.person)], i)
        bare, full = [], []
        k, per = 0, max(1, -(-n // rounds))  # at least one frame a round
        for _ in range(rounds):
            bare += _time(base_step, frames, per, k)
            full += _time(step, frames, per, k)
            k += per
            if progress:
                progress.update(1)
        base_all += bare
        res[case.name] = {"group": case.group, "doc": case.doc, **_stats(full),
                          "baseline_ms_p50": round(statistics.median(bare), 3)}
        close = getattr(step, "close", None)
        if close is not None:  # a case that runs threads (a model) stops them before the next case
            close()
    return res


# --- the running engine ----------------------------------------------------------------------------------------------
def engine_run(preset_path: Path, registry, seconds: float, size: tuple[int, int], ready, prepare=None,
               fps: float | None = None, modulate=None) -> dict:
    """Build `preset_path` into a real engine at its frame rate (or `fps`) with a null output, step it until
    `ready(pipeline)` says its model thread has made 3 pictures (loading is not frame time), then run it for
    `seconds`.

    Returns the pipeline-specific count `ready` reports as `produced`, with output frames/s, dropped ticks and the
    loop's work per frame; `prepare(pipeline)` may set parameters first, `modulate(pipeline, ctx)` runs each frame
    before rendering (as the preset's modulators do)."""
    from . import presets
    from .engine import ElementConfig, Engine, Sink

    class NullSink(Sink):
        element_id, plugin_name = "bench-null", "bench"

        def send(self, frame, meta):
            pass

    preset = presets.load(preset_path, registry)
    w, h = size
    eng = Engine(w, h, fps or preset.fps)
    pipeline = presets.build(preset, registry, w, h)
    eng.pipeline = pipeline
    if prepare is not None:
        prepare(pipeline)
    if modulate is not None:
        eng.modulators.append(lambda ctx: modulate(pipeline, ctx))
    runner = eng.add_sink("null", NullSink(ElementConfig()))
    try:
        deadline = time.monotonic() + 60
        while ready(pipeline) < 3 and time.monotonic() < deadline:
            eng.step()
        eng.clock.dropped_total = 0
        eng.frame_ms.clear()
        f0, p0, t0 = eng.frames, ready(pipeline), time.monotonic()
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        eng.run(stop)
        dur = time.monotonic() - t0
        ms = list(eng.frame_ms)
        return {"seconds": round(dur, 1), "output_fps": round((eng.frames - f0) / dur, 1),
                "dropped_ticks": eng.clock.dropped_total,
                "loop_ms_p50": round(float(np.percentile(ms, 50)), 2),
                "loop_ms_p99": round(float(np.percentile(ms, 99)), 2),
                "produced_per_s": round((ready(pipeline) - p0) / dur, 1), "sink_received": runner.sent,
                "faults": pipeline.faults(), "pipeline": pipeline}
    finally:
        eng.close()


def _run_engine(registry, seconds: float, camera: bool, size: tuple[int, int]) -> dict:
    def world(p):
        return next(layer for layer in p.layers if layer.id == "world").source

    def prepare(p):
        next(layer for layer in p.layers if layer.id == "cam").params.states["enabled"].set(camera)

    r = engine_run(PRESET, registry, seconds, size, lambda p: getattr(world(p), "_frames", 0), prepare)
    r.pop("pipeline")
    r["world_new_pictures_per_s"] = r.pop("produced_per_s")
    r.pop("seconds")
    return r


def run_pipeline(seconds: float, size: tuple[int, int], rounds: int = 2, progress=None) -> dict:
    from .plugins import PluginRegistry

    registry = PluginRegistry()
    out: dict = {"preset": str(PRESET.relative_to(REPO)), "seconds_per_run": seconds, "runs": []}
    for _ in range(rounds):  # interleaved: world alone, camera + virtual background over it, again
        for camera in (False, True):
            r = _run_engine(registry, seconds, camera, size)
            out["runs"].append({"case": "camera+virtual_background over world" if camera else "world alone (baseline)",
                                **r})
            if progress:
                progress.update(1)
    return out


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(frames: int = 300, size: tuple[int, int] = (1280, 720), seconds: float = 10.0, pipeline: bool = True,
        only: list[str] | None = None, quiet: bool = False) -> dict:
    from .memory import keep_freed_memory
    from .threads import configure_threads, configure_torch

    configure_threads(1)
    configure_torch(1)
    keep_freed_memory()  # as the daemon does
    w, h = size
    fr = Frames.load(w, h)
    rounds = 5
    n_cases = sum(1 for c in CASES if not only or c.name in only or c.group in only)
    t0 = time.monotonic()
    load_before = _load()
    with tqdm(total=n_cases * rounds + (4 if pipeline else 0), desc="bench effects", disable=quiet,
              file=sys.stderr) as bar:
        cases = run_cases(fr, frames, rounds, only, bar)
        pipe = run_pipeline(seconds, size, progress=bar) if pipeline else None
        style_pipe = None
        if pipeline and (not only or any(o.startswith("style") for o in only)):
            from .bench_styles import run_stream_style

            style_pipe = run_stream_style(seconds, size)
    res: dict = {
        "bench": "effects", "size": f"{w}x{h}", "threads": "1 each (OpenCV, LiteRT, torch)",
        "cpu_count": os.cpu_count(), "load_average_before": load_before, "load_average_after": _load(),
        "frames_per_case": frames, "cases": cases,
    }
    goals = {}
    if "segmentation+composite" in cases:
        goals["segmentation_composite_p50_le_8ms"] = cases["segmentation+composite"]["ms_p50"] <= 8.0
    if pipe:
        res["pipeline"] = pipe
        vb = [r for r in pipe["runs"] if r["case"].startswith("camera")]
        goals["camera_vb_over_world_ge_30fps"] = all(r["output_fps"] >= 29.5 for r in vb)
    if style_pipe:
        res["stream_style"] = style_pipe
    res["goals"] = goals
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res
