"""The `style` plugin's part of `vprod bench effects`: per-frame cases for each look, alone and with the world model
running as the background, and the stream-style preset in a running engine.

Each case is (name, doc, setup, group) — vprod.bench_effects wraps them into its Case list; `setup(frames)` gets
its Frames (the person clip at the output size) and returns a callable step(frame, index) with a `close()`.

The world style's per-frame cost on the frame loop is small by design (hand the frame to the model thread, enlarge
the newest stylised picture, add the camera's detail); what its model thread achieves is reported by
`run_stream_style` as stylised pictures per second.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
STREAM_PRESET = REPO / "presets" / "stream-style.toml"

#: The looks measured, with the parameter values they run at (the shipped LUT and a shipped picture as reference).
LOOKS: list[tuple[str, str, dict]] = [
    ("cartoon", "cartoon: bilateral smoothing at half size, colour bands, outlines", {}),
    ("pencil", "pencil sketch (colour dodge), coloured 0.3", {"color": 0.3}),
    ("edge_glow", "edge glow: gradient at half size, bloom, added over the darkened picture", {}),
    ("color_transfer", "Reinhard colour transfer in Lab from docs/samples/plasma.png",
     {"reference": str(REPO / "docs" / "samples" / "plasma.png")}),
    ("lut", "3D LUT presets/luts/teal-orange.cube (17³, full 8-bit table)",
     {"file": str(REPO / "presets" / "luts" / "teal-orange.cube")}),
    ("worldstyle", "world-model style: the loop's share (hand-off, enlarge, detail); model on its own thread",
     {"family": "ocean"}),
]


class _Step:
    """Calls the effect (after the world source, when there is one) as the engine would; `close()` stops both."""

    def __init__(self, frames, effect_id: str, values: dict, with_world: bool):
        from .engine import ElementConfig, FrameContext
        from .plugins import PluginRegistry

        reg = PluginRegistry()
        w, h = frames.width, frames.height
        self.effect = reg.load(effect_id)(ElementConfig(layer="cam", width=w, height=h), dict(values))
        self.effect.open()
        self.world = None
        if with_world:
            self.world = reg.load("worldmodel")(ElementConfig(layer="world", width=w, height=h),
                                                {"family": "terrain", "steps": "1"})
            self.world.open()
        self.ctx = FrameContext(width=w, height=h)
        if effect_id == "worldstyle":  # measure it running, not waiting for its first picture
            deadline = time.monotonic() + 60
            while self.effect.frames < 2 and time.monotonic() < deadline:
                self.effect.process(frames.person[0], self.ctx)
                time.sleep(0.02)

    def __call__(self, frame: np.ndarray, index: int):
        self.ctx.index = index
        if self.world is not None:
            self.world.process(self.ctx)
        return self.effect.process(frame, self.ctx)

    def close(self) -> None:
        for el in (self.effect, self.world):
            if el is not None:
                el.close()


def style_cases() -> list[tuple]:
    """(name, doc, setup, group) for each look alone (group "style") and with the world model (group
    "style+world": the world model source running its two threads, its process() called each frame)."""
    out = []
    for eid, doc, values in LOOKS:
        out.append((f"style:{eid}", doc, lambda fr, e=eid, v=values: _Step(fr, e, v, False), "style"))
    for eid, doc, values in LOOKS:
        out.append((f"style:{eid}+world", f"{doc}; with the world model running (steps 1) and its frame fetched",
                    lambda fr, e=eid, v=values: _Step(fr, e, v, True), "style+world"))
    return out


def run_stream_style(seconds: float, size: tuple[int, int], registry=None) -> dict:
    """presets/stream-style.toml (camera → world style) in a real engine at its frame rate for `seconds`: output
    frames per second, dropped ticks, the loop's work per frame, stylised pictures per second."""
    from .bench_effects import engine_run
    from .plugins import PluginRegistry

    def style(p):
        return next(e for layer in p.layers for name, e in layer.effects if name == "worldstyle")

    r = engine_run(STREAM_PRESET, registry or PluginRegistry(), seconds, size, lambda p: getattr(style(p), "frames", 0))
    res = {"preset": str(STREAM_PRESET.relative_to(REPO)), **r}
    res["stylised_pictures_per_s"] = res.pop("produced_per_s")
    res["model_thread_ms"] = {k: round(v, 1) for k, v in style(res.pop("pipeline")).styler.timings.items()}
    res.pop("sink_received")
    return res
