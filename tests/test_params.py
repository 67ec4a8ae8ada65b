"""Typed parameters: coercion and clamping in real units, the 0..1 view control surfaces speak, slew, triggers."""

from __future__ import annotations

import math

import pytest

from vprod.engine import (BoolParam, ChoiceParam, ColorParam, FloatParam, IntParam, ParamError, Params, ParamState,
                          TextParam, TriggerParam)

# --- float ---------------------------------------------------------------------------------------------------------


def test_float_keeps_values_in_range_and_clamps_the_rest():
    p = FloatParam(0.0, -2.0, 4.0)
    assert p.coerce(1.5) == 1.5
    assert p.coerce(3) == 3.0 and isinstance(p.coerce(3), float)
    assert p.coerce(-10) == -2.0
    assert p.coerce(99.5) == 4.0


def test_float_normalized_endpoints_and_midpoint():
    p = FloatParam(0.0, -2.0, 4.0)
    assert p.to_norm(-2.0) == 0.0
    assert p.to_norm(4.0) == 1.0
    assert p.to_norm(1.0) == pytest.approx(0.5)
    assert p.from_norm(0.0) == -2.0
    assert p.from_norm(1.0) == 4.0
    assert p.from_norm(0.25) == pytest.approx(-0.5)


def test_float_from_norm_clamps_outside_0_1():
    p = FloatParam(0.0, 10.0, 20.0)
    assert p.from_norm(-0.5) == 10.0
    assert p.from_norm(1.7) == 20.0


@pytest.mark.parametrize("x", [0.0, 0.1, 0.33, 0.5, 0.9, 1.0])
def test_float_norm_round_trip(x):
    p = FloatParam(0.0, -3.0, 5.0)
    assert p.to_norm(p.from_norm(x)) == pytest.approx(x)
    v = -1.25
    assert p.from_norm(p.to_norm(v)) == pytest.approx(v)


def test_float_with_zero_span_normalizes_to_zero_instead_of_dividing_by_zero():
    p = FloatParam(1.0, 1.0, 1.0)
    assert p.to_norm(1.0) == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "nan", "inf", "loud", None, [0.5], {"v": 1}])
def test_float_rejects_non_finite_and_non_numbers_naming_the_range(bad):
    p = FloatParam(0.0, 0.0, 2.0, unit="px")
    with pytest.raises(ParamError) as e:
        p.coerce(bad)
    assert "0..2 px" in str(e.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "x", None])
def test_float_from_norm_rejects_non_finite_naming_0_1(bad):
    with pytest.raises(ParamError, match=r"0\.\.1"):
        FloatParam(0.0, 0.0, 2.0).from_norm(bad)


def test_float_rejects_a_boolean_like_int_does():
    with pytest.raises(ParamError):
        FloatParam(0.0, 0.0, 1.0).coerce(True)


# --- int -----------------------------------------------------------------------------------------------------------


def test_int_rounds_and_clamps():
    p = IntParam(5, 1, 10)
    assert p.coerce(3) == 3
    assert p.coerce(3.7) == 4 and isinstance(p.coerce(3.7), int)
    assert p.coerce(-4) == 1
    assert p.coerce(1000) == 10


def test_int_normalized_endpoints_and_round_trip():
    p = IntParam(0, 10, 20)
    assert p.to_norm(10) == 0.0
    assert p.to_norm(20) == 1.0
    assert p.to_norm(15) == 0.5
    assert p.from_norm(0.0) == 10
    assert p.from_norm(1.0) == 20
    assert p.from_norm(0.52) == 15 and isinstance(p.from_norm(0.52), int)
    for v in range(10, 21):
        assert p.from_norm(p.to_norm(v)) == v


@pytest.mark.parametrize("bad", [True, False, math.nan, math.inf, "many", None])
def test_int_rejects_booleans_non_finite_and_non_numbers_naming_the_range(bad):
    with pytest.raises(ParamError) as e:
        IntParam(0, 0, 8, unit="steps").coerce(bad)
    assert "0..8 steps" in str(e.value)


# --- bool ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), (1, True), (0, False), (0.7, True),
                                            (0.2, False), ("on", True), ("off", False), ("TRUE", True),
                                            ("false", False), ("1", True), ("0", False)])
def test_bool_accepts_booleans_numbers_and_words(value, expected):
    assert BoolParam().coerce(value) is expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, "maybe", None, [1]])
def test_bool_rejects_everything_else_naming_true_false(bad):
    with pytest.raises(ParamError, match="true/false"):
        BoolParam().coerce(bad)


def test_bool_norm_is_0_or_1_and_round_trips():
    p = BoolParam()
    assert p.to_norm(True) == 1.0 and p.to_norm(False) == 0.0
    assert p.from_norm(1.0) is True and p.from_norm(0.0) is False
    assert p.from_norm(0.49) is False and p.from_norm(0.5) is True
    for v in (True, False):
        assert p.from_norm(p.to_norm(v)) is v
    with pytest.raises(ParamError):
        p.from_norm(math.nan)


