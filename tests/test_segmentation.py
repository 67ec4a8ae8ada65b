"""Person segmentation (vprod.segment) with the shipped model on a real photograph: scikit-image's astronaut
portrait (NASA, public domain), scored against a hand-checked mask (tests/data/astronaut_person_mask.png, made and
documented by scripts/make-astronaut-mask.py: 255 person, 0 background, 128 the held helmet, not scored)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from vprod.segment import MODELS, SegmentationError, Segmenter, composite, matte_curve

MASK = Path(__file__).parent / "data" / "astronaut_person_mask.png"


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def reference():
    m = cv2.imread(str(MASK), cv2.IMREAD_GRAYSCALE)
    assert m is not None and set(np.unique(m)) <= {0, 128, 255}
    return m


def iou(matte: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union of matte >= 0.5 and the reference's person, over the scored pixels."""
    scored = ref != 128
    a, b = (matte >= 0.5)[scored], (ref == 255)[scored]
    return float((a & b).sum() / (a | b).sum())


def wide(img: np.ndarray) -> np.ndarray:
    """A 1280x720 head-and-shoulders frame from the portrait: its top 16:9 band, enlarged (a webcam's framing)."""
    w = img.shape[1]
    return cv2.resize(img[: w * 9 // 16], (1280, 720), interpolation=cv2.INTER_NEAREST)


# --- the matte -------------------------------------------------------------------------------------------------------


def test_the_matte_covers_the_person_and_not_the_background(astronaut, reference):
    seg = Segmenter()
    m = seg(astronaut)
    assert m.shape == astronaut.shape[:2] and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    assert seg.model_for(512, 512) == "general"  # a square frame takes the square model
    assert iou(m, reference) >= 0.92
    person, background = reference == 255, reference == 0
    assert (m[person] >= 0.5).mean() >= 0.97  # nearly all of her
    assert (m[background] >= 0.5).mean() <= 0.06  # hardly any flag, wall or shuttle
    # the far background is exactly 0, the middle of the person exactly 1 (no haze either way)
    for ys, xs in ((slice(0, 60), slice(0, 60)),  # the flag's corner
                   (slice(60, 200), slice(320, 370)),  # the wall right of her head
                   (slice(0, 250), slice(390, 500)),  # the shuttle model
                   (slice(285, 335), slice(440, 505))):  # the black stand behind the helmet
        assert (m[ys, xs] == 0).all()
    assert (m[120:160, 200:250] == 1).all()  # her face


def test_a_wide_frame_uses_the_landscape_model_and_keeps_the_person(astronaut, reference):
    seg = Segmenter()
    frame = wide(astronaut)
    assert seg.model_for(1280, 720) == "landscape"
    m = seg(frame)
    assert m.shape == (720, 1280)
    assert iou(m, wide(reference)) >= 0.93


def test_threshold_and_softness_shape_the_edge(astronaut):
    hard = Segmenter()(astronaut, softness=0.0, smoothing=0.0, feather=0.0)
    soft = Segmenter()(astronaut, softness=0.6, smoothing=0.0, feather=0.0)
    band = lambda m: float(((m > 0) & (m < 1)).mean())
    assert band(hard) == 0.0 and set(np.unique(hard)) <= {0.0, 1.0}
    assert band(soft) > 0.005
    tight = Segmenter()(astronaut, threshold=0.9, smoothing=0.0)
    loose = Segmenter()(astronaut, threshold=0.1, smoothing=0.0)
    assert (tight >= 0.5).sum() < (loose >= 0.5).sum()
    # feather widens the soft band of the same cut
    assert band(Segmenter()(astronaut, feather=12.0, smoothing=0.0)) > band(Segmenter()(astronaut, feather=0.0,
                                                                                          smoothing=0.0))


def test_matte_curve_is_a_step_at_the_threshold_with_exact_ends():
    c = matte_curve(0.5, 0.2)
    x = np.arange(256) / 255
    assert c.dtype == np.float32 and c.shape == (256,)
    assert (c[x <= 0.4] == 0).all() and (c[x >= 0.6] == 1).all()
    assert np.all(np.diff(c) >= 0) and abs(float(c[128]) - 0.5) < 0.03
    h = matte_curve(0.3, 0.0)
    assert (h[x < 0.3] == 0).all() and (h[x >= 0.3] == 1).all()


# --- temporal smoothing ----------------------------------------------------------------------------------------------


def jittered(frame: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """A still person seen by a cheap webcam: sensor noise, exposure wobble and JPEG compression on every frame."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = frame.astype(np.float32) * rng.uniform(0.96, 1.04) + rng.normal(0, 6, frame.shape)
        _ok, enc = cv2.imencode(".jpg", np.clip(x, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 70])
        out.append(cv2.imdecode(enc, cv2.IMREAD_UNCHANGED))
    return out


def flicker(mattes: list[np.ndarray]) -> float:
    """Mean absolute change of the matte from frame to frame."""
    return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(mattes)]))


def test_temporal_smoothing_reduces_flicker_on_a_jittered_still_sequence(astronaut, reference):
    seq = jittered(wide(astronaut), 30)
    raw_seg, smooth_seg = Segmenter(), Segmenter()
    raw = [raw_seg(f, smoothing=0.0) for f in seq][3:]
    smooth = [smooth_seg(f, smoothing=0.6) for f in seq][3:]
    f_raw, f_smooth = flicker(raw), flicker(smooth)
    assert f_raw > 0  # the model does flicker on these frames: there is something to reduce
    assert f_smooth < 0.6 * f_raw, (f_raw, f_smooth)
    # and the smoothed matte is as right as the raw one
    ref = wide(reference)
    assert np.mean([iou(m, ref) for m in smooth]) >= np.mean([iou(m, ref) for m in raw]) - 0.005


def test_smoothing_follows_a_moving_person_at_once(astronaut):
    """Smoothing must not drag the outline behind a person who moves: where the picture moves, the past is dropped."""
    frame = wide(astronaut)
    moved = np.ascontiguousarray(np.roll(frame, 160, axis=1))  # the person jumps 160 px to the right
    seg = Segmenter()
    for _ in range(10):
        seg(frame, smoothing=0.9)
    after = seg(moved, smoothing=0.9)
    fresh = Segmenter()(moved, smoothing=0.0)
    a, b = after >= 0.5, fresh >= 0.5
    assert (a & b).sum() / (a | b).sum() >= 0.95
    assert seg.last_motion is not None and seg.last_motion.max() == 1.0


# --- composite -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feather", [3.0, 40.0], ids=["narrow-band", "wide-band"])
def test_composite_places_the_background_exactly_where_the_matte_is_zero(astronaut, feather):
    frame = wide(astronaut)
    m = Segmenter()(frame, feather=feather, softness=0.6 if feather > 10 else 0.2)
    bg = np.random.default_rng(1).integers(0, 256, frame.shape, dtype=np.uint8)
    out = composite(frame, bg, m)
    assert out.shape == frame.shape and out.dtype == np.uint8
    zero, one, band = m == 0, m == 1, (m > 0) & (m < 1)
    assert zero.mean() > 0.3 and one.mean() > 0.1 and band.any()
    np.testing.assert_array_equal(out[zero], bg[zero])
    np.testing.assert_array_equal(out[one], frame[one])
    ref = bg[band] + (frame[band].astype(np.float32) - bg[band]) * m[band][:, None]
    assert np.abs(out[band].astype(np.float32) - ref).max() <= 1.0


def test_composite_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match="sizes differ"):
        composite(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8), np.zeros((4, 4), np.float32))


# --- a model that cannot load ----------------------------------------------------------------------------------------


def test_a_missing_model_file_is_named_in_one_error(tmp_path):
    missing = tmp_path / "nowhere" / "selfie.tflite"
    with pytest.raises(SegmentationError, match=f"person segmentation model not found: {missing}"):
        Segmenter("custom", models={"custom": missing})


def test_a_broken_model_file_is_named_in_one_error(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(MODELS["landscape"].read_bytes()[:5000])  # a truncated download
    with pytest.raises(SegmentationError, match=f"cannot load person segmentation model {broken}"):
        Segmenter("custom", models={"custom": broken})


def test_an_unknown_model_name_lists_the_choices():
    with pytest.raises(SegmentationError, match="one of auto, landscape, general"):
        Segmenter("portrait")
