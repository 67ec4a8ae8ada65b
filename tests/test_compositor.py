"""The compositor on tiny frames whose every result is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from vprod.engine import BLEND_MODES, blend, crossfade, fit, fit_frame, luma_mask


def px(*pixels) -> np.ndarray:
    """A 1-row uint8 RGB frame from (r, g, b) tuples."""
    return np.array([list(pixels)], dtype=np.uint8)


# Six channel pairs (base, top): dark/light, saturating sums, a white and a mid-grey base.
BASE = px((0, 100, 200), (255, 64, 200))
TOP = px((50, 200, 100), (10, 128, 100))

EXPECTED = {
    "normal": px((50, 200, 100), (10, 128, 100)),
    # saturating: 100+200, 200+100 and 255+10 clip at 255
    "add": px((50, 255, 255), (255, 192, 255)),
    # round(b * t / 255): 100*200/255 = 78.4, 64*128/255 = 32.1
    "multiply": px((0, 78, 78), (10, 32, 78)),
    # 255 - round((255-b)(255-t)/255): 155*55/255 = 33.4, 191*127/255 = 95.1
    "screen": px((50, 222, 222), (255, 160, 222)),
    # b < 128: 2bt/255 (100,200 -> 156.9; 64,128 -> 64.3); else 255 - 2(255-b)(255-t)/255 (200,100 -> 188.1)
    "overlay": px((0, 157, 188), (255, 64, 188)),
    "difference": px((50, 100, 100), (245, 64, 100)),
    "lighten": px((50, 200, 200), (255, 128, 200)),
    "darken": px((0, 100, 100), (10, 64, 100)),
}


def test_every_blend_mode_is_covered():
    assert set(EXPECTED) == set(BLEND_MODES)


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blend_mode_at_full_opacity_matches_hand_computed_values(mode):
    out = blend(BASE, TOP, mode)
    assert out.dtype == np.uint8 and out.shape == BASE.shape
    np.testing.assert_array_equal(out, EXPECTED[mode])


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blend_does_not_modify_its_inputs(mode):
    b, t = BASE.copy(), TOP.copy()
    blend(b, t, mode, 0.5, np.full((1, 2), 0.5, np.float32))
    np.testing.assert_array_equal(b, BASE)
    np.testing.assert_array_equal(t, TOP)


def test_unknown_blend_mode_is_refused_listing_the_modes():
    with pytest.raises(ValueError) as e:
        blend(BASE, TOP, "dodge")
    assert "dodge" in str(e.value)
    assert "normal, add, multiply, screen, overlay, difference, lighten, darken" in str(e.value)


# --- opacity -------------------------------------------------------------------------------------------------------

B1 = px((0, 100, 200))
T1 = px((50, 200, 100))


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_opacity_zero_keeps_the_base(mode):
    np.testing.assert_array_equal(blend(B1, T1, mode, 0.0), B1)


def test_opacity_half_mixes_halfway():
    np.testing.assert_array_equal(blend(B1, T1, "normal", 0.5), px((25, 150, 150)))


def test_opacity_half_mixes_the_blended_result_not_the_top():
    # add gives (50, 255, 255); 0.6 of it over 0.4 of (0, 100, 200)
    np.testing.assert_array_equal(blend(B1, T1, "add", 0.6), px((30, 193, 233)))


def test_opacity_one_is_the_full_blend():
    np.testing.assert_array_equal(blend(B1, T1, "normal", 1.0), T1)
    np.testing.assert_array_equal(blend(B1, T1, "darken", 1.0), px((0, 100, 100)))


# --- the bottom layer ----------------------------------------------------------------------------------------------


def test_bottom_layer_at_full_opacity_is_the_layer_itself():
    assert blend(None, T1) is T1


def test_bottom_layer_blends_against_black():
    np.testing.assert_array_equal(blend(None, T1, "normal", 0.5), px((25, 100, 50)))
    np.testing.assert_array_equal(blend(None, T1, "add"), T1)
    np.testing.assert_array_equal(blend(None, T1, "multiply"), px((0, 0, 0)))


# --- mask ----------------------------------------------------------------------------------------------------------

BASE2 = px((0, 100, 200), (0, 100, 200))
TOP2 = px((50, 200, 100), (50, 200, 100))


def test_mask_zero_keeps_the_base_and_mask_one_shows_the_top():
    mask = np.array([[0.0, 1.0]], np.float32)
    out = blend(BASE2, TOP2, "normal", 1.0, mask)
    np.testing.assert_array_equal(out, px((0, 100, 200), (50, 200, 100)))


def test_mask_applies_to_the_blended_result():
    mask = np.array([[0.0, 1.0]], np.float32)
    out = blend(BASE2, TOP2, "lighten", 1.0, mask)
    np.testing.assert_array_equal(out, px((0, 100, 200), (50, 200, 200)))


def test_mask_in_between_mixes_proportionally_and_combines_with_opacity():
    half = np.full((1, 2), 0.5, np.float32)
    # base + (top - base) * 0.5, rounded: 25, 150, 150
    np.testing.assert_array_equal(blend(BASE2, TOP2, "normal", 1.0, half), px((25, 150, 150), (25, 150, 150)))
    # mask 0.5 x opacity 0.5 = 0.25: 0 + 12.5 -> 13, 100 + 25 = 125, 200 - 25 = 175
    np.testing.assert_array_equal(blend(BASE2, TOP2, "normal", 0.5, half), px((13, 125, 175), (13, 125, 175)))


def test_masked_bottom_layer_blends_against_black():
    mask = np.array([[0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(blend(None, TOP2, "normal", 1.0, mask), px((0, 0, 0), (50, 200, 100)))


def test_luma_mask_is_luminance_in_0_1():
    m = luma_mask(px((0, 0, 0), (255, 255, 255), (0, 255, 0), (255, 0, 0)))
    assert m.dtype == np.float32 and m.shape == (1, 4)
    assert m[0, 0] == 0.0
    assert m[0, 1] == pytest.approx(1.0)
    # Rec. 601 weights: green 0.587, red 0.299 (OpenCV rounds to whole levels first)
    assert m[0, 2] == pytest.approx(150 / 255)
    assert m[0, 3] == pytest.approx(76 / 255)


# --- crossfade -----------------------------------------------------------------------------------------------------


def test_crossfade_endpoints_are_the_frames_themselves():
    assert crossfade(B1, T1, 0.0) is B1
    assert crossfade(B1, T1, 1.0) is T1
    assert crossfade(B1, T1, -0.5) is B1
    assert crossfade(B1, T1, 1.5) is T1


def test_crossfade_midpoint_and_quarter():
    np.testing.assert_array_equal(crossfade(B1, T1, 0.5), px((25, 150, 150)))
    # 0.75 * (0, 100, 200) + 0.25 * (50, 200, 100) = 12.5 -> 12 or 13, 125, 175
    out = crossfade(B1, T1, 0.25)
    assert out[0, 0, 1] == 125 and out[0, 0, 2] == 175 and out[0, 0, 0] in (12, 13)


# --- fit -----------------------------------------------------------------------------------------------------------


def test_fit_returns_a_frame_of_the_right_size_unchanged():
    f = np.zeros((6, 8, 3), np.uint8)
    assert fit(f, 8, 6) is f


@pytest.mark.parametrize("w,h", [(16, 12), (4, 2), (8, 3), (5, 6)])
def test_fit_resizes_to_width_and_height(w, h):
    f = np.empty((6, 8, 3), np.uint8)
    f[:] = (10, 20, 30)
    out = fit(f, w, h)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert (out == np.array([10, 20, 30], np.uint8)).all()  # a flat colour stays that colour


def test_fit_stretches_rather_than_crops():
    f = np.zeros((2, 4, 3), np.uint8)
    f[:, 2:] = 255  # right half white
    out = fit(f, 8, 2)
    assert (out[:, :3] == 0).all() and (out[:, 5:] == 255).all()


# --- fit_frame: cover, contain, stretch ----------------------------------------------------------------------------


def banded() -> np.ndarray:
    """8 wide, 4 high: two red columns, four green, two blue."""
    f = np.zeros((4, 8, 3), np.uint8)
    f[:, :2] = (255, 0, 0)
    f[:, 2:6] = (0, 255, 0)
    f[:, 6:] = (0, 0, 255)
    return f


def test_fit_frame_cover_fills_and_crops_the_overflow_evenly():
    out = fit_frame(banded(), 4, 4, "cover")
    assert out.shape == (4, 4, 3)
    assert (out == (0, 255, 0)).all()  # the middle four columns, red and blue cropped away


def test_fit_frame_contain_letterboxes_on_black():
    out = fit_frame(banded(), 8, 8, "contain")
    assert out.shape == (8, 8, 3)
    assert not out[:2].any() and not out[6:].any()  # bars above and below
    np.testing.assert_array_equal(out[2:6], banded())


def test_fit_frame_stretch_keeps_every_band():
    out = fit_frame(banded(), 4, 4, "stretch")
    assert out.shape == (4, 4, 3)
    assert (out[:, 0] == (255, 0, 0)).all() and (out[:, 3] == (0, 0, 255)).all()


def test_fit_frame_at_the_right_size_is_the_image_itself():
    f = banded()
    assert fit_frame(f, 8, 4, "cover") is f


def test_fit_frame_refuses_an_unknown_mode_listing_the_modes():
    with pytest.raises(ValueError, match="cover, contain, stretch"):
        fit_frame(banded(), 4, 4, "zoom")
