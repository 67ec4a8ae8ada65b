"""`vprod doctor`: what works on this machine, what does not, and the one line that fixes it.

Every check is quick (the network ones talk only to the address they are given, with ~1 s timeouts) and none
raises: the checks run side by side, each in its own thread, so one that hangs or crashes becomes a "warn" naming
what happened instead of stopping the others. A check is "fail" only where vprod cannot do what it was asked to
(a port it must bind is taken, a declared dependency does not import, OBS refuses the password); missing optional
things (virtual camera, webcams, MIDI, OBS not running, ffmpeg) are "warn".

    from vprod.doctor import run_doctor
    rc = run_doctor(ports={"zmq": 5555, "control": 5556, "mjpeg": 8080, "osc": 9000}, as_json=False)
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TextIO
from urllib.parse import urlsplit

from . import __version__

STATUSES = ("ok", "warn", "fail")

#: Ports vprod binds by default, by name. OSC is UDP, the others TCP.
DEFAULT_PORTS: dict[str, int] = {"zmq": 5555, "control": 5556, "mjpeg": 8080, "osc": 9000}
UDP_PORTS = {"osc"}
#: Where each port is chosen: the CLI option and the preset key.
PORT_OPTIONS: dict[str, tuple[str, str]] = {
    "zmq": ("--zmq-port", "[outputs.zmq] port"),
    "control": ("--control-port", "[control.zmq] port"),
    "mjpeg": ("--mjpeg-port", "[outputs.mjpeg] port"),
    "osc": ("--osc-port", "[osc] port"),
}

JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"
ALSA_BACKEND = "mido.backends.rtmidi/LINUX_ALSA"
JACK_FIX = f"jackd -r -d dummy -r 48000 -p 1024 &   then   export MIDO_BACKEND={JACK_BACKEND}"
VCAM_FIX = {
    "linux": "sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback exclusive_caps=1 card_label=vprod",
    "darwin": "install OBS Studio >= 30 and start its Virtual Camera once (Start Virtual Camera), then stop it",
    "win32": "install OBS Studio >= 30 and start its Virtual Camera once (Start Virtual Camera), then stop it",
}
OR_VENV = "(or: make venv)"
CHECK_TIMEOUT = 10.0  # seconds for all checks together; only a hung check ever gets near it


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""  # what to do, when status is not "ok"


# --- helpers -----------------------------------------------------------------------------------------------------

def _platform_key() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    return "darwin" if sys.platform == "darwin" else "win32" if sys.platform.startswith("win") else sys.platform


def usable_cores() -> int:
    """CPUs this process may really use: affinity mask and cgroup quota, not just the machine's count."""
    n = os.cpu_count() or 1
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    quota = None
    try:  # cgroup v2
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0 and period > 0:
                quota = q / period
        except (OSError, ValueError):
            pass
    if quota:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _first_line(text: str, limit: int = 240) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _exc(e: BaseException) -> str:
    return f"{type(e).__name__}: {_first_line(str(e))}" if str(e) else type(e).__name__


class _quiet_logger:
    """Keep a library's log lines (obsws-python logs the password at INFO) out of the doctor's output."""

    def __init__(self, name: str):
        self.logger = logging.getLogger(name)

    def __enter__(self):
        self.saved = (self.logger.level, self.logger.propagate)
        self.logger.setLevel(logging.CRITICAL + 1)  # children inherit the level unless they set their own
        self.logger.propagate = False
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


def _port_owner(port: int, udp: bool) -> str:
    """'pid 123 (name)' of the process holding `port`, read from /proc (Linux; "" where unknown)."""
    inodes = set()
    for table in (("udp", "udp6") if udp else ("tcp", "tcp6")):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and int(f[1].rsplit(":", 1)[1], 16) == port and (udp or f[3] == "0A"):  # 0A = LISTEN
                inodes.add(f[9])
    inodes.discard("0")
    if not inodes:
        return ""
    targets = {f"socket:[{i}]" for i in inodes}
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in targets:
                    pid = fd_dir.split("/")[2]
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    hint = ", another vprod?" if "vprod" in cmd and int(pid) != os.getpid() else ""
                    return f"pid {pid} ({name}{hint})"
            except (OSError, ValueError):
                continue
    return ""


