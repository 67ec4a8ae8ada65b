"""The output sinks, in-process: MJPEG over HTTP (read by real HTTP clients, ffmpeg and OpenCV), the virtual camera
(through a registered pyvirtualcam backend, and the real no-device path), and recording to a file."""

from __future__ import annotations

import glob
import http.client
import os
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from vprod.engine import ElementConfig
from vprod.plugins import PluginRegistry

W, H = 320, 240
RED, GREEN, BLUE = (230, 20, 30), (40, 200, 90), (20, 40, 220)
JPEG_TOLERANCE = 10
integration = pytest.mark.integration


# --- helpers ---
def make(element_id: str, width: int = W, height: int = H, fps: float = 30, **options):
    cls = PluginRegistry().load(element_id)
    return cls(ElementConfig(layer="", name=element_id, width=width, height=height, fps=fps, options=options), {})


def solid(rgb, width: int = W, height: int = H) -> np.ndarray:
    f = np.empty((height, width, 3), np.uint8)
    f[:] = rgb
    f.flags.writeable = False  # the engine's frames are read-only
    return f


def meta(seq: int = 0) -> dict:
    return {"seq": seq, "pts": seq / 30, "width": W, "height": H, "preset": ""}


def centre_rgb(bgr: np.ndarray) -> tuple[int, int, int]:
    b, g, r = bgr[bgr.shape[0] // 2, bgr.shape[1] // 2]
    return int(r), int(g), int(b)


def near(a, b, tol: int = JPEG_TOLERANCE) -> bool:
    return max(abs(int(x) - int(y)) for x, y in zip(a, b)) <= tol


def decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, f"not a decodable JPEG ({len(data)} bytes, starts {data[:4]!r})"
    return img


class Feeder:
    """Sends a colour to a sink at about 30 fps from its own thread, as the engine's sink thread does."""

    def __init__(self, sink, rgb, width: int = W, height: int = H):
        self.sink, self.rgb, self.size = sink, rgb, (width, height)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.sink.send(solid(self.rgb, *self.size), meta(self.sent))
            self.sent += 1
            self._stop.wait(1 / 30)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "send() is stuck"


class MultipartReader:
    """Reads multipart/x-mixed-replace parts from a real HTTP response, checking each part's framing."""

    def __init__(self, resp: http.client.HTTPResponse):
        ctype = resp.getheader("Content-Type", "")
        assert ctype.startswith("multipart/x-mixed-replace"), ctype
        params = dict(p.strip().split("=", 1) for p in ctype.split(";")[1:])
        self.boundary = params["boundary"].strip('"').encode()
        self.resp = resp

    def next_part(self) -> tuple[dict, bytes]:
        line = self.resp.readline()
        while line in (b"\r\n", b"\n"):  # the CRLF that ends the previous part
            line = self.resp.readline()
        assert line.rstrip(b"\r\n") == b"--" + self.boundary, f"expected the boundary, got {line!r}"
        headers = {}
        while (line := self.resp.readline()) not in (b"\r\n", b"\n", b""):
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = self.resp.read(int(headers["content-length"]))
        return headers, body


@pytest.fixture
def mjpeg():
    sink = make("mjpeg", port=0)
    sink.open()
    try:
        yield sink
    finally:
        sink.close()


def wait_for_clients(sink, n: int, guard: float = 20) -> None:
    """Until `n` stream clients are being served (each counts itself in once its request is read)."""
    deadline = time.monotonic() + guard  # a deadlock guard, not a speed check
    while sink.clients != n:
        assert time.monotonic() < deadline, f"{sink.clients} stream clients, expected {n}"
        time.sleep(0.01)


def get(sink, path: str, timeout: float = 10) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=timeout)
    conn.request("GET", path)
    return conn.getresponse()


# --- MJPEG ---
@integration  # real sockets and real clients
def test_mjpeg_stream_parts_are_jpegs_of_the_frames_sent(mjpeg):
    with Feeder(mjpeg, GREEN) as feeder:
        resp = get(mjpeg, "/stream.mjpg")
        assert resp.status == 200
        parts = MultipartReader(resp)
        for _ in range(5):
            headers, body = parts.next_part()
            assert headers["content-type"] == "image/jpeg"
            img = decode_jpeg(body)
            assert img.shape == (H, W, 3)
            assert near(centre_rgb(img), GREEN), centre_rgb(img)
        feeder.rgb = BLUE  # live: the stream follows the frames sent
        seen = []
        for _ in range(300):
            seen.append(centre_rgb(decode_jpeg(parts.next_part()[1])))
            if near(seen[-1], BLUE):
                break
        assert near(seen[-1], BLUE), seen[-5:]
        resp.close()


