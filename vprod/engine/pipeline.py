"""A running preset: layers (a source and its effect chain) blended by the compositor into one frame.

Fault isolation lives here. An element that raises is bypassed — an effect passes its input through, a source
repeats its last good frame — and reported once with its plugin, element and layer; it is tried again after a
back-off, so a transient fault heals and a permanent one costs nothing per frame.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .compositor import BLEND_MODES, blend, fit, luma_mask
from .element import Effect, Element, FrameContext, Source
from .params import BoolParam, ChoiceParam, FloatParam, Params, ParamState

log = logging.getLogger("vprod.engine")

LAYER_PARAMS = {
    "opacity": FloatParam(1.0, 0.0, 1.0, doc="Layer opacity"),
    "blend": ChoiceParam("normal", BLEND_MODES, doc="How the layer combines with the layers below"),
    "enabled": BoolParam(True, doc="Show the layer"),
}
EFFECT_SWITCH = {"enabled": BoolParam(True, doc="Apply this effect (false: the frame passes it by)")}


def check_frame(frame, what: str) -> np.ndarray:
    """An element's output must be an (H, W, 3) uint8 array; anything else is that element's fault."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise TypeError(f"{what} returned {got}, not an (H, W, 3) uint8 RGB frame")
    return frame


class Guard:
    """Tracks one element's faults: bypass after an exception, retry after an exponential back-off.

    An episode of faults is logged once; the element counts as healed (and the back-off resets) only after it has
    run cleanly, frame after frame, for HEAL_S seconds, so an element failing every other frame is not logged over and over.
    """

    HEAL_S = 10.0

    def __init__(self, element: Element):
        self.element = element
        self.faults = 0
        self.retry_at = 0.0
        self.backoff = 0.5
        self.last_error = ""
        self.clean_since: float | None = None  # first good frame since the last fault
        self.in_episode = False
        self.disabled_reason = ""  # set when open() failed: never run

    def ready(self, now: float) -> bool:
        return not self.disabled_reason and now >= self.retry_at

    def fail(self, exc: BaseException, now: float) -> None:
        self.faults += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self.in_episode:
            log.error("%s raised and is bypassed: %s", self.element.label, self.last_error)
            self.in_episode = True
        self.clean_since = None
        self.retry_at = now + self.backoff
        self.backoff = min(self.backoff * 2, 30.0)

    def ok(self, now: float) -> None:
        if self.clean_since is None:
            self.clean_since = now
        if self.in_episode and now - self.clean_since >= self.HEAL_S:
            log.info("%s runs cleanly again (%d faults)", self.element.label, self.faults)
            self.in_episode = False
            self.backoff = 0.5


@dataclass
class Layer:
    id: str
    source: Source
    effects: list[tuple[str, Effect]]
    params: Params
    mask: str = ""  # id of a layer whose matte (or luminance) masks this one
    visible: bool = True  # False: rendered only to serve as another layer's mask
    guards: dict[str, Guard] = field(default_factory=dict)
    last_frame: np.ndarray | None = None
    effects_off: set[str] = field(default_factory=set)  # effects the preset starts bypassed (`enabled = false`)
    switches: dict[str, Params] = field(default_factory=dict)  # effect name -> its live `enabled` switch


