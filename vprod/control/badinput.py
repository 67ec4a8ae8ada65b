"""Bad input from the outside (a malformed packet, an unknown address, NaN, a dead peer): logged once per kind
with its reason, counted, and otherwise ignored — it never reaches an element and never blocks the frame loop."""

from __future__ import annotations

import logging
import threading
from collections import Counter


class BadInput:
    def __init__(self, surface: str, logger: logging.Logger | None = None):
        self.surface = surface
        self.log = logger or logging.getLogger(f"vprod.control.{surface}")
        self.counts: Counter[str] = Counter()
        self.last: dict[str, str] = {}
        self._lock = threading.Lock()

    def report(self, kind: str, message: str) -> None:
        """Count one bad input of `kind` (e.g. "malformed", "unknown-address"); the first of each kind is logged
        as a warning naming what and where, later ones only at debug level."""
        with self._lock:
            self.counts[kind] += 1
            first = self.counts[kind] == 1
            self.last[kind] = message
        if first:
            self.log.warning("%s: %s (%s; further ones are counted in status)", self.surface, message, kind)
        else:
            self.log.debug("%s: %s (%s)", self.surface, message, kind)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def status(self) -> dict:
        with self._lock:
            return {"bad_input": self.total, "bad_input_by_kind": dict(self.counts), "bad_input_last": dict(self.last)}