@integration
def test_mjpeg_stream_plays_in_ffmpeg(mjpeg, tmp_path):
    out = tmp_path / "out.png"
    with Feeder(mjpeg, RED):
        r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", mjpeg.url, "-frames:v", "1", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(out))
    assert img.shape == (H, W, 3)
    assert near(centre_rgb(img), RED), centre_rgb(img)


@integration
def test_mjpeg_stream_plays_in_opencv(mjpeg):
    with Feeder(mjpeg, BLUE):
        cap = cv2.VideoCapture(mjpeg.url, cv2.CAP_FFMPEG)
        try:
            assert cap.isOpened()
            ok, img = cap.read()
        finally:
            cap.release()
    assert ok
    assert img.shape == (H, W, 3)
    assert near(centre_rgb(img), BLUE), centre_rgb(img)


@integration
def test_mjpeg_snapshot_is_the_latest_frame(mjpeg):
    resp = get(mjpeg, "/frame.jpg")
    assert resp.status == 503 and b"no frame" in resp.read()  # nothing sent yet
    mjpeg.send(solid(RED), meta(0))
    mjpeg.send(solid(GREEN), meta(1))  # nobody watches: not encoded, yet the snapshot has it
    resp = get(mjpeg, "/frame.jpg?t=1")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "image/jpeg"
    body = resp.read()
    assert len(body) == int(resp.getheader("Content-Length"))
    assert near(centre_rgb(decode_jpeg(body)), GREEN)
    with Feeder(mjpeg, BLUE):
        deadline = time.monotonic() + 10
        while not near(rgb := centre_rgb(decode_jpeg(get(mjpeg, "/frame.jpg").read())), BLUE):
            assert time.monotonic() < deadline, rgb


@integration
def test_mjpeg_page_shows_the_stream_and_how_to_add_it_to_obs(mjpeg):
    resp = get(mjpeg, "/")
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/html")
    page = resp.read().decode()
    assert '<img src="/stream.mjpg"' in page
    assert "Media Source" in page and f"http://127.0.0.1:{mjpeg.port}/stream.mjpg" in page
    assert get(mjpeg, "/nope").status == 404


@integration
def test_mjpeg_encodes_only_while_watched_and_once_per_frame(mjpeg, monkeypatch):
    calls = []
    real = cv2.imencode
    monkeypatch.setattr(cv2, "imencode", lambda *a, **k: calls.append(1) or real(*a, **k))
    for i in range(10):
        mjpeg.send(solid(RED), meta(i))
    assert calls == []  # nobody connected: no work

    readers = [MultipartReader(get(mjpeg, "/stream.mjpg")) for _ in range(3)]
    wait_for_clients(mjpeg, 3)
    n = 20
    for i in range(n):
        mjpeg.send(solid(GREEN if i % 2 else BLUE), meta(10 + i))
        time.sleep(1 / 30)
    for r in readers:  # every client got JPEGs of what was sent
        rgb = centre_rgb(decode_jpeg(r.next_part()[1]))
        assert any(near(rgb, c) for c in (RED, GREEN, BLUE)), rgb
        r.resp.close()
    # One JPEG per frame, shared by the three clients (+1: a client that waited may have had the last red one made).
    assert 1 <= len(calls) <= n + 1, f"{len(calls)} encodes for {n} frames and 3 clients"


@integration
def test_mjpeg_slow_client_never_blocks_send(mjpeg):
    # A client that asks for the stream and never reads: the server's writes to it block once the socket buffers fill.
    with socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", mjpeg.port))
        stuck.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for_clients(mjpeg, 1)
        rng = np.random.default_rng(0)
        noise = [rng.integers(0, 256, (H, W, 3), np.uint8) for _ in range(4)]  # big JPEGs fill buffers fast
        done = threading.Event()

        def pump():
            for i in range(200):
                mjpeg.send(noise[i % 4], meta(i))
            mjpeg.send(solid(RED), meta(200))
            done.set()

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        t.join(60)  # a deadlock guard, not a speed check
        assert done.is_set(), "send() blocked behind a client that does not read"
        # Other clients are not held back by the stuck one: they get the newest frame.
        resp = get(mjpeg, "/stream.mjpg")
        assert near(centre_rgb(decode_jpeg(MultipartReader(resp).next_part()[1])), RED)
        resp.close()


