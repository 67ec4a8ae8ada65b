"""The control bus: controls post events from their own threads; the frame loop drains it between frames.

Nothing outside the loop touches an element. Each event is stamped on arrival, so the loop can report the
control→frame latency.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Event:
    kind: str  # "set" | "preset" | "call"
    path: str = ""
    value: Any = None
    source: str = ""  # "zmq", "osc", "midi", "obs", "preset", ...
    stamp: float = field(default_factory=time.monotonic)
    fn: Callable[[], None] | None = None  # for kind "call": runs on the loop thread


class ControlBus:
    def __init__(self):
        self._q: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.listeners: list[Callable[[str, Any, str], None]] = []  # feedback: (path, norm value, source)

    def post(self, event: Event) -> None:
        self._q.put(event)

    def set(self, path: str, value: Any, source: str = "") -> None:
        self.post(Event("set", path, value, source))

    def drain(self, limit: int = 10000) -> list[Event]:
        """All events posted so far (bounded, so a flood cannot stall one frame forever)."""
        out = []
        try:
            while len(out) < limit:
                out.append(self._q.get_nowait())
        except queue.Empty:
            pass
        return out
