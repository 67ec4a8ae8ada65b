"""First-party sources — procedural, image, video, webcam — loaded through the real plugin registry."""

from __future__ import annotations

import glob
import threading
import time

import cv2
import numpy as np
import pytest

from vprod.engine import ElementConfig, FrameContext
from vprod.plugins import PluginRegistry

W, H = 64, 48


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry()


def make(registry, element_id, values=None, options=None, width=W, height=H, preset_dir="."):
    cls = registry.load(element_id)
    config = ElementConfig(layer="t", width=width, height=height, options=options or {}, preset_dir=str(preset_dir))
    return cls(config, values or {})


def ctx(pts=0.0, width=W, height=H) -> FrameContext:
    return FrameContext(pts=pts, width=width, height=height)


def set_live(element, name, value) -> None:
    """Change a parameter the way a control does (target, then the loop's slew step)."""
    element.p.states[name].set(value)
    element.p.step(10.0)  # long enough for any slew to arrive


# --- procedural --------------------------------------------------------------------------------------------------


def test_procedural_every_pattern_draws_a_varied_frame_of_the_output_size(registry):
    patterns = registry.load("procedural").params["pattern"].choices
    assert len(patterns) >= 4
    for pattern in patterns:
        el = make(registry, "procedural", {"pattern": pattern}, width=160, height=90)
        el.open()
        frame = el.process(ctx(1.7, 160, 90))
        el.close()
        assert frame.shape == (90, 160, 3) and frame.dtype == np.uint8, pattern
        assert frame.flags.c_contiguous, pattern
        assert frame.std() > 8, f"{pattern} is flat"
        assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 50, f"{pattern} has too few colours"


def test_procedural_is_a_function_of_pts(registry):
    a = make(registry, "procedural", {"pattern": "plasma"})
    b = make(registry, "procedural", {"pattern": "plasma"})
    a.open()
    b.open()
    b.process(ctx(0.4))  # a different history must not matter
    fa, fb = a.process(ctx(2.5)), b.process(ctx(2.5))
    assert np.array_equal(fa, fb)
    later = a.process(ctx(3.0))
    assert np.abs(later.astype(int) - fa).mean() > 1.0


def test_procedural_speed_change_continues_from_where_the_animation_was(registry):
    el = make(registry, "procedural", {"pattern": "clouds", "speed": 1.0})
    el.open()
    at_one = el.process(ctx(1.0)).copy()
    set_live(el, "speed", 0.0)  # freeze: the picture stays where it was, it does not jump back to t = 0
    assert np.array_equal(el.process(ctx(2.0)), at_one)
    assert np.array_equal(el.process(ctx(5.0)), at_one)
    set_live(el, "speed", 1.0)
    assert not np.array_equal(el.process(ctx(6.0)), at_one)


def test_procedural_brightness_and_saturation_have_their_meaning(registry):
    dark = make(registry, "procedural", {"pattern": "aurora", "brightness": 0.0})
    dark.open()
    assert dark.process(ctx(1.0)).max() == 0
    grey = make(registry, "procedural", {"pattern": "tunnel", "saturation": 0.0})
    grey.open()
    f = grey.process(ctx(1.0)).astype(int)
    assert np.array_equal(f[..., 0], f[..., 1]) and np.array_equal(f[..., 1], f[..., 2])
    assert f.std() > 8  # still a picture, only without colour


def test_procedural_hue_moves_the_colours(registry):
    red = make(registry, "procedural", {"pattern": "gradient", "hue": 0.0, "spread": 0.0, "saturation": 1.0})
    blue = make(registry, "procedural", {"pattern": "gradient", "hue": 240.0, "spread": 0.0, "saturation": 1.0})
    red.open()
    blue.open()
    r = red.process(ctx(1.0)).reshape(-1, 3).mean(axis=0)
    b = blue.process(ctx(1.0)).reshape(-1, 3).mean(axis=0)
    assert r[0] > 3 * max(r[1], r[2])
    assert b[2] > 3 * max(b[0], b[1])


def test_procedural_rejects_a_bad_downscale_option(registry):
    el = make(registry, "procedural", options={"downscale": 0})
    with pytest.raises(ValueError, match="downscale"):
        el.open()


# --- image -------------------------------------------------------------------------------------------------------

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def halves_png(tmp_path):
    """A 40x20 picture: left half red, right half blue (RGB), saved as PNG (lossless)."""
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = RED
    rgb[:, 20:] = BLUE
    path = tmp_path / "halves.png"
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    return path


