"""MIDI control surface (mido + python-rtmidi): controllers move parameters, MIDI clock drives the tempo.

    [midi]
    input = "nanoKONTROL"         # a port name substring; absent: a virtual input port "vprod" to connect to
    output = "nanoKONTROL"        # feedback (LEDs, motor faders): a substring; absent: a virtual port "vprod-out";
                                  #   false: no feedback
    backend = "mido.backends.rtmidi/UNIX_JACK"   # absent: $MIDO_BACKEND, else mido's default (ALSA on Linux)
    map_file = "maps/nanokontrol.toml"   # more [[midi.map]] entries (relative to the preset)
    learn_file = "solid.midi-learn"      # where MIDI learn saves; default <preset>.midi-learn next to the preset
    takeover = true               # soft takeover for absolute controls unless a map says otherwise
    clock = true                  # follow MIDI clock: BPM and beat phase go to the modulators

    [[midi.map]]
    cc = 20                       # the control: cc = 0..127, note = 0..127 or pitchbend = true
    channel = 1                   # 1..16; absent: any channel
    target = "/bg/r"              # a parameter path (`vprod params`)
    range = [0.0, 1.0]            # the part of the parameter's 0..1 the control spans; [1.0, 0.0] inverts
    curve = "linear"              # linear; exp (fine steps near the low end); log (fine steps near the high end)
    mode = "absolute"             # see MODES
    takeover = true               # absolute, 14bit: the value does not move until the control reaches it
    step = 0.0078740157           # relative encoders: the change per tick, in 0..1 of the range (default 1/127)
    feedback = true               # send changes back to the output port

Modes (MODES): `absolute` (CC value 0..127; a note's velocity, note-off = the range's low end), `relative` (an
endless encoder in two's complement: 1..63 up, 127 = -1 … 65 = -63), `relative-signed` (sign bit: 1..63 up,
65 = -1 … 127 = -63), `relative-offset` (binary offset: 65 = +1, 63 = -1), `14bit` (CC N = MSB, N+32 = LSB, for
N in 0..31; the value moves when the LSB arrives, as controllers send MSB first), `trigger` (press: fires a trigger
parameter, or sets the range's high end, and release sets the low end: momentary), `toggle` (each press flips
between the range's ends), `pitchbend` (the pitch wheel, 14 bits). A CC or note button counts as pressed at
value/velocity >= 64 / > 0.

Mappings learned with MIDI learn (`arm(path)`: ZeroMQ {"op": "learn"}, `vprod midi learn`, OSC /vprod/midi/learn)
are saved to the learn file and win over the preset's own for the same control. MIDI clock (24 ticks per beat,
start/stop/continue, song position) gives daemon.tempo a BPM fitted over the last 4 beats. Feedback: every change to
a mapped parameter, from any surface, goes back out as CC / 14-bit pair / note / pitch bend (not echoed to the fader
that made it). Ports are watched: a named port that vanishes is closed and re-opened when it comes back.
SysEx, undecodable bytes and floods are counted (BadInput) and dropped; nothing waits on the MIDI thread.

Heavy imports (mido, rtmidi) happen in `start()`; the mapping code here needs neither.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import queue
import re
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import presets
from ..engine.bus import Event
from ..engine.params import ColorParam, ParamError, TextParam, TriggerParam
from . import register_surface
from .badinput import BadInput

log = logging.getLogger("vprod.control.midi")

CLIENT = "vprod"  # the client name other MIDI programs see
VIRTUAL_IN = "vprod"  # our input port (virtual when no `input` is named)
VIRTUAL_OUT = "vprod-out"  # our feedback port (virtual when no `output` is named)
RTMIDI_BACKEND = "mido.backends.rtmidi"
RTMIDI_APIS = ("LINUX_ALSA", "UNIX_JACK", "MACOSX_CORE", "WINDOWS_MM", "WEB_MIDI", "RTMIDI_DUMMY")
CURVES = ("linear", "exp", "log")
CURVE_K = 4.0  # exp/log steepness: exp(0.5) = 0.12, log(0.5) = 0.88
SOURCE_MODES = {
    "cc": ("absolute", "relative", "relative-signed", "relative-offset", "14bit", "trigger", "toggle"),
    "note": ("trigger", "toggle", "absolute"),
    "pitchbend": ("pitchbend", "absolute"),
}
MODES = ("absolute", "relative", "relative-signed", "relative-offset", "14bit", "trigger", "toggle", "pitchbend")
DEFAULT_MODE = {"cc": "absolute", "note": "trigger", "pitchbend": "pitchbend"}
SECTION_KEYS = {
    "enabled": "true/false (default true)",
    "input": "input port name substring (absent: a virtual port \"vprod\")",
    "output": "feedback port name substring (absent: a virtual port \"vprod-out\"; false: none)",
    "backend": "mido backend, e.g. \"mido.backends.rtmidi/UNIX_JACK\" (absent: $MIDO_BACKEND or mido's default)",
    "map_file": "a TOML file with more [[midi.map]] entries, relative to the preset",
    "learn_file": "where MIDI learn saves mappings (default <preset>.midi-learn next to the preset)",
    "takeover": "default soft takeover for absolute controls (true/false, default true)",
    "clock": "follow MIDI clock: BPM and beat phase (true/false, default true)",
    "map": "array of mappings: [[midi.map]]",
}
MAP_KEYS = ("cc", "note", "pitchbend", "channel", "target", "range", "curve", "mode", "takeover", "step", "feedback")
PATH_RE = re.compile(r"^(/[A-Za-z0-9_][A-Za-z0-9_.-]*){2,}$")
QUEUE_MAX = 4096  # MIDI messages waiting for the worker; more is a flood and is dropped (counted)
WATCH_S = 0.5  # how often ports are looked for (a named port that appears or vanishes)
BACKOFF_MAX_S = 10.0  # no backend (JACK not running): retry after 0.5, 1, 2 … 10 s


# --- curves and mappings (pure: unit-testable with mido.Message objects, no backend) ---
def curve(name: str, x: float) -> float:
    """Control position 0..1 → 0..1 of the range. exp and log are each other's inverse."""
    if name == "exp":
        return math.expm1(CURVE_K * x) / math.expm1(CURVE_K)
    if name == "log":
        return math.log1p(x * math.expm1(CURVE_K)) / CURVE_K
    return x


def curve_inverse(name: str, y: float) -> float:
    return curve({"exp": "log", "log": "exp"}.get(name, name), y)


def _clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def relative_delta(mode: str, value: int) -> int:
    """The signed tick count of one relative-encoder message."""
    if mode == "relative-signed":
        return value if value < 64 else -(value - 64)
    if mode == "relative-offset":
        return value - 64
    return value if value < 64 else value - 128  # two's complement


