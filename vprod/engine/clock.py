"""A fixed-rate frame clock. A late frame is dropped, never queued: after a stall the clock skips to the next
tick still ahead, so the stream stays in time instead of playing catch-up.

Time comes from a `TimeSource`; `RealTime` sleeps, `ManualTime` jumps (for tests and benchmarks, like trio's
MockClock).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


class RealTime:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualTime:
    """Time that moves only when told (or when something sleeps on it): deterministic tests."""

    def __init__(self, start: float = 0.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Tick:
    index: int  # tick number since start (counts dropped ticks too)
    pts: float  # nominal time of this tick, seconds since start
    dt: float  # seconds since the previous processed tick
    dropped: int  # ticks skipped just before this one because the loop was late


class FrameClock:
    def __init__(self, fps: float, time_source=None):
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, not {fps!r}")
        self.fps = float(fps)
        self.interval = 1.0 / self.fps
        self.time = time_source or RealTime()
        self.start = self.time.now()
        self.next_index = 0
        self.last_pts: float | None = None
        self.dropped_total = 0

    def restart(self) -> None:
        """Count ticks from now (before the first frame only)."""
        if self.last_pts is None:
            self.start = self.time.now()

    def wait(self) -> Tick:
        """Sleep until the next tick that is still on time and return it."""
        now = self.time.now()
        due = self.start + self.next_index * self.interval
        dropped = 0
        if now - due >= self.interval:
            # Late by at least one whole interval: skip the ticks we missed.
            late_ticks = int((now - due) // self.interval)
            dropped = late_ticks
            self.next_index += late_ticks
            due = self.start + self.next_index * self.interval
        self.time.sleep(due - now)
        index = self.next_index
        self.next_index += 1
        pts = index * self.interval
        dt = self.interval if self.last_pts is None else pts - self.last_pts
        self.last_pts = pts
        self.dropped_total += dropped
        return Tick(index, pts, dt, dropped)
