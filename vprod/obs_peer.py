"""A real OBS Studio under its own Xvfb, for `vprod bench control --surfaces obs` and the integration tests.

    with ObsStudio() as obs:            # or ObsStudio(password="secret"), ObsStudio(port=4455)
        cl = obs.client()               # an obsws_python.ReqClient, disconnected on stop
        cl.create_scene("test")
        obs.restart(crash=True)         # SIGKILL OBS and start it again: same display, home and port

The configuration is written before OBS first starts (otherwise OBS disables its websocket server, makes up a
password and opens a first-run wizard; ../shared/RECIPES.md). OBS and Xvfb are stopped by process id: SIGTERM,
then SIGKILL. Needs the `obs` and `Xvfb` programs (Debian: apt-get install obs-studio xvfb).
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .procs import clean_env, kill_pid, stop_pid

GLOBAL_INI = """\
[General]
FirstRun=true
EnableAutoUpdates=false
ConfirmOnExit=false

[Basic]
Profile=Test
ProfileDir=Test
SceneCollection=Test
SceneCollectionFile=Test

[BasicWindow]
SysTrayEnabled=false

[OBSWebSocket]
FirstLoad=false
ServerEnabled=true
ServerPort={port}
AlertsEnabled=false
AuthRequired={auth}
ServerPassword={password}
"""

BASIC_INI = """\
[General]
Name=Test

[Video]
BaseCX={width}
BaseCY={height}
OutputCX={width}
OutputCY={height}
FPSType=0
FPSCommon={fps}
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ObsStudio:
    """OBS Studio under Xvfb with obs-websocket on `port` (0: a free one); a context manager."""

    def __init__(self, password: str | None = None, width: int = 1280, height: int = 720, fps: int = 30,
                 start_timeout: float = 60.0, port: int = 0, obs_binary: str = "obs", xvfb_binary: str = "Xvfb"):
        self.password = password
        self.width, self.height, self.fps = width, height, fps
        self.start_timeout = start_timeout
        self.obs_binary, self.xvfb_binary = obs_binary, xvfb_binary
        self.host = "127.0.0.1"
        self.port = port
        self.display = ""
        self.home: Path | None = None
        self.xvfb: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None
        self.starts = 0  # OBS processes started (restarts included)
        self._clients: list = []
        self._log = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # --- lifecycle ---
    def __enter__(self) -> "ObsStudio":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Xvfb, the configuration, then OBS; returns once obs-websocket answers a request."""
        for b in (self.obs_binary, self.xvfb_binary):
            if shutil.which(b) is None:
                raise RuntimeError(f"{b} is not installed (scripts/install-test-deps.sh installs it)")
        self.home = Path(tempfile.mkdtemp(prefix="vprod-obs-"))
        try:
            self.display = self._start_xvfb()
            self.port = self.port or free_port(self.host)
            self._write_config()
            (self.home / "run").mkdir(mode=0o700)
            self._start_obs()
        except BaseException:
            self.stop()
            raise

    def _start_obs(self) -> None:
        runtime = self.home / "run"
        # Nothing of the caller's desktop: its config folders, session bus and sound server stay out of reach.
        env = {k: v for k, v in clean_env().items() if not k.startswith(("XDG_", "WAYLAND_", "DBUS_", "PULSE_"))}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), XDG_RUNTIME_DIR=str(runtime),
                   DISPLAY=self.display, LIBGL_ALWAYS_SOFTWARE="1", QT_QPA_PLATFORM="xcb",
                   PULSE_SERVER=f"unix:{runtime}/no-pulse")
        self._log = open(self.home / "obs.log", "ab")
        self.proc = subprocess.Popen(
            [self.obs_binary, "--minimize-to-tray", "--disable-shutdown-check", "--multi", "--disable-updater"],
            cwd=self.home, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.starts += 1
        self._wait_ready()

    def stop_obs(self, crash: bool = False) -> None:
        """Stop only OBS (Xvfb, home and port stay for a later `start_obs`): SIGTERM, or SIGKILL if `crash`."""
        self._disconnect_clients()
        (kill_pid if crash else stop_pid)(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def start_obs(self) -> None:
        """Start OBS again after `stop_obs` (same display, configuration and websocket port)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("OBS is still running")
        self._start_obs()

    def restart(self, crash: bool = False) -> None:
        self.stop_obs(crash)
        self.start_obs()

    def stop(self) -> None:
        self._disconnect_clients()
        stop_pid(self.proc, 10.0)
        stop_pid(self.xvfb, 5.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def _disconnect_clients(self) -> None:
        for cl in self._clients:
            try:
                cl.disconnect()
            except Exception:  # noqa: BLE001 - OBS may already be gone
                pass
        self._clients.clear()

    def _start_xvfb(self) -> str:
        """Xvfb picks a free display number itself and writes it to a pipe once it accepts clients."""
        r, w = os.pipe()
        try:
            self.xvfb = subprocess.Popen(
                [self.xvfb_binary, "-displayfd", str(w), "-screen", "0", f"{self.width}x{self.height}x24",
                 "-nolisten", "tcp", "-noreset"],
                pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.close(w)
            w = -1
            data = b""
            deadline = time.monotonic() + 20
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or self.xvfb.poll() is not None:
                    raise RuntimeError(f"Xvfb did not start (exit code {self.xvfb.poll()})")
                if select.select([r], [], [], min(left, 0.2))[0]:
                    chunk = os.read(r, 64)
                    if not chunk:
                        raise RuntimeError(f"Xvfb did not report a display (exit code {self.xvfb.wait(5)})")
                    data += chunk
            return f":{int(data.strip())}"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def _write_config(self) -> None:
        cfg = self.home / ".config" / "obs-studio"
        (cfg / "basic" / "profiles" / "Test").mkdir(parents=True)
        (cfg / "basic" / "scenes").mkdir(parents=True)
        (cfg / "global.ini").write_text(GLOBAL_INI.format(
            port=self.port, auth="true" if self.password else "false", password=self.password or ""))
        (cfg / "basic" / "profiles" / "Test" / "basic.ini").write_text(
            BASIC_INI.format(width=self.width, height=self.height, fps=self.fps))

    def _wait_ready(self) -> None:
        """Until obs-websocket answers a request (not merely accepts TCP)."""
        deadline = time.monotonic() + self.start_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"OBS exited with code {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
            except OSError as e:
                last = str(e)
                time.sleep(0.1)
                continue
            try:
                cl = self.client(timeout=5)
                cl.get_version()
                return
            except Exception as e:  # noqa: BLE001 - the server accepts before it can identify clients
                last = f"{type(e).__name__}: {e}"
                time.sleep(0.2)
        raise RuntimeError(f"obs-websocket on port {self.port} did not answer in {self.start_timeout:g} s "
                           f"({last}):\n{self.log_tail()}")

    # --- use ---
    def client(self, password: str | None = None, timeout: float = 10):
        """A connected obsws_python.ReqClient (with this OBS's password unless one is given)."""
        import logging

        import obsws_python as obsws

        logging.getLogger("obsws_python").setLevel(logging.CRITICAL + 1)  # it logs passwords at INFO
        cl = obsws.ReqClient(host=self.host, port=self.port,
                             password=(self.password or "") if password is None else password, timeout=timeout)
        self._clients.append(cl)
        return cl

    def log_tail(self, chars: int = 3000) -> str:
        """The end of OBS's stdout/stderr, for failure messages."""
        if self.home is None:
            return ""
        try:
            return (self.home / "obs.log").read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""
