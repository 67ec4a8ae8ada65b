"""Typed parameters in real units, with the normalized 0..1 view every control surface speaks.

An element declares its parameters once, as class attribute ``params``; presets store real values, OSC / MIDI /
ZeroMQ speak 0..1 (the FFGL convention), and ``vprod params`` prints the same schema. Values are clamped on the way
in; floats may slew (move towards their target over a time constant) so a knob jump does not flash on screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class ParamError(ValueError):
    """A value that does not fit its parameter; the message names the allowed values."""


@dataclass
class Param:
    """Base of every parameter kind. ``doc`` becomes the help text in the schema."""

    default: Any = None
    doc: str = field(default="", kw_only=True)
    kind = "param"

    def coerce(self, value: Any) -> Any:
        """Real value from a preset or a raw request; raises ParamError naming the allowed values."""
        return value

    def to_norm(self, value: Any) -> Any:
        return value

    def from_norm(self, x: Any) -> Any:
        return self.coerce(x)

    def describe(self) -> dict:
        return {"type": self.kind, "default": self.default, "doc": self.doc}

    def allowed(self) -> str:
        return self.kind


def _finite(value: Any, what: str) -> float:
    if isinstance(value, (bool, str)):
        raise ParamError(f"{value!r} is not a number ({what})")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ParamError(f"{value!r} is not a number ({what})") from None
    if not math.isfinite(f):
        raise ParamError(f"{value!r} is not a finite number ({what})")
    return f


@dataclass
class FloatParam(Param):
    """A real number in ``[min, max]`` with a unit; ``slew`` is the smoothing time constant in seconds."""

    default: float = 0.0
    min: float = 0.0
    max: float = 1.0
    unit: str = ""
    slew: float = 0.0
    kind = "float"

    def coerce(self, value: Any) -> float:
        f = _finite(value, self.allowed())
        return min(max(f, self.min), self.max)

    def to_norm(self, value: float) -> float:
        span = self.max - self.min
        return 0.0 if span == 0 else (value - self.min) / span

    def from_norm(self, x: Any) -> float:
        f = min(max(_finite(x, "0..1"), 0.0), 1.0)
        return self.min + f * (self.max - self.min)

    def allowed(self) -> str:
        return f"{self.min:g}..{self.max:g}{(' ' + self.unit) if self.unit else ''}"

    def describe(self) -> dict:
        return {**super().describe(), "min": self.min, "max": self.max, "unit": self.unit, "slew": self.slew}


@dataclass
class IntParam(Param):
    default: int = 0
    min: int = 0
    max: int = 100
    unit: str = ""
    kind = "int"

    def coerce(self, value: Any) -> int:
        if isinstance(value, bool):
            raise ParamError(f"{value!r} is not an integer ({self.allowed()})")
        f = _finite(value, self.allowed())
        return int(min(max(round(f), self.min), self.max))

    def to_norm(self, value: int) -> float:
        span = self.max - self.min
        return 0.0 if span == 0 else (value - self.min) / span

    def from_norm(self, x: Any) -> int:
        f = min(max(_finite(x, "0..1"), 0.0), 1.0)
        return int(round(self.min + f * (self.max - self.min)))

    def allowed(self) -> str:
        return f"integer {self.min}..{self.max}{(' ' + self.unit) if self.unit else ''}"

    def describe(self) -> dict:
        return {**super().describe(), "min": self.min, "max": self.max, "unit": self.unit}


@dataclass
class BoolParam(Param):
    default: bool = False
    kind = "bool"

    def coerce(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and math.isfinite(value):
            return value >= 0.5
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
            return value.lower() in ("true", "on", "1")
        raise ParamError(f"{value!r} is not a boolean (true/false)")

    def to_norm(self, value: bool) -> float:
        return 1.0 if value else 0.0

    def from_norm(self, x: Any) -> bool:
        return _finite(x, "0..1") >= 0.5

    def allowed(self) -> str:
        return "true/false"


@dataclass
class ChoiceParam(Param):
    """One of a list of names; the normalized view spreads the choices evenly over 0..1."""

    default: str = ""
    choices: tuple[str, ...] = ()
    kind = "choice"

    def __post_init__(self):
        self.choices = tuple(self.choices)
        if not self.default and self.choices:
            self.default = self.choices[0]

    def coerce(self, value: Any) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.choices):
            return self.choices[value]
        raise ParamError(f"{value!r} is not one of {', '.join(self.choices)}")

    def to_norm(self, value: str) -> float:
        n = len(self.choices)
        return 0.0 if n <= 1 else self.choices.index(value) / (n - 1)

    def from_norm(self, x: Any) -> str:
        if isinstance(x, str):
            return self.coerce(x)
        f = min(max(_finite(x, "0..1"), 0.0), 1.0)
        return self.choices[int(round(f * (len(self.choices) - 1)))]

    def allowed(self) -> str:
        return "one of " + ", ".join(self.choices)

    def describe(self) -> dict:
        return {**super().describe(), "choices": list(self.choices)}


@dataclass
class TriggerParam(Param):
    """An event (reset, tap): any set fires it once, on the next frame. Its value counts the firings."""

    default: int = 0
    kind = "trigger"

    def coerce(self, value: Any) -> int:
        return 0

    def to_norm(self, value: Any) -> float:
        return 0.0

    def from_norm(self, x: Any) -> int:
        return 0

    def allowed(self) -> str:
        return "any value (fires once)"


@dataclass
class TextParam(Param):
    default: str = ""
    max_len: int = 1000
    kind = "text"

    def coerce(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ParamError(f"{value!r} is not text")
        if len(value) > self.max_len:
            raise ParamError(f"text longer than {self.max_len} characters")
        return value

    def to_norm(self, value: str) -> str:
        return value

    def from_norm(self, x: Any) -> str:
        return self.coerce(x)

    def allowed(self) -> str:
        return f"text up to {self.max_len} characters"


@dataclass
class ColorParam(Param):
    """An RGB colour, each channel 0..1; accepts [r, g, b] or '#rrggbb'."""

    default: tuple[float, float, float] = (0.0, 0.0, 0.0)
    kind = "color"

    def coerce(self, value: Any) -> tuple[float, float, float]:
        if isinstance(value, str) and value.startswith("#") and len(value) == 7:
            try:
                return tuple(int(value[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return tuple(min(max(_finite(v, "0..1"), 0.0), 1.0) for v in value)  # type: ignore[return-value]
        raise ParamError(f"{value!r} is not a colour ([r, g, b] in 0..1 or '#rrggbb')")

    def to_norm(self, value):
        return list(value)

    def allowed(self) -> str:
        return "[r, g, b] in 0..1 or '#rrggbb'"


@dataclass
class ParamState:
    """Live value of one parameter on one element instance: target set by controls, value seen by the element."""

    spec: Param
    value: Any
    target: Any
    fired: int = 0  # triggers pending for the next frame
    slew: float = 0.0

    def set(self, real_value: Any) -> None:
        if isinstance(self.spec, TriggerParam):
            self.fired += 1
            return
        self.target = self.spec.coerce(real_value)
        if not (isinstance(self.spec, FloatParam) and self.slew > 0):
            self.value = self.target

    def step(self, dt: float) -> None:
        # Only floats move gradually; everything else (and triggers, whose value counts firings) is set as is.
        if isinstance(self.spec, FloatParam) and self.value != self.target:
            # One-pole smoothing towards the target with time constant `slew`; snaps when close.
            a = 1.0 - math.exp(-dt / self.slew) if self.slew > 0 else 1.0
            v = self.value + (self.target - self.value) * a
            span = (self.spec.max - self.spec.min) or 1.0
            self.value = self.target if abs(self.target - v) < 1e-4 * span else v


@dataclass
class Params:
    """The parameter values of one element instance; attribute access reads current values (``self.p.r``)."""

    specs: dict[str, Param]
    states: dict[str, ParamState] = field(default_factory=dict)

    @classmethod
    def build(cls, specs: dict[str, Param], values: dict | None = None, slew: dict | None = None) -> "Params":
        p = cls(specs)
        for name, spec in specs.items():
            d = spec.coerce(spec.default) if not isinstance(spec, TriggerParam) else 0
            s = (slew or {}).get(name, getattr(spec, "slew", 0.0)) or 0.0
            p.states[name] = ParamState(spec, d, d, slew=float(s))
        for name, v in (values or {}).items():
            st = p.states[name]
            st.target = st.value = st.spec.coerce(v)
        return p

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["states"][name].value
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str) -> Any:
        return self.states[name].value

    def fired(self, name: str) -> bool:
        """True on the frame after a trigger was set (consumed by `step`)."""
        return self.states[name].fired > 0

    def step(self, dt: float) -> None:
        for st in self.states.values():
            if st.fired and isinstance(st.spec, TriggerParam):
                st.value += st.fired  # visible this frame as a counter, `fired()` true until next step
            st.step(dt)

    def clear_triggers(self) -> None:
        for st in self.states.values():
            st.fired = 0

    def values(self) -> dict[str, Any]:
        return {k: st.value for k, st in self.states.items() if not isinstance(st.spec, TriggerParam)}
