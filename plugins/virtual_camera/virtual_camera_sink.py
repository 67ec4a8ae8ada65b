"""The virtual webcam output, through pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera on macOS/Windows.

The engine owns timing: frames are passed on as they come, never paced here (no ``sleep_until_next_frame``).
When no device can be opened, ``open()`` raises one line that says what is missing and how to get it on this OS.
"""

from __future__ import annotations

import re
import sys

from vprod.engine import Sink

LINUX_HINT = ("to get one on Linux: `sudo apt install v4l2loopback-dkms` (or your distribution's v4l2loopback "
              "package), then `sudo modprobe v4l2loopback exclusive_caps=1 card_label=vprod`")
OBS_HINT = "to get one: install OBS Studio 30 or newer and press Start Virtual Camera in it once"


def _setup_hint(platform: str | None = None) -> str:
    platform = platform or sys.platform
    return LINUX_HINT if platform.startswith("linux") else OBS_HINT


def _brief(reason: str, limit: int = 240) -> str:
    """pyvirtualcam's reasons (one line per backend tried) as one short line."""
    reason = reason.replace("See also pyvirtualcam's documentation.", "")
    reason = re.sub(r"\s*\n\s*", "; ", reason.strip())
    reason = re.sub(r"\s+", " ", reason).strip(" ;")
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


class VirtualCameraSink(Sink):
    """A virtual webcam that video-call apps and OBS can pick as a camera."""

    options = {
        "device": ("", "camera to use, e.g. /dev/video10 (Linux) or 'OBS Virtual Camera'; empty = the first free one"),
        "backend": ("", "pyvirtualcam backend (v4l2loopback, obs, unitycapture); empty = every one this OS has"),
    }

    _cam = None

    def open(self) -> None:
        try:
            import pyvirtualcam
        except Exception as e:  # noqa: BLE001 - ImportError, or a native module that does not load here
            raise RuntimeError(f"pyvirtualcam is not usable here ({type(e).__name__}: {e}); "
                               f"install it with `pip install pyvirtualcam`") from None
        device = str(self.opts["device"] or "") or None
        backend = str(self.opts["backend"] or "") or None
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(sorted(pyvirtualcam.camera.BACKENDS)) or "none"
            raise RuntimeError(f"unknown virtual camera backend {backend!r} (available on this machine: {known})")
        w, h, fps = int(self.config.width), int(self.config.height), float(self.config.fps)
        try:
            self._cam = pyvirtualcam.Camera(w, h, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device,
                                            backend=backend, print_fps=False)
        except Exception as e:  # noqa: BLE001 - every backend's failure arrives here, joined by pyvirtualcam
            what = f"virtual camera {device} cannot be opened" if device else "no virtual camera device"
            raise RuntimeError(f"{what} ({_brief(str(e) or type(e).__name__)}); {_setup_hint()}") from None
        self.log.info("virtual camera %s (%s backend), %dx%d at %g fps", self._cam.device, self._cam.backend, w, h, fps)

    def send(self, frame, meta: dict) -> None:
        self._cam.send(frame)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.close()
            except Exception as e:  # noqa: BLE001 - close must not raise
                self.log.warning("virtual camera did not close cleanly: %s", e)
