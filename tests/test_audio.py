"""Audio analysis: level, bands, onsets and BPM from WAV files made here with known content; the file and device
paths of a real `vprod run` (the device is a WAV played as a capture device through ALSA's file plugin, read by a
real sounddevice InputStream); bad [audio] sections and missing sources.

The analysis tests feed the Analyzer a real WAV (written and read back with soundfile) as fast as it goes, with
the sample clock as its time; the daemon tests play files in real time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import WAIT, Control, FrameStream, free_port, run_vprod

from vprod.control.audio import HOP, Analyzer, AudioConfig, FileInput, config_for, to_unit, validate
from vprod.plugins import PluginRegistry
from vprod.presets import PresetInvalid, load

SR = 48000


# --- signals with known content ---
def click_track(bpm: float, seconds: float, sr: int = SR, start: float = 0.1, noise: float = 0.0,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clicks (10 ms of 1 kHz, decaying in 3 ms) every beat from `start`; returns the samples and click starts."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = (noise * rng.standard_normal(n)).astype(np.float32)
    length = int(0.01 * sr)
    click = (0.8 * np.sin(2 * np.pi * 1000 * np.arange(length) / sr) * np.exp(-np.arange(length) / (0.003 * sr)))
    starts = []
    t = start
    while t < seconds - 0.02:
        k = int(round(t * sr))
        x[k:k + length] += click[: n - k].astype(np.float32)
        starts.append(k)
        t += 60.0 / bpm
    return x, np.array(starts)


def tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def write_wav(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def analyse_file(path: Path, block: int = 1000, **kw) -> tuple[Analyzer, list]:
    """Read a WAV with the daemon's own FileInput and analyse it block by block; returns the analyzer and the
    snapshots after each block."""
    src = FileInput(path, loop=False)
    src.open()
    an = Analyzer(src.samplerate, **kw)
    snaps, n = [], 0
    try:
        while (b := src.read(block)) is not None:
            n += len(b)
            an.feed(b, n / src.samplerate)
            snaps.append(an.snap)
    finally:
        src.close()
    return an, snaps


# --- the analysis ---
@pytest.mark.parametrize("bpm", [120.0, 93.0, 150.0])
def test_click_track_gives_its_bpm_and_an_onset_at_every_click(tmp_path, bpm):
    x, starts = click_track(bpm, 12.0)
    an, _ = analyse_file(write_wav(tmp_path / "clicks.wav", x))
    assert abs(an.snap.bpm - bpm) <= 2.0, f"BPM {an.snap.bpm:.2f} for a {bpm} BPM click track"
    # Each onset is reported at the middle of the hop it was found in: within one hop of a click's start.
    onsets = (np.array(an.onset_hops) + 0.5) * HOP
    assert len(onsets) == len(starts), f"{len(onsets)} onsets for {len(starts)} clicks"
    err = onsets - starts
    assert np.abs(err).max() <= HOP, f"onset timing errors (samples): {err}"


def test_click_track_in_noise_still_gives_its_bpm(tmp_path):
    x, starts = click_track(120.0, 12.0, noise=0.05)
    an, _ = analyse_file(write_wav(tmp_path / "noisy.wav", x))
    assert abs(an.snap.bpm - 120.0) <= 2.0
    onsets = (np.array(an.onset_hops) + 0.5) * HOP
    hit = [np.min(np.abs(onsets - s)) <= HOP for s in starts]
    assert sum(hit) >= 0.9 * len(starts), f"{sum(hit)} of {len(starts)} clicks found in noise"


def test_silence_has_no_bpm_and_no_onsets(tmp_path):
    an, _ = analyse_file(write_wav(tmp_path / "silence.wav", np.zeros(SR * 6, np.float32)))
    assert an.snap.bpm == 0.0 and an.onset_hops == [] and an.snap.level == 0.0


def test_low_tone_lights_the_low_band_and_high_tone_the_high_band(tmp_path):
    edges = (20.0, 250.0, 2500.0, 16000.0)
    low, _ = analyse_file(write_wav(tmp_path / "100hz.wav", tone(100, 1.0)), bands=edges)
    high, _ = analyse_file(write_wav(tmp_path / "5khz.wav", tone(5000, 1.0)), bands=edges)
    lb, hb = low.snap.bands, high.snap.bands
    assert len(lb) == 3
    # A -6 dBFS tone is -9 dB RMS: 0.85 on the -60..0 dB scale, in its own band; the others see only leakage.
    assert lb[0] == pytest.approx(to_unit(20 * np.log10(0.5 / np.sqrt(2))), abs=0.02)
    assert lb[1] < 0.3 and lb[2] < 0.1, f"100 Hz bands {lb}"
    assert hb[2] == pytest.approx(lb[0], abs=0.02)
    assert hb[0] < 0.1 and hb[1] < 0.3, f"5 kHz bands {hb}"


def test_bands_follow_the_configured_edges(tmp_path):
    an, _ = analyse_file(write_wav(tmp_path / "1k.wav", tone(1000, 0.5)), bands=(20, 500, 800, 1500, 20000))
    b = an.snap.bands
    assert len(b) == 4 and int(np.argmax(b)) == 2, b  # 1 kHz lies in 800..1500


def test_level_of_silence_full_scale_and_between(tmp_path):
    levels = {}
    for name, amp in (("silence", 0.0), ("quiet", 0.01), ("mid", 0.1), ("full", 1.0)):
        x = tone(440, 0.5, amp) if amp else np.zeros(SR // 2, np.float32)
        an, _ = analyse_file(write_wav(tmp_path / f"{name}.wav", x))
        levels[name] = an.snap.level
        if amp:
            assert an.snap.db == pytest.approx(20 * np.log10(amp / np.sqrt(2)), abs=0.5)
    assert levels["silence"] == 0.0
    assert levels["full"] > 0.9  # a full-scale sine is -3 dBFS RMS
    assert levels["silence"] < levels["quiet"] < levels["mid"] < levels["full"]


def test_gain_raises_the_level(tmp_path):
    path = write_wav(tmp_path / "q.wav", tone(440, 0.5, 0.01))
    plain, _ = analyse_file(path)
    loud, _ = analyse_file(path, gain=10.0)
    assert loud.snap.db == pytest.approx(plain.snap.db + 20.0, abs=0.5)


def test_onset_time_and_beat_phase_follow_the_clicks(tmp_path):
    x, starts = click_track(120.0, 10.0, start=0.25)
    an, _ = analyse_file(write_wav(tmp_path / "c.wav", x), block=480)
    s = an.snap
    # The newest onset is the last click (times are the sample clock here), and the beat grid sits on the clicks.
    assert abs(s.onset_time - starts[-1] / SR) <= HOP / SR
    assert s.beat_anchor is not None
    for k in starts[-4:]:
        phase = Analyzer.beat_phase(s, k / SR)
        assert min(phase, 1 - phase) < 0.03, f"beat phase {phase:.3f} at a click"


def test_file_input_loops_or_ends(tmp_path):
    path = write_wav(tmp_path / "short.wav", np.linspace(-0.5, 0.5, 1000, dtype=np.float32))
    looping = FileInput(path, loop=True)
    looping.open()
    data = np.concatenate([looping.read(300) for _ in range(5)])  # 1500 samples from a 1000-sample file
    looping.close()
    assert len(data) == 1500 and data[1000] == pytest.approx(data[0], abs=1e-4)
    once = FileInput(path, loop=False)
    once.open()
    assert len(once.read(800)) == 800 and len(once.read(800)) == 200 and once.read(800) is None
    once.close()


def test_stereo_files_are_mixed_to_mono(tmp_path):
    path = tmp_path / "st.wav"
    sf.write(str(path), np.stack([np.full(100, 0.5), np.full(100, -0.1)], axis=1), SR)
    src = FileInput(path, loop=False)
    src.open()
    assert src.read(10) == pytest.approx(np.full(10, 0.2), abs=1e-3)
    src.close()


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_text("hello")
    for path in (bad, tmp_path / "missing.wav"):
        with pytest.raises(RuntimeError, match=str(path.name)):
            FileInput(path).open()


# --- the [audio] section ---
def write_preset(dir_: Path, extra: str, name: str = "p") -> Path:
    p = dir_ / f"{name}.toml"
    p.write_text(f'name = "{name}"\nwidth = 320\nheight = 180\nfps = 30\n{extra}\n[[layers]]\nid = "bg"\n'
                 'source = "solid"\nparams = { r = 0.0, g = 0.0, b = 0.0 }\n', encoding="utf-8")
    return p


@pytest.mark.parametrize("section, key, words", [
    ("[audio]\ndevice = 'x'\nfile = 'y.wav'", "audio.file", "not both"),
    ("[audio]\nbands = [2000, 200]", "audio.bands", "ascending"),
    ("[audio]\nbands = [100]", "audio.bands", "2..9"),
    ("[audio]\ngain = -1", "audio.gain", "0..1000"),
    ("[audio]\nloop = 'yes'", "audio.loop", "true or false"),
    ("[audio]\nfiles = 'a.wav'", "audio.files", "unknown key"),
    ("audio = 3", "audio", "table"),
])
def test_bad_audio_section_is_a_preset_error_naming_file_and_key(tmp_path, section, key, words):
    path = write_preset(tmp_path, section)
    with pytest.raises(PresetInvalid) as ei:
        load(path, PluginRegistry())
    msgs = [str(e) for e in ei.value.errors]
    assert any(m.startswith(f"{path}: {key}: ") and words in m for m in msgs), msgs


def test_good_audio_section_and_command_line_overrides(tmp_path):
    path = write_preset(tmp_path, "[audio]\nfile = 'loop.wav'\nbands = [30, 300, 3000, 12000]\ngain = 2.0")
    preset = load(path, PluginRegistry())
    assert validate(preset.data["audio"]) == []
    cfg = config_for(preset, {})
    assert cfg.file == tmp_path / "loop.wav" and cfg.device is None and cfg.gain == 2.0 and len(cfg.bands) == 4
    assert config_for(preset, {"audio_device": "hw:1"}).device == "hw:1"
    assert config_for(preset, {"audio_device": "hw:1"}).file is None
    off = load(write_preset(tmp_path, "[audio]\nenabled = false\ndevice = 'x'", "off"), PluginRegistry())
    assert not config_for(off, {}).active
    none = load(write_preset(tmp_path, "", "none"), PluginRegistry())
    assert config_for(none, {}) == AudioConfig() and not AudioConfig().active


# --- a real daemon ---
def _status(ctl: Control) -> dict:
    reply = ctl.req("status")
    assert reply["ok"], reply
    return reply["status"]["controls"]


def _wait_audio(ctl: Control, pred, what: str, timeout: float = WAIT) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = _status(ctl).get("audio")
        if last is not None and pred(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"audio never showed {what} within {timeout:g} s; last status {json.dumps(last)}")


DAEMON_ARGS = ["--no-osc", "--size", "320x180"]


@pytest.mark.integration
def test_daemon_analyses_a_file_in_real_time(daemons, tmp_path):
    x, _ = click_track(120.0, 8.0)
    write_wav(tmp_path / "clicks.wav", x)
    preset = write_preset(tmp_path, "[audio]\nfile = 'clicks.wav'")
    d = daemons(preset, outputs="zmq", args=DAEMON_ARGS)
    d.wait_banner()
    ctl = Control(d.control_port)
    t0 = time.monotonic()
    st = _wait_audio(ctl, lambda a: a.get("features", {}).get("bpm", 0) > 0, "a BPM estimate", timeout=40)
    took = time.monotonic() - t0
    assert abs(st["features"]["bpm"] - 120) <= 2, st
    # Played in real time: four seconds of history are needed before the first estimate.
    assert took >= 3.0, f"a BPM after {took:.1f} s: the file was not played in real time"
    assert st["state"] == "running" and st["source"].endswith("clicks.wav") and st["onsets"] >= 6
    assert st["analysis_cpu_share"] < 0.5
    # A confident estimate drives the shared tempo (LFOs in beats follow it).
    st = _wait_audio(ctl, lambda a: a["tempo"]["source"] == "audio", "the tempo taken over by audio")
    assert abs(st["tempo"]["bpm"] - 120) <= 2 and st["tempo_sets"] >= 1
    ctl.close()


@pytest.mark.integration
def test_missing_audio_file_is_one_clear_error_and_the_video_goes_on(daemons, tmp_path):
    preset = write_preset(tmp_path, "[audio]\nfile = 'nowhere.wav'")
    d = daemons(preset, outputs="zmq", args=DAEMON_ARGS)
    d.wait_banner()
    with FrameStream(d.zmq_port) as fs:
        first, _ = fs.next_frame()
        time.sleep(2.5)  # a retry or two of the missing file
        later, _ = fs.next_frame()
    assert later["seq"] > first["seq"] + 30
    errs = [m for m in d.errors() if "audio" in m]
    assert len(errs) == 1 and "nowhere.wav" in errs[0], d.log()
    ctl = Control(d.control_port)
    a = _status(ctl)["audio"]
    assert a["state"] == "error" and "nowhere.wav" in a["error"]
    ctl.close()


@pytest.mark.integration
def test_missing_audio_device_is_one_clear_error(daemons, tmp_path):
    d = daemons(write_preset(tmp_path, ""), outputs="zmq", args=DAEMON_ARGS + ["--audio-device", "no-such-mic"])
    d.wait_banner()
    with FrameStream(d.zmq_port) as fs:
        first, _ = fs.next_frame()
        fs.next_frame(first["seq"] + 20)
    d.wait_log("no usable audio input device 'no-such-mic'")
    assert len([m for m in d.errors() if "no-such-mic" in m]) == 1, d.log()


def alsa_wav_microphone(home: Path, x: np.ndarray, sr: int = SR) -> Path:
    """A capture device that plays `x` (ALSA's file plugin reading raw 16-bit mono), as the default device of
    whoever runs with HOME=home. The real home's ALSA configuration is never touched."""
    home.mkdir(parents=True, exist_ok=True)
    raw = home / "mic_s16_mono.raw"
    sf.write(str(raw), x, sr, format="RAW", subtype="PCM_16")
    (home / ".asoundrc").write_text(
        f'pcm.wavin {{ type file; slave.pcm {{ type null }}; file "/dev/null"; infile "{raw}"; format "raw" }}\n'
        f'pcm.wavin_plug {{ type plug; slave {{ pcm "wavin"; format S16_LE; rate {sr}; channels 1 }} }}\n'
        'pcm.!default { type asym; playback.pcm { type null }; capture.pcm "wavin_plug" }\n', encoding="utf-8")
    return raw


@pytest.mark.integration
def test_daemon_analyses_a_sound_device(daemons, tmp_path):
    """The device path end to end: PortAudio opens ALSA's default capture device, which plays a click track."""
    home = tmp_path / "home"
    x, _ = click_track(120.0, 30.0)
    alsa_wav_microphone(home, x)
    d = daemons(write_preset(tmp_path, "[audio]\ndevice = 'default'"), outputs="zmq", args=DAEMON_ARGS,
                env={"HOME": str(home)})
    d.wait_banner()
    ctl = Control(d.control_port)
    a = _wait_audio(ctl, lambda a: a.get("onsets", 0) >= 4, "onsets from the device", timeout=30)
    assert a["state"] == "running" and a["source"] == "default"
    # Features move: the level goes up with each click and back down between them, the onsets keep coming.
    levels = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (levels and min(levels) < 0.05 and max(levels) > 0.3):
        levels.append(_status(ctl)["audio"]["features"]["level"])
        time.sleep(0.03)
    assert min(levels) < 0.05 and max(levels) > 0.3, levels
    _wait_audio(ctl, lambda b: b["onsets"] >= a["onsets"] + 4, "more onsets")
    a = _wait_audio(ctl, lambda a: a["features"].get("bpm", 0) > 0, "a BPM estimate from the device", timeout=30)
    assert abs(a["features"]["bpm"] - 120) <= 2, a
    assert not [m for m in d.errors() if "audio" in m], d.log()
    ctl.close()


@pytest.mark.integration
def test_command_line_runs_with_an_audio_file(tmp_path):
    """`vprod run --audio-file` with a preset that has no [audio]: the banner names the file."""
    write_wav(tmp_path / "t.wav", tone(100, 2.0))
    preset = write_preset(tmp_path, "")
    res = run_vprod(["run", str(preset), "--frames", "20", "--outputs", "zmq", "--zmq-port", str(free_port()),
                     "--no-osc", "--control-port", str(free_port()), "--audio-file", "t.wav"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"control audio          {tmp_path / 't.wav'}" in res.stderr, res.stderr


# --- the world model's audio token ---
def test_world_model_takes_the_audio_token_only_when_given():
    import torch

    from vprod.world import NEUTRAL
    from vprod.world.dynamics import Dynamics, DynamicsConfig
    from vprod.world.model import WorldModel
    from vprod.world.tokenizer import Tokenizer, TokenizerConfig

    torch.manual_seed(0)
    dyn = Dynamics(DynamicsConfig(d_model=32, layers=2, heads=2, context=2, sinks=2)).eval()
    for p in dyn.patch_out.parameters():  # zero-initialised for training: give the output a signal
        torch.nn.init.normal_(p, std=0.1)
    wm = WorldModel(Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval(), dyn, steps=1, dtype=torch.float32)
    c = wm._cond(NEUTRAL)
    assert bool(c["drop"][0, 1]) and float(c["audio"].abs().sum()) == 0.0  # absent, as the shipped model was trained
    vec = [0.9, 0.8, 0.1, 0.05, 1.0, 0.7, 0.25, 0.5]
    wm.audio = np.array(vec, np.float32)
    c = wm._cond(NEUTRAL)
    assert not bool(c["drop"][0, 1]) and c["audio"][0].tolist() == pytest.approx(vec)
    wm.audio = np.array([np.nan, 2.0, -1, 0, 0, 0, 0, 0], np.float32)  # out of range: clamped, never NaN
    assert wm._cond(NEUTRAL)["audio"][0].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]

    def latent(audio):
        wm.audio = audio
        wm.reset(1, NEUTRAL, "plasma")
        return wm.next_latent(NEUTRAL)

    quiet, loud = latent(np.zeros(8, np.float32)), latent(np.ones(8, np.float32))
    assert not torch.allclose(quiet, loud)  # the token reaches the model
    assert torch.allclose(latent(None), latent(None))


@pytest.mark.parametrize("option", [True, False])
def test_worldmodel_source_passes_audio_only_when_its_preset_asks(option):
    import threading
    from types import SimpleNamespace

    from vprod.engine.element import ElementConfig, FrameContext

    cls = PluginRegistry().load("worldmodel")
    src = cls(ElementConfig(layer="w", name="worldmodel", width=64, height=36, options={"audio": option}))
    src.world = SimpleNamespace(audio=None)  # process() only hands the vector over; the model thread reads it
    src._lock, src._latest, src._view, src._error = threading.Lock(), None, None, ""
    src._demand, src._credit = threading.Condition(), 0
    vec = [0.5, 0.4, 0.3, 0.2, 1.0, 0.9, 0.1, 0.5]
    src.process(FrameContext(width=64, height=36, signals={"audio_vec": vec}))
    if option:
        assert src.world.audio.tolist() == pytest.approx(vec)
        src.process(FrameContext(width=64, height=36))  # the audio stopped: absent again
        assert src.world.audio is None
    else:
        assert src.world.audio is None


# --- vprod doctor ---
@pytest.mark.integration
def test_doctor_lists_audio_inputs_or_says_there_are_none(tmp_path, monkeypatch):
    from vprod.doctor import check_audio

    empty = tmp_path / "empty-home"
    empty.mkdir()
    monkeypatch.setenv("HOME", str(empty))
    c = check_audio()
    if not Path("/dev/snd").exists():  # no sound card (as on CI here): no input devices, and the way around it
        assert c.status == "warn" and "no audio input devices" in c.detail and "--audio-file" in c.detail, c
    home = tmp_path / "home"  # the WAV-as-microphone: a capture device appears
    alsa_wav_microphone(home, np.zeros(SR, np.float32))
    monkeypatch.setenv("HOME", str(home))
    c = check_audio()
    assert c.status == "ok" and "default" in c.detail and "wavin" in c.detail, c
