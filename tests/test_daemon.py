"""The daemon end to end: `vprod run` as a real subprocess, read and steered only through its real sockets.

Frames are checked by their sequence numbers ("seq" in the ZeroMQ header), not by wall time; every wait has a
generous timeout that only guards against a hang. The one timing requirement is the 3 s shutdown on a signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon_helpers import (SOLID_PRESET, SOLID_RGB, WAIT, Control, Daemon, DaemonPool, FrameStream, clean_env,
                            free_port, is_uniform, near, rgb8, run_vprod, solid_preset_text, wait_obs_colour,
                            write_atomically)

pytestmark = pytest.mark.integration

JPEG_TOL = 10  # a flat colour through JPEG (4:2:0 chroma) and back
OBS_TOL = 16  # JPEG, then OBS's RGB → YUV → RGB


def copy_solid(dst_dir: Path, name: str = "solid.toml") -> Path:
    dst = Path(dst_dir) / name
    shutil.copy(SOLID_PRESET, dst)
    return dst


def fetch_jpeg(port: int) -> np.ndarray:
    """/frame.jpg from the daemon's MJPEG output, decoded (BGR). 503 means no frame yet (the loop is starting)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=WAIT) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "image/jpeg"
                data = resp.read()
            break
        except urllib.error.HTTPError as e:
            if e.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, f"/frame.jpg is not a JPEG ({len(data)} bytes, starts {data[:4]!r})"
    return img


def bgr_centre_rgb(img: np.ndarray) -> tuple[int, int, int]:
    b, g, r = img[img.shape[0] // 2, img.shape[1] // 2]
    return int(r), int(g), int(b)


def assert_streaming(frames: FrameStream, d: Daemon, n: int = 10, rgb=None) -> None:
    """`n` more frames arrive (seq keeps increasing), each all `rgb` if given."""
    start = frames.last_seq
    hdr, img = frames.next_frame(start)
    first = hdr["seq"]
    while hdr["seq"] < first + n:
        if rgb is not None:
            assert is_uniform(img, rgb), f"frame {hdr['seq']} is not all {rgb} (centre {img[360, 640]})"
        hdr, img = frames.next_frame(hdr["seq"])
    assert d.proc.poll() is None, d.describe()


# --- one daemon shared by the tests that only read the stream or restore what they change ---
@dataclass
class Running:
    daemon: Daemon
    frames: FrameStream
    ctl: Control


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    work = tmp_path_factory.mktemp("shared")
    pool = DaemonPool(work)
    d = pool(copy_solid(work), outputs="zmq,mjpeg")
    frames = FrameStream(d.zmq_port)
    ctl = Control(d.control_port)
    try:
        try:
            frames.wait_colour(SOLID_RGB)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{d.describe()}") from None
        yield Running(d, frames, ctl)
    finally:
        ctl.close()
        frames.close()
        pool.close()


# --- 1. the frame stream ---
def test_zmq_frame_stream_carries_the_preset(shared):
    import zmq

    # The wire format, read by a plain SUB socket of our own: [b"frame", header JSON, raw rgb24].
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 12)
    sock.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    sock.setsockopt(zmq.SUBSCRIBE, b"frame")
    sock.connect(f"tcp://127.0.0.1:{shared.daemon.zmq_port}")
    try:
        got = [sock.recv_multipart() for _ in range(6)]
    finally:
        sock.close(linger=0)
    headers = []
    for parts in got:
        assert len(parts) == 3 and parts[0] == b"frame"
        hdr = json.loads(parts[1])
        assert set(hdr) >= {"v", "seq", "pts", "width", "height", "format", "preset"}, hdr
        assert hdr["v"] == 1
        assert (hdr["width"], hdr["height"], hdr["format"], hdr["preset"]) == (1280, 720, "rgb24", "solid"), hdr
        assert len(parts[2]) == hdr["width"] * hdr["height"] * 3
        img = np.frombuffer(parts[2], np.uint8).reshape(hdr["height"], hdr["width"], 3)
        assert is_uniform(img, SOLID_RGB), f"frame {hdr['seq']}: centre {img[360, 640]}, want {SOLID_RGB}"
        headers.append(hdr)
    seqs = [h["seq"] for h in headers]
    pts = [h["pts"] for h in headers]
    assert seqs == sorted(set(seqs)), f"seq not increasing: {seqs}"
    assert pts == sorted(set(pts)) and pts[0] >= 0, f"pts not increasing: {pts}"
    assert not shared.frames.errors, shared.frames.errors