# --- the checks ----------------------------------------------------------------------------------------------------

def check_python() -> Check:
    v = sys.version_info
    where = sys.prefix if sys.prefix != sys.base_prefix else sys.executable
    detail = (f"Python {platform.python_version()} ({where}), vprod {__version__}, "
              f"{platform.system()} {platform.machine()}")
    if v < (3, 11):
        return Check("python", "fail", detail, "vprod needs Python >= 3.11: make venv PYTHON=python3.11")
    return Check("python", "ok", detail)


def check_torch() -> Check:
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a broken install raises more than ImportError
        return Check("torch", "fail", f"torch does not import: {_exc(e)}",
                     "make venv  (or: pip install torch --index-url https://download.pytorch.org/whl/cpu)")
    parts = [f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        parts.append(f"CUDA {torch.version.cuda}: {n} GPU{'s' if n != 1 else ''} ({torch.cuda.get_device_name(0)})")
    elif torch.version.cuda:
        parts.append(f"CUDA {torch.version.cuda} build but no GPU visible: running on CPU")
    else:
        mps = getattr(torch.backends, "mps", None)
        parts.append("Apple MPS available" if mps is not None and mps.is_available() else "CPU build, no CUDA")
    return Check("torch", "ok", ", ".join(parts))


def check_threads() -> Check:
    cores = usable_cores()
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return Check("threads", "warn", f"{cores} usable cores; torch does not import ({_exc(e)})", "make venv")
    torch_threads = torch.get_num_threads()
    env = os.environ.get("VPROD_THREADS", "").strip()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    detail = f"torch {_n(torch_threads, 'thread')} on {_n(cores, 'usable core')}"
    if omp:
        detail += f" (OMP_NUM_THREADS={omp})"
    threads = torch_threads
    if env:
        try:
            threads = int(env)
            if threads < 1:
                raise ValueError
        except ValueError:
            return Check("threads", "warn", f"{detail}; VPROD_THREADS={env!r} is not a positive integer",
                         f"export VPROD_THREADS=1   (a whole number, at most {cores})")
        detail += f"; VPROD_THREADS={threads}"
    if threads > cores:
        return Check("threads", "warn", f"{detail}: more threads than cores, they will fight each other",
                     f"export VPROD_THREADS={max(1, cores // 2)}   "
                     f"(at most {cores}; 1 when OBS or ffmpeg share the machine)")
    if not env and cores <= 2:
        detail += " (when OBS or ffmpeg share them, VPROD_THREADS=1 ran 2-5x faster than 2)"
    return Check("threads", "ok", detail)


def check_opencv() -> Check:
    try:
        import cv2
    except Exception as e:  # noqa: BLE001
        return Check("opencv", "fail", f"OpenCV does not import: {_exc(e)}", f"pip install opencv-python  {OR_VENV}")
    cores = usable_cores()
    n = cv2.getNumThreads()
    detail = f"OpenCV {cv2.__version__}, {_n(n, 'thread')} on {_n(cores, 'usable core')}"
    if n > cores:
        return Check("opencv", "warn", detail + ": more threads than cores",
                     f"export VPROD_THREADS={max(1, cores // 2)}  (vprod then sets cv2.setNumThreads)")
    return Check("opencv", "ok", detail)


def check_virtual_camera() -> Check:
    fix = VCAM_FIX.get(_platform_key(), "install a virtual camera driver supported by pyvirtualcam (OBS >= 30)")
    try:
        import pyvirtualcam
    except Exception as e:  # noqa: BLE001
        return Check("virtual-camera", "fail", f"pyvirtualcam does not import: {_exc(e)}",
                     f"pip install pyvirtualcam  {OR_VENV}")
    try:
        cam = pyvirtualcam.Camera(width=64, height=48, fps=20)
    except Exception as e:  # noqa: BLE001 - pyvirtualcam gathers each backend's failure into one message
        return Check("virtual-camera", "warn", f"no virtual camera: {_first_line(str(e)) or type(e).__name__}", fix)
    try:
        return Check("virtual-camera", "ok", f"{cam.backend} backend, device {cam.device}")
    finally:
        cam.close()


def check_cameras() -> Check:
    if _platform_key() != "linux":
        return Check("cameras", "ok", f"not listed on {platform.system()}; the webcam source asks the OS when it opens")
    found, virtual, denied = [], [], []
    for dev in sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)):
        node = Path("/sys/class/video4linux") / Path(dev).name
        try:
            name = (node / "name").read_text().strip()
        except OSError:
            name = ""
        label = f"{dev} ({name})" if name else dev
        if "/virtual/" in os.path.realpath(node):  # v4l2loopback: our own output, not a camera
            virtual.append(label)
            continue
        found.append(label)
        if not os.access(dev, os.R_OK | os.W_OK):
            denied.append(dev)
    extra = f"; virtual: {', '.join(virtual)}" if virtual else ""
    if not found:
        return Check("cameras", "warn", f"no camera found (/dev/video*){extra}: the webcam source will not work",
                     "connect a webcam, or play a video file instead (a video source in the preset)")
    if denied:
        return Check("cameras", "warn", f"{', '.join(found)}; no permission to open {', '.join(denied)}",
                     "sudo usermod -aG video $USER   (then log in again)")
    return Check("cameras", "ok", ", ".join(found) + extra)


