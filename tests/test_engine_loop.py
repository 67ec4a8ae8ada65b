"""The frame loop on a manual clock: controls apply on the next frame, preset switches crossfade, sinks never slow
the loop down.

Sinks run on their own threads; the tests wait on `threading.Event`s (with generous time-outs so that a bug fails
rather than hangs) and count frames, never time.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from vprod.engine import (LAYER_PARAMS, ElementConfig, Engine, Event, Layer, ManualTime, Params, Pipeline, Sink,
                          Source, TriggerParam)
from vprod.plugins import PluginRegistry

W, H = 16, 12
FPS = 8.0  # interval 0.125 s: exact in binary, so pts arithmetic is exact
WAIT = 5.0  # seconds a test waits for a sink thread before calling it a failure

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry(dirs=[PLUGINS], entry_points=False)


def solid_pipeline(registry, name, rgb, crossfade=0.5, fps=FPS) -> Pipeline:
    """A one-layer pipeline 'bg' with the first-party solid colour source."""
    src = registry.load("solid")(ElementConfig(layer="bg", name="solid", width=W, height=H, fps=fps),
                                 dict(zip("rgb", rgb)))
    p = Pipeline(name, [Layer("bg", src, [], Params.build(LAYER_PARAMS))], W, H, fps, crossfade)
    p.open_all()
    return p


def colour(frame) -> tuple[int, int, int]:
    """The frame's colour, checking it is one flat colour."""
    c = frame[0, 0]
    assert (frame == c).all(), "expected a flat frame"
    return tuple(int(v) for v in c)


def make_engine(registry, rgb=(0.0, 0.0, 1.0), fps=FPS) -> Engine:
    eng = Engine(W, H, fps, time_source=ManualTime())
    eng.switch(solid_pipeline(registry, "first", rgb, fps=fps))
    return eng


# --- controls ------------------------------------------------------------------------------------------------------


def test_before_any_preset_the_engine_makes_black_frames():
    eng = Engine(W, H, FPS, time_source=ManualTime())
    f = eng.step()
    assert f.shape == (H, W, 3) and not f.any()


def test_the_first_switch_plays_at_once_without_a_fade(registry):
    eng = make_engine(registry)
    assert colour(eng.step()) == (0, 0, 255)
    assert eng.pipeline.name == "first" and eng.incoming is None


def test_a_set_event_changes_pixels_on_the_very_next_frame(registry):
    eng = make_engine(registry)
    assert colour(eng.step()) == (0, 0, 255)
    eng.bus.set("/bg/r", 1.0, "test")
    assert colour(eng.step()) == (255, 0, 255)
    eng.bus.set("/bg/b", 0.0)
    eng.bus.set("/bg/g", 0.5)
    assert colour(eng.step()) == (255, 128, 0)  # several events, all on the same next frame


def test_layer_controls_go_through_the_bus_too(registry):
    eng = make_engine(registry, (1.0, 1.0, 1.0))
    eng.step()
    eng.bus.set("/bg/opacity", 0.5)
    assert colour(eng.step()) == (128, 128, 128)
    eng.bus.set("/bg/enabled", False)
    assert colour(eng.step()) == (0, 0, 0)


@pytest.mark.parametrize("bad", ["loud", float("nan"), float("inf"), None, [1, 2]])
def test_an_invalid_value_is_rejected_counted_and_changes_nothing(registry, caplog, bad):
    eng = make_engine(registry)
    eng.step()
    with caplog.at_level(logging.WARNING, logger="vprod.engine"):
        eng.bus.set("/bg/r", bad, "osc")
        f = eng.step()
    assert colour(f) == (0, 0, 255)
    assert eng.rejected_events == 1
    assert eng.stats()["rejected_events"] == 1
    assert eng.resolve("/bg/r").value == 0.0
    assert any("/bg/r" in r.getMessage() and "osc" in r.getMessage() for r in caplog.records)


def test_an_invalid_value_during_a_crossfade_is_counted_once(registry):
    eng = make_engine(registry)
    eng.step()
    eng.switch(solid_pipeline(registry, "second", (0.0, 0.0, 1.0)), crossfade_s=1.0)
    eng.step()
    assert eng.incoming is not None
    eng.bus.set("/bg/r", "loud")
    eng.step()
    assert eng.rejected_events == 1


def test_an_out_of_range_value_is_clamped_not_rejected(registry):
    eng = make_engine(registry)
    eng.step()
    eng.bus.set("/bg/r", 7.0)
    assert colour(eng.step()) == (255, 0, 255)
    assert eng.rejected_events == 0


def test_feedback_listeners_hear_applied_changes_only(registry):
    eng = make_engine(registry)
    heard = []
    eng.bus.listeners.append(lambda path, value, source: heard.append((path, value, source)))
    eng.step()
    eng.bus.set("/bg/g", 0.25, "midi")
    eng.bus.set("/bg/g", "nope", "midi")
    eng.step()
    assert heard == [("/bg/g", 0.25, "midi")]


