"""`vprod doctor` against the real conditions of this machine: real sockets, the real pyvirtualcam, a real JACK
server and a real OBS Studio (under Xvfb) where a check talks to one."""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from peers.obs import ObsStudio
from vprod import doctor
from vprod.doctor import Check, check_midi, check_obs, check_port, checks, run_doctor

ALL_NAMES = ["python", "torch", "threads", "opencv", "virtual-camera", "cameras", "obs", "midi", "audio",
             "port.zmq", "port.control", "port.mjpeg", "port.osc", "plugins", "world-model", "ffmpeg"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(1)
    return s


def by_name(results: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in results}


def unused_obs_url() -> str:
    return f"ws://127.0.0.1:{free_port()}"


# --- ports -------------------------------------------------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("name,option,key", [("zmq", "--zmq-port", "[outputs.zmq] port"),
                                             ("control", "--control-port", "[control.zmq] port"),
                                             ("mjpeg", "--mjpeg-port", "[outputs.mjpeg] port")])
def test_taken_tcp_port_fails_naming_the_option_and_holder(name, option, key):
    with listening() as s:
        port = s.getsockname()[1]
        c = check_port(name, port)
    assert c.name == f"port.{name}"
    assert c.status == "fail"
    assert f"TCP 127.0.0.1:{port} in use" in c.detail
    assert f"pid {os.getpid()}" in c.detail  # the holder, found through /proc
    assert option in c.fix and key in c.fix


@pytest.mark.timeout(30)
def test_listener_on_all_interfaces_also_blocks_localhost():
    with listening("0.0.0.0") as s:
        c = check_port("zmq", s.getsockname()[1])
    assert c.status == "fail" and "--zmq-port" in c.fix


@pytest.mark.timeout(30)
def test_taken_udp_osc_port_fails_and_tcp_listener_does_not_count():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        c = check_port("osc", port)
    assert c.status == "fail"
    assert f"UDP 127.0.0.1:{port} in use" in c.detail
    assert "--osc-port" in c.fix and "[osc] port" in c.fix
    with listening() as s:  # OSC is UDP: a TCP server on the same number is no conflict
        assert check_port("osc", s.getsockname()[1]).status == "ok"


@pytest.mark.timeout(30)
def test_free_port_is_ok_even_after_a_closed_connection():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ and http.server bind
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end sits in TIME_WAIT, as after a daemon restart
    cli.close()
    srv.close()
    c = check_port("zmq", port)
    assert c.status == "ok", c
    assert c.detail == f"TCP 127.0.0.1:{port} free"


@pytest.mark.timeout(60)
def test_run_doctor_returns_1_when_a_port_is_taken_and_0_when_free():
    with listening() as s:
        port = s.getsockname()[1]
        buf = io.StringIO()
        rc = run_doctor(ports={"mjpeg": port}, obs_url=unused_obs_url(), out=buf)
    text = buf.getvalue()
    assert rc == 1, text
    fail_line = next(line for line in text.splitlines() if line.startswith("FAIL"))
    assert "port.mjpeg" in fail_line and f"127.0.0.1:{port} in use" in fail_line
    fix_line = text.splitlines()[text.splitlines().index(fail_line) + 1]
    assert fix_line.lstrip().startswith("fix:") and "--mjpeg-port" in fix_line and fix_line.startswith(" ")
    assert re.search(r", [1-9]\d* fail", text.splitlines()[-1]), text.splitlines()[-1]

    buf = io.StringIO()
    rc = run_doctor(ports={"mjpeg": free_port()}, obs_url=unused_obs_url(), out=buf)
    assert rc == 0, buf.getvalue()
    assert "FAIL" not in buf.getvalue()


# --- output formats ---------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_json_output_parses_and_lists_every_check():
    with listening() as s:
        buf = io.StringIO()
        rc = run_doctor(ports={**doctor.DEFAULT_PORTS, "zmq": s.getsockname()[1]}, obs_url=unused_obs_url(),
                        as_json=True, out=buf)
    data = json.loads(buf.getvalue())
    assert [c["name"] for c in data["checks"]] == ALL_NAMES
    for c in data["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn", "fail") and c["detail"]
        if c["status"] != "ok":
            assert c["fix"], c
    assert data["ok"] is False and rc == 1
    assert by_name([Check(**c) for c in data["checks"]])["port.zmq"].status == "fail"