def check_obs(url: str = "ws://127.0.0.1:4455", password: str | None = None, timeout: float = 1.0) -> Check:
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 4455
    where = f"ws://{host}:{port}"
    enable = (f"in OBS >= 28: Tools -> WebSocket Server Settings -> Enable WebSocket server, "
              f"Server Port {port}, and the password (or turn authentication off)")
    try:
        import obsws_python as obs
        from obsws_python.error import OBSSDKError
    except Exception as e:  # noqa: BLE001
        return Check("obs", "fail", f"obsws-python does not import: {_exc(e)}", f"pip install obsws-python  {OR_VENV}")
    import websocket  # obsws-python's transport

    with _quiet_logger("obsws_python"), _quiet_logger("websocket"):
        try:
            client = obs.ReqClient(host=host, port=port, password=password or "", timeout=timeout)
        except OBSSDKError as e:
            why = str(e)
            if "no password" in why:
                hint = "OBS asks for a password and none was given"
            elif password:
                hint = "OBS closed the connection when vprod identified itself: the password is probably wrong"
            else:
                hint = "OBS closed the connection when vprod identified itself"
            return Check("obs", "fail", f"{where}: {hint} (obsws-python: {why})",
                         "use the password shown in OBS: Tools -> WebSocket Server Settings -> Show Connect Info")
        except (TimeoutError, websocket.WebSocketTimeoutException):
            return Check("obs", "warn", f"OBS websocket not reachable at {where}: no answer within {timeout:g} s",
                         enable)
        except OSError as e:  # ConnectionRefusedError above all: nothing listens there
            return Check("obs", "warn", f"OBS websocket not reachable at {where}: {_exc(e)}", enable)
        except websocket.WebSocketException as e:
            return Check("obs", "warn", f"something answers at {where} but it is not obs-websocket v5: {_exc(e)}",
                         enable + "; or point vprod at the right port")
        try:
            v = client.get_version()
            return Check("obs", "ok", f"OBS {v.obs_version}, obs-websocket {v.obs_web_socket_version} at {where}")
        except Exception as e:  # noqa: BLE001
            return Check("obs", "warn", f"connected to {where} but GetVersion failed: {_exc(e)}",
                         "update OBS to >= 28 (obs-websocket 5)")
        finally:
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001
                pass


