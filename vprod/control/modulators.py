"""Modulators: LFOs, envelope followers and audio features moving parameters, defined in the preset.

    [[modulators]]
    target = "/bg/r"          # a parameter path (vprod params PRESET lists them)
    source = "lfo"            # lfo | envelope | audio
    shape = "sine"            # lfo: sine, triangle, saw, square, random (sample and hold, a new value per cycle)
    rate = 0.5                # lfo: cycles per second ...
    # beats = 4               # ... or one cycle every 4 beats of the shared tempo (MIDI clock, audio or 120 BPM)
    phase = 0.0               # lfo: 0..1, where in the cycle it starts
    depth = 0.3               # 0..1 of the parameter's range

    [[modulators]]
    target = "/bg/g"
    source = "envelope"       # follows an audio feature with its own attack and release
    input = "level"           # level, band0, band1, band2.., onset, onset_env, beat_phase
    attack = 5                # ms
    release = 300             # ms
    depth = 0.8

How it meets the knobs: a modulator never owns a parameter. Each frame, on the loop thread after the control bus
was drained and before rendering, it sets the parameter's target to base + offset, where the base is the value
the user last set — the preset's value, then whatever a knob, OSC, MIDI or the ZeroMQ control set (a bus listener
sees those, and so does a target changed behind its back, e.g. by a preset reload) — and offset = depth × range ×
m. m is the source's output: an LFO swings in -1..1 (around the base; `polarity = "unipolar"` makes it 0..1,
above the base), an envelope or audio feature goes 0..1 (above the base; `polarity = "bipolar"` centres it).
`invert = true` flips it. Several modulators on one parameter add up; the result is clamped to its range. A slewed
parameter smooths its modulation too. The ZeroMQ `get` shows the modulated value; `status` shows each modulator's
base, output and value. The modulators follow preset switches.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from ..engine.params import FloatParam, IntParam
from ..presets import register_section
from . import register_surface
from .badinput import BadInput

log = logging.getLogger("vprod.control.modulators")

SHAPES = ("sine", "triangle", "saw", "square", "random")
SOURCES = ("lfo", "envelope", "audio")
POLARITIES = ("bipolar", "unipolar")
KEYS = {
    "target": "parameter path, e.g. \"/bg/r\"",
    "source": "lfo | envelope | audio (default lfo)",
    "depth": "0..1 of the parameter's range",
    "shape": "lfo: " + ", ".join(SHAPES),
    "rate": "lfo: cycles per second",
    "beats": "lfo: beats of the shared tempo per cycle (instead of rate)",
    "phase": "lfo: 0..1 start within the cycle",
    "input": "envelope/audio: the audio feature (level, band0.., onset, onset_env, beat_phase, bpm_confidence)",
    "attack": "envelope: rise time constant in ms",
    "release": "envelope: fall time constant in ms",
    "polarity": "bipolar (-1..1 around the base) or unipolar (0..1 above it)",
    "invert": "true flips the modulation",
    "enabled": "false keeps the entry but does nothing",
}
AUDIO_INPUTS = ("level", "onset", "onset_env", "beat_phase", "bpm_confidence")  # plus band0..band8


def lfo(shape: str, cycles: float, seed: int = 0) -> float:
    """The LFO's output in -1..1 after `cycles` cycles (phase included). Pure: tests drive it with a fake clock.
    sine starts at 0 going up; triangle at -1; saw ramps -1 → 1; square is +1 for the first half cycle; random
    holds one value per whole cycle (the same for the same seed and cycle)."""
    x = cycles % 1.0
    if shape == "sine":
        return math.sin(2.0 * math.pi * x)
    if shape == "triangle":
        return 4.0 * x - 1.0 if x < 0.5 else 3.0 - 4.0 * x
    if shape == "saw":
        return 2.0 * x - 1.0
    if shape == "square":
        return 1.0 if x < 0.5 else -1.0
    if shape == "random":
        return _hash_unit(math.floor(cycles), seed) * 2.0 - 1.0
    raise ValueError(f"unknown LFO shape {shape!r}")


def _hash_unit(n: int, seed: int) -> float:
    """A well-mixed number in [0, 1) from (n, seed): splitmix64, no state and no allocation."""
    z = (n * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


class EnvelopeFollower:
    """One-pole follower: rises towards a higher input with the attack time constant, falls with the release."""

    def __init__(self, attack_ms: float, release_ms: float):
        self.attack = max(attack_ms, 0.0) / 1000.0
        self.release = max(release_ms, 0.0) / 1000.0
        self.value = 0.0

    def step(self, x: float, dt: float) -> float:
        tau = self.attack if x > self.value else self.release
        a = 1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau)
        self.value += (x - self.value) * a
        return self.value


@dataclass
class ModulatorSpec:
    """One validated [[modulators]] entry."""

    index: int
    target: str
    source: str = "lfo"
    depth: float = 0.5
    shape: str = "sine"
    rate: float | None = None
    beats: float | None = None
    phase: float = 0.0
    input: str = "level"
    attack: float = 10.0
    release: float = 250.0
    polarity: str = ""  # "" → the source's natural one
    invert: bool = False
    enabled: bool = True

    @property
    def key(self) -> str:
        return f"modulators[{self.index}]"


class Modulator:
    """A spec with its running state: computes m (the normalized modulation) for a frame."""

    def __init__(self, spec: ModulatorSpec):
        self.spec = spec
        self.env = EnvelopeFollower(spec.attack, spec.release) if spec.source == "envelope" else None
        self.polarity = spec.polarity or ("bipolar" if spec.source == "lfo" else "unipolar")
        self.m = 0.0
        self.error = ""

    def output(self, pts: float, beats: float, signals: dict, dt: float) -> float:
        """m for this frame: the source's value, mapped to the polarity, inverted if asked."""
        s = self.spec
        if s.source == "lfo":
            cycles = (beats / s.beats if s.beats else pts * (s.rate or 0.0)) + s.phase
            v = lfo(s.shape, cycles, s.index)  # -1..1
            natural_bipolar = True
        else:
            feats = signals.get("audio")
            x = float(feats.get(s.input, 0.0)) if feats else 0.0  # no audio: the envelope releases to 0
            v = self.env.step(x, dt) if self.env is not None else x  # 0..1
            natural_bipolar = False
        if self.polarity == "bipolar" and not natural_bipolar:
            v = 2.0 * v - 1.0
        elif self.polarity == "unipolar" and natural_bipolar:
            v = 0.5 * (v + 1.0)
        if s.invert:
            v = -v
        self.m = v
        return v