@pytest.mark.timeout(60)
def test_human_output_has_one_aligned_line_per_check_and_a_summary():
    buf = io.StringIO()
    run_doctor(ports=doctor.DEFAULT_PORTS, obs_url=unused_obs_url(), out=buf)
    lines = buf.getvalue().splitlines()
    width = max(map(len, ALL_NAMES))
    col = 4 + 2 + width + 2  # marker, gap, name column, gap: where every detail starts
    status_lines = [i for i, ln in enumerate(lines) if ln[:4] in ("ok  ", "WARN", "FAIL")]
    assert [lines[i][6:6 + width].rstrip() for i in status_lines] == ALL_NAMES
    for i in status_lines:
        ln = lines[i]
        assert ln[col - 2:col] == "  " and ln[col] != " ", f"detail not in column {col}: {ln!r}"
        if ln.startswith(("WARN", "FAIL")):
            assert lines[i + 1].startswith(" " * col + "fix: "), lines[i + 1]
        else:
            assert i + 1 == len(lines) - 1 or not lines[i + 1].lstrip().startswith("fix:")
    assert lines[-1].startswith(f"{len(ALL_NAMES)} checks")


# --- virtual camera, cameras, ffmpeg ------------------------------------------------------------------------------

def _loopback_devices() -> list[str]:
    return [d for d in glob.glob("/dev/video*")
            if "/virtual/" in os.path.realpath(f"/sys/class/video4linux/{Path(d).name}")]


@pytest.mark.timeout(30)
def test_virtual_camera_warns_with_the_modprobe_fix_when_there_is_no_loopback_device():
    c = doctor.check_virtual_camera()
    if _loopback_devices():  # a machine with v4l2loopback loaded: the camera opens
        assert c.status == "ok" and "/dev/video" in c.detail
        return
    assert c.status == "warn", c
    assert "v4l2loopback" in c.detail and "No v4l2 loopback device" in c.detail  # pyvirtualcam's own reason
    assert "sudo modprobe v4l2loopback exclusive_caps=1 card_label=vprod" in c.fix
    assert "v4l2loopback-dkms" in c.fix


@pytest.mark.timeout(30)
def test_cameras_lists_video_devices_or_says_how_to_do_without():
    c = doctor.check_cameras()
    physical = [d for d in glob.glob("/dev/video*") if d not in _loopback_devices()]
    if physical:
        assert all(d in c.detail for d in physical)
    else:
        assert c.status == "warn" and "no camera" in c.detail and "video file" in c.fix


@pytest.mark.timeout(30)
def test_ffmpeg_found_with_version_and_missing_ffmpeg_warns(monkeypatch, tmp_path):
    c = doctor.check_ffmpeg()
    if shutil.which("ffmpeg"):
        assert c.status == "ok" and c.detail.startswith("ffmpeg version")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: as on a machine without ffmpeg
    c = doctor.check_ffmpeg()
    assert c.status == "warn" and "not on PATH" in c.detail and "apt install ffmpeg" in c.fix


# --- threads ---------------------------------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_threads_warns_when_more_threads_than_cores(monkeypatch):
    cores = doctor.usable_cores()
    monkeypatch.setenv("VPROD_THREADS", str(cores + 3))
    c = doctor.check_threads()
    assert c.status == "warn" and "more threads than cores" in c.detail and "VPROD_THREADS=" in c.fix
    monkeypatch.setenv("VPROD_THREADS", "lots")
    assert doctor.check_threads().status == "warn"
    monkeypatch.setenv("VPROD_THREADS", "1")
    c = doctor.check_threads()
    assert c.status == "ok" and "VPROD_THREADS=1" in c.detail and f"{cores} usable core" in c.detail


# --- plugins ----------------------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_quarantined_plugins_are_listed_with_their_reason(monkeypatch, tmp_path):
    bad = tmp_path / "brokenmanifest"
    bad.mkdir()
    (bad / "plugin.toml").write_text('name = "brokenmanifest"\n[elements.x]\nkind = "gizmo"\npython = "x:X"\n')
    missing = tmp_path / "needsdep"
    missing.mkdir()
    (missing / "plugin.toml").write_text('name = "needsdep"\n[elements.needsdep]\nkind = "source"\n'
                                         'python = "src:NeedsDepSource"\n')
    (missing / "src.py").write_text("import a_module_nobody_installed\n")
    monkeypatch.setenv("VPROD_PLUGIN_PATH", str(tmp_path))
    c = doctor.check_plugins()
    assert c.status == "warn", c
    assert "brokenmanifest: bad manifest" in c.detail and "gizmo" in c.detail
    assert "needsdep: ModuleNotFoundError" in c.detail and "a_module_nobody_installed" in c.detail
    assert " elements (" in c.detail


