"""A video file as a source, timed by the frame clock rather than by how fast frames are pulled.

Media time is ``(pts - start) * speed`` (integrated, so a speed change does not jump); the file frame shown is
``floor(media time * file fps)``. When the output runs ahead of the file, frames repeat; when the file runs ahead
(fast playback, a file at a higher rate), the frames in between are grabbed without being converted, or skipped
by a seek when the gap is long. At the end the file loops or holds its last frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vprod.engine import (BoolParam, ChoiceParam, FIT_MODES, FloatParam, FrameContext, Source, TriggerParam,
                          existing_file, fit_frame)


class VideoSource(Source):
    """A video file played at `speed` against the frame clock, looping or holding its last frame."""

    params = {
        "speed": FloatParam(default=1.0, min=0.0, max=4.0, unit="x",
                            doc="Playback rate: 1 is normal, 0.5 half speed, 2 double, 0 pauses"),
        "loop": BoolParam(default=True, doc="Start again from the beginning at the end; off holds the last frame"),
        "restart": TriggerParam(doc="Jump back to the first frame"),
        "fit": ChoiceParam(default="cover", choices=FIT_MODES,
                           doc="cover: fill the frame, cropping the overflow; contain: whole picture, black bars; "
                               "stretch: fill the frame, ignoring the aspect ratio"),
    }
    options = {
        "path": ("", "Video file; a relative path is looked up next to the preset, then in the working directory"),
    }

    #: Gaps longer than this many seconds of file are crossed with a seek instead of grabbing every frame.
    max_grab_s = 1.0

    def open(self) -> None:
        raw = str(self.opts["path"] or "")
        if not raw:
            raise RuntimeError(f"no video path given: set option `path` for {self.label}")
        self.path = path = existing_file(raw, self.config.preset_dir, "video file")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise RuntimeError(f"cannot open video {path}: OpenCV/FFmpeg does not read this file or codec")
        ok, bgr = cap.read()
        if not ok or bgr is None:
            cap.release()
            raise RuntimeError(f"video {path} has no frame OpenCV can decode")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            self.log.warning("%s: %s reports no usable frame rate (%r); assuming 30 fps", self.label, path, fps)
            fps = 30.0
        self.fps = float(fps)
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.length: int | None = int(n) if math.isfinite(n) and n >= 1 else None  # corrected if the file ends early
        self._pos = 1  # index of the frame the capture returns next
        self._index = 0  # index of the frame in self._rgb
        self._rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._key: tuple | None = None
        self._frame: np.ndarray | None = None
        self._started = False

    # --- media clock ---
    def _media_time(self, pts: float) -> float:
        speed = float(self.p.speed)
        if not self._started or self.p.fired("restart"):
            self._anchor_pts, self._anchor_t, self._speed, self._started = pts, 0.0, speed, True
        elif speed != self._speed:  # re-anchor so the position carries on from where the old speed left it
            self._anchor_t += (self._last_pts - self._anchor_pts) * self._speed
            self._anchor_pts, self._speed = self._last_pts, speed
        self._last_pts = pts
        return max(0.0, self._anchor_t + (pts - self._anchor_pts) * speed)

    def _wrap(self, target: int) -> int:
        if self.length is None:
            return target
        if self.p.loop:
            return target % self.length
        return min(target, self.length - 1)

    # --- decoding ---
    def _read_at(self, index: int) -> bool:
        """Decode frame `index` into self._rgb. False when the file ended first; self._pos is then where."""
        gap = index - self._pos
        if 0 <= gap <= self.max_grab_s * self.fps:
            for _ in range(gap):  # grab() skips the colour conversion of frames nobody sees
                if not self._cap.grab():
                    return False
                self._pos += 1
        else:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._pos = index
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return False
        self._pos = index + 1
        self._index = index
        self._rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return True

    def _show(self, target: int) -> None:
        for _ in range(8):
            index = self._wrap(target)
            if index == self._index or self._read_at(index):
                return
            # The file ended at self._pos, before `index`: it is shorter than its header said. Learn and wrap again.
            if self._pos < 1 or (self.length is not None and self._pos >= self.length):
                break
            self.length = self._pos
        raise RuntimeError(f"video {self.path}: cannot decode frame {self._wrap(target)}")

    def process(self, ctx: FrameContext) -> np.ndarray:
        t = self._media_time(ctx.pts)
        self._show(int(math.floor(t * self.fps + 1e-6)))
        key = (self._index, ctx.width, ctx.height, self.p.fit)
        if key != self._key:  # a repeated frame is the same read-only array, no work
            frame = fit_frame(self._rgb, ctx.width, ctx.height, self.p.fit)
            frame.flags.writeable = False
            self._frame, self._key = frame, key
        return self._frame

    def close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
            self._cap = None
