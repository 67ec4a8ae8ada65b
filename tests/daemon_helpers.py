"""Helpers for tests that run `vprod run` as a real subprocess and talk to it over its real sockets.

    d = start_daemon(tmp_path, preset)            # free ports, stderr to a file, stopped by pid on teardown
    with FrameStream(d.zmq_port) as frames:       # SUB: [b"frame", header, payload] -> (header dict, HxWx3 array)
        hdr, img = frames.next_frame()
    ctl = Control(d.control_port)
    ctl.req("set", path="/bg/r", value=1.0)       # REQ with a receive timeout -> reply dict

Timeouts here only guard against hangs; nothing measures speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import zmq
from peers import clean_env, stop_pid  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parent.parent
SOLID_PRESET = REPO / "presets" / "solid.toml"
SOLID_RGB = (26, 51, 153)  # r=0.1, g=0.2, b=0.6 in presets/solid.toml
WAIT = 20.0  # seconds: a guard against hangs, never a speed requirement


# --- processes and environment ---
def free_port(host: str = "127.0.0.1", udp: bool = False) -> int:
    """A TCP (or UDP) port nobody listens on right now (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _sigint_not_ignored():
    """A child inherits an ignored SIGINT (pytest started as a background job has one); the daemon must not."""
    ignored = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(\S+): ?(.*)$")
BANNER_LINE = re.compile(r"^(vprod \S+ \(.*\) at \d+x\d+ |  output |  control )")


class Daemon:
    """One `vprod run` subprocess; its stderr goes to `log_path`."""

    def __init__(self, workdir: Path, preset: str | Path, outputs: str | None = "zmq,mjpeg",
                 args: list[str] | None = None, env: dict[str, str] | None = None,
                 zmq_port: int | None = None, mjpeg_port: int | None = None, control_port: int | None = None):
        self.workdir = Path(workdir)
        self.preset = str(preset)
        self.zmq_port = zmq_port or free_port()
        self.mjpeg_port = mjpeg_port or free_port()
        self.control_port = control_port or free_port()
        self.osc_port = free_port(udp=True)  # OSC is on by default (UDP 9000): never let two daemons fight over it
        self.log_path = self.workdir / f"vprod-{self.zmq_port}.stderr"
        self.out_path = self.workdir / f"vprod-{self.zmq_port}.stdout"
        self.argv = [sys.executable, "-m", "vprod", "--log-level", "info", "run", self.preset,
                     "--zmq-port", str(self.zmq_port), "--mjpeg-port", str(self.mjpeg_port),
                     "--control-port", str(self.control_port), "--osc-port", str(self.osc_port)]
        if outputs:
            self.argv += ["--outputs", outputs]
        self.argv += list(args or [])
        # The user's own plugin folder (~/.config/vprod/plugins) stays out of the tests.
        self.env = clean_env(XDG_CONFIG_HOME=str(self.workdir / "xdg-config"), PYTHONUNBUFFERED="1", **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as err, open(self.out_path, "wb") as out, _sigint_not_ignored():
            self.proc = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)
        return self

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is not None:
            stop_pid(self.proc, grace)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def records(self, level: str | None = None) -> list[tuple[str, str, str]]:
        """Log records as (level, logger, message); continuation lines belong to the record above them."""
        recs: list[list[str]] = []
        current: list[str] | None = None
        for line in self.log().splitlines():
            m = LOG_RECORD.match(line)
            if m:
                current = [m.group(1), m.group(2), m.group(3)]
                recs.append(current)
            elif BANNER_LINE.match(line):
                current = None  # the start-up banner is printed, not logged
            elif current is not None:
                current[2] += "\n" + line
        return [tuple(r) for r in recs if level is None or r[0] == level]

    def errors(self) -> list[str]:
        return [msg for _lvl, _name, msg in self.records("ERROR")]

    def wait_log(self, pattern: str, timeout: float = WAIT, count: int = 1) -> str:
        """Until the log has `count` matches of the regex `pattern`; returns the log. Fails if the daemon exits."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if len(rx.findall(text)) >= count:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"vprod exited with code {self.proc.returncode} before the log showed "
                                     f"{pattern!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the log never showed {pattern!r} within {timeout:g} s:\n{text}")
            time.sleep(0.05)

    def wait_banner(self, timeout: float = WAIT) -> str:
        return self.wait_log(r"^  control zmq ", timeout)

    def describe(self) -> str:
        rc = self.proc.poll() if self.proc else None
        return f"vprod pid {self.pid if self.proc else '-'} (exit code {rc})\n--- stderr ---\n{self.log()}"


def run_vprod(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60.0):
    """`python -m vprod ARGS` to completion; returns CompletedProcess with text stdout/stderr."""
    cwd = Path(cwd)
    return subprocess.run([sys.executable, "-m", "vprod", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout,
                          env=clean_env(XDG_CONFIG_HOME=str(cwd / "xdg-config"), **(env or {})))


class DaemonPool:
    """Starts daemons and stops every one of them (by pid) at teardown."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.daemons: list[Daemon] = []

    def __call__(self, preset: str | Path, **kw) -> Daemon:
        d = Daemon(self.workdir, preset, **kw)
        self.daemons.append(d)
        return d.start()

    def close(self) -> None:
        for d in self.daemons:
            d.stop()


# --- the ZeroMQ frame stream ---
class FrameStream:
    """Subscribes to the frame stream on a background thread, keeping the newest frames and a log of them all.

    `frames` holds the last few (header, image) pairs (images are HxWx3 uint8, read-only); `seen` holds
    (seq, arrival time, centre RGB) of every frame received, for checks over many frames without keeping them.
    """

    KEEP = 12

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.endpoint = f"tcp://{host}:{port}"
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 3 * 4)  # a few frames, not a gigabyte, when the test looks away
        self._sock.setsockopt(zmq.SUBSCRIBE, b"frame")
        self._sock.connect(self.endpoint)
        self._cond = threading.Condition()
        self.frames: deque[tuple[dict, np.ndarray]] = deque(maxlen=self.KEEP)
        self.seen: deque[tuple[int, float, tuple[int, int, int]]] = deque(maxlen=100_000)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sub-{port}", daemon=True)
        self._thread.start()

    # lifecycle
    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close(linger=0)

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def parse(parts: list[bytes]) -> tuple[dict, np.ndarray]:
        """[b"frame", header JSON, payload] → (header, HxWx3 uint8 image); raises AssertionError if malformed."""
        assert len(parts) == 3, f"expected 3 parts, got {len(parts)}"
        assert parts[0] == b"frame", f"topic {parts[0][:20]!r}"
        hdr = json.loads(parts[1].decode("utf-8"))
        w, h = hdr["width"], hdr["height"]
        assert len(parts[2]) == w * h * 3, f"payload {len(parts[2])} bytes for {w}x{h} rgb24 ({w * h * 3})"
        img = np.frombuffer(parts[2], np.uint8).reshape(h, w, 3)
        return hdr, img

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                parts = self._sock.recv_multipart()
                hdr, img = self.parse(parts)
            except Exception as e:  # noqa: BLE001 - recorded; the test asserts there are none
                self.errors.append(f"{type(e).__name__}: {e}")
                continue
            now = time.monotonic()
            c = img[img.shape[0] // 2, img.shape[1] // 2]
            with self._cond:
                self.frames.append((hdr, img))
                self.seen.append((hdr["seq"], now, (int(c[0]), int(c[1]), int(c[2]))))
                self._cond.notify_all()

    # reading
    @property
    def last_seq(self) -> int:
        """The newest seq received so far (-1 before any)."""
        with self._cond:
            return self.frames[-1][0]["seq"] if self.frames else -1

    def next_frame(self, after: int | None = None, timeout: float = WAIT) -> tuple[dict, np.ndarray]:
        """The first kept frame with seq > `after` (default: the newest seen now), waiting for it."""
        return self.first_frame_at_or_after((self.last_seq if after is None else after) + 1, timeout)

    def first_frame_at_or_after(self, seq: int, timeout: float = WAIT) -> tuple[dict, np.ndarray]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for hdr, img in self.frames:
                    if hdr["seq"] >= seq:
                        return hdr, img
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no frame with seq >= {seq} on {self.endpoint} within {timeout:g} s "
                                         f"(newest: {self.frames[-1][0] if self.frames else None})")
                self._cond.wait(left)

    def wait_for(self, pred, timeout: float = WAIT, after: int | None = None, what: str = "a matching frame"):
        """The first frame (seq > `after`, default the newest now) for which pred(header, image) is true."""
        cursor = self.last_seq if after is None else after
        deadline = time.monotonic() + timeout
        last = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                desc = None if last is None else (last[0], centre(last[1]))
                raise AssertionError(f"never saw {what} on {self.endpoint} within {timeout:g} s; last {desc}")
            hdr, img = self.next_frame(cursor, left)
            cursor, last = hdr["seq"], (hdr, img)
            if pred(hdr, img):
                return hdr, img

    def wait_colour(self, rgb, tol: int = 0, timeout: float = WAIT, after: int | None = None):
        """The first frame whose every pixel is within `tol` of `rgb`."""
        return self.wait_for(lambda h, im: is_uniform(im, rgb, tol), timeout, after, what=f"a frame all {rgb}")

    def seen_since(self, seq: int) -> list[tuple[int, float, tuple[int, int, int]]]:
        with self._cond:
            return [s for s in self.seen if s[0] > seq]