@integration
def test_mjpeg_close_ends_streams_and_frees_the_port(mjpeg):
    with Feeder(mjpeg, GREEN):
        resp = get(mjpeg, "/stream.mjpg")
        parts = MultipartReader(resp)
        parts.next_part()
        closer = threading.Thread(target=mjpeg.close)
        t0 = time.monotonic()
        closer.start()
        closer.join(5)  # a deadlock guard: close() must not wait for clients
        took = time.monotonic() - t0
        assert not closer.is_alive(), "close() hangs while a client is connected"
        rest = resp.read()  # the stream ends: the closing boundary, then end of file
        assert rest.rstrip().endswith(b"--" + parts.boundary + b"--")
    print(f"close() took {took * 1000:.0f} ms")
    port = mjpeg.port
    again = make("mjpeg", port=port)  # the port is free again
    again.open()
    again.close()


@integration
def test_mjpeg_close_cuts_off_a_client_that_stopped_reading(monkeypatch):
    sink = make("mjpeg", width=1280, height=720, port=0)
    handler = sys.modules[type(sink).__module__]._Handler
    monkeypatch.setattr(handler, "timeout", 3600)  # so only close() can end the stuck client's stream
    sink.open()
    with socket.socket() as stuck:
        try:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(("127.0.0.1", sink.port))
            stuck.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for_clients(sink, 1)
            noise = np.random.default_rng(2).integers(0, 256, (720, 1280, 3), np.uint8)  # ~1 MB per JPEG
            for i in range(40):  # far more than the socket buffers hold: the server's write to it blocks
                sink.send(noise, meta(i))
                time.sleep(0.01)
        finally:
            sink.close()
        wait_for_clients(sink, 0)  # nothing but close() could end that stream, and its thread has ended


@integration
def test_mjpeg_port_in_use_is_one_clear_error():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        sink = make("mjpeg", port=port)
        with pytest.raises(RuntimeError) as e:
            sink.open()
        sink.close()  # the runner closes a sink whose open() failed: that must be harmless
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "in use" in msg and "--mjpeg-port" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("quality", [0, 101, "high"])
def test_mjpeg_bad_quality_is_refused(quality):
    sink = make("mjpeg", port=0, quality=quality)
    with pytest.raises(RuntimeError, match="quality"):
        sink.open()
    sink.close()


# --- virtual camera ---
class FakeCameraBackend:
    """A pyvirtualcam backend that keeps what it is given (pyvirtualcam's Backend interface)."""

    instances: list["FakeCameraBackend"] = []
    fail_with: str = ""

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        if FakeCameraBackend.fail_with:
            raise RuntimeError(FakeCameraBackend.fail_with)
        self.width, self.height, self.fps, self.fourcc, self.device_arg = width, height, fps, fourcc, device
        self.frames: list[np.ndarray] = []
        self.closed = 0
        FakeCameraBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed += 1

    def device(self) -> str:
        return self.device_arg or "vprodtest0"

    def native_fourcc(self):
        return self.fourcc


@pytest.fixture
def fake_backend():
    import pyvirtualcam

    FakeCameraBackend.instances = []
    FakeCameraBackend.fail_with = ""
    pyvirtualcam.register_backend("vprodtest", FakeCameraBackend)
    try:
        yield FakeCameraBackend
    finally:
        pyvirtualcam.camera.BACKENDS.pop("vprodtest", None)


def test_virtual_camera_passes_frames_unchanged(fake_backend):
    from pyvirtualcam.util import encode_fourcc

    sink = make("virtual_camera", width=W, height=H, fps=25, backend="vprodtest", device="/dev/video42")
    sink.open()
    (cam,) = fake_backend.instances
    assert (cam.width, cam.height, cam.fps) == (W, H, 25)
    assert cam.fourcc == encode_fourcc("raw ")  # pyvirtualcam's RGB
    assert cam.device_arg == "/dev/video42"
    frames = [solid(RED), solid(GREEN), np.random.default_rng(1).integers(0, 256, (H, W, 3), np.uint8)]
    frames[2].flags.writeable = False
    for i, f in enumerate(frames):
        sink.send(f, meta(i))
    sink.close()
    assert len(cam.frames) == 3
    for got, sent in zip(cam.frames, frames):
        assert got.dtype == np.uint8 and got.size == W * H * 3
        assert np.array_equal(got.reshape(H, W, 3), sent)
    assert cam.closed == 1
    sink.close()  # twice is harmless
    assert cam.closed == 1