def banner_line(d: Daemon, output: str) -> str:
    d.wait_banner()
    lines = [ln for ln in d.log().splitlines() if ln.startswith(f"  output {output} ")]
    assert len(lines) == 1, d.log()
    return lines[0]


def test_banner_shows_where_each_output_is(shared):
    assert f"tcp://127.0.0.1:{shared.daemon.zmq_port}" in banner_line(shared.daemon, "zmq")
    assert f"control zmq            tcp://127.0.0.1:{shared.daemon.control_port}" in shared.daemon.log()
    assert f"http://127.0.0.1:{shared.daemon.mjpeg_port}/stream.mjpg" in banner_line(shared.daemon, "mjpeg")


# --- 9. a real video client reads the MJPEG output ---
def test_ffmpeg_reads_the_mjpeg_stream(shared, tmp_path):
    shared.frames.wait_colour(SOLID_RGB)
    out = tmp_path / "out.png"
    r = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i",
                        f"http://127.0.0.1:{shared.daemon.mjpeg_port}/stream.mjpg", "-frames:v", "1", str(out)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (720, 1280, 3), None if img is None else img.shape
    assert near(bgr_centre_rgb(img), SOLID_RGB, JPEG_TOL), bgr_centre_rgb(img)
    mean = tuple(int(round(v)) for v in img.reshape(-1, 3).mean(axis=0)[::-1])
    assert near(mean, SOLID_RGB, JPEG_TOL), mean


# --- 2. control ---
BAD_REQUESTS = [
    ("unknown path", json.dumps({"op": "set", "path": "/nope", "value": 0.5}).encode(), "/nope"),
    ("text value", json.dumps({"op": "set", "path": "/bg/r", "value": "abc"}).encode(), "abc"),
    ("NaN", json.dumps({"op": "set", "path": "/bg/r", "value": float("nan")}).encode(), "nan"),
    ("raw NaN", json.dumps({"op": "set", "path": "/bg/g", "value": float("nan"), "raw": True}).encode(), "nan"),
    ("infinity", b'{"op": "set", "path": "/bg/r", "value": 1e999}', "inf"),
    ("out of 0..1", json.dumps({"op": "set", "path": "/bg/r", "value": 1.5}).encode(), "outside 0..1"),
    ("no value", json.dumps({"op": "set", "path": "/bg/r"}).encode(), "value"),
    ("path without /", json.dumps({"op": "set", "path": "bg/r", "value": 0.0}).encode(), "path"),
    ("malformed JSON", b'{"op": "set", "path": "/bg/r", "value": 0.', "JSON"),
    ("not UTF-8", b"\xff\xfe\x00garbage", "JSON"),
    ("not an object", b"[1, 2, 3]", "object"),
    ("unknown op", json.dumps({"op": "explode"}).encode(), "explode"),
    ("bad crossfade", json.dumps({"op": "preset", "name": "solid", "crossfade": -1}).encode(), "crossfade"),
]