class _Target:
    """The live parameter a group of modulators moves: its base (the user's value) and what was last written."""

    __slots__ = ("state", "base", "written", "span", "lo", "hi", "dirty")

    def __init__(self, state):
        self.state = state
        self.base = state.target
        self.written = None
        self.lo, self.hi = float(state.spec.min), float(state.spec.max)
        self.span = self.hi - self.lo
        self.dirty = False


class ModulatorControl:
    """Applies the current preset's modulators each frame on the loop thread (via Engine.modulators)."""

    name = "modulators"

    def __init__(self, daemon, specs: list[ModulatorSpec], preset_file: str = ""):
        self.daemon = daemon
        self.preset_file = preset_file
        self.bad = BadInput("modulators", log)
        self._mods: list[Modulator] = [Modulator(s) for s in specs if s.enabled]
        self._targets: dict[str, _Target] = {}
        self._pipeline = None  # the pipeline whose parameter states _targets hold ...
        self._gen = 0  # ... for this generation of modulators (a preset switch makes a new one)
        self._resolved_gen = -1
        self._values: dict[str, float] = {}
        self.frames = 0
        self.cost_s = 0.0

    def describe(self) -> str:
        n = len(self._mods)
        return f"modulators     {n} active" + (f" ({', '.join(m.spec.target for m in self._mods)})" if n else "")

    def start(self) -> None:
        engine = self.daemon.engine
        if self.apply not in engine.modulators:
            engine.modulators.append(self.apply)  # after the audio analysis publishes its features
        if self.on_set not in self.daemon.bus.listeners:
            self.daemon.bus.listeners.append(self.on_set)

    def stop(self) -> None:
        self._mods = []

    def on_preset(self, preset) -> None:
        specs = specs_for(preset)
        mods = [Modulator(s) for s in specs if s.enabled]
        self.preset_file = str(preset.path or "")
        self._mods = mods  # one assignment: the loop thread sees the old list or the new one
        self._gen += 1  # re-resolve the targets on the next frame
        if mods:
            log.info("modulators: %s", self.describe().split(None, 1)[1])

    # --- the loop thread ---
    def on_set(self, path: str, value: Any, source: str) -> None:
        """Bus listener (loop thread): a control set a modulated parameter, which becomes the new base."""
        t = self._targets.get(path)
        if t is not None:
            t.dirty = True

    def _resolve(self, pipeline, mods: list[Modulator], gen: int) -> None:
        self._pipeline, self._resolved_gen = pipeline, gen
        targets: dict[str, _Target] = {}
        self._targets = targets
        if pipeline is None:
            return
        for m in mods:
            path = m.spec.target
            if path in targets:
                continue
            entry = pipeline.registry.get(path)
            if entry is None:
                known = ", ".join(sorted(p for p, (st, _o) in pipeline.registry.items()
                                         if isinstance(st.spec, (FloatParam, IntParam))))
                m.error = f"no parameter at {path!r}"
                log.error("%s: %s.target: %s, the modulator does nothing (numeric parameters: %s)",
                          self.preset_file, m.spec.key, m.error, known)
                continue
            st = entry[0]
            if not isinstance(st.spec, (FloatParam, IntParam)):
                m.error = f"{path} is a {st.spec.kind} parameter; only float and int ones can be modulated"
                log.error("%s: %s.target: %s", self.preset_file, m.spec.key, m.error)
                continue
            m.error = ""
            targets[path] = _Target(st)

    def apply(self, ctx) -> None:
        """Engine.modulators hook: move every modulated parameter for this frame (cheap: a few float operations
        per modulator, nothing allocated but the per-target sums)."""
        gen, mods = self._gen, self._mods
        if not mods:
            return
        t0 = time.perf_counter()
        try:
            self._apply(ctx, gen, mods)
        except Exception as e:  # noqa: BLE001 - a modulator never stops the frame loop
            self.bad.report("error", f"{type(e).__name__}: {e}")
        self.frames += 1
        self.cost_s += time.perf_counter() - t0

    def _apply(self, ctx, gen: int, mods: list[Modulator]) -> None:
        engine = self.daemon.engine
        p = engine.incoming or engine.pipeline
        if p is not self._pipeline or gen != self._resolved_gen:
            self._resolve(p, mods, gen)
        tempo = getattr(self.daemon, "tempo", None)
        beats = tempo.beats() if tempo is not None else ctx.pts * 2.0
        offsets: dict[str, float] = {}
        for m in mods:
            t = self._targets.get(m.spec.target)
            if t is None:
                continue
            v = m.output(ctx.pts, beats, ctx.signals, ctx.dt)
            offsets[m.spec.target] = offsets.get(m.spec.target, 0.0) + m.spec.depth * t.span * v
        for path, off in offsets.items():
            t = self._targets[path]
            st = t.state
            if t.dirty or (t.written is not None and st.target != t.written):
                t.base = st.target  # someone else set it: that is the user's value now
            t.dirty = False
            st.set(min(max(t.base + off, t.lo), t.hi))
            t.written = st.target
            self._values[path] = st.target

    def status(self) -> dict:
        mods = []
        for m in self._mods:
            s = m.spec
            t = self._targets.get(s.target)
            d = {"target": s.target, "source": s.source, "depth": s.depth, "output": round(m.m, 4)}
            if s.source == "lfo":
                d.update(shape=s.shape, **({"beats": s.beats} if s.beats else {"rate": s.rate}))
            else:
                d["input"] = s.input
            if t is not None:
                d.update(base=_r(t.base), value=_r(self._values.get(s.target, t.state.target)))
            if m.error:
                d["error"] = m.error
            mods.append(d)
        return {"active": mods, "frames": self.frames,
                "us_per_frame": round(self.cost_s / self.frames * 1e6, 2) if self.frames else None,
                **self.bad.status()}


