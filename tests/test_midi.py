"""The MIDI control: mapping math with mido.Message objects and hand-made parameter states (unit, no backend), then
a real `vprod run` driven by a second process through real JACK MIDI ports (dummy driver), read back through the
ZeroMQ frame stream, the ZeroMQ status and a port that listens to the daemon's feedback (integration)."""

from __future__ import annotations

import json
import math
import queue
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import mido
import pytest

from daemon_helpers import WAIT, Control, FrameStream, centre, run_vprod, solid_preset_text
from peers import clean_env, kill_pid, stop_pid
from peers.jack import JackServer
from vprod import presets
from vprod.control import midi
from vprod.control.midi import ClockFollower, Mapper, feedback_bytes, learn_mapping, parse_maps
from vprod.engine import BoolParam, FloatParam, IntParam, ParamState, TriggerParam
from vprod.plugins import PluginRegistry

PEER = Path(__file__).resolve().parent / "peers" / "midi_peer.py"


# --- unit: mappings on hand-made parameter states ---
def cc(control, value, channel=0):
    return mido.Message("control_change", control=control, value=value, channel=channel)


def note(n, velocity=100, channel=0):
    return mido.Message("note_on", note=n, velocity=velocity, channel=channel)


class Params:
    """A stand-in for Engine.resolve with a frame loop that applies what the mapper posts."""

    def __init__(self, **specs):
        self.states = {f"/bg/{k}": ParamState(s, s.coerce(s.default) if not isinstance(s, TriggerParam) else 0,
                                              s.coerce(s.default) if not isinstance(s, TriggerParam) else 0)
                       for k, s in specs.items()}
        self.reports: list[tuple[str, str]] = []

    def resolve(self, path):
        try:
            return self.states[path]
        except KeyError:
            raise KeyError(f"no parameter at {path!r}") from None

    def mapper(self, entries, learned=()):
        maps, errors = parse_maps(entries, "midi.map", "test.toml")
        assert not errors, errors
        learned_maps, errors = parse_maps(list(learned), "midi.map", "learn")
        assert not errors, errors
        return Mapper(maps, learned_maps, lambda kind, msg: self.reports.append((kind, msg)))

    def feed(self, mapper, *msgs, apply=True):
        """Hand messages to the mapper; returns the real values posted (applied at once unless apply=False)."""
        out = []
        for msg in msgs:
            _, posts = mapper.handle(msg, self.resolve)
            for _m, path, real in posts:
                out.append((path, real))
                if apply:
                    self.states[path].set(real)
        return out

    def value(self, name):
        return self.states[f"/bg/{name}"].target


def test_curves_are_each_others_inverse_and_keep_the_ends():
    for name in midi.CURVES:
        assert midi.curve(name, 0.0) == pytest.approx(0.0)
        assert midi.curve(name, 1.0) == pytest.approx(1.0)
        xs = [i / 20 for i in range(21)]
        ys = [midi.curve(name, x) for x in xs]
        assert ys == sorted(ys), f"{name} must rise"
        for x in xs:
            assert midi.curve_inverse(name, midi.curve(name, x)) == pytest.approx(x, abs=1e-12)
    assert midi.curve("exp", 0.5) < 0.2  # fine steps at the low end
    assert midi.curve("log", 0.5) > 0.8  # … and at the high end


def test_absolute_cc_goes_through_range_and_curve_to_the_parameter_units():
    p = Params(r=FloatParam(0.0, 0.0, 1.0), hue=FloatParam(0.0, 0.0, 360.0))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "range": [0.2, 0.8], "takeover": False},
                  {"cc": 2, "target": "/bg/hue", "curve": "exp", "takeover": False}])
    assert p.feed(m, cc(1, 0), cc(1, 127)) == [("/bg/r", pytest.approx(0.2)), ("/bg/r", pytest.approx(0.8))]
    assert p.feed(m, cc(1, 64))[0][1] == pytest.approx(0.2 + 0.6 * 64 / 127)
    (path, hue), = p.feed(m, cc(2, 64))
    assert path == "/bg/hue" and hue == pytest.approx(360.0 * midi.curve("exp", 64 / 127))
    assert p.feed(m, cc(3, 64)) == []  # not mapped


def test_an_inverted_range_turns_the_control_around():
    p = Params(r=FloatParam(0.0))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "range": [1.0, 0.0], "takeover": False}])
    assert [v for _, v in p.feed(m, cc(1, 0), cc(1, 127))] == [pytest.approx(1.0), pytest.approx(0.0)]


def test_channel_filters_and_absent_channel_takes_any():
    p = Params(r=FloatParam(0.0), g=FloatParam(0.0))
    m = p.mapper([{"cc": 7, "channel": 2, "target": "/bg/r", "takeover": False},
                  {"cc": 8, "target": "/bg/g", "takeover": False}])
    assert p.feed(m, cc(7, 127, channel=0)) == []
    assert p.feed(m, cc(7, 127, channel=1)) == [("/bg/r", 1.0)]
    assert p.feed(m, cc(8, 127, channel=15)) == [("/bg/g", 1.0)]


