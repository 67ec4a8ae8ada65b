"""ZeroMQ control: REP on tcp://127.0.0.1:5556, one JSON request, one JSON reply.

    {"op": "params"}                               → {"ok": true, "params": [ {path, type, min, max, unit, …} ]}
    {"op": "get", "path": "/bg/r"}                 → {"ok": true, "path": "/bg/r", "value": 0.1, "norm": 0.1}
    {"op": "set", "path": "/bg/r", "value": 0.5}   → normalized 0..1; add "raw": true for real units
    {"op": "preset", "name": "solid"}              → switch (crossfade); a preset that fails leaves the current one
    {"op": "presets"}                              → names available
    {"op": "status"}                               → frames, dropped, frame time, latency, outputs, faults
    {"op": "learn", "path": "/bg/r"}               → MIDI learn: the next control moved maps to /bg/r (saved)

Errors come back as {"ok": false, "error": "…"} and change nothing.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path

import zmq

from ..engine.params import ParamError, TriggerParam
from ..presets import preset_dirs

log = logging.getLogger("vprod.control.zmq")


class RequestError(Exception):
    pass


def handle(daemon, req) -> dict:
    """One request → one reply. Pure with respect to the socket, so it is unit-testable."""
    if not isinstance(req, dict):
        raise RequestError("request must be a JSON object with an \"op\"")
    op = req.get("op")
    engine = daemon.engine
    if op == "params":
        return {"ok": True, "params": engine.schema()}
    if op == "get":
        path = _path(req)
        st = _state(engine, path)
        v = st.target if not isinstance(st.spec, TriggerParam) else st.value  # what was last set, even mid-slew
        return {"ok": True, "path": path, "value": list(v) if isinstance(v, tuple) else v,
                "norm": _j(st.spec.to_norm(v))}
    if op == "set":
        path = _path(req)
        st = _state(engine, path)
        if "value" not in req and not isinstance(st.spec, TriggerParam):
            raise RequestError("set needs a \"value\"")
        value = req.get("value")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(f"{value!r} is not a finite number")
        if (not req.get("raw") and isinstance(value, (int, float)) and not isinstance(value, bool)
                and not 0.0 <= value <= 1.0):  # as OSC: a normalized value outside 0..1 is refused, not clamped
            raise RequestError(f"{path}: {value!r} is outside 0..1 (send \"raw\": true for real units)")
        try:
            real = st.spec.coerce(value) if req.get("raw") else st.spec.from_norm(value)
        except ParamError as e:
            raise RequestError(f"{path}: {e} (allowed: {st.spec.allowed() if req.get('raw') else '0..1'})") from None
        daemon.bus.set(path, real, "zmq")
        return {"ok": True, "path": path, "value": _j(real)}
    if op == "preset":
        name = req.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError("preset needs a \"name\" (a preset name or a path to a .toml file)")
        fade = req.get("crossfade")
        if fade is not None and (not isinstance(fade, (int, float)) or not 0 <= fade <= 60):
            raise RequestError("crossfade must be seconds in 0..60")
        err = daemon.request_preset(name, fade, "zmq")
        if err:
            raise RequestError(err)
        return {"ok": True, "preset": daemon.preset.name}
    if op == "presets":
        names = sorted({p.stem for d in preset_dirs([daemon.preset.dir]) if Path(d).is_dir()
                        for p in Path(d).glob("*.toml")})
        return {"ok": True, "presets": names, "current": daemon.preset.name}
    if op == "status":
        return {"ok": True, "status": daemon.status()}
    if op == "learn":
        path = _path(req)
        midi = next((c for c in daemon.controls if getattr(c, "name", "") == "midi"), None)
        if midi is None:
            raise RequestError("MIDI is off: the preset the daemon started with has no [midi] section")
        err = midi.arm(path)
        if err:
            raise RequestError(err)
        return {"ok": True, "learning": path, "learn_file": str(midi.cfg.learn_file)}
    raise RequestError(f"unknown op {op!r} (one of params, get, set, preset, presets, status, learn)")


def _path(req) -> str:
    path = req.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise RequestError("\"path\" must be a parameter path like \"/bg/r\"")
    return path


def _state(engine, path):
    try:
        return engine.resolve(path)
    except KeyError as e:
        raise RequestError(e.args[0]) from None


def _j(v):
    return list(v) if isinstance(v, tuple) else v


class ZmqControl:
    name = "zmq"

    def __init__(self, daemon, endpoint: str = "tcp://127.0.0.1:5556"):
        self.daemon = daemon
        self.endpoint = endpoint
        self.requests = 0
        self.errors = 0
        self.state = "starting"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        return f"zmq            {self.endpoint if self.state == 'running' else 'off: ' + self.state} (JSON REQ/REP)"

    def start(self) -> None:
        ctx = zmq.Context.instance()
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # a request is small JSON; refuse floods
        try:
            self._sock.bind(self.endpoint)
        except zmq.ZMQError as e:
            self._sock.close()
            self.state = f"cannot bind {self.endpoint}: {e.strerror}"
            raise RuntimeError(f"ZeroMQ control is off: cannot bind {self.endpoint}: {e.strerror}"
                               + (" (choose another with --control-port)" if e.errno == zmq.EADDRINUSE else ""))
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name="zmq-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            try:
                parts = self._sock.recv_multipart()
            except zmq.ZMQError:
                continue
            self.requests += 1
            try:
                try:
                    req = json.loads(parts[0].decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise RequestError(f"not JSON: {e}") from None
                reply = handle(self.daemon, req)
            except RequestError as e:
                self.errors += 1
                reply = {"ok": False, "error": str(e)}
            except Exception as e:  # noqa: BLE001 - a bad request never takes the daemon down
                self.errors += 1
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
            try:
                self._sock.send(json.dumps(reply, default=str).encode())
            except zmq.ZMQError as e:
                log.warning("could not reply: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(1.0)
        if getattr(self, "_sock", None) is not None:
            self._sock.close(linger=0)
        self.state = "stopped"

    def status(self) -> dict:
        return {"endpoint": self.endpoint, "state": self.state, "requests": self.requests, "errors": self.errors}
