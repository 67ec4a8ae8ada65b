"""The ZeroMQ frame stream. Wire format (version 1), one multipart message per frame:

    [b"frame", header, payload]

header: UTF-8 JSON {"v": 1, "seq", "pts", "width", "height", "format": "rgb24", "stride", "preset"};
payload: the raw H×W×3 uint8 image, row-major (stride = width × 3 bytes per row).

The send queue is bounded by the high-water mark and sends never block: a slow subscriber loses frames, the
daemon neither waits nor grows.
"""

import json

import numpy as np
import zmq

from vprod.engine import Sink

WIRE_VERSION = 1


class ZmqSink(Sink):
    """Publishes frames on a ZeroMQ PUB socket."""

    options = {
        "port": (5555, "TCP port"),
        "bind": ("127.0.0.1", "address to bind; 0.0.0.0 to serve other machines"),
        "endpoint": ("", "full ZeroMQ endpoint (e.g. ipc:///tmp/vprod.sock); overrides port and bind"),
        "hwm": (4, "frames queued per subscriber before new ones are dropped"),
    }

    @property
    def endpoint(self) -> str:
        return self.opts["endpoint"] or f"tcp://{self.opts['bind']}:{int(self.opts['port'])}"

    def open(self) -> None:
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, int(self.opts["hwm"]) * 3)  # three parts per frame
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(self.endpoint)
        except zmq.ZMQError as e:
            self._sock.close()
            hint = " (is another vprod running? choose another with --zmq-port)" if e.errno == zmq.EADDRINUSE else ""
            raise RuntimeError(f"cannot bind {self.endpoint}: {e.strerror}{hint}") from None
        self.log.info("ZeroMQ stream on %s", self.endpoint)

    def where(self) -> str:
        return f"{self.endpoint}  (receiver: python integrations/clients/zmq_receiver.py)"

    def send(self, frame, meta: dict) -> None:
        h, w = frame.shape[:2]
        header = {"v": WIRE_VERSION, "seq": meta["seq"], "pts": round(meta["pts"], 6), "width": w, "height": h,
                  "format": "rgb24", "stride": w * 3, "preset": meta.get("preset", "")}
        try:
            self._sock.send_multipart([b"frame", json.dumps(header).encode(), np.ascontiguousarray(frame).data], copy=False,
                                      flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # every subscriber is full: this frame is dropped for them, by design

    def close(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close(linger=0)