def test_soft_takeover_ignores_the_knob_until_it_reaches_the_value():
    p = Params(r=FloatParam(0.5))
    m = p.mapper([{"cc": 1, "target": "/bg/r"}])  # takeover is on by default for absolute CCs
    assert p.feed(m, cc(1, 0), cc(1, 20), cc(1, 40)) == []
    assert p.value("r") == 0.5
    assert m.waiting() == ["cc 1 (any channel, absolute) → /bg/r"]
    assert p.feed(m, cc(1, 63))[0][1] == pytest.approx(63 / 127)  # within one step of 0.5: picked up
    assert p.feed(m, cc(1, 10))[0][1] == pytest.approx(10 / 127)  # and follows from then on
    assert m.waiting() == []


def test_soft_takeover_picks_up_when_the_knob_jumps_across_the_value():
    p = Params(r=FloatParam(0.5))
    m = p.mapper([{"cc": 1, "target": "/bg/r"}])
    assert p.feed(m, cc(1, 30)) == []
    assert p.feed(m, cc(1, 90))[0][1] == pytest.approx(90 / 127)  # jumped over 0.5 (a fast turn): picked up


def test_soft_takeover_starts_again_after_another_source_changed_the_value():
    p = Params(r=FloatParam(0.5))
    m = p.mapper([{"cc": 1, "target": "/bg/r"}])
    p.feed(m, cc(1, 64), cc(1, 70))
    assert p.value("r") == pytest.approx(70 / 127)
    p.states["/bg/r"].set(0.1)  # ZeroMQ, OSC or a preset moved it
    m.release("/bg/r")
    assert p.feed(m, cc(1, 80)) == []
    assert p.value("r") == 0.1


def test_a_value_outside_the_range_is_picked_up_at_the_ranges_end():
    p = Params(r=FloatParam(0.9))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "range": [0.0, 0.5]}])
    assert p.feed(m, cc(1, 100)) == []
    assert p.feed(m, cc(1, 127)) == [("/bg/r", pytest.approx(0.5))]


def test_takeover_off_jumps_at_once():
    p = Params(r=FloatParam(0.5))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "takeover": False}])
    assert p.feed(m, cc(1, 0)) == [("/bg/r", 0.0)]


@pytest.mark.parametrize("mode, up, down", [("relative", 1, 127), ("relative-signed", 1, 65),
                                            ("relative-offset", 65, 63)])
def test_relative_encoders_step_from_the_current_value(mode, up, down):
    p = Params(r=FloatParam(0.5))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "mode": mode, "step": 0.1}])
    assert p.feed(m, cc(1, up))[0][1] == pytest.approx(0.6)
    assert p.feed(m, cc(1, down), cc(1, down))[-1][1] == pytest.approx(0.4)
    assert p.feed(m, *[cc(1, down)] * 10)[-1][1] == 0.0  # clamped at the range's end
    assert midi.relative_delta(mode, up + 2 if mode != "relative-offset" else 67) == 3


def test_relative_encoder_counts_every_tick_between_frames():
    """Ticks faster than the frame loop: the parameter has not moved yet, the encoder's own position has."""
    p = Params(r=FloatParam(0.5))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "mode": "relative", "step": 0.05}])
    posts = p.feed(m, cc(1, 1), cc(1, 1), cc(1, 2), apply=False)
    assert posts[-1][1] == pytest.approx(0.7)


def test_14bit_pair_moves_on_the_lsb_with_the_last_msb():
    p = Params(r=FloatParam(0.0))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "mode": "14bit", "takeover": False}])
    assert p.feed(m, cc(1, 64)) == []  # the MSB alone waits for its LSB
    assert p.feed(m, cc(33, 0)) == [("/bg/r", pytest.approx(8192 / 16383))]
    assert p.feed(m, cc(33, 127)) == [("/bg/r", pytest.approx(8319 / 16383))]
    assert p.feed(m, cc(1, 127), cc(33, 127)) == [("/bg/r", pytest.approx(1.0))]


def test_14bit_pair_with_takeover_uses_a_fine_tolerance():
    p = Params(r=FloatParam(0.5))
    m = p.mapper([{"cc": 0, "target": "/bg/r", "mode": "14bit"}])
    assert p.feed(m, cc(0, 60), cc(32, 0)) == []  # 0.469: more than 1/512 away
    assert p.feed(m, cc(0, 64), cc(32, 0)) == [("/bg/r", pytest.approx(8192 / 16383))]


def test_note_toggle_flips_between_the_ends_and_ignores_releases():
    p = Params(g=FloatParam(0.2), on=BoolParam(False))
    m = p.mapper([{"note": 60, "target": "/bg/g", "mode": "toggle"},
                  {"cc": 64, "target": "/bg/on", "mode": "toggle"}])
    assert p.feed(m, note(60)) == [("/bg/g", 1.0)]  # 0.2 is nearer the low end: it was off
    assert p.feed(m, note(60, 0), mido.Message("note_off", note=60)) == []
    assert p.feed(m, note(60)) == [("/bg/g", 0.0)]
    assert p.feed(m, cc(64, 127), cc(64, 0)) == [("/bg/on", True)]  # a CC button: press ≥ 64, release ignored
    assert p.feed(m, cc(64, 127)) == [("/bg/on", False)]


