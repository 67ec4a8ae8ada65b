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
    world = status["elements"]["/bg"]  # the source's own figures: pictures made, and how many a second
    assert world["pictures"] > 30 and world["pictures_per_s"] > 0 and world["steps"] == 1, world


def test_the_worldmodel_sources_memory_turns_off_and_on_while_it_streams():
    """/bg/memory 0 drops the world's memory (the look head then acts on the picture, nothing pulls it); turned up
    again, a memory is made from what is in view — the source's own threads keep streaming throughout."""
    import time

    from vprod.engine.element import ElementConfig, FrameContext
    from vprod.plugins import PluginRegistry

    src = PluginRegistry().load("worldmodel")(ElementConfig(layer="w", name="worldmodel", width=64, height=36),
                                              {"steps": "1"})
    src.open()
    try:
        def until(what, test, timeout=60.0):
            end = time.monotonic() + timeout
            while not test():
                assert time.monotonic() < end, f"timed out waiting for {what}"
                src.process(FrameContext(width=64, height=36))
                time.sleep(0.02)

        until("frames", lambda: src._frames >= 3)
        assert src.world.memory is not None and src.world.memory_pull == pytest.approx(0.5)
        st = src.stats()  # what the daemon's status shows under /<layer>
        assert st["pictures"] >= 3 and st["pictures_per_s"] > 0 and st["steps"] == 1 and st["sample_ms"] > 0
        src.p.states["memory"].set(0.0)
        until("the memory off", lambda: src.world.memory is None)
        n = src._frames
        until("frames without it", lambda: src._frames >= n + 3)
        assert src.world.memory is None
        src.p.states["memory"].set(0.3)
        until("the memory on", lambda: src.world.memory is not None)
        assert src.world.memory_pull == pytest.approx(0.3)
        frame = src.process(FrameContext(width=64, height=36))
        assert frame.shape == (36, 64, 3) and frame.std() > 1
    finally:
        src.close()


def test_the_worldmodel_source_prepares_the_look_pass_for_moving_knobs_on_the_decoders_thread():
    """A knob that keeps moving (turned, or under a modulator): the source guesses the next frame's knobs from how
    they move, so the look head's pass is made on the decoder's thread beside the model thread's frame, not on it."""
    import threading
    import time

    from vprod.engine.element import ElementConfig, FrameContext
    from vprod.plugins import PluginRegistry

    src = PluginRegistry().load("worldmodel")(ElementConfig(layer="w", name="worldmodel", width=64, height=36),
                                              {"steps": "1"})
    src.open()
    try:
        end = time.monotonic() + 60
        while src._frames < 3:
            assert time.monotonic() < end, "no frames"
            src.process(FrameContext(width=64, height=36))
            time.sleep(0.02)
        where: list[str] = []
        look = src.world._canvas_look

        def watched(*a):
            where.append(threading.current_thread().name)
            return look(*a)

        src.world._canvas_look = watched
        daylight = src.p.get("daylight")
        for i in range(90):  # a slow turn: 0.008 a frame, the look head acts every ~6 frames
            src.p.states["daylight"].set(max(0.0, daylight - 0.008 * i))
            src.p.step(1 / 30)  # the engine's tick: a knob's slew moves it on
            src.process(FrameContext(width=64, height=36))
            time.sleep(0.03)
    finally:
        src.close()
    on_decoder, on_model = where.count("worldmodel-decode"), where.count("worldmodel")
    assert on_decoder >= 5 and on_model <= on_decoder // 3, where


def test_the_worldmodel_source_says_in_the_log_when_the_world_does_not_keep_up(caplog):
    """A world that makes far fewer pictures than the output's frames (output frames repeat one) is said once in the
    log, with what to do; one that keeps up is not."""
    import logging
    import time

    from vprod.engine.element import ElementConfig, FrameContext
    from vprod.plugins import PluginRegistry

    src = PluginRegistry().load("worldmodel")(ElementConfig(layer="w", name="worldmodel", width=64, height=36),
                                              {"steps": "2"})
    src.RATE_CHECK_S = 0.2  # checks 0.2 s apart instead of 2 s (three slow ones in a row are said)
    src.open()

    def play(fps: float, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            src.process(FrameContext(width=64, height=36, fps=fps))
            time.sleep(1 / fps)

    try:
        with caplog.at_level(logging.WARNING, logger="vprod.worldmodel"):
            end = time.monotonic() + 60
            while src._frames < 3:  # loaded
                assert time.monotonic() < end, "no frames"
                play(10, 0.2)
            play(10, 3.0)  # 10 fps: the world keeps up
            assert not caplog.records, [r.getMessage() for r in caplog.records]
            latent = src.world.next_latent

            def slow(*a, **kw):  # a machine four times too slow
                time.sleep(0.25)
                return latent(*a, **kw)

            src.world.next_latent = slow
            play(10, 3.5)
    finally:
        src.close()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "new pictures a second at 10 fps output (2 steps)" in said[0] and "/w/steps 1" in said[0], \
        said