def test_a_call_event_runs_on_the_loop_thread_before_the_frame(registry):
    eng = make_engine(registry)
    eng.step()
    ran = []
    eng.bus.post(Event("call", fn=lambda: ran.append(threading.current_thread())))
    eng.step()
    assert ran == [threading.current_thread()]


class TriggerSource(Source):
    """Records, per frame, whether its 'flash' trigger fired; white on the frame it fires."""

    element_id = "flash"
    plugin_name = "testkit"
    params = {"flash": TriggerParam(doc="flash once")}

    def __init__(self, config):
        super().__init__(config)
        self.seen: list[bool] = []

    def process(self, ctx):
        fired = self.p.fired("flash")
        self.seen.append(fired)
        return np.full((ctx.height, ctx.width, 3), 255 if fired else 0, np.uint8)


def test_a_trigger_set_on_the_bus_fires_on_exactly_one_frame():
    src = TriggerSource(ElementConfig(layer="fx", width=W, height=H))
    eng = Engine(W, H, FPS, time_source=ManualTime())
    eng.switch(Pipeline("t", [Layer("fx", src, [], Params.build(LAYER_PARAMS))], W, H, FPS))
    eng.step()
    eng.bus.set("/fx/flash", 1)
    frames = [colour(eng.step()) for _ in range(3)]
    assert src.seen == [False, True, False, False]
    assert frames == [(255, 255, 255), (0, 0, 0), (0, 0, 0)]


# --- control paths and schema --------------------------------------------------------------------------------------


def test_resolve_returns_the_live_state(registry):
    eng = make_engine(registry)
    eng.step()
    st = eng.resolve("/bg/b")
    assert st.value == 1.0
    eng.bus.set("/bg/b", 0.5)
    eng.step()
    assert st.value == 0.5


def test_resolve_on_an_unknown_path_lists_the_known_ones(registry):
    eng = make_engine(registry)
    eng.step()
    with pytest.raises(KeyError) as e:
        eng.resolve("/bg/red")
    msg = str(e.value)
    assert "/bg/red" in msg
    for path in ("/bg/b", "/bg/blend", "/bg/enabled", "/bg/g", "/bg/opacity", "/bg/r"):
        assert path in msg


def test_schema_lists_every_path_with_type_range_value_and_norm(registry):
    eng = make_engine(registry, (0.2, 0.0, 1.0))
    eng.step()
    schema = {d["path"]: d for d in eng.schema()}
    assert set(schema) == {"/bg/r", "/bg/g", "/bg/b", "/bg/opacity", "/bg/blend", "/bg/enabled"}
    r = schema["/bg/r"]
    assert (r["type"], r["min"], r["max"], r["value"], r["element"]) == ("float", 0.0, 1.0, 0.2, "solid")
    assert r["norm"] == pytest.approx(0.2)
    blend = schema["/bg/blend"]
    assert (blend["type"], blend["value"], blend["norm"], blend["element"]) == ("choice", "normal", 0.0, "layer")
    assert "multiply" in blend["choices"]
    en = schema["/bg/enabled"]
    assert (en["type"], en["value"], en["norm"]) == ("bool", True, 1.0)
    eng.bus.set("/bg/opacity", 0.25)
    eng.step()
    op = {d["path"]: d for d in eng.schema()}["/bg/opacity"]
    assert (op["value"], op["norm"]) == (0.25, 0.25)


def test_schema_is_empty_without_a_preset():
    assert Engine(W, H, FPS, time_source=ManualTime()).schema() == []


# --- preset switch -------------------------------------------------------------------------------------------------


class CloseSpy:
    """Wraps a pipeline's close_all to signal when it runs (it runs on a helper thread)."""

    def __init__(self, pipeline: Pipeline):
        self.closed = threading.Event()
        orig = pipeline.close_all

        def close_all():
            orig()
            self.closed.set()

        pipeline.close_all = close_all  # type: ignore[method-assign]


def test_switch_crossfades_over_the_right_number_of_frames_then_shows_exactly_the_new_preset(registry):
    eng = Engine(W, H, FPS, time_source=ManualTime())
    old = solid_pipeline(registry, "old", (1.0, 0.0, 0.0))  # (255, 0, 0)
    new = solid_pipeline(registry, "new", (0.0, 0.0, 1.0))  # (0, 0, 255)
    spy = CloseSpy(old)
    eng.switch(old)
    for _ in range(3):
        assert colour(eng.step()) == (255, 0, 0)
    eng.switch(new, crossfade_s=0.375)  # three frame intervals at 8 fps
    frames = [colour(eng.step()) for _ in range(5)]
    # The frame that takes the switch is the fade's start (t = 0), then t = 1/3, 2/3, then the new preset.
    assert frames[0] == (255, 0, 0)
    assert frames[1] == (170, 0, 85)
    assert frames[2] == (85, 0, 170)
    assert frames[3] == frames[4] == (0, 0, 255)
    assert eng.pipeline is new and eng.incoming is None
    assert spy.closed.wait(WAIT), "the old pipeline was not closed"