def test_trigger_fires_a_trigger_parameter_and_is_momentary_elsewhere():
    p = Params(reset=TriggerParam(), g=FloatParam(0.0))
    m = p.mapper([{"note": 36, "target": "/bg/reset"}, {"note": 37, "target": "/bg/g", "range": [0.1, 0.9]},
                  {"cc": 20, "target": "/bg/reset", "takeover": False}])
    assert p.feed(m, note(36), note(36, 0)) == [("/bg/reset", 0)]  # one firing per press
    assert p.states["/bg/reset"].fired == 1
    assert p.feed(m, note(37)) == [("/bg/g", pytest.approx(0.9))]
    assert p.feed(m, mido.Message("note_off", note=37)) == [("/bg/g", pytest.approx(0.1))]
    # a knob on a trigger fires as it passes the middle upwards, once
    assert [v for _, v in p.feed(m, cc(20, 10), cc(20, 70), cc(20, 90), cc(20, 30), cc(20, 100))] == [0, 0]


def test_pitch_bend_spans_the_whole_range():
    p = Params(b=FloatParam(0.6), n=IntParam(0, 0, 10))
    m = p.mapper([{"pitchbend": True, "target": "/bg/b"}, {"pitchbend": True, "channel": 2, "target": "/bg/n"}])
    assert p.feed(m, mido.Message("pitchwheel", pitch=8191)) == [("/bg/b", 1.0)]
    assert p.feed(m, mido.Message("pitchwheel", pitch=-8192)) == [("/bg/b", 0.0)]
    assert p.feed(m, mido.Message("pitchwheel", pitch=0, channel=1)) == [("/bg/b", pytest.approx(8192 / 16383)),
                                                                          ("/bg/n", 5)]


def test_a_learned_mapping_wins_over_the_presets_for_the_same_control():
    p = Params(r=FloatParam(0.0), g=FloatParam(0.0))
    m = p.mapper([{"cc": 1, "target": "/bg/r", "takeover": False}, {"cc": 2, "target": "/bg/r", "takeover": False}],
                 learned=[{"cc": 1, "channel": 1, "target": "/bg/g", "takeover": False}])
    assert p.feed(m, cc(1, 127)) == [("/bg/g", 1.0)]
    assert p.feed(m, cc(1, 127, channel=3)) == [("/bg/r", 1.0)]  # learned on channel 1 only
    assert p.feed(m, cc(2, 0)) == [("/bg/r", 0.0)]


def test_a_mapping_to_a_missing_parameter_is_reported_and_changes_nothing():
    p = Params(r=FloatParam(0.3))
    m = p.mapper([{"cc": 1, "target": "/nope/r", "takeover": False}, {"cc": 1, "target": "/bg/r", "takeover": False}])
    assert p.feed(m, cc(1, 127)) == [("/bg/r", 1.0)]
    assert p.reports == [("unknown-target", "test.toml: midi.map[0]: no parameter '/nope/r' in the playing preset "
                                            "(see `vprod params`)")]


def test_feedback_bytes_for_each_kind_of_control():
    f = FloatParam(0.0)
    (m_cc, m_14, m_note, m_pb, m_btn, m_inv), errors = parse_maps([
        {"cc": 20, "channel": 2, "target": "/bg/r"}, {"cc": 1, "target": "/bg/r", "mode": "14bit"},
        {"note": 60, "target": "/bg/g", "mode": "toggle"}, {"pitchbend": True, "target": "/bg/b"},
        {"cc": 64, "target": "/bg/g", "mode": "toggle", "range": [0.2, 0.4]},
        {"cc": 21, "target": "/bg/r", "range": [1.0, 0.0], "curve": "exp"}], "midi.map")
    assert not errors
    assert feedback_bytes(m_cc, f, 0.5) == [[0xB1, 20, 64]]
    assert feedback_bytes(m_14, f, 0.25) == [[0xB0, 1, 4096 >> 7], [0xB0, 33, 4096 & 0x7F]]
    assert feedback_bytes(m_note, f, 1.0) == [[0x90, 60, 127]]
    assert feedback_bytes(m_note, f, 0.0) == [[0x90, 60, 0]]
    assert feedback_bytes(m_pb, f, 1.0) == [[0xE0, 0x7F, 0x7F]]
    assert feedback_bytes(m_btn, f, 0.35) == [[0xB0, 64, 127]]
    assert feedback_bytes(m_inv, f, 1.0) == [[0xB0, 21, 0]]
    assert feedback_bytes(m_inv, f, 1 - midi.curve("exp", 40 / 127)) == [[0xB0, 21, 40]]  # the knob's position
    assert feedback_bytes(m_cc, TriggerParam(), 0) == []