# --- OBS -----------------------------------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_obs_on_an_unused_port_is_not_reachable_quickly_and_quietly(capfd, caplog):
    url = unused_obs_url()
    t0 = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        c = check_obs(url)
    took = time.monotonic() - t0
    assert c.status == "warn" and "not reachable" in c.detail and url in c.detail
    assert "Tools -> WebSocket Server Settings -> Enable" in c.fix and url.rsplit(":", 1)[1] in c.fix
    assert took < 2.0, f"connection refused took {took:.2f} s"
    out, err = capfd.readouterr()
    assert "obsws" not in err and "Refused" not in err and not out
    assert not [r for r in caplog.records if r.name.startswith("obsws_python")]  # its logger is silenced


@pytest.mark.timeout(30)
def test_obs_port_that_accepts_but_never_answers_times_out():
    with listening() as s:  # something holds the port but says nothing (a hung program)
        c = check_obs(f"ws://127.0.0.1:{s.getsockname()[1]}", timeout=0.5)
    assert c.status == "warn" and "no answer within 0.5 s" in c.detail


@pytest.fixture
def obs_with_password():
    """A real OBS Studio under its own Xvfb (tests/peers/obs.py), websocket on a free port with a password."""
    password = "doctor-" + uuid.uuid4().hex[:8]
    with ObsStudio(password=password) as obs:
        yield f"ws://127.0.0.1:{obs.port}", password


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_obs_real_server_ok_with_password_and_fails_with_the_exact_reason(obs_with_password, capfd, caplog):
    url, password = obs_with_password
    caplog.set_level(logging.DEBUG)
    c = check_obs(url, password)
    assert c.status == "ok", c
    assert c.detail.startswith("OBS ") and "obs-websocket 5." in c.detail

    c = check_obs(url, None)
    assert c.status == "fail"
    assert "authentication enabled but no password provided" in c.detail
    assert "Show Connect Info" in c.fix

    c = check_obs(url, "not-" + password)
    assert c.status == "fail"
    assert "password is probably wrong" in c.detail and "failed to identify client" in c.detail
    # obsws-python logs the password at INFO; the doctor never lets it out
    assert password not in capfd.readouterr().err and password not in caplog.text

    buf = io.StringIO()
    assert run_doctor(ports={}, obs_url=url, obs_password="wrong", out=buf) == 1
    assert any(ln.startswith("FAIL") and " obs " in ln for ln in buf.getvalue().splitlines())


# --- MIDI ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def jack_server(monkeypatch):
    """A real JACK server (dummy driver) under a name of its own, so parallel runs do not meet."""
    assert shutil.which("jackd"), "jackd missing: run scripts/install-test-deps.sh"
    name = "vprod-doctor-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    proc = subprocess.Popen(["jackd", "-n", name, "-r", "-d", "dummy", "-r", "48000", "-p", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import mido

        backend = mido.Backend(doctor.JACK_BACKEND, load=True)
        deadline = time.monotonic() + 15
        while True:  # ready when a client can connect
            try:
                backend.get_output_names()
                break
            except Exception:  # noqa: BLE001
                assert proc.poll() is None, "jackd exited"
                assert time.monotonic() < deadline, "jackd not ready within 15 s"
                time.sleep(0.1)
        yield backend
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(30)
def test_midi_without_any_midi_system_says_how_to_start_jack(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "vprod-doctor-absent-" + uuid.uuid4().hex[:8])
    monkeypatch.setenv("MIDO_BACKEND", doctor.JACK_BACKEND)
    c = check_midi()
    assert c.status == "warn", c
    assert "JACK server not running" in c.detail and "rtmidi APIs" in c.detail and "jack" in c.detail
    if os.path.exists("/dev/snd/seq"):  # a machine with a sound card: ALSA is the way out
        assert f"MIDO_BACKEND={doctor.ALSA_BACKEND}" in c.fix
    else:
        assert "jackd -r -d dummy" in c.fix and f"MIDO_BACKEND={doctor.JACK_BACKEND}" in c.fix


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_midi_with_jack_lists_input_ports(jack_server, monkeypatch):
    port_name = "doctor-pad-" + uuid.uuid4().hex[:6]
    with jack_server.open_output(port_name, virtual=True):
        monkeypatch.setenv("MIDO_BACKEND", doctor.JACK_BACKEND)
        c = check_midi()
        assert c.status == "ok", c
        assert "JACK server running" in c.detail and port_name in c.detail

        monkeypatch.delenv("MIDO_BACKEND")  # mido's default tries ALSA first
        c = check_midi()
        if not os.path.exists("/dev/snd/seq"):
            assert c.status == "warn" and "but JACK works" in c.detail and port_name in c.detail
            assert c.fix == f"export MIDO_BACKEND={doctor.JACK_BACKEND}"