# --- choice --------------------------------------------------------------------------------------------------------

MODES = ("gauss", "box", "median", "bilateral", "none")


def test_choice_default_is_the_first_choice():
    assert ChoiceParam(choices=MODES).default == "gauss"


def test_choice_accepts_a_name_or_an_index():
    p = ChoiceParam(choices=MODES)
    assert p.coerce("median") == "median"
    assert p.coerce(3) == "bilateral"


@pytest.mark.parametrize("bad", ["Gauss", "sharpen", 5, -1, True, 1.0, None])
def test_choice_rejects_unknown_values_listing_every_choice(bad):
    with pytest.raises(ParamError) as e:
        ChoiceParam(choices=MODES).coerce(bad)
    assert "gauss, box, median, bilateral, none" in str(e.value)


def test_choice_spreads_evenly_over_0_1():
    p = ChoiceParam(choices=MODES)
    assert [p.to_norm(c) for c in MODES] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [p.from_norm(x) for x in (0.0, 0.25, 0.5, 0.75, 1.0)] == list(MODES)
    # Each choice owns the band around its point.
    assert p.from_norm(0.1) == "gauss"
    assert p.from_norm(0.2) == "box"
    assert p.from_norm(0.6) == "median"
    assert p.from_norm(0.9) == "none"
    assert p.from_norm(-3) == "gauss" and p.from_norm(7) == "none"


def test_choice_from_norm_also_takes_a_name():
    p = ChoiceParam(choices=MODES)
    assert p.from_norm("box") == "box"
    with pytest.raises(ParamError):
        p.from_norm("blur")


def test_choice_with_one_option_normalizes_to_zero():
    assert ChoiceParam(choices=("only",)).to_norm("only") == 0.0


# --- colour --------------------------------------------------------------------------------------------------------


def test_color_from_hex_string():
    p = ColorParam()
    assert p.coerce("#ff8000") == pytest.approx((1.0, 128 / 255, 0.0))
    assert p.coerce("#000000") == (0.0, 0.0, 0.0)
    assert p.coerce("#FFFFFF") == (1.0, 1.0, 1.0)


def test_color_from_list_clamps_each_channel():
    assert ColorParam().coerce([0.2, -1, 3]) == (0.2, 0.0, 1.0)
    assert ColorParam().coerce((0.1, 0.2, 0.3)) == (0.1, 0.2, 0.3)


def test_color_norm_is_the_rgb_list_and_round_trips():
    p = ColorParam()
    c = p.coerce("#336699")
    assert p.to_norm(c) == pytest.approx([0x33 / 255, 0x66 / 255, 0x99 / 255])
    assert p.from_norm(p.to_norm(c)) == pytest.approx(c)
    assert p.from_norm("#336699") == pytest.approx(c)


@pytest.mark.parametrize("bad", ["#fff", "#gg0000", "red", "ff8000", [0.1, 0.2], [0.1, 0.2, 0.3, 0.4],
                                 [0.1, math.nan, 0.3], [0.1, "x", 0.3], 5, None])
def test_color_rejects_malformed_values_naming_the_forms(bad):
    with pytest.raises(ParamError) as e:
        ColorParam().coerce(bad)
    msg = str(e.value)
    assert "#rrggbb" in msg or "0..1" in msg


# --- text, trigger -------------------------------------------------------------------------------------------------


def test_text_accepts_strings_up_to_max_len():
    p = TextParam(max_len=5)
    assert p.coerce("hello") == "hello"
    with pytest.raises(ParamError, match="5 characters"):
        p.coerce("hello!")
    with pytest.raises(ParamError):
        p.coerce(3)


def test_trigger_accepts_anything_and_stores_nothing():
    p = TriggerParam()
    assert p.coerce("whatever") == 0
    assert p.to_norm(5) == 0.0 and p.from_norm(1.0) == 0


# --- describe ------------------------------------------------------------------------------------------------------


def test_describe_carries_type_range_default_and_doc():
    d = FloatParam(0.5, 0.0, 2.0, unit="px", slew=0.1, doc="Radius").describe()
    assert d == {"type": "float", "default": 0.5, "doc": "Radius", "min": 0.0, "max": 2.0, "unit": "px", "slew": 0.1}
    d = IntParam(3, 1, 9).describe()
    assert (d["type"], d["min"], d["max"], d["default"]) == ("int", 1, 9, 3)
    d = ChoiceParam(choices=("a", "b")).describe()
    assert (d["type"], d["choices"], d["default"]) == ("choice", ["a", "b"], "a")


# --- live state: slew ----------------------------------------------------------------------------------------------


