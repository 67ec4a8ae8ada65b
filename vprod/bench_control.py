"""`vprod bench control`: control → pixels latency, measured from outside the daemon.

A real `vprod run` process plays a solid colour (presets/solid.toml); for each surface a sender changes the red
channel (/bg/r) between two levels the way a user's rig would (a ZeroMQ `set`, an OSC message, a MIDI CC, an OBS
scene switch…), and a ZeroMQ subscriber finds the first frame whose pixels show the new level. The time from just
before the send to that frame's arrival is the latency; frames = the frame's sequence number minus the newest one
received before the send. The ZeroMQ control is measured in the same run as the baseline.

A surface module vprod.control.<name> offers a sender class `BenchSender`; BenchSender(ctx: BenchContext) has
  daemon_args() -> list[str]        extra `vprod run` arguments (ports, ...)
  env() -> dict[str, str]           optional: extra environment for the daemon; may start a peer it needs
                                    (e.g. a JACK server), which stop() stops
  preset_extra() -> str             TOML appended to the bench preset (mappings), may be ""
  start()                           after the daemon is up (connect, open ports)
  send(level: float)                make /bg/r go to `level` (0..1); return as soon as it is sent
  stop()
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

LEVELS = (0.2, 0.8)  # /bg/r alternates between these (0..1)
_SENDERS: dict[str, Callable[["BenchContext"], Any]] = {}


def register_sender(name: str, factory: Callable[["BenchContext"], Any]) -> None:
    _SENDERS[name] = factory


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BenchContext:
    workdir: Path
    zmq_port: int = field(default_factory=free_port)
    control_port: int = field(default_factory=free_port)
    fps: float = 30.0


def wait_for_status(ctx: BenchContext, look: Callable[[dict], Any], timeout: float, what: str) -> None:
    """Poll the daemon's ZeroMQ `status` until `look(status)` is truthy; RuntimeError naming `what` (and the last
    thing seen) after `timeout` s. Senders use it to wait until the daemon's surface is connected."""
    import zmq

    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(f"tcp://127.0.0.1:{ctx.control_port}")
    seen = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            req.send_json({"op": "status"})
            seen = look(req.recv_json()["status"])
            if seen:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} within {timeout:g} s (saw {seen!r})")
    finally:
        req.close(0)


class ZmqSender:
    """The baseline: the daemon's own ZeroMQ control (`set`)."""

    def __init__(self, ctx: BenchContext):
        self.ctx = ctx

    def daemon_args(self) -> list[str]:
        return []

    def preset_extra(self) -> str:
        return ""

    def start(self) -> None:
        import zmq

        self.req = zmq.Context.instance().socket(zmq.REQ)
        self.req.setsockopt(zmq.RCVTIMEO, 5000)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.connect(f"tcp://127.0.0.1:{self.ctx.control_port}")

    def send(self, level: float) -> None:
        self.req.send_json({"op": "set", "path": "/bg/r", "value": level})
        self.req.recv_json()

    def stop(self) -> None:
        self.req.close(0)


register_sender("zmq", ZmqSender)


def _load_senders() -> None:
    """A surface's module (vprod.control.<name>) offers its sender as `BenchSender`."""
    import sys as _sys

    from .control import SURFACE_MODULES, load_surfaces

    load_surfaces()
    for mod in SURFACE_MODULES:
        cls = getattr(_sys.modules.get(mod), "BenchSender", None)
        if cls is not None:
            register_sender(mod.rsplit(".", 1)[1], cls)


class Stream:
    def __init__(self, port: int):
        import zmq

        self.zmq = zmq
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        self.sub.setsockopt(zmq.RCVTIMEO, 5000)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(f"tcp://127.0.0.1:{port}")
        self.last_seq: int | None = None

    def frame(self, flags: int = 0):
        _, h, p = self.sub.recv_multipart(flags)
        hd = json.loads(h)
        self.last_seq = hd["seq"]
        return hd, np.frombuffer(p, np.uint8).reshape(hd["height"], hd["width"], 3)

    def newest_seq(self) -> int:
        """The newest frame received so far, without waiting for another (sends must land at any phase of the
        frame interval, not just after a frame arrived)."""
        try:
            while True:
                self.frame(self.zmq.NOBLOCK)
        except self.zmq.Again:
            pass
        return self.last_seq if self.last_seq is not None else self.frame()[0]["seq"]

    def close(self) -> None:
        self.sub.close(0)