BAD_ENTRIES = [
    ({"cc": 128, "target": "/bg/r"}, "midi.map[0].cc", "128 is not allowed (integer 0..127)"),
    ({"cc": 1, "note": 2, "target": "/bg/r"}, "midi.map[0]", "needs exactly one of"),
    ({"target": "/bg/r"}, "midi.map[0]", "needs exactly one of"),
    ({"cc": 1, "channel": 0, "target": "/bg/r"}, "midi.map[0].channel", "integer 1..16"),
    ({"cc": 1, "target": "bg"}, "midi.map[0].target", "is not a parameter path"),
    ({"cc": 1}, "midi.map[0].target", "missing"),
    ({"cc": 1, "target": "/bg/r", "range": [0, 2]}, "midi.map[0].range", "each 0..1"),
    ({"cc": 1, "target": "/bg/r", "curve": "cubic"}, "midi.map[0].curve", "one of linear, exp, log"),
    ({"cc": 1, "target": "/bg/r", "mode": "spin"}, "midi.map[0].mode", "is not allowed"),
    ({"note": 1, "target": "/bg/r", "mode": "relative"}, "midi.map[0].mode", "does not go with note"),
    ({"cc": 40, "target": "/bg/r", "mode": "14bit"}, "midi.map[0].cc", "MSB controller 0..31"),
    ({"cc": 1, "target": "/bg/r", "takeover": "yes"}, "midi.map[0].takeover", "must be true or false"),
    ({"cc": 1, "target": "/bg/r", "step": 0.1}, "midi.map[0].step", "only relative encoders"),
    ({"cc": 1, "target": "/bg/r", "mode": "relative", "step": 0}, "midi.map[0].step", "number > 0"),
    ({"cc": 1, "target": "/bg/r", "knob": 1}, "midi.map[0].knob", "unknown key"),
    ({"pitchbend": 1, "target": "/bg/r"}, "midi.map[0].pitchbend", "pitchbend = true"),
]


@pytest.mark.parametrize("entry, key, message", BAD_ENTRIES)
def test_each_bad_map_entry_is_one_error_naming_its_key(entry, key, message):
    maps, errors = parse_maps([entry], "midi.map")
    assert maps == []
    assert len(errors) == 1 and errors[0][0] == key and message in errors[0][1], errors


def test_a_preset_with_a_bad_midi_section_is_refused_naming_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(solid_preset_text("bad", (0.1, 0.2, 0.6), extra=(
        '[midi]\ninput = 3\noutput = true\nbackend = "mido.backends.rtmidi/NOPE"\nwhat = 1\n'
        '[[midi.map]]\ncc = 1\ntarget = "/bg/r"\n[[midi.map]]\nnote = 200\ntarget = "/bg/g"\n')))
    with pytest.raises(presets.PresetInvalid) as e:
        presets.load(path, PluginRegistry())
    lines = str(e.value).splitlines()
    assert lines == [
        f"{path}: midi.input: 3 must be a non-empty string",
        f"{path}: midi.output: True must be a port name substring, or false for no feedback",
        f"{path}: midi.backend: unknown rtmidi API 'NOPE' (allowed: {', '.join(midi.RTMIDI_APIS)})",
        f"{path}: midi.what: unknown key (allowed: {', '.join(midi.SECTION_KEYS)})",
        f"{path}: midi.map[1].note: 200 is not allowed (integer 0..127)",
    ]


def test_map_file_and_learn_file_load_relative_to_the_preset(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "nk.toml").write_text('[[midi.map]]\ncc = 2\ntarget = "/bg/g"\n')
    (tmp_path / "show.midi-learn").write_text('[[midi.map]]\nnote = 40\nchannel = 1\ntarget = "/bg/b"\n')
    cfg = midi.load_config({"map_file": "maps/nk.toml", "map": [{"cc": 1, "target": "/bg/r"}]}, tmp_path / "show.toml")
    assert cfg.errors == []
    assert [m.describe() for m in cfg.maps] == ["cc 1 (any channel, absolute) → /bg/r",
                                                "cc 2 (any channel, absolute) → /bg/g"]
    assert [m.describe() for m in cfg.learned] == ["note 40 (channel 1, trigger) → /bg/b"]
    assert cfg.learn_file == (tmp_path / "show.midi-learn").resolve()
    assert cfg.maps[0].takeover and cfg.maps[0].where == f"{tmp_path / 'show.toml'}: midi.map[0]"


def test_a_bad_map_file_is_one_error_per_problem_naming_that_file_and_key(tmp_path):
    bad = tmp_path / "bad-map.toml"
    bad.write_text('[[midi.map]]\ncc = 1\ntarget = "/bg/r"\n[[midi.map]]\ncc = 1\ncurve = "s"\ntarget = "/bg/g"\n'
                   '[osc]\nport = 1\n')
    cfg = midi.load_config({"map_file": "bad-map.toml", "map": [{"cc": 3, "target": "/bg/r"}]}, tmp_path / "x.toml")
    assert cfg.errors == [f"{bad}: osc: unknown key (a map file holds [[midi.map]] tables only)",
                          f"{bad}: midi.map[1].curve: 's' is not allowed (one of linear, exp, log)"]
    assert [m.number for m in cfg.maps] == [3]  # the preset's own mappings still work; the file's are all off
    missing = midi.load_config({"map_file": "nope.toml"}, tmp_path / "x.toml")
    assert missing.errors == [f"{tmp_path / 'x.toml'}: midi.map_file: {tmp_path / 'nope.toml'} does not exist"]
    (tmp_path / "y.midi-learn").write_text("[[midi.map]\n")
    assert "not valid TOML" in midi.load_config({}, tmp_path / "y.toml").errors[0]


