"""First-party effects — color, blur — loaded through the real plugin registry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vprod.engine import ElementConfig, FrameContext
from vprod.plugins import PluginRegistry

W, H = 96, 64


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry()


def make(registry, element_id, **values):
    el = registry.load(element_id)(ElementConfig(layer="t", width=W, height=H), values)
    el.open()
    return el


def ctx() -> FrameContext:
    return FrameContext(width=W, height=H)


def solid(rgb) -> np.ndarray:
    f = np.empty((H, W, 3), np.uint8)
    f[:] = rgb
    return f


@pytest.fixture
def picture() -> np.ndarray:
    """Coloured discs with fine noise: edges, flat areas and texture, the same every run."""
    rng = np.random.default_rng(3)
    img = np.full((H, W, 3), 40, np.uint8)
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, (int(rng.integers(0, W)), int(rng.integers(0, H))), int(rng.integers(4, 20)), colour, -1)
    return cv2.add(img, rng.integers(0, 30, img.shape, dtype=np.uint8))


def sharpness(frame) -> float:
    """Variance of the Laplacian of the grey image: drops as a picture is blurred."""
    return float(cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


# --- color -------------------------------------------------------------------------------------------------------


def test_color_at_defaults_returns_the_input_itself(registry, picture):
    out = make(registry, "color").process(picture, ctx())
    assert out is picture


def test_color_brightness_adds_light(registry):
    out = make(registry, "color", brightness=0.2).process(solid((100, 100, 100)), ctx())
    assert tuple(out[5, 5]) == (151, 151, 151)  # +0.2 of full scale = +51


def test_color_saturation_zero_is_the_rec709_grey(registry, picture):
    out = make(registry, "color", saturation=0.0).process(picture, ctx()).astype(int)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    luma = picture.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    assert np.abs(out[..., 0] - luma).max() <= 1.0


def test_color_hue_rotates_about_the_grey_axis(registry):
    red = solid((200, 0, 0))
    cyan = make(registry, "color", hue=180.0).process(red, ctx())[5, 5].astype(int)
    assert cyan[0] == 0 and abs(cyan[1] - 133) <= 1 and cyan[1] == cyan[2]  # (-67, 133, 133) clipped
    green = make(registry, "color", hue=120.0).process(red, ctx())[5, 5].astype(int)
    assert np.abs(green - (0, 200, 0)).max() <= 1
    grey = make(registry, "color", hue=77.0).process(solid((90, 90, 90)), ctx())[5, 5]
    assert tuple(grey) == (90, 90, 90)


def test_color_contrast_pivots_on_mid_grey(registry):
    flat = make(registry, "color", contrast=0.0).process(solid((10, 200, 60)), ctx())
    assert tuple(flat[5, 5]) == (128, 128, 128)
    steep = make(registry, "color", contrast=2.0).process(solid((100, 150, 128)), ctx())
    assert tuple(steep[5, 5]) == (72, 172, 128)  # 2 * (x - 127.5) + 127.5


def test_color_gamma_lifts_midtones_and_keeps_black_and_white(registry):
    f = solid((0, 64, 255))
    out = make(registry, "color", gamma=2.0).process(f, ctx())
    assert tuple(out[5, 5]) == (0, 128, 255)  # 255 * (64/255) ** 0.5 = 127.7


def test_color_leaves_its_input_untouched_and_makes_a_frame_of_the_same_kind(registry, picture):
    before = picture.copy()
    el = make(registry, "color", brightness=0.1, contrast=1.3, saturation=1.5, hue=30.0, gamma=0.8)
    out = el.process(picture, ctx())
    assert np.array_equal(picture, before)
    assert out is not picture and out.shape == picture.shape and out.dtype == np.uint8
    assert not np.array_equal(out, picture)


# --- blur --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["gaussian", "box"])
def test_blur_radius_zero_passes_the_frame_through(registry, picture, mode):
    assert make(registry, "blur", radius=0.0, mode=mode).process(picture, ctx()) is picture


@pytest.mark.parametrize("mode", ["gaussian", "box"])
def test_blur_softens_more_with_a_larger_radius(registry, picture, mode):
    before = picture.copy()
    s = [sharpness(make(registry, "blur", radius=r, mode=mode).process(picture, ctx())) for r in (1, 4, 12)]
    assert sharpness(picture) > 2 * s[0] > 0
    assert s[0] > s[1] > s[2]
    assert np.array_equal(picture, before)


@pytest.mark.parametrize("radius", [5.0, 8.0, 20.0])
def test_blur_wide_gaussian_matches_a_full_size_gaussian(registry, picture, radius):
    # Wide radii are blurred at reduced size; the result must still be the Gaussian the radius promises.
    out = make(registry, "blur", radius=radius).process(picture, ctx())
    assert out.shape == picture.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    ref = cv2.GaussianBlur(picture, (0, 0), radius)
    assert np.abs(out.astype(int) - ref).mean() < 1.5
    narrower = cv2.GaussianBlur(picture, (0, 0), radius * 0.7)
    assert np.abs(out.astype(int) - narrower).mean() > np.abs(out.astype(int) - ref).mean()


def test_blur_wide_gaussian_on_an_awkward_size(registry):
    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.integers(0, 256, (61, 97, 3), dtype=np.uint8), (0, 0), 3)
    el = registry.load("blur")(ElementConfig(layer="t", width=97, height=61), {"radius": 9.0})
    out = el.process(img, FrameContext(width=97, height=61))
    assert out.shape == img.shape and out.flags.c_contiguous
    assert np.abs(out.astype(int) - cv2.GaussianBlur(img, (0, 0), 9.0)).mean() < 1.5


def test_blur_box_spreads_a_point_over_its_square(registry):
    dot = np.zeros((H, W, 3), np.uint8)
    dot[30, 40] = 245
    out = make(registry, "blur", radius=3.0, mode="box").process(dot, ctx())[..., 0]
    assert set(np.unique(out[27:34, 37:44])) == {5}  # 245 / 49 over the 7x7 window
    assert out[26].max() == 0 and out[:, 36].max() == 0 and out[34].max() == 0 and out[:, 44].max() == 0
