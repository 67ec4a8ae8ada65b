"""The recording output: every frame this sink receives, written to a video file with OpenCV's VideoWriter.

The file's frame rate is the engine's; a frame the mailbox skipped (the writer fell behind) is simply not in the
file. The file is finished in ``close()`` (an MP4 killed before that has no index and will not play).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from vprod.engine import Sink


class RecordSink(Sink):
    """Records the output to a video file."""

    options = {
        "path": ("vprod-%Y%m%d-%H%M%S.mp4",
                 "file to write; strftime codes (%Y, %H, …) are filled in when recording starts; a relative path is "
                 "relative to the working directory; missing folders are made"),
        "codec": ("mp4v", "FourCC of the video codec: mp4v for .mp4, MJPG for .avi, or any other your OpenCV has"),
    }

    _writer = None

    def open(self) -> None:
        codec = str(self.opts["codec"])
        if len(codec) != 4:
            raise RuntimeError(f"codec {codec!r} is not a FourCC (four characters, e.g. mp4v or MJPG)")
        self.path = Path(time.strftime(str(self.opts["path"]))).expanduser()
        self._size = (int(self.config.width), int(self.config.height))
        fps = float(self.config.fps)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RuntimeError(f"cannot record to {self.path}: cannot make its folder ({e.strerror or e})") from None
        try:
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), fps, self._size)
        except cv2.error:  # e.g. a file type no backend knows: OpenCV raises instead of failing to open
            writer = None
        if writer is None or not writer.isOpened():
            if writer is not None:
                writer.release()
            raise RuntimeError(f"cannot record to {self.path}: OpenCV could not open a {codec} writer for it "
                               f"(is the folder writable, and does the codec suit the file type — mp4v for .mp4, "
                               f"MJPG for .avi?)")
        self._writer = writer
        self.frames = 0
        self.log.info("recording to %s (%s, %dx%d at %g fps)", self.path, codec, *self._size, fps)

    def send(self, frame, meta: dict) -> None:
        h, w = frame.shape[:2]
        if (w, h) != self._size:  # VideoWriter would drop it without a word
            raise ValueError(f"frame is {w}x{h}, the recording is {self._size[0]}x{self._size[1]}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()  # writes the file's index: without it an MP4 does not play
            self.log.info("recorded %d frames to %s", self.frames, self.path)
