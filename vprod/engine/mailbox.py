"""Latest-frame-wins mailboxes and the thread that runs each sink from one.

The frame loop only ever drops a frame into a mailbox (O(1), never blocks); each sink takes the newest frame when
it is ready. A slow sink skips frames; one that fails to open is reported once and stays off, one that fails on
a frame is reported once per episode and fed the next frame; nothing else notices.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("vprod.sinks")


class Mailbox:
    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._seq = 0
        self.overwritten = 0  # frames replaced before the sink took them
        self.closed = False

    def put(self, item: Any) -> None:
        with self._cond:
            if self._item is not None:
                self.overwritten += 1
            self._item = item
            self._seq += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Any:
        """The newest item, waiting up to `timeout`; None on timeout or when closed."""
        with self._cond:
            if self._item is None and not self.closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class SinkRunner:
    """Owns one sink: opens it on its own thread, feeds it from a mailbox, reports its failures."""

    def __init__(self, sink, name: str, retry_seconds: float = 5.0):
        self.sink = sink
        self.name = name
        self.mailbox = Mailbox()
        self.retry_seconds = retry_seconds
        self.sent = 0
        self.errors = 0
        self.state = "starting"  # starting | running | failed | closed
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, frame, meta: dict) -> None:
        if self.state != "closed":
            self.mailbox.put((frame, meta))

    def _open(self) -> bool:
        try:
            self.sink.open()
            self.state = "running"
            return True
        except Exception as e:  # noqa: BLE001 - a sink's failure must never escape into the daemon
            self.state = "failed"
            self.last_error = str(e) or type(e).__name__
            log.error("output %s (%s) is off: %s", self.name, self.sink.label, self.last_error)
            return False

    def _run(self) -> None:
        if not self._open():
            return
        last_report = 0.0
        while not self._stop.is_set():
            item = self.mailbox.take(timeout=0.25)
            if item is None:
                continue
            frame, meta = item
            try:
                self.sink.send(frame, meta)
                self.sent += 1
            except Exception as e:  # noqa: BLE001
                self.errors += 1
                self.last_error = str(e) or type(e).__name__
                now = time.monotonic()
                if now - last_report > self.retry_seconds:  # one line per episode, not per frame
                    log.error("output %s (%s) failed on a frame: %s", self.name, self.sink.label, self.last_error)
                    last_report = now

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self.mailbox.close()
        self._thread.join(timeout)
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001
            log.warning("output %s did not close cleanly: %s", self.name, e)
        self.state = "closed"

    def status(self) -> dict:
        return {"state": self.state, "sent": self.sent, "skipped": self.mailbox.overwritten,
                "errors": self.errors, "last_error": self.last_error}
