"""Virtual background: the person in the camera picture, cut out and put over another background.

Placed on the camera layer. Each frame the person matte (vprod.segment: MediaPipe selfie segmentation on the CPU,
smoothed over time, feathered) is published as `ctx.layers[<this layer>]["mask"]`, so that another layer's
`mask = "<this layer>"` or another effect can use it, and the output is, by `output`:

- composite: the person over the background chosen by `background` — `layer`: the picture of the layer named by
  the `background_layer` option (a world model, `worlds`, an image, a video…; it must be listed before this one in
  the preset, and may be `visible = false` so it is only used here), `blur`: the camera itself, blurred, or
  `color`: one colour;
- camera: the camera untouched (the compositor does the cutting, through a layer mask);
- matte: the matte in grey, to check the settings.

If the model cannot be loaded the effect is bypassed with one error naming the file: the camera passes through.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vprod.engine import ChoiceParam, ColorParam, Effect, FloatParam, FrameContext, resolve_path
from vprod.segment import MODEL_CHOICES, SegmentationError, Segmenter, composite


def camera_blur(frame: np.ndarray, radius: float) -> np.ndarray:
    """A strong, cheap blur of `frame` (radius ≈ the Gaussian's standard deviation in output pixels): the frame is
    shrunk so the blur is a couple of pixels there, blurred, and enlarged again."""
    h, w = frame.shape[:2]
    f = max(1.0, radius / 2.0)
    sw, sh = max(2, int(round(w / f))), max(2, int(round(h / f)))
    small = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, math.sqrt(max(radius * radius - f * f / 4, 0.25)) / f),
                             borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


class VirtualBackgroundEffect(Effect):
    """The person over another layer, a blurred camera or a colour; publishes the person matte as this layer's mask."""

    params = {
        "background": ChoiceParam(default="layer", choices=("layer", "blur", "color"),
                                  doc="What goes behind the person: layer: the picture of the layer named by the "
                                      "background_layer option; blur: the camera itself, blurred; color: one colour"),
        "output": ChoiceParam(default="composite", choices=("composite", "camera", "matte"),
                              doc="composite: the person over the background; camera: the camera untouched (the "
                                  "matte is still published for layer masks); matte: the matte in grey"),
        "threshold": FloatParam(default=0.5, min=0.05, max=0.95,
                                doc="Person probability at the middle of the edge: higher cuts tighter"),
        "softness": FloatParam(default=0.2, min=0.0, max=0.6,
                               doc="Width of the edge in probability: 0 is a hard cut, higher is softer"),
        "smoothing": FloatParam(default=0.6, min=0.0, max=0.95,
                                doc="Temporal smoothing where the picture is still (0 none): steadies the outline; "
                                    "moving parts always follow at once"),
        "feather": FloatParam(default=3.0, min=0.0, max=40.0, unit="px",
                              doc="Blur of the outline in output pixels"),
        "blur": FloatParam(default=16.0, min=2.0, max=80.0, unit="px",
                           doc="Blur of the camera picture when background is blur"),
        "color": ColorParam(default=(0.1, 0.5, 0.2), doc="Background colour when background is color"),
    }
    options = {
        "background_layer": ("", "Id of the layer whose picture goes behind the person (background = layer); it "
                                  "must be listed before this effect's layer in the preset"),
        "model": ("auto", "Segmentation model: auto (by the frame's shape), landscape (256x144) or general "
                          "(256x256)"),
        "model_file": ("", "A .tflite selfie-segmentation model to use instead of the shipped ones (path relative "
                           "to the preset, then the working directory)"),
        "threads": (1, "CPU threads for the segmentation model"),
    }

    def open(self) -> None:
        model = str(self.opts["model"])
        if model not in MODEL_CHOICES:
            raise SegmentationError(f"unknown model {model!r} (one of {', '.join(MODEL_CHOICES)})")
        models = None
        if self.opts["model_file"]:
            path, _tried = resolve_path(str(self.opts["model_file"]), self.config.preset_dir)
            models, model = {"custom": path}, "custom"
        self.segmenter = Segmenter(model, threads=int(self.opts["threads"]), models=models)
        self._solid: np.ndarray | None = None
        self._solid_key: tuple | None = None

    # --- backgrounds ---
    def _background(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        mode = self.p.background
        if mode == "blur":
            return camera_blur(frame, float(self.p.blur))
        if mode == "color":
            key = (frame.shape, tuple(self.p.color))
            if self._solid_key != key:
                self._solid = np.empty_like(frame)
                self._solid[:] = np.array([round(c * 255) for c in self.p.color], np.uint8)
                self._solid_key = key
            return self._solid
        lid = str(self.opts["background_layer"])
        if not lid:
            raise RuntimeError("background is 'layer' but no background_layer is set: name the layer whose picture "
                               "goes behind the person (option background_layer), or set background to blur or color")
        bg = ctx.layers.get(lid, {}).get("frame")
        if bg is None:
            known = ", ".join(k for k in ctx.layers if k != self.config.layer) or "none"
            raise RuntimeError(f"background layer {lid!r} has no picture this frame: it must exist, be enabled and "
                               f"be listed before layer {self.config.layer!r} in the preset (layers before this "
                               f"one: {known})")
        if bg.shape != frame.shape:
            bg = cv2.resize(bg, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        return bg

    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        matte = self.segmenter(frame, threshold=float(self.p.threshold), softness=float(self.p.softness),
                               smoothing=float(self.p.smoothing), feather=float(self.p.feather))
        ctx.layers.setdefault(self.config.layer, {})["mask"] = matte
        out = self.p.output
        if out == "camera":
            return frame
        if out == "matte":
            grey = cv2.convertScaleAbs(matte, alpha=255.0)
            return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
        return composite(frame, self._background(frame, ctx), matte)
