"""Person segmentation: a camera frame in, a matte out (float32 0..1 at the frame's size, 1 where the person is).

The network is Google's MediaPipe selfie segmentation (Apache-2.0; the files in vprod/models/, provenance in NOTICE),
run on the CPU by LiteRT (`ai-edge-litert`, the standalone TFLite interpreter) on one thread. There are two: a
landscape one (256x144 input) for wide frames and a general one (256x256) for square-ish ones; `model="auto"`
takes the one whose input shape is nearer the frame's (on the astronaut portrait the square one scores IoU 0.95
where the landscape one, stretched, scores 0.91). Chosen by measurement over OpenCV's TFLite reader (same output,
16.6 ms per frame against LiteRT's 1.9 ms) and over mediapipe itself (it pulls opencv-contrib, which clashes
with opencv-python).

One frame, top to bottom; everything but the last step runs at the model's size, which is why it is cheap:

1. the frame shrinks to the model's input (area average; stretched to its shape, as MediaPipe does) and the model
   gives a person probability per pixel;
2. temporal smoothing: an exponential moving average of that probability whose strength is turned down where the
   picture moves, so a still person's outline stops flickering and a moving one is followed without lag;
3. feather: a Gaussian blur of the smoothed probability, its size given in output pixels;
4. bilinear upsampling of that probability to the frame's size (8 bits), and only then threshold and softness: a
   smooth step from `threshold - softness/2` to `threshold + softness/2` (softness 0: a hard cut), applied as a
   256-entry table that gives float32 directly. Cutting after the upsampling makes the outline a smooth level
   curve instead of the model's 5-pixel staircase. (A fast guided
   filter with the luminance as guide was tried for edge-aware upsampling and dropped: against a light wall it
   turned light hair half transparent.)

Measured with `vprod bench effects` at 1280x720 on one thread of this 2-core machine (a training job on the other
core): the matte 3.1 ms p50, matte + composite 5.4 ms p50 (6.2 ms p99); about twice that while other jobs load it.

Matte values within half a grey level of 0 or 1 are exactly 0 or 1, so that where the matte is 0 the composite is
the background exactly, and the matte is honest about where the person is not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("vprod.segment")

MODELS_DIR = Path(__file__).resolve().parent / "models"


#: The shipped networks by name (input sizes are read from the files: landscape 256x144, general 256x256).
MODELS = {
    "landscape": MODELS_DIR / "selfie_segmentation_landscape.tflite",
    "general": MODELS_DIR / "selfie_segmentation.tflite",
}
MODEL_CHOICES = ("auto", *MODELS)

#: Matte values this close to 0 or 1 become exactly 0 or 1 (they would move a uint8 pixel by < half a level).
SNAP = 0.5 / 255
#: Motion, in mean grey-level change (0..1) of the model-size picture, below which a pixel counts as still
#: (sensor noise) and above which, by MOTION_FLOOR + MOTION_SPAN, as fully moving.
MOTION_FLOOR = 0.012
MOTION_SPAN = 0.04


class SegmentationError(RuntimeError):
    """The model cannot be used; the message names the file and why."""


def load_interpreter(path: Path, threads: int = 1):
    """A LiteRT interpreter for `path`, checked to take one RGB float image and give one single-channel map."""
    path = Path(path)
    if not path.is_file():
        raise SegmentationError(f"person segmentation model not found: {path}")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise SegmentationError(f"cannot load person segmentation model {path}: the TFLite runtime is missing "
                                f"({e}); install it with `pip install ai-edge-litert`") from None
    try:
        it = Interpreter(model_path=str(path), num_threads=max(1, int(threads)))
        it.allocate_tensors()
    except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError for a bad file
        raise SegmentationError(f"cannot load person segmentation model {path}: {str(e).strip() or type(e).__name__}"
                                ) from None
    ins, outs = it.get_input_details(), it.get_output_details()
    if (len(ins) != 1 or len(outs) != 1 or len(ins[0]["shape"]) != 4 or ins[0]["shape"][3] != 3
            or ins[0]["dtype"] != np.float32 or outs[0]["shape"][3] != 1):
        raise SegmentationError(f"person segmentation model {path} has an unexpected shape: input "
                                f"{[list(d['shape']) for d in ins]}, output {[list(d['shape']) for d in outs]} "
                                f"(expected one 1xHxWx3 float image in, one 1xHxWx1 map out)")
    return it


def matte_curve(threshold: float, softness: float) -> np.ndarray:
    """The threshold/softness step as a 256-entry float32 table over probability k/255: 0 below
    `threshold - softness/2`, 1 above `threshold + softness/2`, a smooth S between (softness 0: a hard cut at the
    threshold). Entries within SNAP of 0 or 1 are exactly 0 or 1."""
    x = np.arange(256, dtype=np.float64) / 255.0
    half = max(0.0, softness) / 2
    if half < 1e-6:
        y = (x >= threshold).astype(np.float64)
    else:
        t = np.clip((x - (threshold - half)) / (2 * half), 0.0, 1.0)
        y = t * t * (3.0 - 2.0 * t)
    y[y < SNAP] = 0.0
    y[y > 1.0 - SNAP] = 1.0
    return y.astype(np.float32)


def shrink(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """`frame` at width x height by area averaging; from more than twice that size, a bilinear step to twice it
    comes first (0.33 ms instead of 0.83 at 1280x720 → 256x144, a mean difference of 0.3 grey levels)."""
    h, w = frame.shape[:2]
    if w > 2 * width and h > 2 * height:
        frame = cv2.resize(frame, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


class Segmenter:
    """The person matte of frames of any size, smoothed over time. Not thread-safe: one per frame stream."""

    def __init__(self, model: str = "auto", threads: int = 1, models: dict[str, Path] | None = None):
        """model: a name in `models` (default: the shipped MODELS), or auto: per frame, the one whose input shape
        is nearest the frame's. All of them are loaded here, so a missing or broken file fails now, not on the
        first frame."""
        self.models = dict(models or MODELS)
        if model != "auto" and model not in self.models:
            raise SegmentationError(f"unknown segmentation model {model!r} (one of auto, {', '.join(self.models)})")
        self.model = model
        self._interpreters = {name: load_interpreter(path, threads) for name, path in self.models.items()
                              if model in ("auto", name)}
        # name -> (width, height) of the model's input
        self.sizes = {name: (int(it.get_input_details()[0]["shape"][2]), int(it.get_input_details()[0]["shape"][1]))
                      for name, it in self._interpreters.items()}
        self.reset()

    def reset(self) -> None:
        """Forget the temporal state (a cut, a new camera)."""
        self._state: tuple | None = None  # (model name, frame shape)
        self._ema: np.ndarray | None = None
        self._prev_grey: np.ndarray | None = None
        self.last_probability: np.ndarray | None = None  # the model's raw output for the last frame (model size)
        self.last_motion: np.ndarray | None = None
        self._lut_key: tuple | None = None
        self._lut = np.zeros(256, np.float32)

    def model_for(self, width: int, height: int) -> str:
        """The model used for frames of this size: the one whose input aspect is nearest (in log scale)."""
        if self.model != "auto":
            return self.model
        aspect = np.log(width / height)
        return min(self.sizes, key=lambda n: abs(np.log(self.sizes[n][0] / self.sizes[n][1]) - aspect))

    def probability(self, small_rgb: np.ndarray, name: str) -> np.ndarray:
        """Model `name`'s person probability for an RGB uint8 image already at its input size."""
        it = self._interpreters[name]
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        x = small_rgb.astype(np.float32)
        x *= np.float32(1 / 255)  # MediaPipe feeds this model 0..1
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        return it.get_tensor(out["index"])[0, :, :, 0]

    def __call__(self, frame: np.ndarray, threshold: float = 0.5, softness: float = 0.2, smoothing: float = 0.6,
                 feather: float = 3.0) -> np.ndarray:
        """The matte of one RGB uint8 frame: float32 (H, W) in 0..1, 1 = person.

        threshold, softness: the smooth step applied to the (smoothed) probability; smoothing: the weight of the
        past where the picture is still (0 none .. 1 frozen); feather: blur of the outline in output pixels."""
        h, w = frame.shape[:2]
        name = self.model_for(w, h)
        mw, mh = self.sizes[name]
        if self._state != (name, frame.shape):
            self.reset()
            self._state = (name, frame.shape)
        small = shrink(frame, mw, mh)
        prob = self.probability(small, name)
        self.last_probability = prob
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grey *= np.float32(1 / 255)

        # temporal smoothing, turned down where the picture moves
        s = float(np.clip(smoothing, 0.0, 1.0))
        if self._ema is None or s <= 0.0:
            ema = prob.copy()
            self.last_motion = None
        else:
            motion = cv2.blur(cv2.absdiff(grey, self._prev_grey), (5, 5))
            motion = np.clip((motion - np.float32(MOTION_FLOOR)) * np.float32(1 / MOTION_SPAN), 0.0, 1.0)
            self.last_motion = motion
            keep = np.float32(s) * (np.float32(1.0) - motion)  # the past's weight, per pixel
            ema = self._ema + (prob - self._ema) * (np.float32(1.0) - keep)
        self._ema, self._prev_grey = ema, grey

        # feather (output pixels → model pixels)
        sigma = max(0.0, float(feather)) * mw / w
        field = cv2.GaussianBlur(ema, (0, 0), sigma) if sigma >= 0.2 else ema
        # To the frame's size in 8 bits (the field rises over 5+ output pixels at an edge, so its level curves
        # stay sub-pixel exact), then threshold and softness through a 256-entry table straight to float32.
        field8 = cv2.convertScaleAbs(field, alpha=255.0)
        up = cv2.resize(field8, (w, h), interpolation=cv2.INTER_LINEAR)
        return cv2.LUT(up, self._curve(float(threshold), float(softness)))

    def _curve(self, threshold: float, softness: float) -> np.ndarray:
        key = (round(threshold, 4), round(softness, 4))
        if self._lut_key != key:
            self._lut_key, self._lut = key, matte_curve(threshold, softness)
        return self._lut


