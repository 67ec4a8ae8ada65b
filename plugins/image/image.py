"""A still image as a source: read once in open(), fitted to the output size once, then the same frame every time.

The fitted frame is cached read-only and handed out as is, so a still background costs nothing per frame.
"""

from __future__ import annotations


from pathlib import Path

import cv2
import numpy as np

from vprod.engine import ChoiceParam, FIT_MODES, FrameContext, Source, existing_file, fit_frame


def read_rgb(path: Path) -> np.ndarray:
    """The image at `path` as RGB uint8; raises RuntimeError naming the path when it cannot be read."""
    if not path.is_file():
        raise RuntimeError(f"image file not found: {path}")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # imdecode rather than imread: any path encoding works
    except OSError as e:
        raise RuntimeError(f"cannot read image {path}: {e.strerror or e}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise RuntimeError(f"cannot decode image {path}: not an image format OpenCV reads (PNG, JPEG, WebP, BMP, TIFF)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageSource(Source):
    """A still image file fitted to the output (cover, contain or stretch)."""

    params = {
        "fit": ChoiceParam(default="cover", choices=FIT_MODES,
                           doc="cover: fill the frame, cropping the overflow; contain: whole image, black bars; "
                               "stretch: fill the frame, ignoring the aspect ratio"),
    }
    options = {
        "path": ("", "Image file; a relative path is looked up next to the preset, then in the working directory"),
    }

    def open(self) -> None:
        raw = str(self.opts["path"] or "")
        if not raw:
            raise RuntimeError(f"no image path given: set option `path` for {self.label}")
        self.path = path = existing_file(raw, self.config.preset_dir, "image file")
        self._image = read_rgb(path)
        self._key: tuple | None = None
        self._frame: np.ndarray | None = None

    def process(self, ctx: FrameContext) -> np.ndarray:
        key = (ctx.width, ctx.height, self.p.fit)
        if key != self._key:  # fit once per size and mode; the same read-only frame until they change
            frame = fit_frame(self._image, ctx.width, ctx.height, self.p.fit)
            if frame is self._image:
                frame = frame.copy()
            frame.flags.writeable = False
            self._frame, self._key = frame, key
        return self._frame

    def close(self) -> None:
        self._image = self._frame = None