class Pipeline:
    """One preset, built and opened. `render(ctx)` makes one frame; `registry` maps control paths to states."""

    def __init__(self, name: str, layers: list[Layer], width: int, height: int, fps: float,
                 crossfade: float = 0.5, source_file: str = ""):
        self.name = name
        self.layers = layers
        self.width, self.height, self.fps = width, height, fps
        self.crossfade = crossfade
        self.source_file = source_file
        self.registry: dict[str, tuple[ParamState, Any]] = {}  # path -> (state, owner element or layer)
        for layer in layers:
            self._register(f"/{layer.id}", layer.params, layer)
            self._register(f"/{layer.id}", layer.source.p, layer.source)
            for name, eff in layer.effects:
                self._register(f"/{layer.id}/{name}", eff.p, eff)
                if "enabled" not in eff.p.states:  # every effect can be bypassed live: /<layer>/<effect>/enabled
                    sw = Params.build(EFFECT_SWITCH, {"enabled": name not in layer.effects_off})
                    layer.switches[name] = sw
                    self._register(f"/{layer.id}/{name}", sw, eff)
            for el in [layer.source] + [e for _, e in layer.effects]:
                layer.guards[id(el)] = Guard(el)

    def _register(self, prefix: str, params: Params, owner) -> None:
        for name, st in params.states.items():
            self.registry[f"{prefix}/{name}"] = (st, owner)

    def elements(self) -> list[Element]:
        return [el for layer in self.layers for el in [layer.source] + [e for _, e in layer.effects]]

    def open_all(self) -> None:
        """Open every element; one that fails stays in place, bypassed, with its error reported once."""
        for layer in self.layers:
            for el in [layer.source] + [e for _, e in layer.effects]:
                try:
                    el.open()
                except Exception as e:  # noqa: BLE001
                    g = layer.guards[id(el)]
                    g.disabled_reason = g.last_error = f"{type(e).__name__}: {e}" if not str(e) else str(e)
                    log.error("%s could not start and is bypassed: %s", el.label, g.disabled_reason)

    def close_all(self) -> None:
        for el in self.elements():
            try:
                el.close()
            except Exception as e:  # noqa: BLE001
                log.warning("%s did not close cleanly: %s", el.label, e)

    def step_params(self, dt: float) -> None:
        for layer in self.layers:
            layer.params.step(dt)
            layer.source.p.step(dt)
            for _, eff in layer.effects:
                eff.p.step(dt)

    def clear_triggers(self) -> None:
        for layer in self.layers:
            for el in [layer.source] + [e for _, e in layer.effects]:
                el.p.clear_triggers()

    def _run_layer(self, layer: Layer, ctx: FrameContext, now: float) -> np.ndarray | None:
        g = layer.guards[id(layer.source)]
        frame = layer.last_frame
        if g.ready(now):
            try:
                frame = check_frame(layer.source.process(ctx), "process()")
                g.ok(now)
            except Exception as e:  # noqa: BLE001
                g.fail(e, now)
                frame = layer.last_frame
        if frame is None:
            return None
        frame = fit(frame, ctx.width, ctx.height)
        layer.last_frame = frame
        for name, eff in layer.effects:
            sw = layer.switches.get(name)
            if sw is not None and not sw.get("enabled"):
                continue
            g = layer.guards[id(eff)]
            if not g.ready(now):
                continue
            try:
                frame = fit(check_frame(eff.process(frame, ctx), "process()"), ctx.width, ctx.height)
                g.ok(now)
            except Exception as e:  # noqa: BLE001
                g.fail(e, now)
        return frame

    def render(self, ctx: FrameContext) -> np.ndarray:
        now = time.monotonic()
        # Two passes: every layer renders first, so a mask may come from a layer listed above or below. Each
        # layer's finished frame is published as ctx.layers[id]["frame"] as soon as it is made, so an effect can
        # use the frame of any layer listed before its own (a virtual background takes the world's picture so).
        outputs: dict[str, np.ndarray] = {}
        for layer in self.layers:
            ctx.layers.setdefault(layer.id, {})
            if layer.params.enabled:
                frame = self._run_layer(layer, ctx, now)
                if frame is not None:
                    outputs[layer.id] = frame
                    ctx.layers[layer.id]["frame"] = frame
        out: np.ndarray | None = None
        for layer in self.layers:
            frame = outputs.get(layer.id)
            if frame is None or not layer.visible:
                continue
            mask = self._mask(layer.mask, ctx, outputs) if layer.mask else None
            out = blend(out, frame, layer.params.blend, layer.params.opacity, mask)
        if out is None:
            out = np.zeros((ctx.height, ctx.width, 3), np.uint8)
        return out

    @staticmethod
    def _mask(source: str, ctx: FrameContext, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The matte a layer published (fitted to the frame), else that layer's luminance."""
        m = ctx.layers.get(source, {}).get("mask")
        if isinstance(m, np.ndarray) and m.ndim == 2 and m.size:
            m = m.astype(np.float32, copy=False)
            return m if m.shape == (ctx.height, ctx.width) else cv2.resize(m, (ctx.width, ctx.height))
        return luma_mask(outputs[source]) if source in outputs else None

    def element_stats(self) -> dict[str, dict]:
        """Each element's own figures (Element.stats) by its control path; one that fails says so in its place."""
        out: dict[str, dict] = {}
        for layer in self.layers:
            for path, el in [(f"/{layer.id}", layer.source)] + [(f"/{layer.id}/{n}", e) for n, e in layer.effects]:
                try:
                    st = el.stats()
                except Exception as e:  # noqa: BLE001 - the status must come back whatever an element does
                    st = {"error": f"{el.label}: stats() failed: {type(e).__name__}: {e}"}
                if st:
                    out[path] = st
        return out

    def faults(self) -> list[dict]:
        res = []
        for layer in self.layers:
            for g in layer.guards.values():
                if g.faults or g.disabled_reason:
                    res.append({"element": g.element.label, "faults": g.faults,
                                "error": g.disabled_reason or g.last_error, "running": not g.disabled_reason})
        return res