def test_without_slew_a_set_takes_effect_at_once():
    st = ParamState(FloatParam(0.0, 0.0, 1.0), 0.0, 0.0)
    st.set(0.8)
    assert st.value == 0.8 and st.target == 0.8
    st.step(1 / 30)
    assert st.value == 0.8


def test_set_clamps_and_an_invalid_set_leaves_the_state_untouched():
    st = ParamState(FloatParam(0.0, 0.0, 1.0), 0.3, 0.3)
    st.set(7)
    assert st.value == 1.0
    with pytest.raises(ParamError):
        st.set(math.nan)
    assert st.value == 1.0 and st.target == 1.0


def test_slew_moves_gradually_towards_the_target_and_reaches_it():
    st = ParamState(FloatParam(0.0, 0.0, 1.0), 0.0, 0.0, slew=0.1)
    st.set(1.0)
    assert st.value == 0.0 and st.target == 1.0  # nothing moves until the frame steps
    dt = 1 / 30
    st.step(dt)
    # One-pole smoothing: the first step covers 1 - exp(-dt / slew) of the way.
    assert st.value == pytest.approx(1 - math.exp(-dt / 0.1))
    seen = [st.value]
    for _ in range(200):
        st.step(dt)
        seen.append(st.value)
        if st.value == st.target:
            break
    assert all(b >= a for a, b in zip(seen, seen[1:]))  # monotone, no overshoot
    assert all(v <= 1.0 for v in seen)
    assert st.value == 1.0  # snapped exactly onto the target
    assert len(seen) > 5  # it took several frames, not one


def test_slew_follows_a_retarget_downwards():
    st = ParamState(FloatParam(0.0, 0.0, 10.0), 5.0, 5.0, slew=0.05)
    st.set(2.0)
    st.step(0.05)
    assert st.value == pytest.approx(5.0 - 3.0 * (1 - math.exp(-1)))
    for _ in range(100):
        st.step(0.05)
    assert st.value == 2.0


def test_params_build_applies_slew_from_spec_or_override():
    specs = {"a": FloatParam(0.0, 0.0, 1.0, slew=0.2), "b": FloatParam(0.0, 0.0, 1.0)}
    p = Params.build(specs)
    assert p.states["a"].slew == 0.2 and p.states["b"].slew == 0.0
    p = Params.build(specs, slew={"a": 0.0, "b": 0.5})
    assert p.states["a"].slew == 0.0 and p.states["b"].slew == 0.5
    p.states["a"].set(1.0)
    assert p.a == 1.0  # slew 0 overrides the spec's: a jump
    p.states["b"].set(1.0)
    assert p.b == 0.0
    p.step(0.5)
    assert 0.0 < p.b < 1.0


def test_slew_on_a_non_float_parameter_is_ignored():
    st = ParamState(IntParam(0, 0, 10), 0, 0, slew=1.0)
    st.set(7)
    assert st.value == 7


# --- Params: values, attribute access, triggers --------------------------------------------------------------------


def test_params_build_coerces_defaults_and_preset_values():
    specs = {"r": FloatParam(0.2, 0.0, 1.0), "n": IntParam(3, 0, 5), "mode": ChoiceParam(choices=("x", "y")),
             "c": ColorParam("#ff0000")}
    p = Params.build(specs, {"r": 4.0, "mode": "y"})
    assert p.r == 1.0 and p.n == 3 and p.mode == "y" and p.c == (1.0, 0.0, 0.0)
    assert p.get("n") == 3
    assert p.values() == {"r": 1.0, "n": 3, "mode": "y", "c": (1.0, 0.0, 0.0)}
    with pytest.raises(AttributeError):
        p.nope  # noqa: B018
    with pytest.raises(ParamError):
        Params.build(specs, {"n": "lots"})


def test_a_trigger_is_pending_from_set_until_cleared():
    p = Params.build({"reset": TriggerParam()})
    p.states["reset"].set(1)
    assert p.fired("reset")
    p.clear_triggers()
    assert not p.fired("reset")


def test_trigger_fires_once_on_the_next_frame_and_is_cleared():
    p = Params.build({"reset": TriggerParam(), "x": FloatParam(0.0)})
    assert not p.fired("reset")
    assert "reset" not in p.values()
    p.states["reset"].set("go")
    # The frame: step, the element reads, the loop clears.
    p.step(1 / 30)
    assert p.fired("reset")
    assert p.reset == 1  # the value counts firings
    p.clear_triggers()
    # Next frame: nothing fires.
    p.step(1 / 30)
    assert not p.fired("reset")
    assert p.reset == 1
    p.clear_triggers()
    # A second set fires it again, once.
    p.states["reset"].set(None)
    p.step(1 / 30)
    assert p.fired("reset") and p.reset == 2
    p.clear_triggers()
    p.step(1 / 30)
    assert not p.fired("reset") and p.reset == 2