# --- never raise, never hang ------------------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_a_crashing_check_becomes_a_warning_naming_the_exception(monkeypatch):
    def boom():
        raise ZeroDivisionError("the ffmpeg probe divided by zero")

    monkeypatch.setattr(doctor, "check_ffmpeg", boom)
    c = by_name(checks(ports={}, obs_url=unused_obs_url()))["ffmpeg"]
    assert c.status == "warn" and "ZeroDivisionError: the ffmpeg probe divided by zero" in c.detail


@pytest.mark.timeout(30)
def test_a_hanging_check_is_reported_and_the_others_still_come_back(monkeypatch):
    import threading

    release = threading.Event()
    monkeypatch.setattr(doctor, "check_cameras", lambda: release.wait(60) and None)
    try:
        t0 = time.monotonic()
        results = by_name(checks(ports={}, obs_url=unused_obs_url(), timeout=3.0))
        assert time.monotonic() - t0 < 10
    finally:
        release.set()
    assert results["cameras"].status == "warn" and "no answer within 3 s" in results["cameras"].detail
    assert results["cameras"].fix
    assert results["python"].status == "ok"


@pytest.mark.timeout(30)
def test_bad_arguments_do_not_raise():
    buf = io.StringIO()
    rc = run_doctor(ports={"zmq": "not-a-port"}, obs_url="ws://127.0.0.1:notaport", as_json=True, out=buf)
    data = json.loads(buf.getvalue())
    checks_ = by_name([Check(**c) for c in data["checks"]])
    assert checks_["port.zmq"].status == "warn" and "ValueError" in checks_["port.zmq"].detail
    assert checks_["obs"].status == "warn" and rc in (0, 1)


def test_world_model_weights_are_reported_and_a_missing_or_broken_file_says_how_to_get_it(tmp_path):
    import shutil

    from vprod.world.model import WEIGHTS_DIR

    c = doctor.check_world_model()
    assert c.status == "ok" and "tokenizer" in c.detail and "look" in c.detail and "camera head" in c.detail
    assert "prompt" in c.detail
    for name in ("tokenizer", "world", "look"):
        shutil.copy(WEIGHTS_DIR / f"{name}.safetensors", tmp_path)
    shutil.copy(WEIGHTS_DIR / "motion.json", tmp_path)
    c = doctor.check_world_model(tmp_path)
    assert c.status == "warn" and "no prompt head" in c.detail and "vprod train prompt" in c.fix
    (tmp_path / "motion.json").unlink()
    c = doctor.check_world_model(tmp_path)
    assert c.status == "warn" and "no camera head" in c.detail and "vprod train motion" in c.fix
    (tmp_path / "look.safetensors").unlink()
    c = doctor.check_world_model(tmp_path)
    assert c.status == "warn" and "no look head" in c.detail and "vprod train look" in c.fix
    (tmp_path / "world.safetensors").write_bytes(b"not weights")
    c = doctor.check_world_model(tmp_path)
    assert c.status == "fail" and "world.safetensors" in c.detail and "train-world-model.sh" in c.fix
    (tmp_path / "tokenizer.safetensors").unlink()
    c = doctor.check_world_model(tmp_path)
    assert c.status == "fail" and "missing" in c.detail


def test_world_weights_that_move_their_context_by_the_camera_head_need_it(tmp_path):
    import shutil

    from vprod.world.checkpoint import save_weights
    from vprod.world.dynamics import Dynamics, DynamicsConfig
    from vprod.world.model import WEIGHTS_DIR

    for name in ("tokenizer", "look", "prompt"):
        shutil.copy(WEIGHTS_DIR / f"{name}.safetensors", tmp_path)
    cfg = DynamicsConfig(d_model=32, layers=1, heads=2, context=2, sinks=2, residual=True, camera_context=True)
    save_weights(tmp_path / "world.safetensors", Dynamics(cfg), "world", cfg.to_json(), {"steps": 1})
    c = doctor.check_world_model(tmp_path)
    assert c.status == "fail" and "motion.json" in c.detail and "vprod train motion" in c.fix
    (tmp_path / "motion.json").write_text("{}")
    c = doctor.check_world_model(tmp_path)
    assert c.status == "fail" and "not a camera head" in c.detail
    from vprod.world.motion import CameraHead

    CameraHead({"terrain": [[0.0] * 6] * 7}).save(tmp_path / "motion.json")
    c = doctor.check_world_model(tmp_path)
    assert c.status == "ok" and "camera head" in c.detail