def test_image_stretch_fills_the_frame_with_the_pictures_colours(registry, halves_png):
    el = make(registry, "image", {"fit": "stretch"}, options={"path": str(halves_png)})
    el.open()
    f = el.process(ctx())
    assert f.shape == (H, W, 3) and f.dtype == np.uint8
    assert tuple(f[H // 2, 3]) == RED and tuple(f[H // 2, W - 4]) == BLUE


def test_image_contain_letterboxes_and_cover_crops(registry, halves_png):
    contain = make(registry, "image", {"fit": "contain"}, options={"path": str(halves_png)}, width=64, height=64)
    contain.open()
    f = contain.process(ctx(width=64, height=64))
    assert f.shape == (64, 64, 3)
    assert f[:14].max() == 0 and f[-14:].max() == 0  # 2:1 picture in a square: bars top and bottom
    assert tuple(f[32, 3]) == RED and tuple(f[32, 60]) == BLUE

    cover = make(registry, "image", {"fit": "cover"}, options={"path": str(halves_png)}, width=32, height=32)
    cover.open()
    f = cover.process(ctx(width=32, height=32))
    assert f.shape == (32, 32, 3)
    assert (f.max(axis=2) > 200).all()  # no bars: every pixel is picture
    assert tuple(f[16, 1]) == RED and tuple(f[16, 30]) == BLUE


def test_image_frame_is_cached_and_read_only_until_the_fit_changes(registry, halves_png):
    el = make(registry, "image", options={"path": str(halves_png)}, width=64, height=64)
    el.open()
    a = el.process(ctx(width=64, height=64))
    assert el.process(ctx(1.0, 64, 64)) is a
    assert not a.flags.writeable
    set_live(el, "fit", "contain")
    b = el.process(ctx(2.0, 64, 64))
    assert b is not a and b[0].max() == 0 and a[0].max() > 0


def test_image_relative_path_is_found_next_to_the_preset(registry, halves_png, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    el = make(registry, "image", {"fit": "stretch"}, options={"path": "halves.png"}, preset_dir=tmp_path)
    el.open()
    assert tuple(el.process(ctx())[H // 2, 3]) == RED


def test_image_missing_or_unreadable_file_raises_naming_the_path(registry, tmp_path):
    el = make(registry, "image", options={"path": str(tmp_path / "nope.png")})
    with pytest.raises(RuntimeError, match="nope.png"):
        el.open()
    bogus = tmp_path / "notes.png"
    bogus.write_text("not a picture")
    el = make(registry, "image", options={"path": str(bogus)})
    with pytest.raises(RuntimeError, match="notes.png"):
        el.open()


# --- video -------------------------------------------------------------------------------------------------------

FPS, FRAMES, STEP = 10.0, 10, 25  # frame i is grey level i * STEP


@pytest.fixture
def counter_video(tmp_path):
    path = tmp_path / "counter.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(FRAMES):
        writer.write(np.full((H, W, 3), i * STEP, np.uint8))
    writer.release()
    return path


def frame_number(frame) -> int:
    return int(round(frame.mean() / STEP))


def test_video_playback_follows_pts_and_loops(registry, counter_video):
    el = make(registry, "video", options={"path": str(counter_video)})
    el.open()
    seen = [frame_number(el.process(ctx(t))) for t in (0.0, 0.12, 0.35, 0.72, 0.95, 1.23, 1.58)]
    assert seen == [0, 1, 3, 7, 9, 2, 5]
    el.close()


def test_video_repeats_a_frame_when_the_output_runs_faster_than_the_file(registry, counter_video):
    el = make(registry, "video", options={"path": str(counter_video)})
    el.open()
    el.process(ctx(0.0))
    a = el.process(ctx(0.31))
    assert el.process(ctx(0.33)) is a  # same file frame: the same array, nothing decoded
    assert not a.flags.writeable
    assert frame_number(el.process(ctx(0.41))) == 4


def test_video_without_loop_holds_the_last_frame(registry, counter_video):
    el = make(registry, "video", {"loop": False}, options={"path": str(counter_video)})
    el.open()
    assert frame_number(el.process(ctx(0.0))) == 0
    assert frame_number(el.process(ctx(0.5))) == 5
    assert frame_number(el.process(ctx(1.5))) == 9
    assert frame_number(el.process(ctx(4.0))) == 9


def test_video_speed_scales_playback_and_restart_goes_back_to_the_start(registry, counter_video):
    el = make(registry, "video", {"speed": 2.0}, options={"path": str(counter_video)})
    el.open()
    assert frame_number(el.process(ctx(0.0))) == 0
    assert frame_number(el.process(ctx(0.21))) == 4
    el.p.states["restart"].set(1)
    assert frame_number(el.process(ctx(0.3))) == 0
    el.p.clear_triggers()
    assert frame_number(el.process(ctx(0.41))) == 2  # 0.11 s after the restart at twice the speed


def test_video_starts_at_its_first_frame_whenever_the_layer_starts(registry, counter_video):
    el = make(registry, "video", options={"path": str(counter_video)})
    el.open()
    assert frame_number(el.process(ctx(100.0))) == 0
    assert frame_number(el.process(ctx(100.33))) == 3


def test_video_missing_file_raises_naming_the_path(registry, tmp_path):
    el = make(registry, "video", options={"path": str(tmp_path / "gone.mp4")})
    with pytest.raises(RuntimeError, match="gone.mp4"):
        el.open()


# --- webcam ------------------------------------------------------------------------------------------------------


def absent_camera_index() -> int:
    present = set(glob.glob("/dev/video*"))
    return next(n for n in range(64) if f"/dev/video{n}" not in present)


def test_webcam_without_a_camera_says_which_device_and_what_to_check(registry):
    n = absent_camera_index()
    el = make(registry, "webcam", options={"device": n})
    with pytest.raises(RuntimeError) as err:
        el.open()
    msg = str(err.value)
    assert f"/dev/video{n}" in msg
    assert "ls /dev/video*" in msg
    el.close()  # closing an element that never opened is harmless


def test_webcam_device_path_is_named_in_the_error(registry):
    el = make(registry, "webcam", options={"device": "/dev/no-such-camera"})
    with pytest.raises(RuntimeError, match="/dev/no-such-camera"):
        el.open()


class FakeCamera:
    """Stands in for cv2.VideoCapture: BGR frames at about 200 fps, then (optionally) silence."""

    def __init__(self, bgr, frames=None):
        self.bgr = bgr
        self.left = frames
        self.released = threading.Event()

    def isOpened(self):
        return True

    def set(self, prop, value):
        return True

    def read(self):
        time.sleep(0.005)
        if self.left is not None:
            if self.left <= 0:
                return False, None
            self.left -= 1
        return True, self.bgr.copy()

    def release(self):
        self.released.set()


def fake_camera(monkeypatch, registry, bgr, frames=None):
    cls = registry.load("webcam")
    cam = FakeCamera(bgr, frames)
    monkeypatch.setattr(cls, "_open_capture", lambda self, target: cam)
    monkeypatch.setattr(cls, "_check_device", lambda self: None)
    return cam


def test_webcam_serves_the_latest_camera_frame_as_rgb_at_the_output_size(registry, monkeypatch):
    bgr = np.zeros((24, 32, 3), np.uint8)
    bgr[:, :16] = (0, 0, 255)  # BGR red on the left
    bgr[:, 16:] = (255, 0, 0)  # BGR blue on the right
    cam = fake_camera(monkeypatch, registry, bgr)
    el = make(registry, "webcam", {"fit": "stretch"}, options={"device": 0})
    el.open()
    f = el.process(ctx())
    assert f.shape == (H, W, 3) and f.dtype == np.uint8
    assert tuple(f[H // 2, 2]) == RED and tuple(f[H // 2, W - 3]) == BLUE
    el.close()
    assert cam.released.wait(2.0)
    assert not el._thread.is_alive()


def test_webcam_mirror_flips_left_and_right(registry, monkeypatch):
    bgr = np.zeros((24, 32, 3), np.uint8)
    bgr[:, :16] = (0, 0, 255)
    fake_camera(monkeypatch, registry, bgr)
    el = make(registry, "webcam", {"fit": "stretch", "mirror": True}, options={"device": 0})
    el.open()
    f = el.process(ctx())
    el.close()
    assert tuple(f[H // 2, 2]) == (0, 0, 0) and tuple(f[H // 2, W - 3]) == RED


def test_webcam_that_goes_silent_is_reported_by_process(registry, monkeypatch):
    fake_camera(monkeypatch, registry, np.zeros((24, 32, 3), np.uint8), frames=3)
    el = make(registry, "webcam", options={"device": 0, "timeout": 0.1})
    el.open()
    deadline = time.monotonic() + 5.0
    with pytest.raises(RuntimeError, match="stopped sending frames"):
        while time.monotonic() < deadline:
            el.process(ctx())
            time.sleep(0.02)
    el.close()

