"""Real peers for integration tests: each starts a real program, waits until it answers, and stops it by process id."""

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