def test_learned_mappings_are_written_as_toml_that_reads_back(tmp_path):
    f = FloatParam(0.0)
    made = [learn_mapping(cc(21, 5, channel=3), "/bg/r", f), learn_mapping(note(60), "/bg/on", BoolParam()),
            learn_mapping(cc(64, 127), "/bg/reset", TriggerParam()),
            learn_mapping(mido.Message("pitchwheel", pitch=3), "/bg/b", f)]
    assert learn_mapping(mido.Message("note_off", note=60), "/bg/r", f) is None
    assert learn_mapping(note(60, 0), "/bg/r", f) is None
    path = tmp_path / "sub" / "x.midi-learn"
    midi.write_map_file(path, [m.entry() for m in made])
    maps, errors, entries = midi.read_map_file(path)
    assert errors == []
    assert entries == [{"cc": 21, "channel": 4, "target": "/bg/r"},
                       {"note": 60, "channel": 1, "target": "/bg/on", "mode": "toggle"},
                       {"cc": 64, "channel": 1, "target": "/bg/reset", "mode": "trigger"},
                       {"pitchbend": True, "channel": 1, "target": "/bg/b"}]
    assert [m.describe() for m in maps] == [m.describe() for m in made]
    assert maps[0].takeover and not maps[3].takeover


def jittered_ticks(bpm, beats, t0=100.0, period=1024 / 48000):
    """Clock ticks as JACK delivers them: each lands at the end of its ~21 ms period."""
    interval = 60 / bpm / 24
    return [t0 + math.ceil(i * interval / period) * period for i in range(beats * 24)]


def test_clock_fits_the_bpm_through_jack_period_jitter_and_pins_the_beats():
    c = ClockFollower()
    c.message(mido.Message("start"), 99.9)
    got = [r for t in jittered_ticks(120, 8) if (r := c.message(mido.Message("clock"), t)) is not None]
    assert len(got) == 7  # every beat once a beat of ticks is in
    bpm, beat_at = got[-1]
    assert bpm == pytest.approx(120, abs=0.6)
    # the 8th beat, 3.5 s after the first tick, plus JACK's delivery delay: within one period
    assert 100.0 + 7 * 0.5 <= beat_at <= 100.0 + 7 * 0.5 + 1024 / 48000
    assert c.status()["running"] is True and c.status()["beat"] == 8.0
    c.message(mido.Message("stop"), 104.0)
    assert c.status()["running"] is False
    c.message(mido.Message("songpos", pos=16), 104.1)  # bar 2 (16 sixteenths = 4 beats)
    assert c.index == 96


def test_clock_follows_a_tempo_change_within_a_few_beats():
    c = ClockFollower()
    for t in jittered_ticks(120, 8):
        c.tick(t)
    beats = [r for t in jittered_ticks(90, 6, t0=104.0) if (r := c.tick(t)) is not None]
    assert beats[-1][0] == pytest.approx(90, abs=0.6)  # 4 beats of the window are all at the new tempo
    assert beats[0][0] > 100  # the first beat after the change still remembers the old one
    c2 = ClockFollower()
    assert [c2.tick(t) for t in (1.0, 1.02)] == [None, None]  # no guess from two ticks


def test_zmq_learn_op_arms_the_midi_surface_or_says_why_not():
    from types import SimpleNamespace

    from vprod.control.zmq_control import RequestError, handle

    armed = []
    surface = SimpleNamespace(name="midi", cfg=SimpleNamespace(learn_file=Path("/x/show.midi-learn")),
                              arm=lambda path: armed.append(path) or (None if path == "/bg/r" else "no such path"))
    daemon = SimpleNamespace(engine=None, controls=[SimpleNamespace(name="zmq"), surface])
    assert handle(daemon, {"op": "learn", "path": "/bg/r"}) == {"ok": True, "learning": "/bg/r",
                                                                "learn_file": "/x/show.midi-learn"}
    with pytest.raises(RequestError, match="no such path"):
        handle(daemon, {"op": "learn", "path": "/bg/x"})
    with pytest.raises(RequestError, match="parameter path"):
        handle(daemon, {"op": "learn"})
    assert armed == ["/bg/r", "/bg/x"]
    with pytest.raises(RequestError, match=r"MIDI is off: .* no \[midi\] section"):
        handle(SimpleNamespace(engine=None, controls=[]), {"op": "learn", "path": "/bg/r"})


def test_no_midi_section_imports_neither_mido_nor_rtmidi(tmp_path):
    code = ("import sys; from types import SimpleNamespace as S\n"
            "from vprod.control import load_surfaces\n"
            "f = load_surfaces()['midi']\n"
            "assert f(S(), S(data={}, path=None, name='x')) is None\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mido', 'rtmidi')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_vprods_own_ports_are_never_taken_for_a_controller():
    own = ["vprod:vprod", "vprod-01:vprod-out", "vprod:vprod 128:0", "RtMidiIn Client:vprod"]
    others = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "vprod-test-src:vprod-test-src", "vprod-bench:vprod-bench"]
    assert [midi._own_port(n) for n in own + others] == [True] * len(own) + [False] * len(others)


def test_why_names_the_fix_for_a_missing_alsa_sequencer_or_jack():
    assert "JACK" in midi.why(OSError("MidiInAlsa::initialize: error creating ALSA sequencer client object."))
    assert "jackd -r -d dummy" in midi.why(OSError("MidiInJack::initialize: JACK server not running?"))