def test_switch_without_a_crossfade_argument_uses_the_presets_own(registry):
    eng = Engine(W, H, FPS, time_source=ManualTime())
    eng.switch(solid_pipeline(registry, "old", (1.0, 1.0, 1.0)))
    eng.step()
    eng.switch(solid_pipeline(registry, "new", (0.0, 0.0, 0.0), crossfade=0.25))  # two intervals
    frames = [colour(eng.step()) for _ in range(3)]
    assert frames == [(255, 255, 255), (128, 128, 128), (0, 0, 0)]


def test_switch_with_zero_crossfade_cuts_on_the_next_frame(registry):
    eng = Engine(W, H, FPS, time_source=ManualTime())
    old = solid_pipeline(registry, "old", (1.0, 1.0, 1.0))
    spy = CloseSpy(old)
    eng.switch(old)
    eng.step()
    eng.switch(solid_pipeline(registry, "new", (0.0, 1.0, 0.0)), crossfade_s=0)
    assert colour(eng.step()) == (0, 255, 0)
    assert eng.pipeline.name == "new"
    assert spy.closed.wait(WAIT)


def test_controls_reach_the_incoming_preset_during_a_fade(registry):
    eng = Engine(W, H, FPS, time_source=ManualTime())
    eng.switch(solid_pipeline(registry, "old", (0.0, 0.0, 0.0)))
    eng.step()
    eng.switch(solid_pipeline(registry, "new", (0.0, 0.0, 0.0)), crossfade_s=0.25)
    eng.step()  # the fade starts (t = 0)
    eng.bus.set("/bg/g", 1.0)  # both presets have /bg/g: both take it
    assert colour(eng.step()) == (0, 255, 0)  # t = 0.5
    assert eng.incoming is not None and eng.incoming.name == "new"
    assert colour(eng.step()) == (0, 255, 0)  # t = 1: the new preset alone, with the change applied
    assert eng.pipeline.name == "new" and eng.incoming is None


def test_a_switch_during_a_switch_fades_to_the_newest(registry):
    eng = Engine(W, H, FPS, time_source=ManualTime())
    a = solid_pipeline(registry, "a", (1.0, 0.0, 0.0))
    spy_a = CloseSpy(a)
    eng.switch(a)
    eng.step()
    eng.switch(solid_pipeline(registry, "b", (0.0, 1.0, 0.0)), crossfade_s=0.375)
    eng.step()
    eng.switch(solid_pipeline(registry, "c", (0.0, 0.0, 1.0)), crossfade_s=0.25)
    for _ in range(3):
        last = eng.step()
    assert colour(last) == (0, 0, 255)
    assert eng.pipeline.name == "c" and eng.incoming is None
    assert spy_a.closed.wait(WAIT)


def test_a_half_second_fade_at_30_fps_ends_on_the_15th_frame(registry):
    fps = 30.0
    eng = Engine(W, H, fps, time_source=ManualTime())
    eng.switch(solid_pipeline(registry, "old", (1.0, 0.0, 0.0), fps=fps))
    for _ in range(6):
        eng.step()
    eng.switch(solid_pipeline(registry, "new", (0.0, 0.0, 1.0), fps=fps), crossfade_s=0.5)
    eng.step()  # frame 6 takes the switch: t = 0
    for _ in range(15):
        eng.step()
    assert eng.pipeline.name == "new" and eng.incoming is None


# --- sinks ---------------------------------------------------------------------------------------------------------


class BlockingSink(Sink):
    """Blocks inside its first send until released; records the seq of every frame it gets."""

    element_id = "blocking"
    plugin_name = "testkit"

    def __init__(self):
        super().__init__(ElementConfig())
        self.entered = threading.Event()
        self.release = threading.Event()
        self.timed_out = False
        self.second = threading.Event()
        self.got: list[tuple[int, np.ndarray]] = []

    def send(self, frame, meta):
        self.got.append((meta["seq"], frame))
        if len(self.got) == 1:
            self.entered.set()
            self.timed_out = not self.release.wait(WAIT)
        else:
            self.second.set()


class RecordingSink(Sink):
    element_id = "recording"
    plugin_name = "testkit"

    def __init__(self, until: int):
        super().__init__(ElementConfig())
        self.until = until
        self.seqs: list[int] = []
        self.enough = threading.Event()
        self.closed = False

    def send(self, frame, meta):
        self.seqs.append(meta["seq"])
        if meta["seq"] >= self.until:
            self.enough.set()

    def close(self):
        self.closed = True