# Runs in a child process: python-rtmidi and libjack print to the C stderr and may block; a child keeps both
# out of the doctor's output and can be killed on time.
_MIDI_PROBE = r"""
import json, os, sys
r = {}
try:
    import rtmidi, mido
except Exception as e:
    r["import_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(r)); sys.exit(0)
r["apis"] = [rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()]
def ports(name):
    try:
        b = mido.Backend(name, load=True)
        return {"inputs": b.get_input_names(), "outputs": b.get_output_names()}
    except BaseException as e:
        return {"error": f"{type(e).__name__}: {e}"}
for name in json.loads(sys.argv[1]):
    r[name] = ports(name)
print(json.dumps(r))
"""


def check_midi(timeout: float = 2.0) -> Check:
    linux = _platform_key() == "linux"
    selected = os.environ.get("MIDO_BACKEND", "").strip() or "mido.backends.rtmidi"
    seq = os.path.exists("/dev/snd/seq")
    backends = [selected]
    if linux:
        backends += [JACK_BACKEND] + ([ALSA_BACKEND] if seq else [])
    backends = list(dict.fromkeys(backends))
    try:
        proc = subprocess.run([sys.executable, "-c", _MIDI_PROBE, json.dumps(backends)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Check("midi", "warn", f"the MIDI probe did not finish within {timeout:g} s (a MIDI system hangs?)",
                     JACK_FIX if linux else "restart the MIDI system")
    except OSError as e:
        return Check("midi", "warn", f"could not start the MIDI probe: {_exc(e)}", f"check {sys.executable} runs")
    try:
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = [s for s in proc.stderr.splitlines() if s.strip()]
        why = last[-1].strip() if last else f"exit code {proc.returncode}"
        return Check("midi", "warn", f"the MIDI probe crashed: {why}", f"pip install mido python-rtmidi  {OR_VENV}")
    if "import_error" in r:
        return Check("midi", "fail", f"MIDI libraries do not import: {r['import_error']}",
                     f"pip install mido python-rtmidi  {OR_VENV}")

    def names(res: dict) -> str:
        return ", ".join(res.get("inputs", [])) or "none"

    facts = [f"rtmidi APIs {', '.join(r['apis']) or 'none'}"]
    if linux:
        jack = r.get(JACK_BACKEND, {})
        jack_ok = "jack" in r["apis"] and "error" not in jack
        facts.append(f"ALSA sequencer {'present' if seq else 'absent (/dev/snd/seq)'}")
        facts.append("JACK server running" if jack_ok else "JACK server not running")
    sel = r.get(selected, {})
    short = selected.replace("mido.backends.", "")
    if not os.environ.get("MIDO_BACKEND", "").strip():
        short += " (MIDO_BACKEND unset)"
    if "error" not in sel:
        return Check("midi", "ok", f"{short}: inputs: {names(sel)}; " + "; ".join(facts))
    why = _first_line(sel["error"])
    if linux and jack_ok:
        return Check("midi", "warn",
                     f"{short} fails ({why}) but JACK works, inputs: {names(jack)}; " + "; ".join(facts),
                     f"export MIDO_BACKEND={JACK_BACKEND}")
    alsa = r.get(ALSA_BACKEND, {})
    if linux and seq and alsa and "error" not in alsa:
        return Check("midi", "warn",
                     f"{short} fails ({why}) but ALSA works, inputs: {names(alsa)}; " + "; ".join(facts),
                     f"export MIDO_BACKEND={ALSA_BACKEND}   (or unset MIDO_BACKEND)")
    fix = (JACK_FIX + "   (with a sound card, ALSA: sudo modprobe snd-seq)") if linux else "connect a MIDI device"
    return Check("midi", "warn", f"no MIDI: {short} fails ({why}); " + "; ".join(facts), fix)


_AUDIO_PROBE = r"""
import json, sys
try:
    import sounddevice as sd
except BaseException as e:
    print(json.dumps({"import_error": f"{type(e).__name__}: {e}"})); sys.exit(0)
try:
    ins = [f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    default = sd.query_devices(kind="input")["name"] if ins else None
    print(json.dumps({"inputs": ins, "default": default, "portaudio": sd.get_portaudio_version()[1]}))
except BaseException as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
"""


def check_audio(timeout: float = 5.0) -> Check:
    """Audio inputs for [audio] device = … (in a child process: PortAudio's start-up may print or hang)."""
    file_ok = "[audio] file = \"x.wav\" or --audio-file works without one"
    try:
        proc = subprocess.run([sys.executable, "-c", _AUDIO_PROBE], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return Check("audio", "warn", f"the audio probe did not finish within {timeout:g} s",
                     "restart the sound system")
    except (OSError, IndexError, ValueError) as e:
        return Check("audio", "warn", f"the audio probe failed: {_exc(e)}", f"pip install sounddevice  {OR_VENV}")
    if "import_error" in r:
        fix = ("sudo apt install libportaudio2" if "PortAudio" in r["import_error"]
               else f"pip install sounddevice  {OR_VENV}")
        return Check("audio", "fail", f"sounddevice does not import: {r['import_error']}", fix)
    if "error" in r:
        return Check("audio", "warn", f"PortAudio cannot list devices: {_first_line(r['error'])}; {file_ok}",
                     "check the sound system (ALSA/PulseAudio/PipeWire)")
    if not r["inputs"]:
        return Check("audio", "warn", f"{r['portaudio']}: no audio input devices; {file_ok}",
                     "connect a microphone or line input (vprod run --audio-device NAME picks one)")
    return Check("audio", "ok", f"{r['portaudio']}: inputs {'; '.join(r['inputs'])} (default: {r['default']})")


def check_port(name: str, port: int) -> Check:
    import errno
    import socket

    udp = name in UDP_PORTS
    proto = "UDP" if udp else "TCP"
    opt, key = PORT_OPTIONS.get(name, (f"--{name}-port", f"[{name}] port"))
    label = f"port.{name}"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if not udp:  # as the servers do (ZeroMQ, http.server): a closed connection in TIME_WAIT does not count
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(port)))
        return Check(label, "ok", f"{proto} 127.0.0.1:{port} free")
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            owner = _port_owner(int(port), udp)
            who = f" by {owner}" if owner else ""
            return Check(label, "fail", f"{proto} 127.0.0.1:{port} in use{who}",
                         f"stop what holds it, or choose another port: {opt} N  (preset: {key} = N)")
        if e.errno in (errno.EACCES, errno.EPERM):
            return Check(label, "fail", f"{proto} 127.0.0.1:{port} not allowed ({e.strerror})",
                         f"choose a port above 1023: {opt} N  (preset: {key} = N)")
        return Check(label, "fail", f"{proto} 127.0.0.1:{port}: {_exc(e)}",
                     f"choose another port: {opt} N  (preset: {key} = N)")
    finally:
        s.close()


def check_plugins() -> Check:
    try:
        from .plugins import PluginError, PluginRegistry
    except Exception as e:  # noqa: BLE001 - vprod's own engine does not import: nothing can play
        return Check("plugins", "fail", f"vprod's plugin host does not import: {_exc(e)}",
                     "reinstall vprod (pip install -e . or make venv); if it persists, report "
                     "the traceback of: python -c 'import vprod.plugins'")

    with _quiet_logger("vprod.plugins"):  # the quarantine reasons are in this check's line
        reg = PluginRegistry()
        for eid in list(reg.elements):  # import each plugin once, as the daemon would, to find broken ones
            try:
                reg.load(eid)
            except PluginError:
                pass
    bad = sorted((i for i in reg.plugins.values() if i.error), key=lambda i: i.name)
    good = [e for e in reg.elements.values() if not e.plugin.error]
    kinds = {}
    for e in good:
        kinds[e.kind or "?"] = kinds.get(e.kind or "?", 0) + 1
    counts = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(kinds.items()))
    detail = f"{len(reg.plugins)} plugins, {len(good)} elements ({counts or 'none'})"
    if bad:
        reasons = "; ".join(f"{i.name}: {_first_line(i.error)}" for i in bad)
        return Check("plugins", "warn", f"{detail}; set aside: {reasons}",
                     "fix or remove the plugins named, or install what they import")
    if not reg.elements:
        return Check("plugins", "warn", detail + ": nothing to play",
                     "reinstall vprod (the plugins/ folder is missing)")
    return Check("plugins", "ok", detail)