def _r(v):
    return round(v, 5) if isinstance(v, float) else v


# --- the preset section ---
def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse(entries: Any, name: str = "modulators") -> tuple[list[ModulatorSpec], list[tuple[str, str]]]:
    if not isinstance(entries, list):
        return [], [(name, "must be an array of tables: [[modulators]]")]
    specs, errs = [], []
    for i, e in enumerate(entries):
        key = f"{name}[{i}]"
        if not isinstance(e, dict):
            errs.append((key, "must be a table"))
            continue
        n_err = len(errs)
        for k in e:
            if k not in KEYS:
                errs.append((f"{key}.{k}", f"unknown key (allowed: {', '.join(sorted(KEYS))})"))
        target = e.get("target")
        if not (isinstance(target, str) and target.startswith("/") and len(target) > 1):
            errs.append((f"{key}.target", f"{target!r} must be a parameter path like \"/bg/r\""))
        source = e.get("source", "lfo")
        if source not in SOURCES:
            errs.append((f"{key}.source", f"{source!r} is not one of {', '.join(SOURCES)}"))
        depth = e.get("depth", 0.5)
        if not (_num(depth) and 0 <= depth <= 1):
            errs.append((f"{key}.depth", f"{depth!r} must be a number 0..1 (of the parameter's range)"))
        shape = e.get("shape", "sine")
        if shape not in SHAPES:
            errs.append((f"{key}.shape", f"{shape!r} is not one of {', '.join(SHAPES)}"))
        rate, beats = e.get("rate"), e.get("beats")
        if rate is not None and not (_num(rate) and 0 <= rate <= 1000):
            errs.append((f"{key}.rate", f"{rate!r} must be cycles per second, 0..1000"))
        if beats is not None and not (_num(beats) and 0 < beats <= 4096):
            errs.append((f"{key}.beats", f"{beats!r} must be beats per cycle, > 0 (e.g. 1, 4, 0.5)"))
        if rate is not None and beats is not None:
            errs.append((f"{key}.beats", "give either rate or beats, not both"))
        if source == "lfo" and rate is None and beats is None:
            errs.append((f"{key}.rate", "an lfo needs rate (Hz) or beats"))
        phase = e.get("phase", 0.0)
        if not (_num(phase) and 0 <= phase <= 1):
            errs.append((f"{key}.phase", f"{phase!r} must be a number 0..1"))
        inp = e.get("input", "level")
        if not (isinstance(inp, str) and (inp in AUDIO_INPUTS or (inp.startswith("band") and inp[4:].isdigit()
                                                                 and int(inp[4:]) <= 8))):
            errs.append((f"{key}.input", f"{inp!r} is not an audio feature "
                                         f"(allowed: {', '.join(AUDIO_INPUTS)}, band0..band8)"))
        for k, default in (("attack", 10.0), ("release", 250.0)):
            v = e.get(k, default)
            if not (_num(v) and 0 <= v <= 60000):
                errs.append((f"{key}.{k}", f"{v!r} must be milliseconds 0..60000"))
        pol = e.get("polarity", "")
        if pol != "" and pol not in POLARITIES:
            errs.append((f"{key}.polarity", f"{pol!r} is not one of {', '.join(POLARITIES)}"))
        for k in ("invert", "enabled"):
            if k in e and not isinstance(e[k], bool):
                errs.append((f"{key}.{k}", f"{e[k]!r} must be true or false"))
        if len(errs) == n_err:
            specs.append(ModulatorSpec(i, target, source, float(depth), shape,
                                       float(rate) if rate is not None else None,
                                       float(beats) if beats is not None else None, float(phase), inp,
                                       float(e.get("attack", 10.0)), float(e.get("release", 250.0)), pol,
                                       e.get("invert", False), e.get("enabled", True)))
    return specs, errs


def validate(section: Any, name: str = "modulators") -> list[tuple[str, str]]:
    return _parse(section, name)[1]


def specs_for(preset) -> list[ModulatorSpec]:
    if preset is None or "modulators" not in preset.data:
        return []
    return _parse(preset.data["modulators"])[0]


def _factory(daemon, preset):
    return ModulatorControl(daemon, specs_for(preset), str(preset.path or "") if preset is not None else "")


register_section("modulators", "modulators: [[modulators]] LFOs, envelope followers and audio features on "
                               "parameters", validate)
register_surface("modulators", _factory)