def fallback_clip_frames(width: int, height: int) -> list[np.ndarray]:
    """The webcam's fallback video (presets/media/person.mp4), every frame fitted ("cover") as the webcam does."""
    import cv2

    from vprod.engine import fit_frame

    cap = cv2.VideoCapture(str(REPO / "presets" / "media" / "person.mp4"))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(fit_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height, "cover"))
    cap.release()
    return frames


def centre(img: np.ndarray) -> tuple[int, int, int]:
    c = img[img.shape[0] // 2, img.shape[1] // 2]
    return int(c[0]), int(c[1]), int(c[2])


def is_uniform(img: np.ndarray, rgb, tol: int = 0) -> bool:
    """Every pixel within `tol` of `rgb` (checked on the min and max per channel: fast on 1280x720)."""
    flat = img.reshape(-1, 3)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    return all(int(lo[i]) >= rgb[i] - tol and int(hi[i]) <= rgb[i] + tol for i in range(3))


def near(a, b, tol: int) -> bool:
    return max(abs(int(x) - int(y)) for x, y in zip(a, b)) <= tol


# --- the ZeroMQ control ---
class Control:
    """A REQ client for the JSON control socket; each request has a receive timeout (a hang fails the test)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.endpoint = f"tcp://{host}:{port}"
        self.timeout_ms = int(timeout * 1000)
        self._sock = None
        self._connect()

    def _connect(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = zmq.Context.instance().socket(zmq.REQ)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        self._sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        self._sock.connect(self.endpoint)

    def send_bytes(self, data: bytes) -> dict:
        """One raw request (any bytes) → the decoded reply."""
        try:
            self._sock.send(data)
            reply = self._sock.recv()
        except zmq.Again:
            self._connect()  # a REQ socket that missed its reply cannot send again
            raise AssertionError(f"no reply from {self.endpoint} within {self.timeout_ms / 1000:g} s "
                                 f"to {data[:200]!r}") from None
        return json.loads(reply.decode("utf-8"))

    def req(self, op: str, **kw) -> dict:
        return self.send_bytes(json.dumps({"op": op, **kw}).encode())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> "Control":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- presets and plugins written by tests ---
def solid_preset_text(name: str, rgb: tuple[float, float, float], crossfade: float = 0.3, extra: str = "",
                      effects: str = "") -> str:
    r, g, b = rgb
    return (f'name = "{name}"\nwidth = 1280\nheight = 720\nfps = 30\ncrossfade = {crossfade}\n\n'
            f'[[layers]]\nid = "bg"\nsource = "solid"\nparams = {{ r = {r}, g = {g}, b = {b} }}\n'
            f"{effects}\n{extra}")


def write_atomically(path: Path, text: str) -> None:
    """Write a file the way many editors save: a new file renamed over the old one (never seen half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rgb8(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(round(c * 255) for c in rgb)  # type: ignore[return-value]


# --- OBS ---
def obs_centre(cl, source: str) -> tuple[int, int, int] | None:
    """The centre pixel (RGB) of OBS's own rendering of `source` (GetSourceScreenshot), None while it has none."""
    import base64

    import cv2
    from obsws_python.error import OBSSDKRequestError

    try:
        resp = cl.get_source_screenshot(source, "png", 64, 36, -1)
    except OBSSDKRequestError:
        return None  # no video yet: a source of size 0 has no screenshot
    data = base64.b64decode(resp.image_data.split(",", 1)[1])
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    b, g, r = img[img.shape[0] // 2, img.shape[1] // 2]
    return int(r), int(g), int(b)


def wait_obs_colour(obs, cl, source: str, rgb, tol: int, timeout: float = WAIT) -> tuple[int, int, int]:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = obs_centre(cl, source)
        if seen is not None and near(seen, rgb, tol):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"OBS never showed {rgb} (±{tol}) within {timeout:g} s; last centre pixel {seen}\n"
                         f"--- OBS log ---\n{obs.log_tail()}")
