"""Modulators: LFO shapes, phase and beats on a fake clock; the envelope follower's attack and release; how a
modulator meets knobs (the base follows every set) and preset switches, on a real Engine in memory; then a real
`vprod run` whose red channel, read from the ZeroMQ stream, oscillates at the LFO's rate and follows a click
track; broken [[modulators]] entries are preset errors naming the file and key.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Control, FrameStream, free_port, run_vprod

from vprod.control.modulators import (
    SHAPES,
    EnvelopeFollower,
    Modulator,
    ModulatorControl,
    ModulatorSpec,
    lfo,
    specs_for,
)
from vprod.control.tempo import Tempo
from vprod.engine import ControlBus, Engine
from vprod.engine.element import FrameContext
from vprod.plugins import PluginRegistry
from vprod.presets import PresetInvalid, build, load

# --- the LFO on a fake clock ---
EXPECTED = {  # shape: values at 0, 1/4, 1/2, 3/4 of a cycle
    "sine": (0.0, 1.0, 0.0, -1.0),
    "triangle": (-1.0, 0.0, 1.0, 0.0),
    "saw": (-1.0, -0.5, 0.0, 0.5),
    "square": (1.0, 1.0, -1.0, -1.0),
}


@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_lfo_shapes_over_a_cycle(shape):
    got = [lfo(shape, x) for x in (0.0, 0.25, 0.5, 0.75)]
    assert got == pytest.approx(EXPECTED[shape], abs=1e-9)
    assert lfo(shape, 3.25) == pytest.approx(lfo(shape, 0.25))  # periodic
    xs = np.linspace(0, 5, 1001)
    assert all(-1.0 <= lfo(shape, x) <= 1.0 for x in xs)


def test_random_lfo_holds_one_value_per_cycle():
    per_cycle = [{round(lfo("random", c + f, seed=3), 12) for f in (0.0, 0.3, 0.99)} for c in range(50)]
    assert all(len(s) == 1 for s in per_cycle)  # sample and hold
    values = [s.pop() for s in per_cycle]
    assert len(set(values)) == 50 and min(values) < -0.5 and max(values) > 0.5 and all(-1 <= v <= 1 for v in values)
    assert lfo("random", 7.5, seed=3) == lfo("random", 7.1, seed=3) != lfo("random", 7.1, seed=4)


def spec(**kw) -> ModulatorSpec:
    return ModulatorSpec(index=0, target="/bg/r", **kw)


def test_lfo_rate_and_phase_on_a_fake_clock():
    m = Modulator(spec(shape="sine", rate=2.0, phase=0.25))
    # 2 Hz with a quarter-cycle phase: a cosine with a 0.5 s period.
    for t in np.linspace(0, 3, 37):
        assert m.output(t, 0.0, {}, 1 / 30) == pytest.approx(math.cos(2 * math.pi * 2.0 * t), abs=1e-9)


def test_lfo_in_beats_follows_the_tempo_not_the_clock():
    m = Modulator(spec(shape="saw", beats=4))
    assert m.output(0.0, 0.0, {}, 0.1) == pytest.approx(-1.0)
    assert m.output(123.0, 2.0, {}, 0.1) == pytest.approx(0.0)  # half of the 4-beat cycle, whatever the time
    assert m.output(0.0, 5.0, {}, 0.1) == pytest.approx(-0.5)


def test_tempo_drives_beats_on_a_fake_clock():
    tempo = Tempo(90.0)
    t0 = 1000.0
    tempo.set(90.0, "test", beat_at=t0)
    m = Modulator(spec(shape="square", beats=1))
    b0 = tempo.beats(t0)
    # At 90 BPM a beat lasts 2/3 s: high in its first half, low in its second.
    assert m.output(0, tempo.beats(t0 + 0.1) - b0, {}, 0.1) == 1.0
    assert m.output(0, tempo.beats(t0 + 0.5) - b0, {}, 0.1) == -1.0
    assert m.output(0, tempo.beats(t0 + 2 / 3 + 0.1) - b0, {}, 0.1) == 1.0


def test_polarity_and_invert():
    assert Modulator(spec(shape="sine", rate=1.0, polarity="unipolar")).output(0.75, 0, {}, 0.1) == pytest.approx(0)
    assert Modulator(spec(shape="sine", rate=1.0, invert=True)).output(0.25, 0, {}, 0.1) == pytest.approx(-1)
    audio = {"audio": {"level": 0.25}}
    assert Modulator(spec(source="audio", input="level")).output(0, 0, audio, 0.1) == pytest.approx(0.25)
    assert Modulator(spec(source="audio", input="level", polarity="bipolar")).output(0, 0, audio, 0.1) == \
        pytest.approx(-0.5)


# --- the envelope follower ---
def test_envelope_attack_and_release_time_constants():
    env = EnvelopeFollower(attack_ms=20, release_ms=200)
    dt = 0.001
    for _ in range(20):  # 20 ms of a step to 1
        env.step(1.0, dt)
    assert env.value == pytest.approx(1 - math.exp(-1), abs=0.01)
    for _ in range(200):
        env.step(1.0, dt)
    top = env.value
    for _ in range(200):  # 200 ms of silence
        env.step(0.0, dt)
    assert env.value == pytest.approx(top * math.exp(-1), abs=0.01)


def test_envelope_with_zero_attack_jumps_and_frame_rate_does_not_matter():
    env = EnvelopeFollower(0, 100)
    assert env.step(0.8, 1 / 30) == 0.8
    a, b = EnvelopeFollower(0, 100), EnvelopeFollower(0, 100)
    a.step(1.0, 0.01)
    b.step(1.0, 0.01)
    for _ in range(10):
        a.step(0.0, 0.01)  # 10 steps of 10 ms ...
    for _ in range(2):
        b.step(0.0, 0.05)  # ... or 2 of 50 ms: the same 100 ms of release
    assert a.value == pytest.approx(b.value) == pytest.approx(math.exp(-1), abs=1e-6)


def test_envelope_source_with_no_audio_releases_to_zero():
    m = Modulator(spec(source="envelope", input="onset_env", attack=0, release=50))
    assert m.output(0, 0, {"audio": {"onset_env": 1.0}}, 1 / 30) == 1.0
    for _ in range(30):
        v = m.output(0, 0, {}, 1 / 30)
    assert v < 1e-3


# --- knobs, presets and the engine (in memory) ---
def write_preset(dir_: Path, extra: str, name: str = "m", r: float = 0.5, fps: int = 30) -> Path:
    p = dir_ / f"{name}.toml"
    p.write_text(f'name = "{name}"\nwidth = 64\nheight = 36\nfps = {fps}\ncrossfade = 0\n'
                 f'[[layers]]\nid = "bg"\nsource = "solid"\nparams = {{ r = {r}, g = 0.0, b = 0.0 }}\n{extra}\n',
                 encoding="utf-8")
    return p


class Rig:
    """A real Engine, pipeline and ModulatorControl; a fake daemon object holding them; frames stepped by hand."""

    def __init__(self, tmp_path: Path, extra: str, r: float = 0.5):
        self.reg = PluginRegistry()
        preset = load(write_preset(tmp_path, extra, r=r), self.reg)
        self.engine = Engine(preset.width, preset.height, preset.fps, bus=ControlBus())
        self.engine.switch(build(preset, self.reg), 0.0)
        self.daemon = SimpleNamespace(engine=self.engine, bus=self.engine.bus, tempo=Tempo())
        self.ctl = ModulatorControl(self.daemon, specs_for(preset), str(preset.path))
        self.ctl.start()
        self.pts = 0.0

    def frame(self, pts: float) -> float:
        """Run the loop's steps up to the render for a frame at `pts`; the red value the source sees."""
        for ev in self.engine.bus.drain():
            self.engine._apply(ev)
        ctx = FrameContext(pts=pts, dt=1 / 30)
        for mod in self.engine.modulators:
            mod(ctx)
        self.engine.pipeline.step_params(ctx.dt)
        return self.engine.resolve("/bg/r").value