#: Above this fraction of the frame in the soft band, one full-frame blend beats blending the band's pixels alone.
BAND_LIMIT = 0.12
_ABOVE_0 = float(np.nextafter(np.float32(0.0), np.float32(1.0)))
_BELOW_1 = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def composite(person: np.ndarray, background: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """`person` over `background` through `matte` (float32 0..1, 1 = person), all the same size: a new uint8 frame.

    Where the matte is exactly 0 the output is the background pixel, where exactly 1 the person pixel: plain
    copies. Only the soft band between (under 1% of a head-and-shoulders frame at the default feather) is blended,
    in float, rounded to nearest; when the band is wide, one full-frame per-pixel blend is cheaper and is used."""
    if person.shape != background.shape or matte.shape != person.shape[:2]:
        raise ValueError(f"composite of {person.shape} over {background.shape} through a {matte.shape} matte: "
                         f"sizes differ")
    band = cv2.inRange(matte, _ABOVE_0, _BELOW_1)
    if cv2.countNonZero(band) > BAND_LIMIT * band.size:
        return cv2.blendLinear(person, background, matte, np.float32(1.0) - matte)
    out = background.copy()
    cv2.copyTo(person, cv2.compare(matte, 1.0, cv2.CMP_GE), out)
    pts = cv2.findNonZero(band)
    if pts is not None:
        pts = pts.reshape(-1, 2)  # (x, y) rows
        ys, xs = pts[:, 1], pts[:, 0]
        a = matte[ys, xs][:, None]
        fg = person[ys, xs].astype(np.float32)
        bg = background[ys, xs].astype(np.float32)
        fg -= bg
        fg *= a
        fg += bg
        fg += np.float32(0.5)
        out[ys, xs] = fg.astype(np.uint8)
    return out