def test_zmq_control_params_set_get_and_errors(shared):
    d, frames, ctl = shared.daemon, shared.frames, shared.ctl
    frames.wait_colour(SOLID_RGB)
    start_seq = frames.last_seq
    try:
        params = ctl.req("params")
        assert params["ok"] is True
        by_path = {p["path"]: p for p in params["params"]}
        assert {"/bg/r", "/bg/g", "/bg/b"} <= set(by_path), sorted(by_path)
        r = by_path["/bg/r"]
        assert (r["type"], r["min"], r["max"]) == ("float", 0.0, 1.0), r
        assert r["value"] == pytest.approx(0.1) and r["norm"] == pytest.approx(0.1), r

        # normalized set: applied within two frames of the reply
        rep = ctl.req("set", path="/bg/r", value=1.0)
        seen = frames.last_seq
        assert rep == {"ok": True, "path": "/bg/r", "value": 1.0}, rep
        hdr, img = frames.first_frame_at_or_after(seen + 2)
        want = (255, SOLID_RGB[1], SOLID_RGB[2])
        assert is_uniform(img, want), f"frame {hdr['seq']} (reply after {seen}): centre {img[360, 640]}, want {want}"
        got = ctl.req("get", path="/bg/r")
        assert got == {"ok": True, "path": "/bg/r", "value": 1.0, "norm": 1.0}, got

        # raw set, in the parameter's real units
        rep = ctl.req("set", path="/bg/g", value=0.8, raw=True)
        seen = frames.last_seq
        assert rep["ok"] is True and rep["value"] == pytest.approx(0.8), rep
        want = (255, 204, SOLID_RGB[2])
        hdr, img = frames.first_frame_at_or_after(seen + 2)
        assert is_uniform(img, want), f"frame {hdr['seq']} (reply after {seen}): centre {img[360, 640]}, want {want}"
        got = ctl.req("get", path="/bg/g")
        assert got["ok"] is True and got["value"] == pytest.approx(0.8) and got["norm"] == pytest.approx(0.8), got

        # every bad request: an error reply, nothing changes, the stream goes on
        errors_before = ctl.req("status")["status"]["controls"]["zmq"]["errors"]
        for what, data, mention in BAD_REQUESTS:
            rep = ctl.send_bytes(data)
            seen = frames.last_seq
            assert rep.get("ok") is False, f"{what}: {rep}"
            err = rep.get("error")
            assert isinstance(err, str) and err, f"{what}: {rep}"
            assert not err.startswith("internal error"), f"{what}: {err}"
            assert mention.lower() in err.lower(), f"{what}: {err!r} does not mention {mention!r}"
            hdr, img = frames.first_frame_at_or_after(seen + 2)
            assert is_uniform(img, want), f"after {what}: frame {hdr['seq']} centre {img[360, 640]}, want {want}"
        assert ctl.req("get", path="/bg/r")["value"] == 1.0
        assert ctl.req("get", path="/bg/g")["value"] == pytest.approx(0.8)
        status = ctl.req("status")["status"]
        assert status["controls"]["zmq"]["errors"] - errors_before == len(BAD_REQUESTS), status["controls"]
        assert status["preset"] == "solid" and not status["faults"], status
        assert_streaming(frames, d, 5, want)
        assert "Traceback" not in d.log(), d.log()
        # The stream never stopped: seq only went up, with no gap in arrivals that looks like a hang.
        seen_all = frames.seen_since(start_seq)
        seqs = [s for s, _, _ in seen_all]
        assert seqs == sorted(set(seqs))
        gaps = [b[1] - a[1] for a, b in zip(seen_all, seen_all[1:])]
        assert max(gaps) < 5.0, f"the stream paused for {max(gaps):.1f} s"
    finally:
        ctl.req("set", path="/bg/r", value=0.1, raw=True)
        ctl.req("set", path="/bg/g", value=0.2, raw=True)
        frames.wait_colour(SOLID_RGB)


# --- 3. preset switch ---
def test_preset_switch_crossfades_and_a_missing_preset_changes_nothing(daemons, tmp_path):
    green_rgb = (0.0, 0.8, 0.2)
    green = rgb8(green_rgb)
    (tmp_path / "green.toml").write_text(solid_preset_text("green", green_rgb, crossfade=1.0))
    d = daemons(copy_solid(tmp_path))
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour(SOLID_RGB)
        before = frames.last_seq
        rep = ctl.req("preset", name=str(tmp_path / "green.toml"))
        assert rep == {"ok": True, "preset": "green"}, rep
        hdr, _ = frames.wait_colour(green, after=before)
        assert hdr["preset"] == "green"
        fade = [(s, c) for s, _, c in frames.seen_since(before) if s < hdr["seq"]]
        mixed = [(s, c) for s, c in fade if c not in (SOLID_RGB, green)]
        assert mixed, f"no crossfade frame between {SOLID_RGB} and {green}: {fade}"
        for s, c in mixed:
            assert all(min(a, b) - 1 <= x <= max(a, b) + 1 for x, a, b in zip(c, SOLID_RGB, green)), (s, c)
        gs = [c[1] for _, c in fade]
        assert gs == sorted(gs), f"green does not rise steadily through the crossfade: {fade}"

        before = frames.last_seq
        rep = ctl.req("preset", name="does-not-exist")
        assert rep["ok"] is False and "does-not-exist" in rep["error"], rep
        hdr, img = frames.first_frame_at_or_after(before + 2)
        assert is_uniform(img, green) and hdr["preset"] == "green", (hdr, img[360, 640])
        assert_streaming(frames, d, 10, green)
        assert ctl.req("status")["status"]["preset"] == "green"
        assert ctl.req("presets")["current"] == "green"
    errs = [e for e in d.errors() if "does-not-exist" in e]
    assert len(errs) == 1 and "still playing green" in errs[0], d.log()


