"""The shared tempo: BPM and beat phase for modulators, from MIDI clock, the audio analyser or a preset."""

from __future__ import annotations

import threading
import time


class Tempo:
    def __init__(self, bpm: float = 120.0):
        self._lock = threading.Lock()
        self.bpm = float(bpm)
        self.source = "default"
        self._anchor_t = time.monotonic()  # the time of a beat (phase 0)
        self._anchor_beat = 0.0
        self.running = True

    def set(self, bpm: float, source: str, beat_at: float | None = None) -> None:
        """A new tempo from `source`; `beat_at` (monotonic seconds) pins a beat there, else the phase carries on."""
        if not (20.0 <= bpm <= 400.0):
            return
        with self._lock:
            now = time.monotonic()
            beat_now = self._beat_locked(now)
            self.bpm, self.source = float(bpm), source
            if beat_at is not None:
                self._anchor_t, self._anchor_beat = beat_at, float(round(self._beat_locked(beat_at)))
            else:
                self._anchor_t, self._anchor_beat = now, beat_now

    def _beat_locked(self, t: float) -> float:
        return self._anchor_beat + (t - self._anchor_t) * self.bpm / 60.0

    def beats(self, t: float | None = None) -> float:
        """Beats since the anchor at monotonic time `t` (now by default); the phase is the fractional part."""
        with self._lock:
            return self._beat_locked(time.monotonic() if t is None else t)

    def status(self) -> dict:
        return {"bpm": round(self.bpm, 2), "source": self.source, "phase": round(self.beats() % 1.0, 3)}
