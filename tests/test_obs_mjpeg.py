"""Real OBS Studio plays the MJPEG output: a Media Source on http://127.0.0.1:PORT/stream.mjpg shows our colours."""

from __future__ import annotations

import base64
import threading
import time

import cv2
import numpy as np
import pytest

from peers.obs import ObsStudio
from vprod.engine import ElementConfig
from vprod.plugins import PluginRegistry

pytestmark = pytest.mark.integration

W, H = 640, 360
GREEN = (40, 200, 90)
ORANGE = (220, 120, 30)
TOLERANCE = 16  # JPEG, then OBS's RGB → YUV → RGB round trip


class Feeder:
    """Sends one colour to a sink at about 30 fps from a background thread, like the engine's sink thread."""

    def __init__(self, sink, rgb):
        self.sink = sink
        self.rgb = rgb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            frame = np.empty((H, W, 3), np.uint8)
            frame[:] = self.rgb
            frame.flags.writeable = False
            self.sink.send(frame, {"seq": seq, "pts": seq / 30, "width": W, "height": H, "preset": ""})
            seq += 1
            self._stop.wait(1 / 30)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def mjpeg():
    cls = PluginRegistry().load("mjpeg")
    sink = cls(ElementConfig(layer="", name="mjpeg", width=W, height=H, fps=30, options={"port": 0}), {})
    sink.open()
    try:
        yield sink
    finally:
        sink.close()


def screenshot_centre(cl, source: str) -> tuple[int, int, int] | None:
    """The centre pixel (RGB) of OBS's own rendering of `source`, or None while it has no picture yet."""
    from obsws_python.error import OBSSDKRequestError

    try:
        resp = cl.get_source_screenshot(source, "png", 64, 36, -1)
    except OBSSDKRequestError:
        return None  # no video yet: OBS cannot screenshot a source of size 0
    data = base64.b64decode(resp.image_data.split(",", 1)[1])
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    b, g, r = img[img.shape[0] // 2, img.shape[1] // 2]
    return int(r), int(g), int(b)


def wait_for_colour(obs: ObsStudio, cl, source: str, rgb, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = screenshot_centre(cl, source)
        if seen is not None and max(abs(a - b) for a, b in zip(seen, rgb)) <= TOLERANCE:
            return seen
        time.sleep(0.2)
    pytest.fail(f"OBS never showed {rgb} within {timeout:g} s; last centre pixel {seen}\n"
                f"--- OBS log ---\n{obs.log_tail()}")


def test_obs_media_source_plays_the_mjpeg_stream_live(mjpeg):
    with Feeder(mjpeg, GREEN) as feeder, ObsStudio() as obs:
        cl = obs.client()
        cl.create_scene("vprod-test")
        cl.set_current_program_scene("vprod-test")
        cl.create_input("vprod-test", "vprod output", "ffmpeg_source", {
            "is_local_file": False, "input": f"http://127.0.0.1:{mjpeg.port}/stream.mjpg", "input_format": "",
            "restart_on_activate": True, "close_when_inactive": False, "buffering_mb": 1, "hw_decode": False,
            "reconnect_delay_sec": 1}, True)
        wait_for_colour(obs, cl, "vprod output", GREEN)
        feeder.rgb = ORANGE  # a live stream, not one frame: OBS follows the change
        wait_for_colour(obs, cl, "vprod output", ORANGE)


def test_obs_harness_password_is_required_when_set():
    with ObsStudio(password="vprod-secret") as obs:
        assert obs.client().get_version().obs_web_socket_version
        with pytest.raises(Exception, match="password|authentication|identify"):
            obs.client(password="")
