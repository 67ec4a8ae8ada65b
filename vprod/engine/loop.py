"""The frame loop — one frame's path, top to bottom:

    clock tick (fixed fps; a late frame is dropped, never queued)
    → drain the control bus: parameter changes, preset switches — stamped on arrival
    → parameters step (slew), modulators step
    → the pipeline renders: each layer's source and effects, the compositor; crossfade during a preset switch
    → the frame goes to every sink's mailbox (latest wins; sinks run on their own threads)
    → metrics: frame time, dropped frames, control→frame latency
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from .bus import ControlBus, Event
from .clock import FrameClock
from .compositor import crossfade
from .element import FrameContext
from .mailbox import SinkRunner
from .params import ParamError, ParamState
from .pipeline import Pipeline

log = logging.getLogger("vprod.engine")


def _pct(values, q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.fromiter(values, float), q))


class Engine:
    def __init__(self, width: int, height: int, fps: float, time_source=None, bus: ControlBus | None = None):
        self.width, self.height, self.fps = width, height, fps
        self.clock = FrameClock(fps, time_source)
        self.bus = bus or ControlBus()
        self.pipeline: Pipeline | None = None
        self.incoming: Pipeline | None = None
        self.fade_start = 0.0
        self.fade_duration = 0.0
        self.sinks: dict[str, SinkRunner] = {}
        self.frames = 0
        self.frame_ms: deque[float] = deque(maxlen=900)
        self.latency_ms: deque[float] = deque(maxlen=900)
        self.handoff_ms: deque[float] = deque(maxlen=900)  # time spent giving the frame to all sinks
        self.rejected_events = 0
        self.modulators: list[Callable[[FrameContext], None]] = []  # called each frame before rendering
        self.on_frame: list[Callable[[np.ndarray, dict], None]] = []  # in-loop observers (cheap only)
        self.last_meta: dict = {}
        self._pending_stamps: list[float] = []

    # --- set-up (before or while running; preset changes go through the bus) ---
    def add_sink(self, name: str, sink) -> SinkRunner:
        runner = SinkRunner(sink, name)
        self.sinks[name] = runner
        runner.start()
        return runner

    def switch(self, pipeline: Pipeline, crossfade_s: float | None = None, source: str = "") -> None:
        """Ask the loop to play `pipeline` from the next frame, crossfading from the current one."""
        self.bus.post(Event("preset", pipeline.name, (pipeline, crossfade_s), source))

    # --- control paths ---
    def resolve(self, path: str) -> ParamState:
        """The live state behind a control path; KeyError with a helpful message if there is none."""
        for p in (self.incoming, self.pipeline):
            if p is not None and path in p.registry:
                return p.registry[path][0]
        known = sorted(self.pipeline.registry) if self.pipeline else []
        hint = ", ".join(known[:12]) + (" …" if len(known) > 12 else "")
        raise KeyError(f"no parameter at {path!r} (known: {hint})")

    def schema(self) -> list[dict]:
        p = self.incoming or self.pipeline
        if p is None:
            return []
        out = []
        for path, (st, owner) in p.registry.items():
            d = st.spec.describe()
            d.update(path=path, value=_jsonable(st.value), norm=_jsonable(st.spec.to_norm(st.value)),
                     element=getattr(owner, "element_id", "layer"))
            out.append(d)
        return out

    # --- the loop ---
    def _apply(self, ev: Event) -> None:
        if ev.kind == "set":
            hit, error = False, None
            for p in (self.pipeline, self.incoming):  # during a crossfade both pipelines follow the control
                if p is not None and ev.path in p.registry:
                    try:
                        p.registry[ev.path][0].set(ev.value)
                        hit = True
                    except ParamError as e:
                        error = e
            if error is not None and not hit:
                log.warning("ignored %s from %s: %s", ev.path, ev.source or "?", error)
                self.rejected_events += 1
            if hit:
                self._pending_stamps.append(ev.stamp)  # control→frame latency: parameter changes only
                for fn in self.bus.listeners:
                    try:
                        fn(ev.path, ev.value, ev.source)
                    except Exception as e:  # noqa: BLE001
                        log.warning("feedback listener failed: %s", e)
        elif ev.kind == "preset":
            new, fade = ev.value
            if self.pipeline is None:
                self.pipeline = new
                return
            if self.incoming is not None:  # a switch during a switch: the newest wins
                self._retire(self.pipeline)
                self.pipeline = self.incoming
            self.incoming = new
            self.fade_start = self.clock.last_pts or 0.0
            self.fade_duration = new.crossfade if fade is None else fade
        elif ev.kind == "call" and ev.fn is not None:
            ev.fn()

    def _retire(self, p: Pipeline) -> None:
        # Closing may be slow (models, devices): never on the loop thread.
        threading.Thread(target=p.close_all, name="close-pipeline", daemon=True).start()

    def step(self) -> np.ndarray:
        tick = self.clock.wait()
        t0 = time.perf_counter()
        self._pending_stamps: list[float] = []
        for ev in self.bus.drain():
            self._apply(ev)
        ctx = FrameContext(index=tick.index, pts=tick.pts, dt=tick.dt, width=self.width, height=self.height,
                           fps=self.fps, preset=(self.incoming or self.pipeline).name if self.pipeline else "")
        for mod in self.modulators:
            mod(ctx)
        frame = self._render(ctx, tick.dt)
        if frame.flags.writeable:
            frame.flags.writeable = False
        meta = {"seq": self.frames, "index": tick.index, "pts": tick.pts, "width": self.width,
                "height": self.height, "preset": ctx.preset}
        t_hand = time.perf_counter()
        for runner in self.sinks.values():
            runner.put(frame, meta)
        self.handoff_ms.append((time.perf_counter() - t_hand) * 1000)
        for fn in self.on_frame:
            fn(frame, meta)
        self.last_meta = meta
        now = time.monotonic()
        for stamp in self._pending_stamps:
            self.latency_ms.append((now - stamp) * 1000)
        self.frames += 1
        self.frame_ms.append((time.perf_counter() - t0) * 1000)
        return frame

    def _render(self, ctx: FrameContext, dt: float) -> np.ndarray:
        if self.pipeline is None:
            return np.zeros((self.height, self.width, 3), np.uint8)
        self.pipeline.step_params(dt)
        frame = self.pipeline.render(ctx)
        self.pipeline.clear_triggers()
        if self.incoming is not None:
            self.incoming.step_params(dt)
            ctx2 = FrameContext(**{**ctx.__dict__, "layers": {}})
            new = self.incoming.render(ctx2)
            self.incoming.clear_triggers()
            t = 1.0 if self.fade_duration <= 0 else (ctx.pts - self.fade_start) / self.fade_duration
            if t >= 1.0 - 1e-9:  # pts are sums of float intervals: 0.9999999999999999 is the end
                t = 1.0
            frame = crossfade(frame, new, t)
            if t >= 1.0:
                self._retire(self.pipeline)
                self.pipeline, self.incoming = self.incoming, None
        return frame

    def run(self, stop: threading.Event, max_frames: int | None = None) -> None:
        self.clock.restart()  # set-up time is not lateness: no frames dropped for it
        while not stop.is_set() and (max_frames is None or self.frames < max_frames):
            self.step()

    def close(self, deadline_s: float = 2.0) -> None:
        """Stop every sink (in parallel) and close the pipelines."""
        end = time.monotonic() + deadline_s
        for r in self.sinks.values():
            r._stop.set()
            r.mailbox.close()
        for r in self.sinks.values():
            r.stop(timeout=max(0.05, end - time.monotonic()))
        for p in (self.incoming, self.pipeline):
            if p is not None:
                p.close_all()

    def stats(self) -> dict:
        return {
            "frames": self.frames,
            "dropped": self.clock.dropped_total,
            "fps": self.fps,
            "frame_ms_p50": _pct(self.frame_ms, 50),
            "frame_ms_p99": _pct(self.frame_ms, 99),
            "sink_handoff_ms_max": max(self.handoff_ms) if self.handoff_ms else None,
            "control_latency_ms_p50": _pct(self.latency_ms, 50),
            "control_latency_ms_p99": _pct(self.latency_ms, 99),
            "rejected_events": self.rejected_events,
            "preset": self.pipeline.name if self.pipeline else "",
            "sinks": {n: r.status() for n, r in self.sinks.items()},
            "faults": (self.pipeline.faults() if self.pipeline else []),
            "elements": (self.pipeline.element_stats() if self.pipeline else {}),
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v