def test_modulator_moves_around_the_value_a_knob_sets(tmp_path):
    rig = Rig(tmp_path, '[[modulators]]\ntarget = "/bg/r"\nshape = "sine"\nrate = 1.0\ndepth = 0.1', r=0.5)
    assert rig.frame(0.25) == pytest.approx(0.6)  # base 0.5 + 0.1 × range 1 × sin(π/2)
    assert rig.frame(0.75) == pytest.approx(0.4)
    rig.engine.bus.set("/bg/r", 0.2, "knob")  # a knob (ZeroMQ, OSC, MIDI) sets the parameter
    assert rig.frame(1.25) == pytest.approx(0.3)  # the modulation now swings around 0.2
    assert rig.frame(1.75) == pytest.approx(0.1)
    rig.engine.bus.set("/bg/r", 0.1, "knob")  # the value the modulator just wrote: still a new base
    assert rig.frame(2.25) == pytest.approx(0.2)
    rig.engine.bus.set("/bg/r", 0.98, "knob")
    assert rig.frame(3.25) == 1.0  # clamped to the range
    assert rig.frame(3.75) == pytest.approx(0.88)
    st = rig.ctl.status()["active"][0]
    assert st["base"] == pytest.approx(0.98) and st["value"] == pytest.approx(0.88) and st["output"] == -1.0


