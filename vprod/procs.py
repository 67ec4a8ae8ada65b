"""Child processes vprod starts for benches and tests (OBS, Xvfb, jackd…): a clean environment and a stop by pid."""

from __future__ import annotations

import os
import signal
import subprocess


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without what importing cv2 in this process added (QT_*, its LD_LIBRARY_PATH), plus `extra`.

    cv2 sets QT_QPA_PLATFORM_PLUGIN_PATH / QT_QPA_FONTDIR / LD_LIBRARY_PATH pointing into its wheel; a child that
    loads Qt or other shared libraries (OBS, ffmpeg) must not inherit them.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    ld = env.get("LD_LIBRARY_PATH")
    if ld is not None:
        kept = [p for p in ld.split(os.pathsep) if p and "cv2" not in p]
        if kept:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
        else:
            del env["LD_LIBRARY_PATH"]
    env.update(extra)
    return env


def stop_pid(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM to this process id, then SIGKILL if it has not exited within `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def kill_pid(proc: subprocess.Popen | None) -> None:
    """SIGKILL to this process id (a crash, as far as its peers can tell) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