def check_ffmpeg() -> Check:
    path = shutil.which("ffmpeg")
    fix = {"linux": "sudo apt install ffmpeg", "darwin": "brew install ffmpeg"}.get(_platform_key(),
                                                                                   "winget install ffmpeg")
    if not path:
        return Check("ffmpeg", "warn", "ffmpeg not on PATH: recording and the OBS tests need it", fix)
    try:
        out = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=2,
                             stdin=subprocess.DEVNULL).stdout
        version = _first_line(out).split(" Copyright")[0]
    except (OSError, subprocess.SubprocessError) as e:
        return Check("ffmpeg", "warn", f"{path} does not run: {_exc(e)}", fix)
    return Check("ffmpeg", "ok", f"{version} ({path})")


def check_world_model(weights_dir: str | os.PathLike | None = None) -> Check:
    """The shipped world-model weights: present, vprod's own format, what they are (metadata only, no load)."""
    from pathlib import Path

    from .world.checkpoint import read_metadata
    from .world.model import WEIGHTS_DIR

    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    train = "reinstall vprod, or train them: scripts/train-world-model.sh (README, 'World model')"
    parts, missing, context = [], [], False
    for name, needed in (("tokenizer", True), ("world", True), ("look", False), ("prompt", False)):
        path = d / f"{name}.safetensors"
        if not path.is_file():
            if needed:
                return Check("world-model", "fail", f"{path} is missing: the worldmodel source (make run) cannot "
                                                    "start", train)
            missing.append(name)
            continue
        try:
            meta = read_metadata(path)
        except Exception as e:  # noqa: BLE001 - a broken file is a finding
            return Check("world-model", "fail", f"{path} is not readable vprod weights: {_exc(e)}", train)
        steps = meta["trained"].get("steps")
        parts.append(f"{name} {path.stat().st_size / 1e6:.1f} MB" + (f" ({steps} steps)" if steps else ""))
        if name == "world":
            context = bool(json.loads(meta.get("config") or "{}").get("camera_context"))
    cam = d / "motion.json"
    fit = "vprod train motion --out runs/motion1, then copy runs/motion1/motion.json there"
    if cam.is_file():
        try:
            from .world.motion import CameraHead

            CameraHead.load(cam)
        except Exception as e:  # noqa: BLE001 - a broken file is a finding
            return Check("world-model", "fail", f"{cam} is not a camera head: {_exc(e)}", fit)
        parts.append("camera head")
    elif context:
        return Check("world-model", "fail", f"{cam} is missing: these world weights move their context by the camera "
                                            "head", fit)
    detail = ", ".join(parts) + f" in {d}"
    if "look" in missing:
        return Check("world-model", "warn", detail + "; no look head: knobs change the picture only slowly",
                     "vprod train look --out runs/look1, then copy runs/look1/look.safetensors there")
    if not cam.is_file():
        return Check("world-model", "warn", detail + "; no camera head: yaw and pitch do not turn the world", fit)
    if "prompt" in missing:
        return Check("world-model", "warn", detail + "; no prompt head: a prompt barely changes the world (it names "
                     "no family and moves no knob)",
                     "vprod train prompt --out runs/prompt1, then copy runs/prompt1/prompt.safetensors there")
    return Check("world-model", "ok", detail)


