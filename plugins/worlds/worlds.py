"""The `worlds` source: the procedural world renderer (vprod.world.render) as a live, steerable background.

The same eight knobs the world model learns from (yaw, pitch, speed, zoom, daylight, hue, energy, fog) are
parameters here, so a MIDI controller, an LFO or an audio feature that drives this source drives the model the same
way. The renderer runs at a reduced internal size (at most 480x270 by default) and the frame is upscaled
bilinearly; each frame advances the world by the frame's dt. Changing `family` is a cut that keeps the camera and
time; changing `seed` or firing `reset` starts the world again.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vprod.engine import ChoiceParam, FloatParam, FrameContext, IntParam, Source, TriggerParam
from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.render import FAMILIES, Renderer

_CONTROL_DOCS = {
    "yaw": "Turn rate: 0 turns left fast, 0.5 flies straight, 1 turns right fast",
    "pitch": "Camera pitch: 0 looks down, 0.5 level, 1 looks up",
    "speed": "Forward speed and animation rate: 0 holds still, 1 is fast",
    "zoom": "Field of view: 0 wide angle, 1 zoomed in",
    "daylight": "Time of day / brightness: 0 night, 0.5 dusk, 1 noon",
    "hue": "Palette shift around the colour wheel (0.5 is the family's own colours)",
    "energy": "Motion intensity and turbulence (good for audio): 0 calm, 1 wild",
    "fog": "Fog, haze or dust density: 0 clear, 1 thick",
}
_SLEW = 0.2  # seconds: a knob jump glides instead of flashing

MAX_AUTO = (480, 270)  # the automatic internal size fits within this


def internal_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The renderer's size for an output of width x height: `scale` of it, or (scale 0) the largest size that keeps
    the aspect ratio and fits within 480x270 (never larger than the output)."""
    if scale <= 0:
        scale = min(1.0, MAX_AUTO[0] / width, MAX_AUTO[1] / height)
    return max(16, int(round(width * scale))), max(16, int(round(height * scale)))


class WorldsSource(Source):
    """Procedural worlds — a flight over mountains or a city, a tunnel, plasma, stars, the open sea."""

    params = {
        "family": ChoiceParam(default="terrain", choices=FAMILIES, doc="Which world is drawn; a change is a cut"),
        **{name: FloatParam(default=round(float(NEUTRAL[i]), 4), min=0.0, max=1.0, slew=_SLEW,
                            doc=_CONTROL_DOCS[name])
           for i, name in enumerate(CONTROL_NAMES)},
        "seed": IntParam(default=0, min=0, max=1_000_000, doc="Which world of the family (terrain, layout, stars); "
                                                              "a change restarts it"),
        "reset": TriggerParam(doc="Restart the world from the beginning of its seed"),
    }
    options = {
        "render_scale": (0.0, "Internal render size as a fraction of the output size, 0 < s <= 1; 0 picks the "
                              "largest size within 480x270. The frame is upscaled bilinearly"),
    }

    def open(self) -> None:
        s = self.opts["render_scale"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (0.0 <= float(s) <= 1.0):
            raise ValueError(f"option render_scale={s!r} must be a number in 0..1 (0 = automatic) ({self.label})")
        self._scale = float(s)
        self._renderer: Renderer | None = None
        self._seed: int | None = None
        # Build the worlds now (up to ~0.2 s), not on the first frame or the first cut to another family.
        self._start(internal_size(self.config.width, self.config.height, self._scale))
        self._renderer.prepare()

    def _start(self, size: tuple[int, int]) -> np.ndarray:
        r = self._renderer
        if r is None or (r.width, r.height) != size:
            r = self._renderer = Renderer(*size)
        controls = self._controls()
        self._seed = int(self.p.seed)
        r.reset(self._seed, self.p.family, controls)
        return r.render(controls)

    def _controls(self) -> np.ndarray:
        return np.array([self.p.get(name) for name in CONTROL_NAMES], np.float32)

    def process(self, ctx: FrameContext) -> np.ndarray:
        size = internal_size(ctx.width, ctx.height, self._scale)
        r = self._renderer
        if r is None or (r.width, r.height) != size or int(self.p.seed) != self._seed or self.p.fired("reset"):
            frame = self._start(size)
        else:
            if self.p.family != r.state.family:
                r.set_family(self.p.family)
            dt = ctx.dt if math.isfinite(ctx.dt) and ctx.dt > 0 else 1.0 / 30.0
            frame = r.step(self._controls(), dt=min(dt, 0.25))  # a long stall does not fling the camera away
        if size != (ctx.width, ctx.height):
            frame = cv2.resize(frame, (ctx.width, ctx.height), interpolation=cv2.INTER_LINEAR)
        return frame

    def close(self) -> None:
        self._renderer = None