# --- 4. hot reload ---
def test_hot_reload_follows_edits_and_survives_broken_files(daemons, tmp_path):
    preset = tmp_path / "live.toml"
    preset.write_text(solid_preset_text("live", (0.1, 0.2, 0.6)))
    d = daemons(preset)
    with FrameStream(d.zmq_port) as frames:
        frames.wait_colour(SOLID_RGB)
        orange = (0.9, 0.5, 0.1)
        write_atomically(preset, solid_preset_text("live", orange))
        frames.wait_colour(rgb8(orange))

        def not_loaded() -> list[str]:
            return [e for e in d.errors() if "not loaded" in e]

        # invalid TOML: one error naming the file and where in it; the last good preset keeps playing
        write_atomically(preset, 'name = "live"\n[[layers]\nid = "bg"\nsource = "solid"\n')
        d.wait_log(r"ERROR .*not loaded")
        assert_streaming(frames, d, 20, rgb8(orange))  # > 2 polls of the watcher: no second report
        errs = not_loaded()
        assert len(errs) == 1, d.log()
        assert f"{preset}: " in errs[0] and "not valid TOML" in errs[0] and "line 2" in errs[0], errs[0]

        # valid TOML, unknown source: one error naming the file and the key
        write_atomically(preset, solid_preset_text("live", orange).replace('source = "solid"',
                                                                           'source = "no_such_source"'))
        d.wait_log(r"ERROR .*not loaded", count=2)
        assert_streaming(frames, d, 20, rgb8(orange))
        errs = not_loaded()
        assert len(errs) == 2, d.log()
        assert f"{preset}: layers[0].source: unknown source 'no_such_source'" in errs[1], errs[1]

        # fixed: reloads
        fixed = (0.2, 0.8, 0.4)
        write_atomically(preset, solid_preset_text("live", fixed))
        frames.wait_colour(rgb8(fixed))
        assert len(not_loaded()) == 2, d.log()


# --- 5. faulty plugins ---
def write_plugin(root: Path, folder: str, element: str, module: str, code: str, kind: str = "effect") -> None:
    p = root / folder
    p.mkdir(parents=True)
    (p / "plugin.toml").write_text(f'name = "{folder}"\nversion = "0.0.1"\ndescription = "test plugin {folder}"\n\n'
                                   f'[elements.{element}]\nkind = "{kind}"\npython = "{module}:Element"\n'
                                   f'doc = "test element"\n')
    (p / f"{module}.py").write_text(code)


CRASHING = '''\
from vprod.engine import Effect


class Element(Effect):
    """Raises on every frame (inverting the colours if it ever got that far)."""

    def process(self, frame, ctx):
        raise RuntimeError("boom from the test plugin")
        return 255 - frame
'''

EFFECT_LAYER = '\n  [[layers.effects]]\n  type = "{}"\n'


FLICKERING = '''\
from vprod.engine import Effect


class Element(Effect):
    """Raises on every other frame it is given, passes the frame through on the others."""

    calls = 0

    def process(self, frame, ctx):
        self.calls += 1
        if self.calls % 2:
            raise ValueError(f"odd call {self.calls}")
        return frame
'''

EXPLODE = "crashy:explode in layer 'bg'"
FLICKER = "wobbly:flicker in layer 'bg'"