def test_modulators_on_one_parameter_add_up_and_scale_with_its_range(tmp_path):
    extra = ('[[modulators]]\ntarget = "/bg/r"\nshape = "square"\nrate = 1.0\ndepth = 0.1\n'
             '[[modulators]]\ntarget = "/bg/r"\nshape = "square"\nrate = 1.0\nphase = 0.5\ndepth = 0.3\n'
             '[[modulators]]\ntarget = "/bg/opacity"\nsource = "audio"\ninput = "level"\ndepth = 1.0\n'
             'polarity = "bipolar"\n')
    rig = Rig(tmp_path, extra, r=0.5)
    assert rig.frame(0.25) == pytest.approx(0.5 + 0.1 - 0.3)
    assert rig.frame(0.75) == pytest.approx(0.5 - 0.1 + 0.3)
    assert rig.engine.resolve("/bg/opacity").value == 0.0  # no audio: level 0 → -1 bipolar → 1 - 1 × range


def test_modulators_follow_a_preset_switch(tmp_path):
    rig = Rig(tmp_path, '[[modulators]]\ntarget = "/bg/r"\nshape = "square"\nrate = 1.0\ndepth = 0.2', r=0.5)
    assert rig.frame(0.25) == pytest.approx(0.7)
    other = load(write_preset(tmp_path, '[[modulators]]\ntarget = "/bg/g"\nshape = "square"\nrate = 1.0\n'
                                        'depth = 0.5', name="other", r=0.1), rig.reg)
    rig.engine.switch(build(other, rig.reg), 0.0)
    rig.ctl.on_preset(other)
    assert rig.frame(1.25) == pytest.approx(0.1)  # r is no longer modulated in the new preset
    assert rig.engine.resolve("/bg/g").value == pytest.approx(0.5)
    plain = load(write_preset(tmp_path, "", name="plain", r=0.3), rig.reg)
    rig.engine.switch(build(plain, rig.reg), 0.0)
    rig.ctl.on_preset(plain)
    assert rig.frame(2.25) == pytest.approx(0.3) and rig.ctl.status()["active"] == []


def test_unknown_target_is_an_error_naming_the_key_and_nothing_else_changes(tmp_path, caplog):
    rig = Rig(tmp_path, '[[modulators]]\ntarget = "/bg/red"\nrate = 1.0\n'
                        '[[modulators]]\ntarget = "/bg/blend"\nrate = 1.0\n'
                        '[[modulators]]\ntarget = "/bg/g"\nshape = "square"\nrate = 1.0\ndepth = 0.25', r=0.5)
    with caplog.at_level("ERROR", logger="vprod.control.modulators"):
        for i in range(5):
            assert rig.frame(0.25 + i) == 0.5
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 2, errors  # once each, not once per frame
    assert "modulators[0].target: no parameter at '/bg/red'" in errors[0] and "/bg/r" in errors[0]
    assert "modulators[1].target: /bg/blend is a choice parameter" in errors[1]
    assert rig.engine.resolve("/bg/g").value == 0.25
    st = rig.ctl.status()["active"]
    assert "error" in st[0] and "error" in st[1] and "error" not in st[2]


def test_modulator_cost_per_frame_is_small(tmp_path):
    """Not a timed assert: records the cost in status, which must be there (the figure is reported)."""
    rig = Rig(tmp_path, "".join(f'[[modulators]]\ntarget = "/bg/{c}"\nrate = 0.5\ndepth = 0.1\n' for c in "rgb"))
    for i in range(300):
        rig.frame(i / 30)
    s = rig.ctl.status()
    assert s["frames"] == 300 and s["us_per_frame"] > 0 and s["bad_input"] == 0


