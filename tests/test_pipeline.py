"""Pipelines built by hand: layers compose as the compositor says, and a failing element never takes the frame down.

The back-off clock of the fault guards is `time.monotonic` inside `vprod.engine.pipeline`; the `now` fixture replaces
it with a clock the test moves.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

import vprod.engine.pipeline as pipeline_mod
from vprod.engine.pipeline import Guard
from vprod.engine import (LAYER_PARAMS, Effect, ElementConfig, FrameContext, IntParam, Layer, Params,
                          Pipeline, Source, blend)

W, H = 8, 6


class FakeMonotonic:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def now(monkeypatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(pipeline_mod, "time", fake)
    return fake


def frame_of(rgb) -> np.ndarray:
    f = np.empty((H, W, 3), np.uint8)
    f[:] = rgb
    return f


# --- in-test elements ----------------------------------------------------------------------------------------------


class ColourSource(Source):
    """One colour in 0..255 per channel."""

    element_id = "colour"
    plugin_name = "testkit"
    params = {"r": IntParam(0, 0, 255), "g": IntParam(0, 0, 255), "b": IntParam(0, 0, 255)}

    def process(self, ctx):
        return frame_of((self.p.r, self.p.g, self.p.b))


class CountingSource(Source):
    """Frame n (1-based call count) is filled with n; raises on the calls listed in `fail_on`."""

    element_id = "counting"
    plugin_name = "testkit"

    def __init__(self, config, fail_on=()):
        super().__init__(config)
        self.calls = 0
        self.fail_on = set(fail_on)

    def process(self, ctx):
        self.calls += 1
        if self.calls in self.fail_on or "all" in self.fail_on:
            raise RuntimeError(f"no frame {self.calls}")
        return frame_of((self.calls, self.calls, self.calls))


class MatteSource(Source):
    """Left half white, right half black."""

    element_id = "matte"
    plugin_name = "testkit"

    def process(self, ctx):
        f = np.zeros((ctx.height, ctx.width, 3), np.uint8)
        f[:, : ctx.width // 2] = 255
        return f


class PublishedMatteSource(Source):
    """Shows white everywhere but publishes an explicit matte: the top half only."""

    element_id = "pubmatte"
    plugin_name = "testkit"

    def process(self, ctx):
        m = np.zeros((ctx.height, ctx.width), np.float32)
        m[: ctx.height // 2] = 1.0
        ctx.layers[self.config.layer]["mask"] = m
        return frame_of((255, 255, 255))


class AddEffect(Effect):
    """Adds `amount` to every channel (saturating); fails on the calls listed in `fail_on`."""

    element_id = "addk"
    plugin_name = "testkit"
    params = {"amount": IntParam(10, 0, 255)}

    def __init__(self, config, fail_on=()):
        super().__init__(config)
        self.calls = 0
        self.fail_on = set(fail_on)

    def process(self, frame, ctx):
        self.calls += 1
        if self.calls in self.fail_on or "all" in self.fail_on:
            raise RuntimeError("glitch")
        return np.clip(frame.astype(np.int16) + self.p.amount, 0, 255).astype(np.uint8)


class NoneEffect(Effect):
    element_id = "none"
    plugin_name = "testkit"

    def process(self, frame, ctx):
        return None


class SmallEffect(Effect):
    """Returns a frame of a different size: the pipeline fits it."""

    element_id = "small"
    plugin_name = "testkit"

    def process(self, frame, ctx):
        return np.full((2, 2, 3), 77, np.uint8)


class BrokenOpenEffect(AddEffect):
    element_id = "brokenopen"

    def open(self):
        raise OSError("device /dev/video9 is busy")


class BrokenOpenSource(CountingSource):
    element_id = "brokensrc"

    def open(self):
        raise OSError("no such file: clip.mp4")


def cfg(layer: str) -> ElementConfig:
    return ElementConfig(layer=layer, width=W, height=H)


def make_layer(lid, source, effects=(), mask="", visible=True, **layer_values) -> Layer:
    return Layer(lid, source, list(effects), Params.build(LAYER_PARAMS, layer_values), mask=mask, visible=visible)


def colour_layer(lid, rgb, **kw) -> Layer:
    return make_layer(lid, ColourSource(cfg(lid), dict(zip("rgb", rgb))), **kw)


def make_pipeline(*layers) -> Pipeline:
    p = Pipeline("test", list(layers), W, H, 30.0)
    p.open_all()
    return p


def ctx() -> FrameContext:
    return FrameContext(width=W, height=H)


def errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- composition ---------------------------------------------------------------------------------------------------


def test_one_layer_is_its_source_frame():
    p = make_pipeline(colour_layer("bg", (10, 20, 30)))
    np.testing.assert_array_equal(p.render(ctx()), frame_of((10, 20, 30)))


def test_effects_run_in_order_on_the_source_frame(now):
    eff1, eff2 = AddEffect(cfg("bg")), AddEffect(cfg("bg"))
    eff2.p.states["amount"].set(5)
    p = make_pipeline(make_layer("bg", ColourSource(cfg("bg"), {"r": 100}), [("a", eff1), ("b", eff2)]))
    np.testing.assert_array_equal(p.render(ctx()), frame_of((115, 15, 15)))


def test_an_effect_returning_another_size_is_fitted(now):
    p = make_pipeline(make_layer("bg", ColourSource(cfg("bg")), [("s", SmallEffect(cfg("bg")))]))
    out = p.render(ctx())
    assert out.shape == (H, W, 3)
    assert (out == 77).all()


def test_two_layers_compose_with_opacity_and_blend_as_the_compositor_says():
    bottom, top = (0, 100, 200), (50, 200, 100)
    p = make_pipeline(colour_layer("bg", bottom), colour_layer("fg", top, blend="add", opacity=0.6))
    out = p.render(ctx())
    # add gives (50, 255, 255); 0.6 of that over 0.4 of the bottom
    np.testing.assert_array_equal(out, frame_of((30, 193, 233)))
    np.testing.assert_array_equal(out, blend(frame_of(bottom), frame_of(top), "add", 0.6))


def test_layer_parameters_change_the_composition_live():
    p = make_pipeline(colour_layer("bg", (0, 0, 0)), colour_layer("fg", (200, 100, 50)))
    np.testing.assert_array_equal(p.render(ctx()), frame_of((200, 100, 50)))
    p.registry["/fg/opacity"][0].set(0.5)
    np.testing.assert_array_equal(p.render(ctx()), frame_of((100, 50, 25)))
    p.registry["/fg/blend"][0].set("darken")
    np.testing.assert_array_equal(p.render(ctx()), frame_of((0, 0, 0)))


def test_disabled_layer_is_hidden():
    p = make_pipeline(colour_layer("bg", (0, 0, 255)), colour_layer("fg", (255, 0, 0), enabled=False))
    np.testing.assert_array_equal(p.render(ctx()), frame_of((0, 0, 255)))
    p.registry["/fg/enabled"][0].set(True)
    np.testing.assert_array_equal(p.render(ctx()), frame_of((255, 0, 0)))


def test_disabled_layer_source_is_not_run():
    src = CountingSource(cfg("bg"))
    p = make_pipeline(make_layer("bg", src, enabled=False))
    out = p.render(ctx())
    assert src.calls == 0
    np.testing.assert_array_equal(out, frame_of((0, 0, 0)))


def test_no_layers_showing_gives_black_at_the_output_size():
    p = make_pipeline(colour_layer("bg", (9, 9, 9), enabled=False))
    out = p.render(ctx())
    assert out.shape == (H, W, 3) and not out.any()


def test_mask_uses_another_layers_luminance():
    matte = make_layer("matte", MatteSource(cfg("matte")), visible=False)
    p = make_pipeline(colour_layer("bg", (0, 0, 255)), matte, colour_layer("fg", (255, 0, 0), mask="matte"))
    out = p.render(ctx())
    # Where the matte is white the masked layer shows; where black, the layers below.
    assert (out[:, : W // 2] == (255, 0, 0)).all()
    assert (out[:, W // 2:] == (0, 0, 255)).all()


def test_a_mask_layer_listed_after_the_masked_layer_still_masks_it():
    matte = make_layer("matte", MatteSource(cfg("matte")), visible=False)
    p = make_pipeline(colour_layer("bg", (0, 0, 255)), colour_layer("fg", (255, 0, 0), mask="matte"), matte)
    out = p.render(ctx())
    assert (out[:, : W // 2] == (255, 0, 0)).all()
    assert (out[:, W // 2:] == (0, 0, 255)).all()


def test_an_invisible_mask_layer_is_not_shown_itself():
    matte = make_layer("matte", MatteSource(cfg("matte")), visible=False)
    p = make_pipeline(colour_layer("bg", (0, 0, 255)), matte)
    np.testing.assert_array_equal(p.render(ctx()), frame_of((0, 0, 255)))


def test_a_published_matte_is_preferred_over_luminance():
    matte = make_layer("m", PublishedMatteSource(cfg("m")), visible=False)
    p = make_pipeline(colour_layer("bg", (0, 0, 255)), matte, colour_layer("fg", (255, 0, 0), mask="m"))
    out = p.render(ctx())
    assert (out[: H // 2] == (255, 0, 0)).all()
    assert (out[H // 2:] == (0, 0, 255)).all()


def test_registry_names_every_control_path():
    eff = AddEffect(cfg("fg"))
    p = make_pipeline(colour_layer("bg", (0, 0, 0)), make_layer("fg", ColourSource(cfg("fg")), [("boost", eff)]))
    assert set(p.registry) == {
        "/bg/opacity", "/bg/blend", "/bg/enabled", "/bg/r", "/bg/g", "/bg/b",
        "/fg/opacity", "/fg/blend", "/fg/enabled", "/fg/r", "/fg/g", "/fg/b", "/fg/boost/amount",
        "/fg/boost/enabled",  # every effect can be bypassed live
    }
    assert p.registry["/fg/boost/amount"][1] is eff


# --- fault isolation: effects --------------------------------------------------------------------------------------


def test_an_effect_that_raises_is_bypassed_and_its_input_passes_through(now, caplog):
    eff = AddEffect(cfg("fg"), fail_on={1})
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg"), {"r": 100}), [("boost", eff)]))
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        out = p.render(ctx())
    np.testing.assert_array_equal(out, frame_of((100, 0, 0)))
    errs = errors(caplog)
    assert len(errs) == 1
    msg = errs[0].getMessage()
    assert "testkit" in msg and "addk" in msg and "'fg'" in msg and "glitch" in msg
    assert p.faults() == [{"element": "testkit:addk in layer 'fg'", "faults": 1, "error": "RuntimeError: glitch",
                           "running": True}]


def test_a_faulted_effect_is_retried_after_back_off_and_heals(now, caplog):
    eff = AddEffect(cfg("fg"), fail_on={1})
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg"), {"r": 100}), [("boost", eff)]))
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        p.render(ctx())  # fails
        now.t += 0.1
        out = p.render(ctx())  # inside the back-off: not called, still bypassed
        assert eff.calls == 1
        np.testing.assert_array_equal(out, frame_of((100, 0, 0)))
        now.t += 0.5
        out = p.render(ctx())  # back-off over: retried, and it works again
        assert eff.calls == 2
        np.testing.assert_array_equal(out, frame_of((110, 10, 10)))
        assert not any("runs cleanly again" in r.getMessage() for r in caplog.records)  # one good frame is no cure
        now.t += Guard.HEAL_S
        out = p.render(ctx())  # clean for HEAL_S seconds: healed, and said so once
    assert any("runs cleanly again" in r.getMessage() for r in caplog.records)
    assert p.faults()[0]["faults"] == 1 and p.faults()[0]["running"] is True
    assert eff.calls == 3
    np.testing.assert_array_equal(out, frame_of((110, 10, 10)))


def test_a_permanently_failing_effect_is_reported_once_and_retried_ever_less_often(now, caplog):
    eff = AddEffect(cfg("fg"), fail_on={"all"})
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg"), {"g": 50}), [("boost", eff)]))
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        for _ in range(20):  # one frame a second for 20 s
            out = p.render(ctx())
            np.testing.assert_array_equal(out, frame_of((0, 50, 0)))
            now.t += 1.0
    # Back-off 0.5, 1, 2, 4, 8 s: tried at t = 0, 1, 2, 4, 8 and 16.
    assert eff.calls == 6
    assert p.faults()[0]["faults"] == 6
    assert len(errors(caplog)) == 1


def test_a_fault_after_healing_is_reported_again(now, caplog):
    eff = AddEffect(cfg("fg"), fail_on={1, 4})
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg")), [("boost", eff)]))
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        for step in (1.0, Guard.HEAL_S, 1.0, 1.0):  # fail, ok, ok (healed), fail
            p.render(ctx())
            now.t += step
    assert eff.calls == 4
    assert len(errors(caplog)) == 2  # one per episode
    assert p.faults()[0]["faults"] == 2


def test_an_element_failing_every_other_frame_is_reported_once(now, caplog):
    eff = AddEffect(cfg("fg"), fail_on=set(range(1, 100, 2)))
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg")), [("boost", eff)]))
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        for _ in range(60):  # a minute, one frame a second: never clean for HEAL_S
            p.render(ctx())
            now.t += 1.0
    assert p.faults()[0]["faults"] >= 3
    assert len(errors(caplog)) == 1


def test_an_effect_returning_none_is_a_fault(now, caplog):
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg"), {"b": 60}), [("nothing", NoneEffect(cfg("fg")))]))
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        out = p.render(ctx())
    np.testing.assert_array_equal(out, frame_of((0, 0, 60)))
    (fault,) = p.faults()
    assert fault["element"] == "testkit:none in layer 'fg'"
    assert "returned None" in fault["error"]
    assert len(errors(caplog)) == 1


def test_a_fault_in_one_effect_leaves_the_next_effect_running(now):
    bad = AddEffect(cfg("fg"), fail_on={"all"})
    good = AddEffect(cfg("fg"))
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg")), [("bad", bad), ("good", good)]))
    np.testing.assert_array_equal(p.render(ctx()), frame_of((10, 10, 10)))
    assert good.calls == 1


class WrongFrameEffect(Effect):
    """Breaks the frame contract (uint8 RGB) without raising."""

    element_id = "wrongframe"
    plugin_name = "testkit"

    def __init__(self, config, make):
        super().__init__(config)
        self.make = make

    def process(self, frame, ctx):
        return self.make(frame)


@pytest.mark.parametrize("make", [lambda f: f.astype(np.float32), lambda f: f[:, :, 0]], ids=["float32", "grey"])
def test_an_effect_returning_a_frame_that_is_not_uint8_rgb_is_a_fault(now, make):
    eff = WrongFrameEffect(cfg("fg"), make)
    p = make_pipeline(colour_layer("bg", (0, 0, 200)),
                      make_layer("fg", ColourSource(cfg("fg"), {"r": 100}), [("bad", eff)], blend="add"))
    out = p.render(ctx())  # must not raise
    np.testing.assert_array_equal(out, frame_of((100, 0, 200)))  # the effect bypassed
    assert p.faults()[0]["element"] == "testkit:wrongframe in layer 'fg'"


def test_a_published_matte_of_another_size_does_not_stop_the_frame():
    class HalfSizeMatte(PublishedMatteSource):
        def process(self, ctx):
            ctx.layers[self.config.layer]["mask"] = np.ones((ctx.height // 2, ctx.width // 2), np.float32)
            return frame_of((255, 255, 255))

    matte = make_layer("m", HalfSizeMatte(cfg("m")), visible=False)
    p = make_pipeline(colour_layer("bg", (0, 0, 255)), matte, colour_layer("fg", (255, 0, 0), mask="m"))
    out = p.render(ctx())
    assert out.shape == (H, W, 3)


# --- fault isolation: sources --------------------------------------------------------------------------------------


def test_a_source_that_raises_repeats_its_last_good_frame(now, caplog):
    src = CountingSource(cfg("cam"), fail_on={3})
    p = make_pipeline(make_layer("cam", src))
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        outs = [p.render(ctx())[0, 0, 0] for _ in range(2)]
        outs.append(p.render(ctx())[0, 0, 0])  # call 3 raises: frame 2 again
        outs.append(p.render(ctx())[0, 0, 0])  # in back-off: not called, frame 2 again
        now.t += 1.0
        outs.append(p.render(ctx())[0, 0, 0])  # retried: call 4
    assert outs == [1, 2, 2, 2, 4]
    assert src.calls == 4
    errs = errors(caplog)
    assert len(errs) == 1 and "testkit:counting in layer 'cam'" in errs[0].getMessage()


def test_a_source_that_fails_before_any_frame_leaves_the_layers_below(now):
    src = CountingSource(cfg("cam"), fail_on={1})
    p = make_pipeline(colour_layer("bg", (0, 0, 255)), make_layer("cam", src))
    np.testing.assert_array_equal(p.render(ctx()), frame_of((0, 0, 255)))
    assert p.faults()[0]["element"] == "testkit:counting in layer 'cam'"


def test_effects_still_run_on_a_repeated_source_frame(now):
    src = CountingSource(cfg("cam"), fail_on={2})
    eff = AddEffect(cfg("cam"))
    p = make_pipeline(make_layer("cam", src, [("boost", eff)]))
    p.render(ctx())
    out = p.render(ctx())
    np.testing.assert_array_equal(out, frame_of((11, 11, 11)))
    assert eff.calls == 2


# --- fault isolation: open() ---------------------------------------------------------------------------------------


def test_an_effect_whose_open_fails_is_bypassed_for_good(now, caplog):
    eff = BrokenOpenEffect(cfg("fg"))
    layer = make_layer("fg", ColourSource(cfg("fg"), {"r": 40}), [("cam", eff)])
    with caplog.at_level(logging.INFO, logger="vprod.engine"):
        p = make_pipeline(layer)
        for _ in range(5):
            np.testing.assert_array_equal(p.render(ctx()), frame_of((40, 0, 0)))
            now.t += 100.0
    assert eff.calls == 0
    assert p.faults() == [{"element": "testkit:brokenopen in layer 'fg'", "faults": 0,
                           "error": "device /dev/video9 is busy", "running": False}]
    errs = errors(caplog)
    assert len(errs) == 1
    assert "testkit:brokenopen in layer 'fg'" in errs[0].getMessage()
    assert "device /dev/video9 is busy" in errs[0].getMessage()


def test_a_source_whose_open_fails_never_runs_and_its_layer_is_empty(now):
    src = BrokenOpenSource(cfg("clip"))
    p = make_pipeline(colour_layer("bg", (0, 80, 0)), make_layer("clip", src))
    for _ in range(3):
        np.testing.assert_array_equal(p.render(ctx()), frame_of((0, 80, 0)))
        now.t += 100.0
    assert src.calls == 0
    assert p.faults()[0]["running"] is False


def test_other_elements_still_open_after_one_fails():
    opened = []

    class RecordingEffect(AddEffect):
        def open(self):
            opened.append(self.config.name)

    a = BrokenOpenEffect(cfg("fg"))
    b = RecordingEffect(ElementConfig(layer="fg", name="after", width=W, height=H))
    make_pipeline(make_layer("fg", ColourSource(cfg("fg")), [("broken", a), ("after", b)]))
    assert opened == ["after"]


def test_close_all_closes_every_element_even_if_one_raises(caplog):
    closed = []

    class ClosingSource(ColourSource):
        def close(self):
            closed.append(self.config.layer)

    class BadCloseSource(ColourSource):
        def close(self):
            raise RuntimeError("stuck")

    p = make_pipeline(make_layer("a", BadCloseSource(cfg("a"))), make_layer("b", ClosingSource(cfg("b"))))
    with caplog.at_level(logging.WARNING, logger="vprod.engine"):
        p.close_all()
    assert closed == ["b"]
    assert any("stuck" in r.getMessage() for r in caplog.records)


def test_a_healthy_pipeline_reports_no_faults(now):
    p = make_pipeline(make_layer("fg", ColourSource(cfg("fg")), [("boost", AddEffect(cfg("fg")))]))
    for _ in range(3):
        p.render(ctx())
    assert p.faults() == []


def test_slewed_layer_opacity_steps_with_the_pipeline():
    p = make_pipeline(colour_layer("bg", (0, 0, 0)), colour_layer("fg", (200, 200, 200)))
    p.layers[1].params.states["opacity"].slew = 0.1
    p.registry["/fg/opacity"][0].set(0.0)
    assert p.layers[1].params.opacity == 1.0
    p.step_params(1 / 30)
    assert 0.0 < p.layers[1].params.opacity < 1.0