def test_virtual_camera_backend_failure_is_one_line_with_its_reason(fake_backend):
    fake_backend.fail_with = "device is busy\nsecond line"
    sink = make("virtual_camera", backend="vprodtest")
    with pytest.raises(RuntimeError) as e:
        sink.open()
    sink.close()
    msg = str(e.value)
    assert "device is busy" in msg and "\n" not in msg


def test_virtual_camera_unknown_backend_names_the_known_ones():
    sink = make("virtual_camera", backend="nosuch")
    with pytest.raises(RuntimeError, match="unknown virtual camera backend 'nosuch'"):
        sink.open()


def _loopback_devices() -> list[str]:
    names = glob.glob("/sys/devices/virtual/video4linux/video*/name")
    return [n for n in names if os.path.exists(n)]


@integration  # the machine's real video devices
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the v4l2loopback path is Linux's")
def test_virtual_camera_without_a_device_says_how_to_get_one():
    """The real path on a machine without v4l2loopback (like CI here); where one exists, it must work instead."""
    sink = make("virtual_camera")
    if _loopback_devices():
        sink.open()
        try:
            sink.send(solid(GREEN), meta(0))
        finally:
            sink.close()
        return
    with pytest.raises(RuntimeError) as e:
        sink.open()
    sink.close()
    msg = str(e.value)
    assert "v4l2loopback" in msg and "modprobe" in msg
    assert "\n" not in msg


# --- record ---
COLOURS = [RED, GREEN, BLUE, (255, 255, 255), (0, 0, 0), (128, 64, 200), (250, 200, 20), (10, 120, 130)]


@pytest.mark.parametrize("codec,ext", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_record_writes_every_frame_received(tmp_path, codec, ext):
    path = tmp_path / f"take{ext}"
    sink = make("record", fps=25, path=str(path), codec=codec)
    sink.open()
    sent = COLOURS * 3
    for i, c in enumerate(sent):
        sink.send(solid(c), meta(i))
    sink.close()
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25)
    got = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (H, W, 3)
        got.append(centre_rgb(img))
    cap.release()
    assert len(got) == len(sent)
    bad = [(i, g, s) for i, (g, s) in enumerate(zip(got, sent)) if not near(g, s, 12)]
    assert not bad, bad


def test_record_path_is_strftime_expanded_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = make("record", path="takes/%Y/take-%H%M%S.avi", codec="MJPG")
    sink.open()
    sink.send(solid(RED), meta(0))
    sink.close()
    (f,) = glob.glob(str(tmp_path / "takes" / time.strftime("%Y") / "take-*.avi"))
    assert len(os.path.basename(f)) == len("take-HHMMSS.avi")

    default = make("record")
    default.open()
    default.send(solid(GREEN), meta(0))
    default.close()
    (f,) = glob.glob(str(tmp_path / "vprod-*.mp4"))
    assert len(os.path.basename(f)) == len("vprod-YYYYmmdd-HHMMSS.mp4")


@pytest.mark.parametrize("case", ["folder is a file", "unknown file type", "not a fourcc", "codec not in container"])
def test_record_that_cannot_open_says_why(tmp_path, case):
    (tmp_path / "afile").write_text("x")
    path, codec = {
        "folder is a file": (tmp_path / "afile" / "x.mp4", "mp4v"),
        "unknown file type": (tmp_path / "x.nosuchtype", "mp4v"),
        "not a fourcc": (tmp_path / "x.mp4", "h264x"),
        "codec not in container": (tmp_path / "x.mp4", "ZZZZ"),
    }[case]
    sink = make("record", path=str(path), codec=codec)
    with pytest.raises(RuntimeError) as e:
        sink.open()
    sink.close()
    assert "cannot record" in str(e.value) or "FourCC" in str(e.value)
    assert "\n" not in str(e.value)


def test_record_refuses_frames_of_another_size(tmp_path):
    sink = make("record", path=str(tmp_path / "x.avi"), codec="MJPG")
    sink.open()
    try:
        with pytest.raises(ValueError, match="320x240"):
            sink.send(solid(RED, 64, 48), meta(0))
    finally:
        sink.close()

