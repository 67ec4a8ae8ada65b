"""A camera as a source. A background thread reads the camera and keeps only the newest frame (converted to RGB
and fitted to the output there, off the frame loop); `process()` returns that frame and never blocks.

open() checks the device before handing it to OpenCV so that a missing camera, a permission problem and a camera
busy in another program each get their own message, with what to do about it. With the `fallback` option set, a
camera that cannot be opened is reported as a warning and a video file (looping, through the `video` source) plays
in its place, so a preset made for a camera also runs on a machine that has none.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
import time

import cv2
import numpy as np

from vprod.engine import BoolParam, ChoiceParam, FIT_MODES, FrameContext, Source, fit_frame


def parse_device(device) -> tuple[int | str, str]:
    """(what OpenCV opens, how messages name it): 0 or "0" -> (0, "/dev/video0") on Linux; a path stays a path."""
    if isinstance(device, bool):
        raise ValueError(f"device {device!r} is not a camera index or path")
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        n = int(device)
        return n, (f"/dev/video{n}" if sys.platform.startswith("linux") else f"index {n}")
    if isinstance(device, str) and device.strip():
        return device.strip(), device.strip()
    raise ValueError(f"device {device!r} is not a camera index (0, 1, …) or a device path (/dev/video0)")


def _present_cameras() -> str:
    found = sorted(glob.glob("/dev/video*"))
    return ", ".join(found) if found else "none"


class WebcamSource(Source):
    """A camera, read on a background thread (latest frame wins); `process()` never waits for the camera."""

    params = {
        "mirror": BoolParam(default=False, doc="Flip left-right, as a mirror (the usual self-view in video calls)"),
        "fit": ChoiceParam(default="cover", choices=FIT_MODES,
                           doc="cover: fill the frame, cropping the overflow; contain: whole picture, black bars; "
                               "stretch: fill the frame, ignoring the aspect ratio"),
    }
    options = {
        "device": (0, "Camera index (0 is /dev/video0) or device path such as /dev/video2"),
        "width": (1280, "Requested capture width in pixels; the driver picks its nearest mode (0: driver default)"),
        "height": (720, "Requested capture height in pixels; the driver picks its nearest mode (0: driver default)"),
        "fps": (30, "Requested capture rate in frames per second (0: driver default)"),
        "timeout": (5.0, "Seconds open() waits for the first frame, and silence after which the camera counts as lost"),
        "fallback": ("", "Video file played (looping) in place of the camera when the camera cannot be opened, e.g. "
                         "on a machine without one; relative to the preset, then the working directory"),
    }

    _fallback: Source | None = None  # the video source playing in place of a camera that could not be opened

    def _open_capture(self, target):
        """The OpenCV capture for `target` (V4L2 on Linux); a separate method so tests can supply a fake camera."""
        if sys.platform.startswith("linux"):
            return cv2.VideoCapture(target, cv2.CAP_V4L2)
        return cv2.VideoCapture(target)

    def _check_device(self) -> None:
        """Linux: say precisely why a device node cannot be used, before OpenCV's vaguer failure."""
        if not (sys.platform.startswith("linux") and self.name.startswith("/dev/")):
            return
        if not os.path.exists(self.name):
            raise RuntimeError(
                f"no camera at {self.name}: the device does not exist (cameras present: {_present_cameras()}). "
                f"Check `ls /dev/video*` and that the camera is plugged in, or set the `device` option of "
                f"{self.label} to one that exists.")
        if not os.access(self.name, os.R_OK | os.W_OK):
            raise RuntimeError(
                f"no access to camera {self.name}: permission denied. Add your user to the `video` group "
                f"(`sudo usermod -aG video $USER`, then log in again) or check `ls -l {self.name}`.")

    def _configure(self, cap) -> None:
        for prop, key in ((cv2.CAP_PROP_FRAME_WIDTH, "width"), (cv2.CAP_PROP_FRAME_HEIGHT, "height"),
                          (cv2.CAP_PROP_FPS, "fps")):
            value = self.opts[key]
            if value:
                cap.set(prop, float(value))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: latency over completeness

    def open(self) -> None:
        self._fallback = None
        try:
            self._open_camera()
        except RuntimeError as e:
            if not self.opts["fallback"]:
                raise
            self._fallback = self._open_fallback(str(self.opts["fallback"]), str(e))

    def _open_fallback(self, path: str, why: str) -> Source:
        """The `video` source playing `path` (looping); it fits frames with this source's `fit` at open."""
        from vprod.engine import ElementConfig
        from vprod.plugins import PluginRegistry

        cfg = self.config
        video = PluginRegistry().load("video")(
            ElementConfig(layer=cfg.layer, name=f"{cfg.name or 'webcam'}-fallback", width=cfg.width,
                          height=cfg.height, fps=cfg.fps, options={"path": path}, preset_dir=cfg.preset_dir),
            {"loop": True, "fit": self.p.fit})
        try:
            video.open()
        except Exception as e:  # noqa: BLE001 - one message with both reasons
            raise RuntimeError(f"{why.rstrip('. ')}; and the fallback video cannot play either: {e}") from None
        self.log.warning("%s: %s; playing %s in its place", self.label, why.rstrip(". "), video.path)
        return video

    def _open_camera(self) -> None:
        self.target, self.name = parse_device(self.opts["device"])
        self._check_device()
        cap = self._open_capture(self.target)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise RuntimeError(
                f"could not open camera {self.name}: it exists but OpenCV cannot open it. Is another program "
                f"(OBS, a browser, a video call) using it? `v4l2-ctl --list-devices` lists the cameras.")
        self._configure(cap)
        self._cap = cap
        self._timeout = max(0.05, float(self.opts["timeout"]))
        self._size = (self.config.width, self.config.height)
        self._latest: np.ndarray | None = None
        self._error = ""
        self._first = threading.Event()
        self._stop = threading.Event()
        self._black: np.ndarray | None = None
        self._thread = threading.Thread(target=self._run, name=f"webcam {self.name}", daemon=True)
        self._thread.start()
        if not self._first.wait(self._timeout):
            self.close()
            raise RuntimeError(
                f"camera {self.name} opened but sent no frame in {self._timeout:g} s: another program may hold it, "
                f"or it does not support the requested mode ({self.opts['width']}x{self.opts['height']} at "
                f"{self.opts['fps']} fps); try the `width`/`height`/`fps` options at 0 (driver default).")

    def _convert(self, bgr: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.p.mirror:
            rgb = cv2.flip(rgb, 1)
        frame = fit_frame(rgb, self._size[0], self._size[1], self.p.fit)
        frame.flags.writeable = False
        return frame

    def _run(self) -> None:
        """The reader thread: newest frame wins; after `timeout` seconds of silence the camera counts as lost and
        is reopened every few seconds, so a camera plugged back in comes back by itself."""
        cap = self._cap
        last_ok = last_reopen = time.monotonic()
        while not self._stop.is_set():
            ok, bgr = cap.read() if cap is not None else (False, None)
            now = time.monotonic()
            if ok and bgr is not None:
                self._latest = self._convert(bgr)  # one reference assignment: readers see old or new, whole
                self._error = ""
                last_ok = now
                self._first.set()
                continue
            if now - last_ok > self._timeout:
                if not self._error:
                    self._error = (f"camera {self.name} stopped sending frames {now - last_ok:.0f} s ago "
                                   f"(unplugged, or taken by another program?)")
                    self.log.warning("%s: %s", self.label, self._error)
                if now - last_reopen > 2.0:
                    last_reopen = now
                    if cap is not None:
                        cap.release()
                    try:
                        cap = self._open_capture(self.target)
                        self._configure(cap)
                    except Exception:  # noqa: BLE001 - keep trying while the element is open
                        cap = None
            self._stop.wait(0.05)
        if cap is not None:
            cap.release()

    def process(self, ctx: FrameContext) -> np.ndarray:
        if self._fallback is not None:
            frame = self._fallback.process(ctx)
            return cv2.flip(frame, 1) if self.p.mirror else frame
        if self._error:
            raise RuntimeError(self._error)  # the pipeline repeats the last good frame and reports this once
        frame = self._latest
        if frame is None:
            if self._black is None or self._black.shape[:2] != (ctx.height, ctx.width):
                self._black = np.zeros((ctx.height, ctx.width, 3), np.uint8)
                self._black.flags.writeable = False
            return self._black
        if frame.shape[1] != ctx.width or frame.shape[0] != ctx.height:
            self._size = (ctx.width, ctx.height)  # the reader fits to the new size from its next frame on
            frame = fit_frame(frame, ctx.width, ctx.height, self.p.fit)
        return frame

    def close(self) -> None:
        fallback = getattr(self, "_fallback", None)
        if fallback is not None:
            fallback.close()
        stop = getattr(self, "_stop", None)
        if stop is None:
            return
        stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2.0)  # a read stuck in the driver is left to finish; the thread releases the camera
        self._latest = None