# --- the [[modulators]] section ---
@pytest.mark.parametrize("entry, key, words", [
    ('target = "/bg/r"\nrate = 1\nshape = "sinus"', "modulators[0].shape", "not one of sine"),
    ('target = "/bg/r"\nrate = 1\ndepth = 2', "modulators[0].depth", "0..1"),
    ('target = "bg/r"\nrate = 1', "modulators[0].target", "parameter path"),
    ('rate = 1', "modulators[0].target", "parameter path"),
    ('target = "/bg/r"', "modulators[0].rate", "rate (Hz) or beats"),
    ('target = "/bg/r"\nrate = 1\nbeats = 4', "modulators[0].beats", "not both"),
    ('target = "/bg/r"\nbeats = 0', "modulators[0].beats", "> 0"),
    ('target = "/bg/r"\nsource = "envelope"\ninput = "loudness"', "modulators[0].input", "not an audio feature"),
    ('target = "/bg/r"\nsource = "envelope"\nattack = -3', "modulators[0].attack", "milliseconds"),
    ('target = "/bg/r"\nsource = "midi"', "modulators[0].source", "lfo, envelope, audio"),
    ('target = "/bg/r"\nrate = 1\nspeed = 2', "modulators[0].speed", "unknown key"),
    ('target = "/bg/r"\nrate = 1\nphase = 1.5', "modulators[0].phase", "0..1"),
])
def test_broken_modulator_entry_is_a_preset_error_naming_file_and_key(tmp_path, entry, key, words):
    path = write_preset(tmp_path, f"[[modulators]]\n{entry}")
    with pytest.raises(PresetInvalid) as ei:
        load(path, PluginRegistry())
    msgs = [str(e) for e in ei.value.errors]
    assert any(m.startswith(f"{path}: {key}: ") and words in m for m in msgs), msgs


def test_good_modulators_parse(tmp_path):
    path = write_preset(tmp_path, '[[modulators]]\ntarget = "/bg/r"\nbeats = 4\nshape = "random"\n'
                                  '[[modulators]]\ntarget = "/bg/g"\nsource = "envelope"\ninput = "band2"\n'
                                  'attack = 5\nrelease = 300\ndepth = 0.8\nenabled = false')
    specs = specs_for(load(path, PluginRegistry()))
    assert [(s.target, s.source, s.beats, s.input, s.enabled) for s in specs] == [
        ("/bg/r", "lfo", 4.0, "level", True), ("/bg/g", "envelope", None, "band2", False)]
    assert set(SHAPES) == {"sine", "triangle", "saw", "square", "random"}


# --- a real daemon ---
DAEMON_ARGS = ["--no-osc"]


def collect_red(fs: FrameStream, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(pts, red) of the frames arriving over `seconds` (as many as the reader keeps up with)."""
    pts, red = [], []
    hdr, img = fs.next_frame()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pts.append(hdr["pts"])
        red.append(int(img[img.shape[0] // 2, img.shape[1] // 2, 0]))
        hdr, img = fs.next_frame(hdr["seq"])
    return np.array(pts), np.array(red, float)


def period_from_crossings(pts: np.ndarray, y: np.ndarray) -> float:
    """The period of an oscillation: mean time between upward crossings of its midline (interpolated)."""
    mid = 0.5 * (y.min() + y.max())
    ups = [pts[i] + (mid - y[i]) / (y[i + 1] - y[i]) * (pts[i + 1] - pts[i])
           for i in range(len(y) - 1) if y[i] < mid <= y[i + 1]]
    assert len(ups) >= 3, f"only {len(ups)} upward crossings"
    return float(np.mean(np.diff(ups)))


@pytest.mark.integration
def test_lfo_on_red_oscillates_at_its_rate_in_the_stream(daemons, tmp_path):
    extra = '[[modulators]]\ntarget = "/bg/r"\nshape = "sine"\nrate = 1.0\ndepth = 0.3'
    d = daemons(write_preset(tmp_path, extra, r=0.5), outputs="zmq", args=DAEMON_ARGS)
    d.wait_banner()
    with FrameStream(d.zmq_port) as fs:
        pts, red = collect_red(fs, 4.5)
        period = period_from_crossings(pts, red)
        assert period == pytest.approx(1.0, abs=0.03), f"period {period:.3f} s"
        # Around the preset's 0.5 (128) by ±0.3 of the range (±77).
        assert red.max() == pytest.approx(204, abs=4) and red.min() == pytest.approx(51, abs=4)
        # The sine itself: red(pts) = 127.5 + 76.5 sin(2π pts) up to rounding (pts is the frame's own clock).
        model = 255 * (0.5 + 0.3 * np.sin(2 * np.pi * pts))
        assert np.abs(red - model).max() <= 1.0

        # A knob still works: the ZeroMQ control sets red to 0.2 and the LFO swings around it (clamped at 0).
        ctl = Control(d.control_port)
        assert ctl.req("set", path="/bg/r", value=0.2)["ok"]
        time.sleep(0.2)
        _, red2 = collect_red(fs, 2.2)
        assert red2.max() == pytest.approx(255 * 0.5, abs=4) and red2.min() == 0
        st = ctl.req("status")["status"]["controls"]["modulators"]["active"][0]
        assert st["base"] == pytest.approx(0.2) and st["target"] == "/bg/r"

        # A preset with no modulators: red stands still at its value.
        plain = write_preset(tmp_path, "", name="plain", r=0.4)
        assert ctl.req("preset", name=str(plain))["ok"]
        time.sleep(0.5)
        _, red3 = collect_red(fs, 1.2)
        assert set(red3) == {round(0.4 * 255)}
        ctl.close()


@pytest.mark.integration
def test_lfo_in_beats_runs_at_the_tempo(daemons, tmp_path):
    """No MIDI clock or audio: the shared tempo's 120 BPM default, so 2 beats per cycle last 1 s."""
    extra = '[[modulators]]\ntarget = "/bg/r"\nshape = "triangle"\nbeats = 2\ndepth = 0.4'
    d = daemons(write_preset(tmp_path, extra, r=0.5), outputs="zmq", args=DAEMON_ARGS)
    d.wait_banner()
    with FrameStream(d.zmq_port) as fs:
        pts, red = collect_red(fs, 4.5)
    assert period_from_crossings(pts, red) == pytest.approx(1.0, abs=0.03)


def click_wav(path: Path, bpm: float = 120.0, seconds: float = 8.0, sr: int = 48000) -> np.ndarray:
    x = np.zeros(int(seconds * sr), np.float32)
    length = int(0.01 * sr)
    click = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(length) / sr) * np.exp(-np.arange(length) / (0.003 * sr))
    starts = np.arange(int(0.1 * sr), len(x) - length, int(sr * 60 / bpm))
    for k in starts:
        x[k:k + length] = click
    sf.write(str(path), x, sr, subtype="PCM_16")
    return starts / sr