@dataclass
class Mapping:
    """One [[midi.map]] entry, checked. `channel` is 0-based here (1..16 in files), None for any."""

    kind: str  # cc | note | pitchbend
    number: int | None
    channel: int | None
    target: str
    lo: float = 0.0
    hi: float = 1.0
    curve: str = "linear"
    mode: str = "absolute"
    takeover: bool = False
    step: float = 1 / 127
    feedback: bool = True
    where: str = ""  # "file: midi.map[i]", for messages

    def message_keys(self) -> list[tuple[str, int | None]]:
        """The message keys this mapping listens to (a 14-bit pair listens to its MSB and LSB controllers)."""
        if self.kind == "cc" and self.mode == "14bit":
            return [("cc", self.number), ("cc", self.number + 32)]
        return [(self.kind, self.number)]

    def norm(self, x: float) -> float:
        """Control position 0..1 → the parameter's normalized value."""
        return self.lo + (self.hi - self.lo) * curve(self.curve, _clamp01(x))

    def position(self, norm: float) -> float:
        """The parameter's normalized value → where the control would be (0..1, clamped to the range)."""
        if self.hi == self.lo:
            return 0.0
        return curve_inverse(self.curve, _clamp01((norm - self.lo) / (self.hi - self.lo)))

    def is_on(self, norm: float) -> bool:
        """For buttons: whether the value is nearer the range's high end."""
        return abs(norm - self.hi) < abs(norm - self.lo) or (self.hi == self.lo)

    def describe(self) -> str:
        src = "pitchbend" if self.kind == "pitchbend" else f"{self.kind} {self.number}"
        ch = "any channel" if self.channel is None else f"channel {self.channel + 1}"
        return f"{src} ({ch}, {self.mode}) → {self.target}"

    def entry(self) -> dict:
        """Back to a [[midi.map]] table (what MIDI learn writes)."""
        d: dict[str, Any] = {"pitchbend": True} if self.kind == "pitchbend" else {self.kind: self.number}
        if self.channel is not None:
            d["channel"] = self.channel + 1
        d["target"] = self.target
        if (self.lo, self.hi) != (0.0, 1.0):
            d["range"] = [self.lo, self.hi]
        if self.curve != "linear":
            d["curve"] = self.curve
        if self.mode != DEFAULT_MODE[self.kind] and not (self.kind == "pitchbend" and self.mode == "absolute"):
            d["mode"] = self.mode
        return d


def _is_int(v, lo, hi) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_maps(entries: Any, key: str, where: str = "", takeover: bool = True) -> tuple[list[Mapping], list]:
    """Check [[midi.map]] entries; returns the mappings and every error as (key, message)."""
    errors: list[tuple[str, str]] = []
    maps: list[Mapping] = []
    if not isinstance(entries, list):
        return [], [(key, "must be an array of tables: [[midi.map]]")]
    for i, e in enumerate(entries):
        k = f"{key}[{i}]"
        if not isinstance(e, dict):
            errors.append((k, "must be a table with cc, note or pitchbend and a target"))
            continue
        n_err = len(errors)
        for name in e:
            if name not in MAP_KEYS:
                errors.append((f"{k}.{name}", f"unknown key (allowed: {', '.join(MAP_KEYS)})"))
        sources = [s for s in ("cc", "note", "pitchbend") if s in e]
        kind, number = "", None
        if len(sources) != 1:
            errors.append((k, "needs exactly one of cc = 0..127, note = 0..127, pitchbend = true"
                              + (f" (has {', '.join(sources)})" if sources else "")))
        else:
            kind = sources[0]
            v = e[kind]
            if kind == "pitchbend":
                if v is not True:
                    errors.append((f"{k}.pitchbend", f"{v!r} is not allowed (pitchbend = true)"))
            elif not _is_int(v, 0, 127):
                errors.append((f"{k}.{kind}", f"{v!r} is not allowed (integer 0..127)"))
            else:
                number = v
        channel = e.get("channel")
        if channel is not None and not _is_int(channel, 1, 16):
            errors.append((f"{k}.channel", f"{channel!r} is not allowed (integer 1..16, or leave it out for any)"))
        target = e.get("target")
        if not isinstance(target, str) or not PATH_RE.match(target):
            errors.append((f"{k}.target", f"{target!r} is not a parameter path like \"/bg/r\" (see `vprod params`)"
                           if target is not None else "missing: the parameter path, e.g. \"/bg/r\""))
        lo, hi = 0.0, 1.0
        if "range" in e:
            r = e["range"]
            if not (isinstance(r, list) and len(r) == 2 and all(_is_num(x) and 0 <= x <= 1 for x in r)):
                errors.append((f"{k}.range", f"{r!r} is not allowed ([lo, hi], each 0..1 of the parameter)"))
            else:
                lo, hi = float(r[0]), float(r[1])
        crv = e.get("curve", "linear")
        if crv not in CURVES:
            errors.append((f"{k}.curve", f"{crv!r} is not allowed (one of {', '.join(CURVES)})"))
        mode = e.get("mode", DEFAULT_MODE.get(kind, "absolute"))
        if mode not in MODES:
            errors.append((f"{k}.mode", f"{mode!r} is not allowed (one of {', '.join(MODES)})"))
        elif kind and mode not in SOURCE_MODES[kind]:
            errors.append((f"{k}.mode", f"{mode!r} does not go with {kind} (allowed: {', '.join(SOURCE_MODES[kind])})"))
        elif mode == "14bit" and number is not None and number > 31:
            errors.append((f"{k}.cc", f"{number} cannot be a 14-bit pair (MSB controller 0..31, LSB = cc + 32)"))
        if mode == "pitchbend":
            mode = "absolute"  # a pitch wheel is an absolute 14-bit control
        for flag in ("takeover", "feedback"):
            if flag in e and not isinstance(e[flag], bool):
                errors.append((f"{k}.{flag}", f"{e[flag]!r} must be true or false"))
        step = e.get("step", 1 / 127)
        if "step" in e and not (_is_num(step) and 0 < step <= 1):
            errors.append((f"{k}.step", f"{step!r} is not allowed (number > 0 and <= 1: change per encoder tick)"))
        elif "step" in e and not str(mode).startswith("relative"):
            errors.append((f"{k}.step", "only relative encoders have a step (mode = \"relative…\")"))
        if len(errors) > n_err:
            continue
        absolute = mode in ("absolute", "14bit") and kind != "note"
        default_takeover = takeover and absolute and kind == "cc"
        maps.append(Mapping(kind, number, None if channel is None else channel - 1, target, lo, hi, crv, mode,
                            takeover=bool(e.get("takeover", default_takeover)) and absolute, step=float(step),
                            feedback=bool(e.get("feedback", True)), where=f"{where}: {k}" if where else k))
    return maps, errors


def _split_backend(text: str) -> tuple[str, str | None]:
    module, _, api = text.partition("/")
    return module.strip(), (api.strip() or None)


