"""A JACK server with the dummy driver, for `vprod bench control --surfaces midi` and the integration tests.

    with JackServer() as jack:          # jackd -n vprod-N -r -d dummy -r 48000 -p 1024 (a free name of four)
        env = jack.env()                # {"JACK_DEFAULT_SERVER": name, "MIDO_BACKEND": …/UNIX_JACK} for children

Real MIDI ports without a sound card: the ALSA sequencer does not exist on every machine (containers, CI), JACK's
dummy driver runs anywhere and python-rtmidi's JACK API gives real ports between processes. The server gets a name
no running server has, so it never meets another one, and is stopped by process id. Needs `jackd` and `jack_wait`
(Debian: apt-get install jackd2).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

from .procs import clean_env, kill_pid, stop_pid

JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"


def server_running(name: str | None = None, timeout: float = 0.0) -> bool:
    """Whether a JACK server called `name` (JACK's default when None) answers, waiting up to `timeout` seconds."""
    if shutil.which("jack_wait") is None:
        return False
    cmd = ["jack_wait"] + (["-s", name] if name else [])
    cmd += ["-w", "-t", str(max(1, round(timeout)))] if timeout > 0 else ["-c"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5,
                             env=clean_env(JACK_NO_START_SERVER="1"))
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "not running" not in res.stdout


class JackServer:
    """`jackd -r -d dummy` under a name of its own; a context manager. `env()` points children at it.

    JACK keeps at most 8 servers in a registry in /dev/shm and frees a killed server's entry only when a server of
    the same name starts again; so the name comes from a small pool (vprod-0 … vprod-3), taking the first that
    no live server holds, and a crashed run's entry is reused rather than leaked.
    """

    POOL = 4

    def __init__(self, name: str | None = None, rate: int = 48000, period: int = 1024,
                 start_timeout: float = 10.0, jackd: str = "jackd", prefix: str = "vprod"):
        self.names = [name] if name else [f"{prefix}-{i}" for i in range(self.POOL)]
        self.name = self.names[0]
        self.rate, self.period = rate, period
        self.start_timeout = start_timeout
        self.jackd = jackd
        self.proc: subprocess.Popen | None = None
        self._log = None

    def env(self) -> dict[str, str]:
        return {"JACK_DEFAULT_SERVER": self.name, "MIDO_BACKEND": JACK_BACKEND, "JACK_NO_START_SERVER": "1"}

    def __enter__(self) -> "JackServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start jackd and return once a client can connect to it."""
        for b in (self.jackd, "jack_wait"):
            if shutil.which(b) is None:
                raise RuntimeError(f"{b} is not installed (apt-get install jackd2; scripts/install-test-deps.sh)")
        busy = []
        for name in self.names:
            if self._start(name):
                return
            busy.append(name)
        raise RuntimeError(f"no JACK server could start: {', '.join(busy)} are taken by running servers")

    def _start(self, name: str) -> bool:
        """True once jackd answers under `name`; False if a live server already has that name."""
        self.name = name
        self._log = tempfile.TemporaryFile()
        # -r: no realtime scheduling (needs no privileges); the dummy driver needs no sound card.
        self.proc = subprocess.Popen([self.jackd, "-n", name, "-r", "-d", "dummy", "-r", str(self.rate),
                                      "-p", str(self.period)], stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=clean_env())
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                log = self.log_tail()
                self.stop()
                if "already active" in log:
                    return False
                raise RuntimeError(f"jackd exited with code {self.proc.returncode}:\n{log}")
            if server_running(name, timeout=1.0):
                return True
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(f"jackd did not answer within {self.start_timeout:g} s:\n{log}")

    def log_tail(self, n: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-n:]

    def crash(self) -> None:
        """SIGKILL jackd (its clients lose every port at once)."""
        kill_pid(self.proc)

    def stop(self) -> None:
        # A client that died without closing makes jackd wait ~1 s per timeout on the way out: a long grace, so it
        # leaves cleanly (a SIGKILL leaves its registry entry behind until this name is used again).
        stop_pid(self.proc, grace=20.0)
        if self._log is not None:
            self._log.close()
            self._log = None