# --- running them --------------------------------------------------------------------------------------------------

def _plan(ports: dict[str, int] | None, obs_url: str,
          obs_password: str | None) -> list[tuple[str, Callable[[], Check]]]:
    plan: list[tuple[str, Callable[[], Check]]] = [
        ("python", check_python),
        ("torch", check_torch),
        ("threads", check_threads),
        ("opencv", check_opencv),
        ("virtual-camera", check_virtual_camera),
        ("cameras", check_cameras),
        ("obs", lambda: check_obs(obs_url, obs_password)),
        ("midi", check_midi),
        ("audio", check_audio),
    ]
    for name, port in (DEFAULT_PORTS if ports is None else ports).items():
        plan.append((f"port.{name}", lambda name=name, port=port: check_port(name, port)))
    plan += [("plugins", check_plugins), ("world-model", check_world_model), ("ffmpeg", check_ffmpeg)]
    return plan


def checks(ports: dict[str, int] | None = None, obs_url: str = "ws://127.0.0.1:4455",
           obs_password: str | None = None, timeout: float = CHECK_TIMEOUT) -> list[Check]:
    """Run every check side by side; results in a fixed order. Never raises.

    `ports`: name -> port to check (TCP; "osc" is UDP); None checks DEFAULT_PORTS. A dict replaces the defaults,
    so pass ``{**DEFAULT_PORTS, "zmq": 6000}`` to change one. `timeout` bounds the whole run: a check still going
    then is reported as "warn" (it hangs) and left behind in its daemon thread.
    """
    try:
        plan = _plan(ports, obs_url, obs_password)
    except Exception as e:  # noqa: BLE001 - e.g. ports is not a dict
        return [Check("doctor", "warn", f"could not plan the checks: {_exc(e)}",
                      'ports must map names to numbers, e.g. {"zmq": 5555}')]
    results: list[Check | None] = [None] * len(plan)

    def run(i: int, name: str, fn: Callable[[], Check]) -> None:
        try:
            c = fn()
            if not isinstance(c, Check) or c.status not in STATUSES:
                raise TypeError(f"check returned {c!r}")
            results[i] = c
        except BaseException as e:  # noqa: BLE001 - a crashing check is a finding, not a crash
            results[i] = Check(name, "warn", f"the check itself crashed: {_exc(e)}",
                               "please report this with the output of `vprod doctor --json`")

    threads = [threading.Thread(target=run, args=(i, n, f), name=f"doctor-{n}", daemon=True)
               for i, (n, f) in enumerate(plan)]
    deadline = time.monotonic() + timeout
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = "run `vprod doctor` again; if this check hangs again, report it with the output of `vprod doctor --json`"
    return [r if r is not None else Check(n, "warn", f"no answer within {timeout:g} s: the check hangs", hung)
            for r, (n, _f) in zip(list(results), plan)]