def check_section(data: Any, section: str = "midi") -> list[tuple[str, str]]:
    """The preset validator for [midi]: every error as (key, message)."""
    if not isinstance(data, dict):
        return [(section, "must be a table: [midi]")]
    errors: list[tuple[str, str]] = []
    for k, v in data.items():
        key = f"{section}.{k}"
        if k not in SECTION_KEYS:
            errors.append((key, f"unknown key (allowed: {', '.join(SECTION_KEYS)})"))
        elif k in ("enabled", "takeover", "clock") and not isinstance(v, bool):
            errors.append((key, f"{v!r} must be true or false"))
        elif k in ("input", "map_file", "learn_file") and (not isinstance(v, str) or not v.strip()):
            errors.append((key, f"{v!r} must be a non-empty string"))
        elif k == "output" and not (v is False or (isinstance(v, str) and v.strip())):
            errors.append((key, f"{v!r} must be a port name substring, or false for no feedback"))
        elif k == "backend":
            if not isinstance(v, str) or not _split_backend(v)[0]:
                errors.append((key, f"{v!r} must be a mido backend like \"mido.backends.rtmidi/UNIX_JACK\""))
            else:
                module, api = _split_backend(v)
                if module == RTMIDI_BACKEND and api is not None and api not in RTMIDI_APIS:
                    errors.append((key, f"unknown rtmidi API {api!r} (allowed: {', '.join(RTMIDI_APIS)})"))
    if "map" in data:
        errors += parse_maps(data["map"], f"{section}.map", takeover=data.get("takeover", True) is not False)[1]
    return errors


def read_map_file(path: Path, takeover: bool = True) -> tuple[list[Mapping], list[str], list[dict]]:
    """A map or learn file: [[midi.map]] tables only. Returns mappings, errors ("file: key: message") and the raw
    entries; a missing file is no error (nothing learned yet)."""
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], [], []
    except OSError as e:
        return [], [f"{file}: -: cannot read: {e.strerror or e}"], []
    except tomllib.TOMLDecodeError as e:
        return [], [f"{file}: -: not valid TOML: {e}"], []
    errors = [f"{file}: {k}: unknown key (a map file holds [[midi.map]] tables only)" for k in data if k != "midi"]
    midi = data.get("midi", {})
    if not isinstance(midi, dict):
        return [], errors + [f"{file}: midi: must hold [[midi.map]] tables"], []
    errors += [f"{file}: midi.{k}: unknown key (a map file holds [[midi.map]] tables only)" for k in midi if k != "map"]
    entries = midi.get("map", [])
    maps, errs = parse_maps(entries, "midi.map", file, takeover)
    errors += [f"{file}: {k}: {m}" for k, m in errs]
    return (maps if not errors else []), errors, (entries if isinstance(entries, list) else [])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a TOML basic string: JSON's escapes are valid TOML