@pytest.mark.integration
def test_envelope_on_red_follows_a_click_track(daemons, tmp_path):
    click_wav(tmp_path / "clicks.wav", bpm=120.0)
    extra = ('[audio]\nfile = "clicks.wav"\n\n[[modulators]]\ntarget = "/bg/r"\nsource = "envelope"\n'
             'input = "level"\nattack = 0\nrelease = 80\ndepth = 1.0')
    d = daemons(write_preset(tmp_path, extra, r=0.0), outputs="zmq", args=DAEMON_ARGS)
    d.wait_banner()
    with FrameStream(d.zmq_port) as fs:
        pts, red = collect_red(fs, 5.0)
    # Red flashes at every click and falls back to black in between: one flash every 0.5 s.
    assert red.max() > 128 and red.min() == 0
    half = red.max() / 2
    flashes = [pts[i] for i in range(1, len(red)) if red[i] > half >= red[i - 1]]
    gaps = np.diff(flashes)
    assert len(flashes) >= 8, flashes
    assert np.abs(gaps - 0.5).max() <= 2.5 / 30, f"gaps between flashes {gaps}"


@pytest.mark.integration
def test_broken_modulators_stop_vprod_run_with_the_key(tmp_path):
    path = write_preset(tmp_path, '[[modulators]]\ntarget = "/bg/r"\nrate = 1\ndepth = "lots"')
    res = run_vprod(["run", str(path), "--outputs", "zmq", "--zmq-port", str(free_port()), "--no-osc",
                     "--control-port", str(free_port()), "--frames", "5"], cwd=tmp_path)
    assert res.returncode == 2
    assert f"{path}: modulators[0].depth: 'lots' must be a number 0..1" in res.stderr, res.stderr


@pytest.mark.integration
def test_readme_audio_example_runs_as_written(daemons, tmp_path):
    """The README's "Audio and modulators" shell block, run as is (the venv's path put in), makes a click track and
    a preset; that preset plays: red flashes with the clicks, blue moves with the LFO."""
    import re
    import subprocess
    import sys

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("## Audio and modulators", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    setup = [ln for ln in block.splitlines() if not ln.startswith(".venv/bin/vprod run")]
    venv_bin = str(Path(sys.executable).parent) + "/"
    subprocess.run(["bash", "-euc", "\n".join(setup).replace(".venv/bin/", venv_bin)], cwd=tmp_path, check=True,
                   timeout=60)
    assert "run show-audio.toml" in block
    d = daemons(tmp_path / "show-audio.toml", outputs="zmq", args=DAEMON_ARGS + ["--size", "320x180"])
    d.wait_banner()
    with FrameStream(d.zmq_port) as fs:
        _, red = collect_red(fs, 3.0)
    assert red.max() > 128 and red.min() < 20, red
    ctl = Control(d.control_port)
    status = ctl.req("status")["status"]["controls"]
    ctl.close()
    assert status["audio"]["state"] == "running" and len(status["modulators"]["active"]) == 2
    assert not [r for r in d.records("ERROR") if r[1].startswith(("vprod.control.audio", "vprod.control.mod"))], \
        d.log()
