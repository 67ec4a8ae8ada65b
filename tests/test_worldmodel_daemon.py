"""The shipped world model in the running daemon: endless 1280×720 frames that move, steered without faults."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from daemon_helpers import Control, FrameStream

PRESET = Path(__file__).resolve().parent.parent / "presets" / "worldmodel.toml"


@pytest.mark.integration
def test_world_model_streams_moves_and_takes_prompt_and_family(daemons, tmp_path):
    shutil.copy(PRESET, tmp_path / "worldmodel.toml")
    d = daemons(tmp_path / "worldmodel.toml")
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        # The first generated frames (the model warms up on its own thread; black until then).
        _, img = frames.wait_for(lambda h, im: im.mean() > 5, what="a generated frame")
        assert img.shape == (720, 1280, 3)
        _, later = frames.first_frame_at_or_after(frames.last_seq + 30)
        assert np.abs(later.astype(int) - img.astype(int)).mean() > 1.0, "the world does not move"
        day = np.mean([frames.first_frame_at_or_after(frames.last_seq + 1)[1].mean() for _ in range(3)])
        assert ctl.req("set", path="/bg/prompt", value="a city at night", raw=True)["ok"]
        # the first prompt loads the sentence model on its own thread (seconds; the world moves on meanwhile), then
        # the prompt's 0.4 s transition and the pull
        frames.wait_for(lambda h, im: im.mean() < day - 20, timeout=60, what=f"night (mean grey below {day - 20:.0f})")
        assert ctl.req("set", path="/bg/daylight", value=0.0)["ok"]
        assert ctl.req("set", path="/bg/steps", value="1", raw=True)["ok"]
        assert ctl.req("set", path="/bg/family", value="ocean", raw=True)["ok"]
        assert ctl.req("set", path="/bg/prompt", value="a calm sea at noon", raw=True)["ok"]
        frames.first_frame_at_or_after(frames.last_seq + 30)
        status = ctl.req("status")["status"]
    assert status["faults"] == [], status["faults"]