def write_map_file(path: Path, entries: list[dict]) -> None:
    """Write [[midi.map]] tables atomically (a new file renamed over the old one)."""
    lines = ["# MIDI mappings saved by vprod's MIDI learn; the same [[midi.map]] tables as in a preset.",
             "# Edit freely. A control listed here wins over the preset's own mapping for it.", ""]
    for e in entries:
        lines.append("[[midi.map]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in e.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class _State:
    """What a mapping remembers between messages; reset when someone else changes its parameter."""

    picked: bool = False  # soft takeover: the control has reached the value
    prev: float | None = None  # the last normalized value the control asked for (to see it cross)
    x: float | None = None  # relative encoders: the control's position
    on: bool | None = None  # toggles
    msb: int = 0  # 14-bit pairs: the last MSB

    def reset(self) -> None:
        self.picked, self.prev, self.x, self.on = False, None, None, None


class Mapper:
    """MIDI messages → parameter changes. Learned mappings win: when one of them matches a message, the preset's
    mappings do not see it. `handle` returns (matched, [(mapping, path, real value)]); `resolve(path)` gives the
    live ParamState (target and spec), `report(kind, message)` takes bad input."""

    def __init__(self, maps: list[Mapping], learned: list[Mapping] | None = None,
                 report: Callable[[str, str], None] | None = None):
        self.maps = list(maps)
        self.learned = list(learned or [])
        self.report = report or (lambda kind, msg: log.warning("%s (%s)", msg, kind))
        self.tiers: list[dict[tuple, list[Mapping]]] = []
        for tier in (self.learned, self.maps):
            index: dict[tuple, list[Mapping]] = collections.defaultdict(list)
            for m in tier:
                for key in m.message_keys():
                    index[key].append(m)
            self.tiers.append(dict(index))
        self.by_target: dict[str, list[Mapping]] = collections.defaultdict(list)
        for m in self.learned + self.maps:
            self.by_target[m.target].append(m)
        self.by_target = dict(self.by_target)
        self.states: dict[int, _State] = {id(m): _State() for m in self.learned + self.maps}
        self.last_post: dict[str, tuple[int, Any]] = {}  # path → (id of the mapping, real value) it posted last

    def __len__(self) -> int:
        return len(self.maps) + len(self.learned)

    def release(self, path: str) -> None:
        """Someone else changed `path`: its controls must take it over again (and re-read toggles, encoders)."""
        for m in self.by_target.get(path, ()):
            self.states[id(m)].reset()

    def waiting(self) -> list[str]:
        """Soft-takeover mappings that have not reached their value yet (for status: why a knob does nothing)."""
        return [m.describe() for m in self.learned + self.maps
                if m.takeover and not self.states[id(m)].picked and self.states[id(m)].prev is not None]

    @staticmethod
    def key_of(msg) -> tuple | None:
        t = msg.type
        if t == "control_change":
            return ("cc", msg.control)
        if t in ("note_on", "note_off"):
            return ("note", msg.note)
        if t == "pitchwheel":
            return ("pitchbend", None)
        return None

    def handle(self, msg, resolve: Callable[[str], Any]) -> tuple[bool, list[tuple[Mapping, str, Any]]]:
        key = self.key_of(msg)
        if key is None:
            return False, []
        for index in self.tiers:
            hits = [m for m in index.get(key, ()) if m.channel is None or m.channel == msg.channel]
            if hits:
                out = []
                for m in hits:
                    res = self._one(m, msg, resolve)
                    if res is not None:
                        out.append((m, m.target, res))
                return True, out
        return False, []

    def _one(self, m: Mapping, msg, resolve) -> Any:
        try:
            st = resolve(m.target)
        except KeyError:
            self.report("unknown-target", f"{m.where}: no parameter {m.target!r} in the playing preset "
                                          "(see `vprod params`)")
            return None
        spec = st.spec
        if isinstance(spec, (TextParam, ColorParam)):
            self.report("unmappable-target", f"{m.where}: {m.target} is a {spec.kind} parameter; MIDI sets "
                                             "numbers, switches, choices and triggers")
            return None
        s = self.states[id(m)]
        norm = self._norm(m, s, msg, spec, st)
        if norm is None:
            return None
        try:
            real = spec.from_norm(norm)
        except ParamError as e:  # cannot happen for a number in 0..1, but a plugin's parameter may be odd
            self.report("bad-value", f"{m.where}: {m.target}: {e}")
            return None
        for other in self.by_target.get(m.target, ()):
            if other is not m:
                self.states[id(other)].reset()
        self.last_post[m.target] = (id(m), real)
        return real

    def _norm(self, m: Mapping, s: _State, msg, spec, st) -> float | None:
        """The normalized value `msg` asks `m`'s parameter for, or None (nothing to do)."""
        trigger = isinstance(spec, TriggerParam)
        if m.mode in ("trigger", "toggle"):
            if msg.type == "control_change":
                pressed = msg.value >= 64
            else:
                pressed = msg.type == "note_on" and msg.velocity > 0
            if m.mode == "trigger":
                if trigger:
                    return 1.0 if pressed else None
                return m.hi if pressed else m.lo
            if not pressed:
                return None
            if s.on is None:
                s.on = m.is_on(_current_norm(spec, st))
            s.on = not s.on
            return m.hi if s.on else m.lo
        if trigger:  # a knob or fader on a trigger: fire as it passes the middle upwards
            if msg.type == "control_change":
                up = msg.value >= 64
            elif msg.type == "pitchwheel":
                up = msg.pitch >= 0
            else:
                up = msg.type == "note_on" and msg.velocity > 0
            was, s.on = s.on, up
            return 1.0 if up and not was else None
        if m.mode.startswith("relative"):
            if s.x is None:
                s.x = m.position(_current_norm(spec, st))
            s.x = _clamp01(s.x + relative_delta(m.mode, msg.value) * m.step)
            return m.norm(s.x)
        # absolute: cc, 14-bit pair, note velocity, pitch wheel
        if msg.type == "control_change":
            if m.mode == "14bit":
                if msg.control == m.number:
                    s.msb = msg.value
                    return None
                x, step = ((s.msb << 7) | msg.value) / 16383, 1 / 512
            else:
                x, step = msg.value / 127, 1 / 127
        elif msg.type == "pitchwheel":
            x, step = (msg.pitch + 8192) / 16383, 1 / 512
        else:
            x, step = (msg.velocity / 127 if msg.type == "note_on" else 0.0), 1 / 127
        want = m.norm(x)
        if m.takeover and not s.picked:
            lo, hi = min(m.lo, m.hi), max(m.lo, m.hi)
            cur = min(max(_current_norm(spec, st), lo), hi)  # a value outside the range: pick up at its end
            tol = abs(m.hi - m.lo) * step * 1.01
            crossed = s.prev is not None and (s.prev - cur) * (want - cur) <= 0
            s.prev = want
            if abs(want - cur) > tol and not crossed:
                return None
            s.picked = True
        return want


def _norm_of(spec, real: Any) -> float:
    """A parameter value in 0..1 (0 for what has no number: text, colours)."""
    try:
        v = spec.to_norm(real)
        return float(v) if _is_num(v) else 0.0
    except (TypeError, ValueError):
        return 0.0


def _current_norm(spec, st) -> float:
    return _norm_of(spec, st.target)  # the target: what was last set, even while the value slews towards it


def feedback_bytes(m: Mapping, spec, real: Any) -> list[list[int]]:
    """What to send to the output port so the control shows `real` (LED, motor fader, encoder ring)."""
    if isinstance(spec, (TriggerParam, TextParam, ColorParam)):
        return []
    norm = _norm_of(spec, real)
    ch = m.channel or 0
    x = m.position(norm)
    if m.mode in ("trigger", "toggle"):
        v = 127 if m.is_on(norm) else 0
        return [[0xB0 | ch, m.number, v]] if m.kind == "cc" else [[0x90 | ch, m.number, v]]
    if m.kind == "pitchbend":
        v = round(x * 16383)
        return [[0xE0 | ch, v & 0x7F, v >> 7]]
    if m.mode == "14bit":
        v = round(x * 16383)
        return [[0xB0 | ch, m.number, v >> 7], [0xB0 | ch, m.number + 32, v & 0x7F]]
    if m.kind == "note":
        return [[0x90 | ch, m.number, round(x * 127)]]
    return [[0xB0 | ch, m.number, round(x * 127)]]


def learn_mapping(msg, target: str, spec) -> Mapping | None:
    """The mapping MIDI learn makes of the first control moved, or None for a message that is no control
    (note-off, clock …). Notes and buttons on switches and triggers toggle / trigger; anything else is absolute."""
    t = msg.type
    trig = isinstance(spec, TriggerParam)
    switch = getattr(spec, "kind", "") == "bool"
    if t == "control_change":
        mode = "trigger" if trig else "toggle" if switch else "absolute"
        return Mapping("cc", msg.control, msg.channel, target, mode=mode, takeover=mode == "absolute")
    if t == "note_on" and msg.velocity > 0:
        return Mapping("note", msg.note, msg.channel, target, mode="trigger" if trig else "toggle")
    if t == "pitchwheel":
        return Mapping("pitchbend", None, msg.channel, target, mode="absolute")
    return None


def _same_source(a: dict, b: dict) -> bool:
    def src(e):
        if "pitchbend" in e:
            return ("pitchbend", None, e.get("channel"))
        return ("cc", e["cc"], e.get("channel")) if "cc" in e else ("note", e.get("note"), e.get("channel"))
    return src(a) == src(b)


# --- MIDI clock ---
class ClockFollower:
    """BPM and beat phase from MIDI clock (24 ticks per quarter note).

    Arrival times jitter (JACK delivers in periods of ~21 ms), so the tempo is a least-squares line through the
    last WINDOW ticks' arrival times, refitted on every beat; `beat_at` is that line's time of the beat."""

    WINDOW = 96  # 4 beats
    MIN_TICKS = 24  # one beat before the first estimate
    GAP_S = 0.5  # a pause longer than this starts a new fit (the clock was stopped or changed abruptly)

    def __init__(self):
        self.ticks: collections.deque[tuple[int, float]] = collections.deque(maxlen=self.WINDOW)
        self.index = 0  # the next tick's position in ticks since the song start
        self.total = 0
        self.running: bool | None = None
        self.bpm: float | None = None

    def _reindex(self, new_index: int) -> None:
        shift = new_index - self.index
        self.ticks = collections.deque(((i + shift, t) for i, t in self.ticks), maxlen=self.WINDOW)
        self.index = new_index

    def message(self, msg, t: float) -> tuple[float, float] | None:
        """Feed one clock-family message arriving at monotonic time `t`; returns (bpm, beat_at) on a beat."""
        typ = msg.type
        if typ == "start":
            self.running = True
            self._reindex(0)  # the next tick is the first of beat 0
        elif typ == "continue":
            self.running = True
        elif typ == "stop":
            self.running = False
        elif typ == "songpos":
            self._reindex(msg.pos * 6)  # in sixteenth notes: 6 ticks each
        elif typ == "clock":
            return self.tick(t)
        return None

    def tick(self, t: float) -> tuple[float, float] | None:
        if self.ticks and t - self.ticks[-1][1] > self.GAP_S:
            self.ticks.clear()
        i = self.index
        self.ticks.append((i, t))
        self.index += 1
        self.total += 1
        if i % 24 or len(self.ticks) < self.MIN_TICKS:
            return None
        n = len(self.ticks)
        mi = sum(k for k, _ in self.ticks) / n
        mt = sum(x for _, x in self.ticks) / n
        sxx = sum((k - mi) ** 2 for k, _ in self.ticks)
        slope = sum((k - mi) * (x - mt) for k, x in self.ticks) / sxx if sxx else 0.0
        if slope <= 0:
            return None
        self.bpm = 60.0 / (24.0 * slope)
        return self.bpm, mt + slope * (i - mi)

    def status(self) -> dict:
        return {"bpm": None if self.bpm is None else round(self.bpm, 2), "ticks": self.total,
                "running": self.running, "beat": self.index / 24.0}


# --- ports: python-rtmidi directly (raw bytes, so junk can be counted), or any other mido backend ---
OWN_PORT_RE = re.compile(rf"^[^:]*:({re.escape(VIRTUAL_IN)}|{re.escape(VIRTUAL_OUT)})(\s+\d+:\d+)?$")


def _own_port(name: str) -> bool:
    """vprod's own ports (this daemon's or another vprod's: "client:vprod", "client:vprod-out", with ALSA's
    " 128:0" after it): never opened as a controller or a feedback target, so `input = "vprod"` cannot loop."""
    return OWN_PORT_RE.match(name) is not None


class _RtMidiPorts:
    """One python-rtmidi input and one output (each a client of the MIDI system) for listing and opening ports."""

    def __init__(self, api: str | None, client: str = CLIENT):
        import rtmidi

        api_id = getattr(rtmidi, f"API_{api}") if api else rtmidi.API_UNSPECIFIED
        self._in = rtmidi.MidiIn(rtapi=api_id, name=client)
        try:
            self._out = rtmidi.MidiOut(rtapi=api_id, name=client)
        except Exception:
            self._in.delete()
            raise
        self._in.ignore_types(sysex=False, timing=False, active_sense=True)  # SysEx to count it, clock to follow
        self.api = rtmidi.get_api_display_name(self._in.get_current_api())

    def inputs(self) -> list[str]:
        return self._in.get_ports()

    def outputs(self) -> list[str]:
        return self._out.get_ports()

    def open_input(self, name: str | None, callback: Callable[[list, float], None]) -> None:
        self._in.set_callback(lambda event, _data: callback(event[0], time.monotonic()))
        if name is None:
            self._in.open_virtual_port(VIRTUAL_IN)
        else:
            self._in.open_port(self.inputs().index(name), VIRTUAL_IN)

    def close_input(self) -> None:
        self._in.close_port()
        self._in.cancel_callback()

    def open_output(self, name: str | None) -> None:
        if name is None:
            self._out.open_virtual_port(VIRTUAL_OUT)
        else:
            self._out.open_port(self.outputs().index(name), VIRTUAL_OUT)

    def close_output(self) -> None:
        self._out.close_port()

    def send(self, data: list[int]) -> None:
        self._out.send_message(data)

    def close(self) -> None:
        for p in (self._in, self._out):
            try:
                p.close_port()
            finally:
                p.delete()


class _MidoPorts:
    """Any other mido backend (portmidi, …): mido ports; undecodable bytes are dropped by mido before we see them."""

    def __init__(self, backend: str):
        import mido

        self._mido = mido
        self._backend = mido.Backend(backend, load=True)
        self.api = backend
        self._in = self._outp = None

    def inputs(self) -> list[str]:
        return self._backend.get_input_names()

    def outputs(self) -> list[str]:
        return self._backend.get_output_names()

    def open_input(self, name: str | None, callback: Callable[[list, float], None]) -> None:
        cb = lambda msg: callback(msg.bytes(), time.monotonic())  # noqa: E731
        self._in = self._backend.open_input(name or VIRTUAL_IN, virtual=name is None, callback=cb)

    def close_input(self) -> None:
        if self._in is not None:
            self._in.close()
            self._in = None

    def open_output(self, name: str | None) -> None:
        self._outp = self._backend.open_output(name or VIRTUAL_OUT, virtual=name is None)

    def close_output(self) -> None:
        if self._outp is not None:
            self._outp.close()
            self._outp = None

    def send(self, data: list[int]) -> None:
        self._outp.send(self._mido.Message.from_bytes(data))

    def close(self) -> None:
        self.close_input()
        self.close_output()


def default_backend() -> str:
    return os.environ.get("MIDO_BACKEND") or RTMIDI_BACKEND


def open_ports(backend: str | None):
    """The port layer for a mido backend string ("module" or "module/API"); raises OSError/ImportError with why."""
    module, api = _split_backend(backend or default_backend())
    if module == RTMIDI_BACKEND:
        return _RtMidiPorts(api)
    return _MidoPorts(backend or default_backend())


def why(e: BaseException) -> str:
    text = str(e).strip()
    if "ALSA sequencer" in text or "snd_seq" in text:
        text += (" (no ALSA sequencer here: load the snd-seq module, or run JACK — `jackd -r -d dummy` — and set "
                 "backend = \"mido.backends.rtmidi/UNIX_JACK\" in [midi] or MIDO_BACKEND)")
    elif "JACK server not running" in text:
        text += " (start JACK, e.g. `jackd -r -d dummy -r 48000 -p 1024`)"
    return text or type(e).__name__


# --- configuration from a preset ---
@dataclass
class MidiConfig:
    input: str | None = None  # None: a virtual input port
    output: str | None = None  # None: a virtual output port (when feedback is on)
    feedback: bool = True  # False: `output = false`
    backend: str | None = None
    clock: bool = True
    takeover: bool = True
    map_file: Path | None = None
    learn_file: Path | None = None
    maps: list[Mapping] = field(default_factory=list)
    learned: list[Mapping] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # in map and learn files

    @property
    def ports(self) -> tuple:
        return (self.backend or default_backend(), self.input, self.output if self.feedback else False)


def load_config(section: dict, preset_path: Path | None) -> MidiConfig:
    """[midi] of a (validated) preset, with its map file and learn file read and checked."""
    file = str(preset_path) if preset_path else "<preset>"
    base = preset_path.parent if preset_path else Path.cwd()
    cfg = MidiConfig(input=section.get("input"), backend=section.get("backend"),
                     clock=section.get("clock", True), takeover=section.get("takeover", True))
    out = section.get("output")
    cfg.feedback = out is not False
    cfg.output = out if isinstance(out, str) else None
    cfg.maps, errs = parse_maps(section.get("map", []), "midi.map", file, cfg.takeover)
    cfg.errors += [f"{file}: {k}: {m}" for k, m in errs]
    if section.get("map_file"):
        cfg.map_file = (base / section["map_file"]).resolve()
        if not cfg.map_file.exists():
            cfg.errors.append(f"{file}: midi.map_file: {cfg.map_file} does not exist")
        else:
            maps, errs, _ = read_map_file(cfg.map_file, cfg.takeover)
            cfg.maps += maps
            cfg.errors += errs
    stem = preset_path.stem if preset_path else "vprod"
    cfg.learn_file = (base / section.get("learn_file", f"{stem}.midi-learn")).resolve()
    cfg.learned, errs, _ = read_map_file(cfg.learn_file, cfg.takeover)
    cfg.errors += errs
    return cfg


# --- the control surface ---
class MidiControl:
    """MIDI in (controls, clock, learn) → the control bus; parameter changes → MIDI out. Threads: the MIDI
    system's callback (stamps and queues, never blocks), a worker (maps and posts), a feedback sender, a port
    watcher."""

    name = "midi"

    def __init__(self, daemon, cfg: MidiConfig, preset_name: str = ""):
        self.daemon = daemon
        self.cfg = cfg
        self.preset_name = preset_name
        self.bad = BadInput("midi", log)
        self.mapper = Mapper(cfg.maps, cfg.learned, self.bad.report)
        self.clock = ClockFollower()
        self.state = "starting"
        self.messages = self.posted = self.unmapped = self.feedback_sent = 0
        self.learning: str | None = None
        self.last_learned: dict | None = None
        self._q: queue.Queue = queue.Queue(QUEUE_MAX)
        self._foreign: collections.deque[str] = collections.deque(maxlen=1024)
        self._fb: collections.deque[tuple[str, Any, str]] = collections.deque(maxlen=4096)
        self._fb_event = threading.Event()
        self._fb_last: dict[int, list] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ports = None
        self._ports_key: str | None = None  # the backend the ports were opened with
        self._port_lock = threading.Lock()
        self.in_port: str | None = None  # what is open now ("vprod (virtual)" for the virtual one)
        self.out_port: str | None = None
        self._in_want: object = None
        self._out_want: object = None
        self._missing_told: set = set()  # wanted ports already reported missing (one log line each)
        self._retry_at = 0.0
        self._backoff = 0.5
        self._mido = None
        for e in cfg.errors:
            log.error("MIDI: %s (those mappings are off)", e)

    # --- lifecycle ---
    def describe(self) -> str:
        ins = self.in_port or (f"waiting for {self.cfg.input!r}" if self.cfg.input else "-")
        outs = self.out_port or ("off" if not self.cfg.feedback else f"waiting for {self.cfg.output!r}")
        state = self.state if self.state != "running" else f"in {ins}, out {outs}"
        return f"midi           {state} ({len(self.mapper)} mappings, clock {'on' if self.cfg.clock else 'off'})"

    def start(self) -> None:
        import mido  # heavy: only when a preset asks for MIDI

        self._mido = mido
        try:
            self._reconcile()
        except Exception as e:  # noqa: BLE001 - the watcher tries again; the output plays on
            log.warning("MIDI ports: %s", why(e))
        self.daemon.bus.listeners.append(self._on_change)
        for name, fn in (("midi-in", self._work), ("midi-feedback", self._feedback), ("midi-ports", self._watch)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._sync_feedback()

    def stop(self) -> None:
        self._stop.set()
        self._fb_event.set()
        try:
            self.daemon.bus.listeners.remove(self._on_change)
        except ValueError:
            pass
        for t in self._threads:
            t.join(2.0)
        with self._port_lock:
            self._close_ports()
        self.state = "stopped"

    def on_preset(self, preset) -> None:
        """A preset with [midi] brings its mappings and ports; one without keeps the MIDI set-up in force."""
        section = preset.data.get("midi")
        if section is None:
            self._sync_feedback()
            return
        cfg = load_config(section, preset.path)
        for e in cfg.errors:
            log.error("MIDI: %s (those mappings are off)", e)
        self.cfg = cfg
        self.preset_name = preset.name
        self.mapper = Mapper(cfg.maps, cfg.learned, self.bad.report)  # fresh state: every control takes over anew
        self._fb_last = {}
        self._retry_at = 0.0
        self._sync_feedback()

    def status(self) -> dict:
        clock = self.clock.status()
        tempo = getattr(self.daemon, "tempo", None)
        return {"state": self.state, "backend": self.cfg.ports[0], "api": getattr(self._ports, "api", None),
                "input": {"wanted": self.cfg.input or f"{VIRTUAL_IN} (virtual)", "port": self.in_port},
                "output": {"wanted": (self.cfg.output or f"{VIRTUAL_OUT} (virtual)") if self.cfg.feedback else None,
                           "port": self.out_port},
                "mappings": len(self.mapper.maps), "learned": len(self.mapper.learned),
                "map_file": str(self.cfg.map_file) if self.cfg.map_file else None,
                "learn_file": str(self.cfg.learn_file), "learning": self.learning, "last_learned": self.last_learned,
                "takeover_waiting": self.mapper.waiting(), "messages": self.messages, "posted": self.posted,
                "unmapped": self.unmapped, "feedback_sent": self.feedback_sent, "queue": self._q.qsize(),
                "clock": clock, "tempo": tempo.status() if tempo is not None else None, **self.bad.status()}

    # --- MIDI learn ---
    def arm(self, path: str) -> str | None:
        """Learn `path` from the next control moved. None when armed, else why not."""
        try:
            st = self.daemon.engine.resolve(path)
        except KeyError as e:
            return e.args[0]
        if isinstance(st.spec, (TextParam, ColorParam)):
            return f"{path} is a {st.spec.kind} parameter; MIDI learns numbers, switches, choices and triggers"
        self.learning = path
        log.info("MIDI learn: %s armed, move a control (it will be saved to %s)", path, self.cfg.learn_file)
        return None

    def _learn(self, msg) -> bool:
        path = self.learning
        try:
            spec = self.daemon.engine.resolve(path).spec
        except KeyError as e:
            log.warning("MIDI learn: %s (disarmed)", e.args[0])
            self.learning = None
            return False
        m = learn_mapping(msg, path, spec)
        if m is None:
            return False
        self.learning = None
        entry = m.entry()
        file = self.cfg.learn_file
        _, errors, entries = read_map_file(file, self.cfg.takeover)
        if errors:
            log.error("MIDI learn: not saved; fix or remove %s first: %s", file, "; ".join(errors))
            return True
        entries = [e for e in entries if e.get("target") != path and not _same_source(e, entry)] + [entry]
        try:
            write_map_file(file, entries)
        except OSError as e:
            log.error("MIDI learn: cannot write %s: %s (set learn_file in [midi])", file, e.strerror or e)
            return True
        learned, errors, _ = read_map_file(file, self.cfg.takeover)
        self.cfg.learned = learned
        self.mapper = Mapper(self.cfg.maps, learned, self.bad.report)
        self.last_learned = {**entry, "file": str(file)}
        log.info("MIDI learn: %s saved to %s", m.describe(), file)
        return True

    # --- MIDI in ---
    def _on_midi(self, data: list, t: float) -> None:
        """The MIDI system's thread: stamp, drop SysEx, queue. Never blocks."""
        if data and data[0] == 0xF0:
            self.bad.report("sysex", f"SysEx ({len(data)} bytes) on {self.in_port} ignored")
            return
        try:
            self._q.put_nowait((data, t))
        except queue.Full:
            self.bad.report("overflow", f"more than {QUEUE_MAX} MIDI messages waiting on {self.in_port}; dropped")

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                data, t = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._handle(data, t)
            except Exception:  # noqa: BLE001 - one bad message never stops MIDI
                log.exception("MIDI message %s failed", data)

    def _handle(self, data: list, t: float) -> None:
        self.messages += 1
        try:
            msg = self._mido.Message.from_bytes(data)
        except (ValueError, TypeError, IndexError) as e:
            shown = " ".join(f"{b:02x}" for b in list(data)[:8]) + (" …" if len(data) > 8 else "")
            self.bad.report("junk", f"undecodable MIDI bytes [{shown}] on {self.in_port}: {e}")
            return
        if msg.type in ("clock", "start", "stop", "continue", "songpos"):
            if self.cfg.clock:
                self._clock(msg, t)
            return
        if self.learning is not None and self._learn(msg):
            return
        mapper = self.mapper
        while self._foreign:
            mapper.release(self._foreign.popleft())
        matched, posts = mapper.handle(msg, self.daemon.engine.resolve)
        if not matched:
            self.unmapped += 1
        for _m, path, real in posts:
            self.daemon.bus.post(Event("set", path, real, "midi", stamp=t))  # stamped on arrival
            self.posted += 1

    def _clock(self, msg, t: float) -> None:
        res = self.clock.message(msg, t)
        tempo = getattr(self.daemon, "tempo", None)
        if tempo is None:
            return
        if msg.type in ("start", "stop", "continue"):
            tempo.running = msg.type != "stop"
        if res is not None:
            tempo.set(res[0], "midi", beat_at=res[1])

    # --- feedback out ---
    def _on_change(self, path: str, real: Any, source: str) -> None:
        """The frame loop's thread, after a change took effect: note it and wake the sender. Never blocks."""
        if path not in self.mapper.by_target:
            return
        if source != "midi":
            self._foreign.append(path)
        if self.out_port is not None:
            self._fb.append((path, real, source))
            self._fb_event.set()

    def _sync_feedback(self) -> None:
        """Send every mapped parameter's value (at start and after a preset switch), once the loop applied it."""
        def collect() -> None:  # runs on the loop thread, after the preset switch queued before it
            for path in self.mapper.by_target:
                try:
                    self._fb.append((path, self.daemon.engine.resolve(path).target, "sync"))
                except KeyError:
                    pass
            self._fb_event.set()
        self.daemon.bus.post(Event("call", fn=collect, source="midi"))

    def _feedback(self) -> None:
        while not self._stop.is_set():
            self._fb_event.wait(0.5)
            self._fb_event.clear()
            latest: dict[str, tuple[Any, str]] = {}
            while self._fb:
                path, real, source = self._fb.popleft()
                latest[path] = (real, source)
            for path, (real, source) in latest.items():
                try:
                    self._send_feedback(path, real, source)
                except Exception as e:  # noqa: BLE001
                    log.warning("MIDI feedback for %s failed: %s", path, e)

    def _send_feedback(self, path: str, real: Any, source: str) -> None:
        mapper = self.mapper
        try:
            spec = self.daemon.engine.resolve(path).spec
        except KeyError:
            return
        origin = mapper.last_post.get(path) if source == "midi" else None
        for m in mapper.by_target.get(path, ()):
            if not m.feedback:
                continue
            # The fader or knob that made this change already shows it (a motor fader must not fight the hand).
            if origin is not None and origin == (id(m), real) and m.mode in ("absolute", "14bit"):
                continue
            msgs = feedback_bytes(m, spec, real)
            if not msgs or (source != "sync" and self._fb_last.get(id(m)) == msgs):
                continue
            self._fb_last[id(m)] = msgs
            with self._port_lock:
                if self._ports is None or self.out_port is None:
                    return
                for data in msgs:
                    self._ports.send(data)
                    self.feedback_sent += 1

    # --- ports: open what the preset names, follow them as they come and go ---
    def _watch(self) -> None:
        last = ""
        while not self._stop.wait(WATCH_S):
            try:
                self._reconcile()
                last = ""
            except Exception as e:  # noqa: BLE001 - the watcher keeps watching
                if why(e) != last:  # once per new problem, not every half second
                    last = why(e)
                    log.warning("MIDI ports: %s", last)

    def _close_ports(self) -> None:
        if self._ports is not None:
            try:
                self._ports.close()
            except Exception as e:  # noqa: BLE001 - closing what is already gone (a dead JACK server)
                log.debug("MIDI ports did not close cleanly: %s", e)
        self._ports = None
        self.in_port = self.out_port = None
        self._in_want = self._out_want = None

    def _reconcile(self) -> None:
        with self._port_lock:
            backend, want_in, want_out = self.cfg.ports
            if self._ports is not None and self._ports_key != backend:
                log.info("MIDI backend changes to %s", backend)
                self._close_ports()
            if self._ports is None:
                if time.monotonic() < self._retry_at:
                    return
                try:
                    self._ports = open_ports(backend)
                    self._ports_key = backend
                except Exception as e:  # noqa: BLE001 - ImportError, rtmidi's SystemError (an OSError), …
                    if self.state != f"no MIDI: {why(e)}":
                        log.error("MIDI is off for now: %s; retrying in the background", why(e))
                    self.state = f"no MIDI: {why(e)}"
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
                    return
                self._backoff = 0.5
                if self.state.startswith("no MIDI"):
                    log.info("MIDI backend %s is up", self._ports.api)
                self.state = "running"
            self._reconcile_input(want_in)
            self._reconcile_output(want_out)

    def _find(self, names: list[str], want: str) -> str | None:
        return next((n for n in names if want.lower() in n.lower() and not _own_port(n)), None)

    def _reconcile_input(self, want: str | None) -> None:
        if self.in_port is not None and self._in_want != want:
            self._ports.close_input()
            self.in_port = None
        if want is None:
            if self.in_port is None:
                self._ports.open_input(None, self._on_midi)
                self.in_port, self._in_want = f"{VIRTUAL_IN} (virtual)", None
                log.info("MIDI input: virtual port %r (connect a controller to it)", VIRTUAL_IN)
            return
        names = self._ports.inputs()
        if self.in_port is not None and self.in_port not in names:
            log.warning("MIDI input %s vanished; it is re-opened when it comes back", self.in_port)
            self._ports.close_input()
            self.in_port = None
            self._missing_told.add(want)  # that line says it all: no "no such port yet" after it
        if self.in_port is None:
            name = self._find(names, want)
            if name is None:
                if want not in self._missing_told:
                    self._missing_told.add(want)
                    log.warning("MIDI input %r: no such port yet (inputs: %s); waiting for it", want,
                                ", ".join(n for n in names if not _own_port(n)) or "none")
                return
            self._ports.open_input(name, self._on_midi)
            self.in_port, self._in_want = name, want
            self._missing_told.discard(want)
            log.info("MIDI input %s connected", name)

    def _reconcile_output(self, want) -> None:
        if self.out_port is not None and self._out_want != want:
            self._ports.close_output()
            self.out_port = None
        if want is False:
            return
        if want is None:
            if self.out_port is None:
                self._ports.open_output(None)
                self.out_port, self._out_want = f"{VIRTUAL_OUT} (virtual)", None
                log.info("MIDI feedback: virtual port %r", VIRTUAL_OUT)
            return
        names = self._ports.outputs()
        if self.out_port is not None and self.out_port not in names:
            log.warning("MIDI output %s vanished; it is re-opened when it comes back", self.out_port)
            self._ports.close_output()
            self.out_port = None
            self._missing_told.add(("out", want))
        if self.out_port is None:
            name = self._find(names, want)
            if name is None:
                if ("out", want) not in self._missing_told:
                    self._missing_told.add(("out", want))
                    log.warning("MIDI output %r: no such port yet (outputs: %s); waiting for it", want,
                                ", ".join(n for n in names if not _own_port(n)) or "none")
                return
            self._ports.open_output(name)
            self.out_port, self._out_want = name, want
            self._missing_told.discard(("out", want))
            self._fb_last = {}
            log.info("MIDI output %s connected", name)
            self._sync_feedback()


def factory(daemon, preset) -> MidiControl | None:
    """Built when the preset has a [midi] section (and it is not `enabled = false`)."""
    section = preset.data.get("midi")
    if section is None or section.get("enabled", True) is False:
        return None
    return MidiControl(daemon, load_config(section, preset.path), preset.name)


presets.register_section("midi", "MIDI control: [midi] input, output, backend, map_file, learn_file, takeover, "
                                 "clock and [[midi.map]] entries", check_section)
register_surface("midi", factory)


# --- `vprod midi ports` and `vprod midi learn` ---
def ports_command(args) -> int:
    try:
        ports = open_ports(args.backend)
    except Exception as e:  # noqa: BLE001
        print(f"vprod midi ports: no MIDI with backend {args.backend or default_backend()}: {why(e)}")
        return 1
    try:
        ins, outs = ports.inputs(), ports.outputs()
    finally:
        ports.close()
    if args.json:
        print(json.dumps({"backend": args.backend or default_backend(), "api": ports.api, "inputs": ins,
                          "outputs": outs}, indent=2))
        return 0
    print(f"MIDI ports ({ports.api}, backend {args.backend or default_backend()})")
    print("inputs (controllers vprod can read; [midi] input = a part of the name):")
    for n in ins:
        print(f"  {n}")
    print("outputs (where feedback can go; [midi] output = a part of the name):")
    for n in outs:
        print(f"  {n}")
    return 0


def learn_command(args) -> int:
    """Arm MIDI learn over the ZeroMQ control and, unless --wait 0, wait for the control to be moved."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(f"tcp://{args.host}:{args.control_port}")

    def req(**kw) -> dict:
        sock.send_json(kw)
        try:
            return sock.recv_json()
        except zmq.Again:
            raise SystemExit(f"vprod midi learn: no answer from the daemon at {args.host}:{args.control_port} "
                             "(is `vprod run` running? --control-port)") from None

    try:
        rep = req(op="learn", path=args.path)
        if not rep.get("ok"):
            print(f"vprod midi learn: {rep.get('error')}")
            return 1
        print(f"{args.path} armed: move a control on your MIDI controller")
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            time.sleep(0.2)
            midi = req(op="status").get("status", {}).get("controls", {}).get("midi", {})
            if midi.get("learning") != args.path:
                got = midi.get("last_learned") or {}
                if got.get("target") == args.path:
                    src = "pitchbend" if got.get("pitchbend") else \
                        f"cc {got['cc']}" if "cc" in got else f"note {got.get('note')}"
                    ch = got.get("channel", "any")
                    print(f"learned: {src} channel {ch} → {args.path} (saved to {got['file']})")
                    return 0
                print("vprod midi learn: disarmed before a control moved (see the daemon's log)")
                return 1
        if args.wait > 0:
            print(f"nothing moved within {args.wait:g} s; still armed")
        return 0
    finally:
        sock.close(0)


# --- `vprod bench control --surfaces midi` ---
class BenchSender:
    """A virtual MIDI output in the bench process; the daemon opens it by name and maps CC 20 to /bg/r over the
    range [LEVELS[0], LEVELS[1]], so CC 0 and 127 land exactly on the two levels (no 7-bit rounding). JACK's
    dummy driver carries the messages; if no JACK server answers, one is started (and stopped in stop())."""

    PORT = "vprod-bench"
    CC = 20

    def __init__(self, ctx):
        from ..bench_control import LEVELS

        self.ctx = ctx
        self.lo, self.hi = LEVELS
        self.jack = None
        self.server = os.environ.get("JACK_DEFAULT_SERVER")
        self.out = None

    def env(self) -> dict[str, str]:
        """The daemon's environment: the JACK server to use (started here when none answers)."""
        from ..jack_peer import JACK_BACKEND, JackServer, server_running

        if self.jack is None and not server_running(self.server):
            import atexit

            self.jack = JackServer()
            self.jack.start()
            atexit.register(self.jack.stop)  # also when the bench fails before stop()
            self.server = self.jack.name
        env = {"MIDO_BACKEND": JACK_BACKEND}
        if self.server:
            env["JACK_DEFAULT_SERVER"] = self.server
        return env

    def daemon_args(self) -> list[str]:
        return []

    def preset_extra(self) -> str:
        return (f'[midi]\ninput = "{self.PORT}"\noutput = false\nbackend = "mido.backends.rtmidi/UNIX_JACK"\n\n'
                f'[[midi.map]]\ncc = {self.CC}\nchannel = 1\ntarget = "/bg/r"\nrange = [{self.lo}, {self.hi}]\n'
                "takeover = false\n")

    def start(self) -> None:
        import rtmidi

        env = self.env()
        if env.get("JACK_DEFAULT_SERVER"):
            os.environ["JACK_DEFAULT_SERVER"] = env["JACK_DEFAULT_SERVER"]  # libjack reads it when connecting
        self.out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=self.PORT)
        self.out.open_virtual_port(self.PORT)
        self._wait_connected()

    def _wait_connected(self, timeout: float = 30.0) -> None:
        from ..bench_control import wait_for_status

        def connected(status: dict):
            port = (status["controls"].get("midi", {}).get("input") or {}).get("port")
            return port and self.PORT in port

        wait_for_status(self.ctx, connected, timeout, f"the daemon's MIDI input did not connect to {self.PORT!r}")

    def send(self, level: float) -> None:
        x = (level - self.lo) / (self.hi - self.lo)
        self.out.send_message([0xB0, self.CC, max(0, min(127, round(x * 127)))])

    def stop(self) -> None:
        if self.out is not None:
            self.out.close_port()
            self.out.delete()
            self.out = None
        if self.jack is not None:
            self.jack.stop()
            self.jack = None