# --- integration: real JACK ports, a second process, a real daemon ---
class MidiPeer:
    """tests/peers/midi_peer.py as a subprocess: commands on stdin, "ok" / received messages on stdout."""

    def __init__(self, env: dict, *args: str, log: Path):
        self.args = args
        self._err = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(PEER), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True, bufsize=1,
                                     env=clean_env(**env))
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.line(30) == "ready", f"midi peer {args} did not start"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def line(self, timeout: float = WAIT) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"midi peer {self.args}: nothing within {timeout:g} s") from None

    def send(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = self.line(60)
        assert reply == "ok", reply

    def messages(self, until, timeout: float = WAIT) -> list[list[int]]:
        """Received messages, up to and including the first for which until(msg) is true."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never received the expected message; got {got}")
            got.append(json.loads(self.line(left)))
            if until(got[-1]):
                return got

    def kill(self) -> None:
        kill_pid(self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
        stop_pid(self.proc, 5)
        self._err.close()


@pytest.fixture
def jack():
    with JackServer() as server:
        yield server


@pytest.fixture
def midi_daemons(jack, daemons):
    """`daemons` that stop before the JACK server does (a server stopping under live clients is slower)."""
    return daemons


@pytest.fixture
def peers(jack, tmp_path):
    started: list[MidiPeer] = []

    def start(*args: str) -> MidiPeer:
        p = MidiPeer(jack.env(), *args, log=tmp_path / "midi-peers.log")
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


QUIET = "[osc]\nenabled = false\n"  # no OSC port for these daemons (tests may run side by side)


def midi_daemon(daemons, jack, tmp_path, midi_section: str, name: str = "show"):
    path = tmp_path / f"{name}.toml"
    path.write_text(solid_preset_text(name, (0.1, 0.2, 0.6), extra=QUIET + midi_section))
    d = daemons(path, outputs="zmq", args=["--size", "320x180", "--no-watch"], env=jack.env())
    d.wait_banner(60)
    return d


def midi_status(ctl) -> dict:
    return ctl.req("status")["status"]["controls"]["midi"]


def px(x: float) -> int:
    return round(x * 255)


@pytest.mark.integration
def test_cc_notes_and_pitch_bend_from_a_second_process_change_the_pixels(jack, midi_daemons, peers, tmp_path):
    d = midi_daemon(midi_daemons, jack, tmp_path, '[midi]\n'
                    '[[midi.map]]\ncc = 20\nchannel = 1\ntarget = "/bg/r"\n'
                    '[[midi.map]]\nnote = 60\ntarget = "/bg/g"\nmode = "toggle"\n'
                    '[[midi.map]]\npitchbend = true\ntarget = "/bg/b"\n')
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour((26, 51, 153))
        sender = peers("send", "--to", "vprod:vprod")
        sender.send(bytes=[0xB0, 20, 127])  # far from r = 0.1: soft takeover holds it
        sender.send(bytes=[0x90, 60, 100])  # toggles g on
        _, img = frames.wait_for(lambda h, im: centre(im)[1] == 255, what="g toggled on")
        assert centre(img)[0] == 26, "the CC moved r before the knob reached its value"
        assert midi_status(ctl)["takeover_waiting"] == ["cc 20 (channel 1, absolute) → /bg/r"]
        sender.send(sweep=[20, 0, 64])  # passes 0.1: picked up, then follows to 64
        frames.wait_for(lambda h, im: centre(im)[0] == px(64 / 127), what="r at CC 64")
        sender.send(bytes=[0xB0 | 2, 20, 0])  # channel 3: not this mapping
        sender.send(bytes=[0x90, 60, 100])
        sender.send(bytes=[0x80, 60, 0])
        _, img = frames.wait_for(lambda h, im: centre(im)[1] == 0, what="g toggled off")
        assert centre(img)[0] == px(64 / 127)
        sender.send(bytes=[0xE0, 0x7F, 0x7F])
        frames.wait_for(lambda h, im: centre(im)[2] == 255, what="pitch bend up")
        sender.send(bytes=[0xE0, 0x00, 0x00])
        frames.wait_for(lambda h, im: centre(im) == (px(64 / 127), 0, 0), what="pitch bend down")
        st = midi_status(ctl)
        assert st["bad_input"] == 0 and st["unmapped"] == 1 and st["posted"] >= 54
        assert d.proc.poll() is None and d.errors() == []


@pytest.mark.integration
def test_midi_clock_drives_the_daemons_tempo(jack, midi_daemons, peers, tmp_path):
    d = midi_daemon(midi_daemons, jack, tmp_path, "[midi]\n")
    with Control(d.control_port) as ctl:
        assert midi_status(ctl)["tempo"]["source"] == "default"
        sender = peers("send", "--to", "vprod:vprod")
        sender.send(clock=120, beats=10, start=True)
        st = midi_status(ctl)
        assert st["tempo"]["source"] == "midi" and st["tempo"]["bpm"] == pytest.approx(120, rel=0.03), st
        assert st["clock"]["running"] is True and st["clock"]["ticks"] == 240
        sender.send(clock=90, beats=10)
        st = midi_status(ctl)
        assert st["tempo"]["bpm"] == pytest.approx(90, rel=0.03), st
        sender.send(bytes=[0xFC])
        assert midi_status(ctl)["clock"]["running"] is False


@pytest.mark.integration
def test_learn_over_zmq_and_the_cli_saves_the_mapping_and_the_control_moves_the_param(jack, midi_daemons, peers,
                                                                                         tmp_path):
    d = midi_daemon(midi_daemons, jack, tmp_path, "[midi]\n")
    learn_file = tmp_path / "show.midi-learn"
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        assert ctl.req("learn", path="/bg/nope")["ok"] is False
        rep = ctl.req("learn", path="/bg/r")
        assert rep == {"ok": True, "learning": "/bg/r", "learn_file": str(learn_file)}
        assert midi_status(ctl)["learning"] == "/bg/r"
        sender = peers("send", "--to", "vprod:vprod")
        sender.send(bytes=[0xB0, 21, 5])
        deadline = time.monotonic() + WAIT
        while midi_status(ctl)["learning"] is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tomllib.loads(learn_file.read_text())["midi"]["map"] == [{"cc": 21, "channel": 1, "target": "/bg/r"}]
        assert centre(frames.next_frame()[1])[0] == 26  # the learning message itself changes nothing
        sender.send(sweep=[21, 0, 100])  # soft takeover: passes 0.1, then follows
        frames.wait_for(lambda h, im: centre(im)[0] == px(100 / 127), what="r at the learned CC's 100")

        cli = subprocess.Popen([sys.executable, "-m", "vprod", "midi", "learn", "/bg/g", "--control-port",
                                str(d.control_port), "--wait", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=clean_env())
        try:
            assert cli.stdout.readline().startswith("/bg/g armed")
            sender.send(bytes=[0x90, 64, 90])
            out, err = cli.communicate(timeout=60)
        finally:
            stop_pid(cli)
        assert cli.returncode == 0, err
        assert out.strip() == f"learned: note 64 channel 1 → /bg/g (saved to {learn_file})"
        sender.send(bytes=[0x90, 64, 90])  # a learned note on a float: toggles
        frames.wait_for(lambda h, im: centre(im)[1] == 255, what="g toggled by the learned note")
        entries = tomllib.loads(learn_file.read_text())["midi"]["map"]
        assert entries[-1] == {"note": 64, "channel": 1, "target": "/bg/g", "mode": "toggle"} and len(entries) == 2


@pytest.mark.integration
def test_changes_from_any_source_come_back_out_as_feedback(jack, midi_daemons, peers, tmp_path):
    d = midi_daemon(midi_daemons, jack, tmp_path, '[midi]\n'
                    '[[midi.map]]\ncc = 20\ntarget = "/bg/r"\ntakeover = false\n'
                    '[[midi.map]]\nnote = 60\ntarget = "/bg/g"\nmode = "toggle"\n'
                    '[[midi.map]]\ncc = 1\nchannel = 5\ntarget = "/bg/b"\nmode = "14bit"\n')
    listener = peers("listen", "--from", "vprod-out")
    with Control(d.control_port) as ctl:
        assert ctl.req("set", path="/bg/r", value=0.5)["ok"]
        assert listener.messages(lambda m: m[:2] == [0xB0, 20])[-1] == [0xB0, 20, 64]
        assert ctl.req("set", path="/bg/g", value=1.0)["ok"]
        assert listener.messages(lambda m: m[0] == 0x90)[-1] == [0x90, 60, 127]
        assert ctl.req("set", path="/bg/b", value=0.25)["ok"]
        got = listener.messages(lambda m: m[:2] == [0xB4, 33])
        assert got[-2:] == [[0xB4, 1, 32], [0xB4, 33, 0]]
        # a fader that moves /bg/r is not sent its own value back (a motor fader must not fight the hand) …
        sender = peers("send", "--to", "vprod:vprod")
        sender.send(bytes=[0xB0, 20, 100])
        sender.send(bytes=[0x90, 60, 127])  # … but a toggle button's LED follows its own press
        got = listener.messages(lambda m: m[0] == 0x90)
        assert got == [[0x90, 60, 0]], got
        assert midi_status(ctl)["feedback_sent"] >= 5


@pytest.mark.integration
def test_a_named_input_that_vanishes_and_comes_back_is_reopened(jack, midi_daemons, peers, tmp_path):
    d = midi_daemon(midi_daemons, jack, tmp_path, '[midi]\ninput = "vprod-test-src"\noutput = false\n'
                    '[[midi.map]]\ncc = 20\ntarget = "/bg/r"\ntakeover = false\n')
    d.wait_log(r"MIDI input 'vprod-test-src': no such port yet")
    with FrameStream(d.zmq_port) as frames:
        for i, level in enumerate((127, 0)):
            src = peers("send", "--virtual", "vprod-test-src")
            d.wait_log(r"MIDI input \S*vprod-test-src\S* connected", count=i + 1)
            src.send(bytes=[0xB0, 20, level])
            frames.wait_for(lambda h, im, v=level: centre(im)[0] == px(v / 127), what=f"r at CC {level}")
            src.kill()  # the controller is unplugged (its process dies)
            d.wait_log(r"MIDI input \S*vprod-test-src\S* vanished", count=i + 1)
        last = frames.last_seq
        frames.next_frame(after=last + 5)  # still streaming
    assert d.proc.poll() is None
    log = d.log()
    assert log.count("vanished") == 2 and log.count("connected") == 2 and log.count("no such port yet") == 1
    assert d.errors() == []


@pytest.mark.integration
def test_a_sysex_flood_and_junk_are_counted_and_the_stream_keeps_going(jack, midi_daemons, peers, tmp_path):
    d = midi_daemon(midi_daemons, jack, tmp_path, '[midi]\n[[midi.map]]\ncc = 20\ntarget = "/bg/r"\ntakeover = false\n')
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour((26, 51, 153))
        sender = peers("send", "--to", "vprod:vprod")
        first = frames.last_seq
        t0 = time.monotonic()
        sender.send(sysex=3000, size=200)
        for junk in ([0x42, 0x43], [0x90, 200, 1], [0xB0, 20]):
            sender.send(bytes=junk)
        sender.send(bytes=[0xB0, 20, 127])
        frames.wait_for(lambda h, im: centre(im)[0] == 255, what="the CC after the flood")
        st = midi_status(ctl)
        assert st["bad_input_by_kind"]["sysex"] >= 100, st
        assert st["bad_input_by_kind"]["junk"] == 3, st
        seen = frames.seen_since(first)
        elapsed = time.monotonic() - t0
        assert len(seen) >= elapsed * 30 * 0.5, f"{len(seen)} frames in {elapsed:.1f} s"  # the loop kept going
        assert max(b[1] - a[1] for a, b in zip(seen, seen[1:])) < 1.0  # no stall of a second
    warnings = [m for lvl, _n, m in d.records("WARNING") if "SysEx" in m]
    assert len(warnings) == 1, warnings  # once, then counted


@pytest.mark.integration
def test_a_preset_switch_brings_that_presets_mappings(jack, midi_daemons, peers, tmp_path):
    d = midi_daemon(midi_daemons, jack, tmp_path, '[midi]\n[[midi.map]]\ncc = 20\ntarget = "/bg/r"\ntakeover = false\n')
    other = tmp_path / "other.toml"
    other.write_text(solid_preset_text("other", (0.1, 0.2, 0.6), crossfade=0.0, extra=(
        QUIET + '[midi]\n[[midi.map]]\ncc = 20\ntarget = "/bg/g"\ntakeover = false\n')))
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        sender = peers("send", "--to", "vprod:vprod")
        sender.send(bytes=[0xB0, 20, 127])
        frames.wait_for(lambda h, im: centre(im) == (255, 51, 153), what="cc 20 on r")
        assert ctl.req("preset", name=str(other), crossfade=0)["ok"]
        frames.wait_for(lambda h, im: centre(im) == (26, 51, 153), what="the other preset")
        sender.send(bytes=[0xB0, 20, 0])
        frames.wait_for(lambda h, im: centre(im) == (26, 0, 153), what="cc 20 on g")


@pytest.mark.integration
def test_other_mido_backends_go_through_mido_ports(jack, peers, monkeypatch):
    """A backend that is not python-rtmidi is reached through mido's own ports (here mido's rtmidi backend)."""
    for k, v in jack.env().items():
        monkeypatch.setenv(k, v)
    ports = midi.open_ports("mido.backends.rtmidi/UNIX_JACK")
    assert isinstance(ports, midi._RtMidiPorts)
    ports.close()
    ports = midi._MidoPorts("mido.backends.rtmidi/UNIX_JACK")
    got: queue.Queue = queue.Queue()
    try:
        ports.open_input(None, lambda data, t: got.put(list(data)))
        ports.open_output(None)
        listener = peers("listen", "--from", ":vprod-out")
        sender = peers("send", "--to", ":vprod")
        sender.send(bytes=[0xB0, 20, 99])
        assert got.get(timeout=WAIT) == [0xB0, 20, 99]
        ports.send([0x90, 60, 127])
        assert listener.messages(lambda m: True) == [[0x90, 60, 127]]
        assert any(n.endswith(":vprod-out") for n in ports.inputs())
    finally:
        ports.close()


@pytest.mark.integration
def test_vprod_midi_ports_lists_what_jack_has(jack, peers, tmp_path):
    peers("send", "--virtual", "vprod-test-src")
    peers("listen", "--from", "vprod-test-src")  # it has an input port to list
    res = run_vprod(["midi", "ports", "--json"], tmp_path, env=jack.env())
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["api"] == "Jack" and any("vprod-test-src" in n for n in got["inputs"]), got
    assert any(n.startswith("vprod-test-listener") for n in got["outputs"]), got
    res = run_vprod(["midi", "ports"], tmp_path, env=jack.env())
    assert "inputs (controllers vprod can read" in res.stdout and "vprod-test-src" in res.stdout


@pytest.mark.integration
def test_bench_control_measures_midi(tmp_path):
    """`vprod bench control --surfaces midi` starts its own JACK server and reports every change it sent."""
    res = run_vprod(["bench", "control", "--surfaces", "midi", "--trials", "6", "--json"], tmp_path, timeout=240,
                    env={"JACK_DEFAULT_SERVER": f"vprod-test-none-{time.monotonic_ns()}"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)["surfaces"]["midi"]
    assert out["trials"] == 6 and out["missed"] == 0 and out["frames_max"] >= 1, out