def _red(img: np.ndarray) -> int:
    h, w = img.shape[:2]
    return int(img[h // 2, w // 2, 0])


def measure(sender, stream: Stream, trials: int, fps: float, timeout: float = 3.0) -> dict:
    """Alternate /bg/r between LEVELS through `sender`; latency of the first frame that shows each change."""
    ms, frames, missed = [], [], 0
    sender.send(LEVELS[1])  # a known start
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and abs(_red(stream.frame()[1]) - round(LEVELS[1] * 255)) > 2:
        pass
    for i in range(trials):
        level = LEVELS[i % 2]
        want = round(level * 255)
        last = stream.newest_seq()
        t0 = time.monotonic()
        sender.send(level)
        while True:
            try:
                hd, img = stream.frame()
            except stream.zmq.Again:
                missed += 1
                break
            if abs(_red(img) - want) <= 2:
                ms.append((time.monotonic() - t0) * 1000)
                frames.append(hd["seq"] - last)
                break
            if time.monotonic() - t0 > timeout:
                missed += 1
                break
        # the next send lands at a pseudo-random phase of the frame interval
        time.sleep((1.0 + ((i * 0.618034) % 1.0)) / fps)
    interval = 1000.0 / fps
    out = {"trials": trials, "missed": missed}
    if ms:
        out.update(ms_p50=round(float(np.percentile(ms, 50)), 2), ms_p99=round(float(np.percentile(ms, 99)), 2),
                   ms_max=round(max(ms), 2), frames_p50=float(np.percentile(frames, 50, method="higher")),
                   frames_p99=float(np.percentile(frames, 99, method="higher")), frames_max=int(max(frames)),
                   goal_p99_le_2_frames=bool(np.percentile(ms, 99) <= 2 * interval and not missed))
    return out


def _preset(workdir: Path, extra: str) -> Path:
    src = Path(__file__).resolve().parent.parent / "presets" / "solid.toml"
    text = src.read_text() if src.exists() else ""
    p = workdir / "bench-control.toml"
    p.write_text(text + "\n" + extra)
    return p


def run_control(surfaces: list[str], trials: int = 60, fps: float = 30.0, quiet: bool = False) -> dict:
    _load_senders()
    unknown = [s for s in surfaces if s not in _SENDERS]
    if unknown:
        raise SystemExit(f"vprod bench control: unknown surface(s) {', '.join(unknown)} "
                         f"(available: {', '.join(_SENDERS)})")
    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="vprod-bench-control-"))
    try:
        for name in ["zmq"] + [s for s in surfaces if s != "zmq"]:
            results[name] = _one(name, workdir / name, trials, fps, quiet)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"bench": "control", "fps": fps, "frame_interval_ms": round(1000 / fps, 2), "levels": LEVELS,
            "surfaces": results}


def _one(name: str, workdir: Path, trials: int, fps: float, quiet: bool) -> dict:
    workdir.mkdir(parents=True)
    ctx = BenchContext(workdir, fps=fps)
    sender = _SENDERS[name](ctx)
    preset = _preset(workdir, sender.preset_extra())
    cmd = [sys.executable, "-m", "vprod", "run", str(preset), "--size", "320x180", "--fps", str(fps),
           "--zmq-port", str(ctx.zmq_port), "--control-port", str(ctx.control_port), "--outputs", "zmq",
           "--no-watch", *sender.daemon_args()]
    if "--osc-port" not in cmd:
        cmd.append("--no-osc")  # the default OSC port may be taken by a daemon the user runs
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(sender.env() if hasattr(sender, "env") else {}))
    log = (workdir / "daemon.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    stream = None
    try:
        stream = Stream(ctx.zmq_port)
        t_end = time.monotonic() + 60
        while True:  # wait for the first frame
            try:
                stream.frame()
                break
            except stream.zmq.Again:
                if proc.poll() is not None or time.monotonic() > t_end:
                    raise RuntimeError(f"the daemon did not stream:\n{(workdir / 'daemon.log').read_text()[-2000:]}")
        sender.start()
        try:
            res = measure(sender, stream, trials, fps)
        finally:
            sender.stop()
        if not quiet:
            print(f"{name}: {json.dumps(res)}", file=sys.stderr)
        return res
    finally:
        if stream is not None:
            stream.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main(args) -> int:
    surfaces = [s for s in args.surfaces.split(",") if s]
    res = run_control(surfaces, trials=args.trials, fps=args.fps or 30.0, quiet=args.json)
    print(json.dumps(res, indent=None if args.json else 2))
    return 0