def render(results: list[Check], seconds: float | None = None) -> str:
    """The human report: one aligned line per check, an indented fix line under each one that is not ok."""
    marker = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    width = max((len(c.name) for c in results), default=0)
    lines = []
    for c in results:
        lines.append(f"{marker.get(c.status, c.status.upper()):<4}  {c.name:<{width}}  {c.detail}")
        if c.status != "ok" and c.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    n = {s: sum(c.status == s for c in results) for s in STATUSES}
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    verdict = ": fix the FAIL lines before `vprod run`" if n["fail"] else ""
    lines.append(f"{len(results)} checks{took}: {n['ok']} ok, {n['warn']} warn, {n['fail']} fail{verdict}")
    return "\n".join(lines) + "\n"


def run_doctor(ports: dict[str, int] | None = None, obs_url: str = "ws://127.0.0.1:4455",
               obs_password: str | None = None, as_json: bool = False, out: TextIO | None = None) -> int:
    """Run the checks and print the report (`out` defaults to sys.stdout at call time). 1 if any check fails."""
    out = sys.stdout if out is None else out
    t0 = time.monotonic()
    results = checks(ports=ports, obs_url=obs_url, obs_password=obs_password)
    failed = any(c.status == "fail" for c in results)
    if as_json:
        out.write(json.dumps({"checks": [asdict(c) for c in results], "ok": not failed}, indent=2) + "\n")
    else:
        out.write(render(results, time.monotonic() - t0))
    try:
        out.flush()
    except (OSError, ValueError, AttributeError):
        pass
    return 1 if failed else 0
