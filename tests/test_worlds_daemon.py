"""The `worlds` source in the running daemon: 1280×720 frames, knobs live over the ZeroMQ control."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from daemon_helpers import Control, FrameStream

PRESET = Path(__file__).resolve().parent.parent / "presets" / "worlds.toml"


@pytest.mark.integration
def test_worlds_preset_streams_and_follows_its_knobs(daemons, tmp_path):
    shutil.copy(PRESET, tmp_path / "worlds.toml")
    d = daemons(tmp_path / "worlds.toml")
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        head, img = frames.next_frame()
        assert (head["width"], head["height"], head["preset"]) == (1280, 720, "worlds")
        paths = {p["path"] for p in ctl.req("params")["params"]}
        assert {"/bg/daylight", "/bg/yaw", "/bg/family", "/bg/reset"} <= paths
        # Night, then noon: the picture follows the knob (slew 0.2 s; wait for the frames to settle).
        assert ctl.req("set", path="/bg/daylight", value=0.0)["ok"]
        seq = frames.last_seq
        _, night = frames.first_frame_at_or_after(seq + 30)
        assert ctl.req("set", path="/bg/daylight", value=1.0)["ok"]
        seq = frames.last_seq
        _, noon = frames.first_frame_at_or_after(seq + 30)
        assert noon.mean() > night.mean() + 30, (noon.mean(), night.mean())
        # The world moves by itself at the preset's speed.
        _, a = frames.next_frame()
        _, b = frames.first_frame_at_or_after(frames.last_seq + 10)
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0
        assert ctl.req("set", path="/bg/family", value="city", raw=True)["ok"]
        status = ctl.req("status")["status"]
    assert status["faults"] == [], status["faults"]