@pytest.fixture(scope="module")
def crashing(tmp_path_factory):
    """A daemon whose layer runs two faulty test plugins: one raises on every frame, one on every other call."""
    work = tmp_path_factory.mktemp("crashing")
    plugins = work / "plugins"
    write_plugin(plugins, "crashy", "explode", "explode", CRASHING)
    write_plugin(plugins, "wobbly", "flicker", "flicker", FLICKERING)
    preset = work / "crash.toml"
    preset.write_text(solid_preset_text("crash", (0.1, 0.2, 0.6),
                                        effects=EFFECT_LAYER.format("flicker") + EFFECT_LAYER.format("explode")))
    pool = DaemonPool(work)
    d = pool(preset, env={"VPROD_PLUGIN_PATH": str(plugins)})
    frames = FrameStream(d.zmq_port)
    ctl = Control(d.control_port)
    try:
        frames.wait_colour(SOLID_RGB)  # the input, passed through both
        assert_streaming(frames, d, 45, SOLID_RGB)  # 1.5 s of frames: each fault retried after its back-off
        yield Running(d, frames, ctl)
    finally:
        ctl.close()
        frames.close()
        pool.close()


def test_crashing_effect_is_bypassed_and_reported(crashing):
    d, frames, ctl = crashing.daemon, crashing.frames, crashing.ctl
    assert_streaming(frames, d, 10, SOLID_RGB)
    faults = {f["element"]: f for f in ctl.req("status")["status"]["faults"]}
    assert set(faults) == {EXPLODE, FLICKER}, faults
    f = faults[EXPLODE]
    assert f["faults"] >= 2 and f["running"] is True, f
    assert "RuntimeError: boom from the test plugin" in f["error"], f
    assert faults[FLICKER]["faults"] >= 2 and "ValueError: odd call" in faults[FLICKER]["error"], faults[FLICKER]
    reports = [e for e in d.errors() if "explode" in e]
    assert len(reports) == 1, f"a permanent fault is reported once:\n{d.log()}"
    assert EXPLODE in reports[0] and "boom from the test plugin" in reports[0], reports[0]
    assert any(FLICKER in e and "odd call" in e for e in d.errors()), d.log()


def test_intermittent_fault_is_reported_once(crashing):
    assert_streaming(crashing.frames, crashing.daemon, 10, SOLID_RGB)
    reports = [e for e in crashing.daemon.errors() if FLICKER in e]
    assert len(reports) == 1, f"{len(reports)} reports of one intermittent fault:\n" + "\n".join(reports)


