"""Element kinds: Source (makes frames), Effect (changes them), Sink (delivers them).

Like an OBS source descriptor or a GStreamer element, an element is one class with a lifecycle:
``open()`` acquires resources (files, devices, ports, models) and may raise with a clear message; ``process()``
runs once per frame and must not modify its input in place (frames are shared and read-only); ``close()`` frees
everything. Parameters are declared on the class and read as ``self.p.<name>``.

Frames are ``numpy.ndarray`` of shape (H, W, 3), dtype uint8, RGB, C-contiguous.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .params import Param, Params


@dataclass
class FrameContext:
    """What an element knows about the frame being made."""

    index: int = 0  # frame number since the daemon started
    pts: float = 0.0  # presentation time, seconds since start
    dt: float = 1 / 30  # seconds since the previous frame
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    preset: str = ""
    # Modulation sources (audio features, LFO values, MIDI clock phase) by name; filled by controls.
    signals: dict[str, float] = field(default_factory=dict)
    # Per-layer outputs that other layers may use: {"<layer>": {"mask": matte, "frame": picture}}. An effect may
    # publish a float32 (H, W) 0..1 matte as "mask" (a layer's `mask = "<id>"` then uses it); the pipeline
    # publishes each layer's finished frame as "frame" once it is made, so layers listed earlier are there.
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass
class ElementConfig:
    """How an element instance is placed: which layer, its name there, the output geometry."""

    layer: str = ""
    name: str = ""
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    options: dict[str, Any] = field(default_factory=dict)  # non-parameter settings from the preset (paths, ports)
    preset_dir: str = "."


class Element:
    """Base of all elements. Subclasses set ``kind`` via Source/Effect/Sink and declare ``params``."""

    kind: ClassVar[str] = "element"
    #: Parameters, name → spec. They become `/<layer>/<name>` (sources) or `/<layer>/<effect>/<name>` (effects).
    params: ClassVar[dict[str, Param]] = {}
    #: Non-parameter settings (fixed while running): name → (default, help).
    options: ClassVar[dict[str, tuple[Any, str]]] = {}
    #: Set by the plugin loader: the element id used in presets, and its plugin's name.
    element_id: ClassVar[str] = ""
    plugin_name: ClassVar[str] = ""

    def __init__(self, config: ElementConfig, values: dict | None = None, slew: dict | None = None):
        self.config = config
        self.p = Params.build(type(self).params, values, slew)
        self.opts = {k: config.options.get(k, d) for k, (d, _h) in type(self).options.items()}
        self.log = logging.getLogger(f"vprod.plugin.{self.plugin_name or self.element_id or type(self).__name__}")

    @property
    def label(self) -> str:
        """How errors name this element: plugin, element and layer."""
        where = f" in layer '{self.config.layer}'" if self.config.layer else ""
        return f"{self.plugin_name or '?'}:{self.element_id or type(self).__name__}{where}"

    def open(self) -> None:
        """Acquire resources. Raise with a message a user can act on."""

    def close(self) -> None:
        """Free resources. Must not raise."""

    def stats(self) -> dict | None:
        """What the element measures of itself, shown in the daemon's status under its path (None: nothing)."""
        return None


class Source(Element):
    kind = "source"

    def process(self, ctx: FrameContext) -> np.ndarray:
        raise NotImplementedError


class Effect(Element):
    kind = "effect"

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        return frame


class Sink(Element):
    """Runs on its own thread, fed by a latest-frame-wins mailbox; a slow sink only skips frames."""

    kind = "sink"

    def send(self, frame: np.ndarray, meta: dict) -> None:
        raise NotImplementedError

    def where(self) -> str:
        """Where a person can see or take this output (a URL, an endpoint, a device), for the start-up banner."""
        return ""


KINDS = {"source": Source, "effect": Effect, "sink": Sink}


def solid_frame(width: int, height: int, rgb: tuple[float, float, float]) -> np.ndarray:
    """A read-only frame of one colour (rgb in 0..1)."""
    px = np.array([round(c * 255) for c in rgb], dtype=np.uint8)
    f = np.empty((height, width, 3), np.uint8)
    f[:] = px
    f.flags.writeable = False
    return f


def resolve_path(path: str, preset_dir: str) -> tuple[Path, list[Path]]:
    """The file a user meant and the places looked at: absolute as is; relative to the preset's folder, then cwd."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute():
        return p, [p]
    tried = [Path(preset_dir or ".") / p, Path.cwd() / p]
    for cand in tried:
        if cand.is_file():
            return cand, tried
    return tried[0], tried


def existing_file(path: str, preset_dir: str, what: str, error: type[Exception] = RuntimeError) -> Path:
    """resolve_path for a file that must exist: else `error` "<what> not found: <path> (looked at …)"."""
    found, tried = resolve_path(path, preset_dir)
    if not found.is_file():
        raise error(f"{what} not found: {path} (looked at {', '.join(str(t) for t in tried)})")
    return found