class BrokenSink(Sink):
    element_id = "brokensink"
    plugin_name = "testkit"

    def __init__(self):
        super().__init__(ElementConfig())

    def open(self):
        raise OSError("port 8080 is in use")

    def send(self, frame, meta):
        raise AssertionError("a sink that failed to open must not be sent frames")


def test_a_sink_blocked_longer_than_a_frame_never_holds_up_the_loop_and_gets_the_newest_frame(registry):
    eng = make_engine(registry)
    sink = BlockingSink()
    runner = eng.add_sink("slow", sink)
    try:
        eng.step()  # frame 0: the sink takes it and blocks
        assert sink.entered.wait(WAIT), "the sink never received the first frame"
        frames = []
        for i in range(30):  # the loop carries on while the sink is still inside send()
            eng.bus.set("/bg/r", (i + 1) / 30)
            frames.append(eng.step())
        assert eng.frames == 31
        assert not sink.release.is_set() and len(sink.got) == 1
        assert not sink.timed_out
        # Frames 1..30 went to the mailbox: the first waited, the other 29 each replaced the one before.
        assert runner.mailbox.overwritten == 29
        sink.release.set()
        assert sink.second.wait(WAIT), "the sink never got a second frame"
        seq, frame = sink.got[1]
        assert seq == 30  # latest wins
        np.testing.assert_array_equal(frame, frames[-1])
        assert colour(frame) == (255, 0, 255)
        assert runner.status()["skipped"] == 29
    finally:
        sink.release.set()
        eng.close()


def test_frames_handed_to_sinks_are_read_only(registry):
    eng = make_engine(registry)
    sink = RecordingSink(until=0)
    got = []
    sink.send = lambda frame, meta: (got.append(frame), sink.enough.set())  # type: ignore[method-assign]
    eng.add_sink("rec", sink)
    try:
        eng.step()
        assert sink.enough.wait(WAIT)
        assert got[0].flags.writeable is False
    finally:
        eng.close()


def test_a_sink_whose_open_fails_is_marked_failed_once_and_the_others_keep_receiving(registry, caplog):
    eng = make_engine(registry)
    good = RecordingSink(until=9)
    with caplog.at_level(logging.INFO, logger="vprod.sinks"):
        bad_runner = eng.add_sink("web", BrokenSink())
        good_runner = eng.add_sink("rec", good)
        try:
            bad_runner._thread.join(WAIT)
            assert bad_runner.state == "failed"
            assert bad_runner.last_error == "port 8080 is in use"
            for _ in range(10):
                eng.step()
            assert good.enough.wait(WAIT), "the healthy sink stopped receiving"
            assert good_runner.state == "running"
            assert good.seqs[-1] == 9
            assert eng.stats()["sinks"]["web"]["state"] == "failed"
        finally:
            eng.close()
    errs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errs) == 1
    msg = errs[0].getMessage()
    assert "web" in msg and "testkit:brokensink" in msg and "port 8080 is in use" in msg
    assert good.closed


# --- running -------------------------------------------------------------------------------------------------------


def test_run_does_not_count_set_up_time_as_dropped_frames(registry):
    t = ManualTime()
    eng = Engine(W, H, FPS, time_source=t)
    eng.switch(solid_pipeline(registry, "p", (0.0, 0.0, 0.0)))
    t.advance(10.0)  # slow start-up
    eng.run(threading.Event(), max_frames=5)
    assert eng.frames == 5
    assert eng.stats()["dropped"] == 0
    assert eng.last_meta["index"] == 4
    assert t.now() == pytest.approx(10.0 + 4 / FPS)


def test_run_stops_when_the_stop_event_is_set(registry):
    eng = make_engine(registry)
    stop = threading.Event()
    eng.on_frame.append(lambda frame, meta: stop.set() if meta["seq"] == 2 else None)
    eng.run(stop)
    assert eng.frames == 3


def test_a_stalled_frame_is_counted_as_dropped(registry):
    t = ManualTime()
    eng = Engine(W, H, FPS, time_source=t)
    eng.switch(solid_pipeline(registry, "p", (0.0, 0.0, 0.0)))
    eng.step()
    t.advance(0.125 + 3 * 0.125 + 0.05)  # three whole intervals late for the next tick
    eng.step()
    assert eng.stats()["dropped"] == 3
    assert eng.last_meta["index"] == 4
    assert eng.last_meta["seq"] == 1


def test_modulators_run_before_rendering_with_the_frame_context(registry):
    eng = make_engine(registry)
    seen = []
    eng.modulators.append(lambda ctx: seen.append((ctx.index, ctx.preset, ctx.width, ctx.height)))
    eng.step()
    eng.step()
    assert seen == [(0, "first", W, H), (1, "first", W, H)]