def test_plugin_that_fails_to_import_refuses_its_preset_and_leaves_the_others(tmp_path):
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "badimport", "badfx", "badfx", "import vprod_test_no_such_module  # noqa\n")
    write_plugin(plugins, "crashy", "explode", "explode", CRASHING)
    preset = tmp_path / "uses-bad.toml"
    preset.write_text(solid_preset_text("uses-bad", (0.1, 0.2, 0.6), effects=EFFECT_LAYER.format("badfx")))
    env = {"VPROD_PLUGIN_PATH": str(plugins)}
    ports = [str(free_port()) for _ in range(3)]
    r = run_vprod(["--log-level", "info", "run", str(preset), "--outputs", "zmq", "--zmq-port", ports[0],
                   "--mjpeg-port", ports[1], "--control-port", ports[2]], tmp_path, env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "the preset has errors, nothing started" in r.stderr, r.stderr
    assert (f"{preset}: layers[0].effects[0].type: plugin badimport is set aside: ModuleNotFoundError: "
            "No module named 'vprod_test_no_such_module'") in r.stderr, r.stderr
    assert "ZeroMQ stream on" not in r.stderr, r.stderr

    r = run_vprod(["plugins"], tmp_path, env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for name in ("solid", "color", "zmq", "mjpeg", "virtual_camera", "crashy"):
        assert any(line.startswith(f"{name} ") and "SET ASIDE" not in line for line in lines), (name, r.stdout)
    assert any(line.startswith("  effect explode:") for line in lines), r.stdout
    bad = [line for line in lines if line.startswith("badimport ")]
    assert len(bad) == 1 and "SET ASIDE" in bad[0] and "vprod_test_no_such_module" in bad[0], r.stdout


# --- 6. signals ---
class MjpegViewer:
    """Reads /stream.mjpg on a thread until the server ends it, like a browser tab left open."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/stream.mjpg"
        self.jpegs = 0
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=WAIT) as resp:
                while chunk := resp.read1(65536):
                    self.jpegs += chunk.count(b"\xff\xd8\xff")
        except OSError:
            pass
        finally:
            self.ended.set()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_daemon_cleanly_within_3_s(daemons, tmp_path, sig):
    d = daemons(copy_solid(tmp_path))
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour(SOLID_RGB)  # the frame loop runs: its signal handlers are installed
        viewer = MjpegViewer(d.mjpeg_port)
        deadline = time.monotonic() + WAIT
        while viewer.jpegs < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert viewer.jpegs >= 2, "the MJPEG viewer got no frames"
        assert ctl.req("status")["ok"] is True
        t0 = time.monotonic()
        os.kill(d.pid, sig)
        try:
            rc = d.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"vprod did not exit within {WAIT:g} s of {sig.name}:\n{d.describe()}")
        took = time.monotonic() - t0
    assert rc == 0, d.describe()
    assert took < 3.0, f"vprod took {took:.2f} s to exit after {sig.name} (the limit is 3 s)\n{d.describe()}"
    print(f"{sig.name}: exit code 0 after {took:.2f} s")
    assert viewer.ended.wait(5), "the MJPEG viewer's stream was not ended"
    log = d.log()
    assert f"{sig.name}: stopping" in log and "stopped after" in log, log
    assert "Traceback" not in log, log


SLOW_SOURCE = '''\
import time

from vprod.engine import Source, solid_frame


class Element(Source):
    """Takes seconds to open, like a model being loaded."""

    def open(self):
        self.log.info("loading the model")
        time.sleep(8)

    def process(self, ctx):
        return solid_frame(ctx.width, ctx.height, (0.5, 0.5, 0.5))
'''


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_the_preset_loads_stops_cleanly(daemons, tmp_path, sig):
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "slowmodel", "slowmodel", "slowmodel", SLOW_SOURCE, kind="source")
    preset = tmp_path / "slow.toml"
    preset.write_text(solid_preset_text("slow", (0.1, 0.2, 0.6)).replace('source = "solid"\nparams = { r = 0.1, '
                                                                         'g = 0.2, b = 0.6 }', 'source = "slowmodel"'))
    d = daemons(preset, env={"VPROD_PLUGIN_PATH": str(plugins)})
    d.wait_log(r"loading the model")
    t0 = time.monotonic()
    os.kill(d.pid, sig)
    try:
        rc = d.proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"vprod did not exit within {WAIT:g} s of {sig.name}:\n{d.describe()}")
    took = time.monotonic() - t0
    assert rc == 0 and took < 3.0, f"exit code {rc} after {took:.2f} s\n{d.describe()}"
    assert "Traceback" not in d.log(), d.log()


# --- 7. ports in use ---
@pytest.fixture
def occupied_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_zmq_port_in_use_turns_off_only_that_output(daemons, tmp_path, occupied_port):
    d = daemons(copy_solid(tmp_path), zmq_port=occupied_port)
    d.wait_log(rf"ERROR .*127\.0\.0\.1:{occupied_port}")
    d.wait_banner()
    img = fetch_jpeg(d.mjpeg_port)
    assert img.shape == (720, 1280, 3)
    assert near(bgr_centre_rgb(img), SOLID_RGB, JPEG_TOL), bgr_centre_rgb(img)
    time.sleep(0.5)
    img = fetch_jpeg(d.mjpeg_port)  # still serving, later
    assert near(bgr_centre_rgb(img), SOLID_RGB, JPEG_TOL), bgr_centre_rgb(img)
    assert d.proc.poll() is None, d.describe()
    lines = [e for e in d.errors() if f"127.0.0.1:{occupied_port}" in e]
    assert len(lines) == 1, d.log()
    assert "\n" not in lines[0] and "--zmq-port" in lines[0] and "in use" in lines[0], lines[0]
    with Control(d.control_port) as ctl:
        sinks = ctl.req("status")["status"]["sinks"]
    assert sinks["zmq"]["state"] == "failed" and sinks["mjpeg"]["state"] == "running", sinks


def test_control_port_in_use_leaves_the_frames_flowing(daemons, tmp_path, occupied_port):
    d = daemons(copy_solid(tmp_path), control_port=occupied_port)
    d.wait_log(rf"ERROR .*127\.0\.0\.1:{occupied_port}")
    with FrameStream(d.zmq_port) as frames:
        frames.wait_colour(SOLID_RGB)
        assert_streaming(frames, d, 15, SOLID_RGB)
    lines = [e for e in d.errors() if f"127.0.0.1:{occupied_port}" in e]
    assert len(lines) == 1, d.log()
    assert "\n" not in lines[0] and "--control-port" in lines[0] and "in use" in lines[0], lines[0]


# --- 8. virtual camera without a device ---
def test_virtual_camera_without_device_is_one_clear_line(daemons, tmp_path):
    preset = copy_solid(tmp_path)
    assert "[outputs.virtual_camera]" in preset.read_text()
    d = daemons(preset, outputs=None)  # every output of the preset: zmq, mjpeg, virtual_camera
    d.wait_log(r"v4l2loopback")
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour(SOLID_RGB)
        assert_streaming(frames, d, 30, SOLID_RGB)
        sinks = ctl.req("status")["status"]["sinks"]
    about = [m for _lvl, _name, m in d.records() if "v4l2loopback" in m]
    assert len(about) == 1, d.log()
    assert "\n" not in about[0] and "modprobe v4l2loopback" in about[0], about[0]
    assert sinks["virtual_camera"]["state"] == "failed" and sinks["zmq"]["state"] == "running", sinks


# --- 10. a broken preset at start ---
BROKEN = """\
name = "broken"
width = 1281
fps = 0
colour = "blue"

[[layers]]
id = "bg"
source = "no_such_source"

[[layers]]
id = "fg"
source = "solid"
params = { r = 2.0, q = 1 }

  [[layers.effects]]
  type = "no_such_effect"

[outputs.zmq]
portt = 5555
"""


def test_broken_preset_at_start_lists_every_error(tmp_path):
    preset = tmp_path / "broken.toml"
    preset.write_text(BROKEN)
    ports = [str(free_port()) for _ in range(3)]
    r = run_vprod(["--log-level", "info", "run", str(preset), "--zmq-port", ports[0], "--mjpeg-port", ports[1],
                   "--control-port", ports[2]], tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "the preset has errors, nothing started" in r.stderr, r.stderr
    for key, what in [("colour", "unknown key"), ("width/height", "even"), ("fps", "0"),
                      ("layers[0].source", "no_such_source"), ("layers[1].params.r", "out of range"),
                      ("layers[1].params.q", "unknown parameter"), ("layers[1].effects[0].type", "no_such_effect"),
                      ("outputs.zmq.portt", "unknown parameter")]:
        line = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{preset}: {key}: ")]
        assert len(line) == 1 and what in line[0], (key, r.stderr)
    assert "stream on" not in r.stderr, r.stderr


def test_preset_with_a_mask_that_is_not_text_is_a_preset_error(tmp_path):
    preset = tmp_path / "badmask.toml"
    preset.write_text(solid_preset_text("badmask", (0.1, 0.2, 0.6)).replace('source = "solid"',
                                                                           'source = "solid"\nmask = ["x"]'))
    ports = [str(free_port()) for _ in range(3)]
    r = run_vprod(["run", str(preset), "--zmq-port", ports[0], "--mjpeg-port", ports[1], "--control-port",
                   ports[2], "--frames", "1"], tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"{preset}: layers[0].mask: " in r.stderr or f"{preset}: layers.bg.mask: " in r.stderr, r.stderr


# --- 11. real OBS plays the daemon's MJPEG output and follows a ZeroMQ control change ---
def test_obs_plays_the_daemon_and_follows_control(daemons, tmp_path):
    from peers.obs import ObsStudio

    d = daemons(copy_solid(tmp_path))
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour(SOLID_RGB)
        with ObsStudio() as obs:
            cl = obs.client()
            cl.create_scene("vprod-daemon")
            cl.set_current_program_scene("vprod-daemon")
            cl.create_input("vprod-daemon", "vprod", "ffmpeg_source", {
                "is_local_file": False, "input": f"http://127.0.0.1:{d.mjpeg_port}/stream.mjpg",
                "input_format": "", "restart_on_activate": True, "close_when_inactive": False, "buffering_mb": 1,
                "hw_decode": False, "reconnect_delay_sec": 1}, True)
            wait_obs_colour(obs, cl, "vprod", SOLID_RGB, OBS_TOL)
            assert ctl.req("set", path="/bg/r", value=1.0)["ok"] is True
            frames.wait_colour((255, SOLID_RGB[1], SOLID_RGB[2]))
            wait_obs_colour(obs, cl, "vprod", (255, SOLID_RGB[1], SOLID_RGB[2]), OBS_TOL)
    assert d.proc.poll() is None, d.describe()
