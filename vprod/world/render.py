"""The procedural world renderer: ground truth for the world model and the live `worlds` source.

    r = Renderer(256, 144)
    r.reset(seed=7, family="terrain", controls=NEUTRAL)
    frame = r.step(controls)            # (144, 256, 3) uint8 RGB, one tick (1/30 s) later
    snap = copy.deepcopy(r.state)       # ... later: r.state = copy.deepcopy(snap) replays the same frames

A frame is a pure function of (seed, family, camera state, controls): per-seed content comes from
``np.random.default_rng`` and no global random state is touched. `step` first integrates the controls into the
camera state (yaw rate turns, speed moves forward and drives the animation clock, pitch eases towards its target),
then draws. `RendererWorld` wraps it in the World contract of vprod.world; `caption` describes a (family, controls)
pair in plain words for text conditioning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import CONTROL_NAMES, NEUTRAL, NUM_CONTROLS
from .families import City, Knobs, Ocean, Plasma, Starfield, Terrain, Tunnel, View

__all__ = ["CONTROL_NAMES", "FAMILIES", "NEUTRAL", "RenderState", "Renderer", "RendererWorld", "caption"]

#: The world families, in a fixed order (a seed picks FAMILIES[seed % len(FAMILIES)] when none is given).
FAMILIES: tuple[str, ...] = ("terrain", "city", "tunnel", "plasma", "starfield", "ocean")

_CLASSES = {"terrain": Terrain, "city": City, "tunnel": Tunnel, "plasma": Plasma, "starfield": Starfield,
            "ocean": Ocean}
_SALT = {name: i + 1 for i, name in enumerate(FAMILIES)}  # per-family random stream from the same seed

DT = 1.0 / 30.0
MAX_TURN = 1.1  # rad/s at yaw 0 or 1
PITCH_TAU = 0.18  # seconds for the camera pitch to ease towards the knob


@dataclass
class RenderState:
    """Everything that evolves between frames; with (seed, family) it fixes the picture. Cheap to deepcopy."""

    t: float = 0.0  # seconds since reset
    x: float = 0.0  # camera position, world units (family-specific scale)
    y: float = 0.0
    z: float = 0.0  # camera altitude (families that fly follow their ground)
    yaw: float = 0.0  # heading, radians; grows when turning right
    pitch: float = 0.0  # -1 look down .. 1 look up, eased towards the pitch knob
    dist: float = 0.0  # distance flown (odometer), world units
    anim: float = 0.0  # animation clock: advances with speed and energy, stops at speed 0
    family: str = "terrain"
    seed: int = 0
    frame: int = 0  # steps since reset


def knobs(controls) -> Knobs:
    """The control vector (anything np.asarray reads, length NUM_CONTROLS) as clipped named floats."""
    c = np.asarray(controls, dtype=np.float64).reshape(-1)
    if c.shape[0] != NUM_CONTROLS:
        raise ValueError(f"controls must have {NUM_CONTROLS} values ({', '.join(CONTROL_NAMES)}), got {c.shape[0]}")
    c = np.clip(np.nan_to_num(c, nan=0.5), 0.0, 1.0)
    return Knobs(*(float(v) for v in c))


_PRIMED = False


def optical_row(family: str | None, pitch: float) -> float:
    """The row a zoom magnifies the picture about in `family` with the camera at `pitch` (−1..1), as a share of the
    picture's height from the top: the horizon row for the families seen through a level camera (View: a pitch
    shears the picture, the horizon moves), else the middle row."""
    base = getattr(_CLASSES.get(family or ""), "HORIZON", None)
    return 0.5 if base is None else base + View.PITCH_SHEAR * pitch


def _prime_allocator() -> None:
    """Allocate and free one 24 MB block, once per process.

    Why: a frame allocates a few hundred temporary arrays of 0.1-0.5 MB. glibc serves blocks above its mmap
    threshold (128 kB at start) with fresh pages and trims the heap top eagerly, so a 480x270 city frame took ~5,600
    page faults and 3x its time (measured here: 28 ms -> 8.7 ms). Freeing one large mmapped block raises glibc's
    dynamic thresholds (mmap to 24 MB, trim to 48 MB) for the process — what any large free does anyway — and the
    faults stop.
    """
    global _PRIMED
    if not _PRIMED:
        block = np.ones(24 << 20, np.uint8)
        del block
        _PRIMED = True


def camera_rates(k: Knobs) -> tuple[float, float, float]:
    """How fast the knobs `k` move the camera, a second: its turn (radians), its way at unit speed (speed**1.3: the
    family's UNIT_SPEED world units each) and the animation clock (seconds)."""
    return k.turn * MAX_TURN, k.speed ** 1.3, k.speed * (1.5 + 2.5 * k.energy)


def _eased_altitude(z: float, target: float, dt: float) -> float:
    """The camera's altitude `dt` seconds on, towards `target`: it climbs quickly over a ridge and sinks slowly."""
    tau = 0.35 if target > z else 1.6
    return z + (target - z) * (1.0 - math.exp(-dt / tau))


class Renderer:
    """Draws the world families at a fixed size; deterministic in (seed, family, control sequence)."""

    EASED_FRAMES = 150  # travel: the steps at the end of a flight whose altitude is eased as step eases it

    def __init__(self, width: int = 256, height: int = 144):
        if width < 16 or height < 16:
            raise ValueError(f"frame size {width}x{height} is too small (16x16 at least)")
        _prime_allocator()
        self.width, self.height = int(width), int(height)
        self.state = RenderState()
        self._content: dict[tuple[str, int], object] = {}  # (family, seed) -> built family, current seed only

    # --- content ---
    def _world(self, family: str, seed: int):
        if family not in _CLASSES:
            raise ValueError(f"unknown family {family!r} (one of {', '.join(FAMILIES)})")
        key = (family, int(seed))
        w = self._content.get(key)
        if w is None:
            if any(s != key[1] for _, s in self._content):
                self._content.clear()  # keep one seed's worlds: switching families back and forth is free
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SALT[family]])
            w = self._content[key] = _CLASSES[family](rng, self.width, self.height)
        return w

    def _settle(self, k: Knobs) -> None:
        """Put the camera where this family wants it (altitude), e.g. after a reset or a cut."""
        w = self._world(self.state.family, self.state.seed)
        target = getattr(w, "altitude_target", None)
        if target is not None:
            self.state.z = target(self.state, k)

    # --- API ---
    def reset(self, seed: int, family: str, controls) -> None:
        """Start `family` from the beginning for `seed` (camera heading and place from the seed)."""
        if family not in _CLASSES:
            raise ValueError(f"unknown family {family!r} (one of {', '.join(FAMILIES)})")
        k = knobs(controls)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0])
        yaw = float(rng.uniform(-0.4, 0.4))
        x, y = (float(v) for v in rng.uniform(0.0, 4096.0, 2))
        self.state = RenderState(x=x, y=y, yaw=yaw, pitch=(k.pitch - 0.5) * 2.0, family=family, seed=int(seed))
        self._settle(k)

    def prepare(self, families: tuple[str, ...] | None = None) -> None:
        """Build the current seed's content for `families` (default: all) now, so a later cut does not stall."""
        for fam in families or FAMILIES:
            self._world(fam, self.state.seed)

    def set_family(self, family: str) -> None:
        """Cut to another family, keeping time, camera and seed."""
        self._world(family, self.state.seed)  # validates and builds
        self.state.family = family
        self._settle(Knobs(*(float(v) for v in NEUTRAL)))

    def travel(self, controls, along: float, anim: float, frames: int = 0, across: float = 0.0, turn: float = 0.0,
               length: float | None = None) -> None:
        """Fly the camera as `step`s do, without drawing a frame: `along` / `across` the heading it had (forward,
        to its right) in seconds at unit speed (speed**1.3 summed over the steps' seconds; the family's UNIT_SPEED
        world units each), a path `length` long (default: `along`), turned by `turn` radians, the animation clock on
        by `anim` seconds. Over `frames` steps (0: at once) the altitude rides the ground as the steps ease it (the
        last EASED_FRAMES of them, at an even pace on a straight line; the camera settled where the family wants it
        before them)."""
        st = self.state
        w = self._world(st.family, st.seed)
        k = knobs(controls)
        n = min(int(frames), self.EASED_FRAMES)
        share = n / frames if frames else 0.0  # of the flight: the eased stretch at its end
        c, s = math.cos(st.yaw), math.sin(st.yaw)
        dx = w.UNIT_SPEED * (c * float(along) - s * float(across))
        dy = w.UNIT_SPEED * (s * float(along) + c * float(across))
        d = w.UNIT_SPEED * float(along if length is None else length)

        def on(part: float) -> None:
            st.x += dx * part
            st.y += dy * part
            st.dist += d * part
            st.anim += float(anim) * part

        on(1.0 - share)
        st.yaw += float(turn)
        self._settle(k)
        target_z = getattr(w, "altitude_target", None)
        for _ in range(n):
            on(share / n)
            if target_z is not None:
                st.z = _eased_altitude(st.z, target_z(st, k), DT)

    def render(self, controls) -> np.ndarray:
        """The frame at the current state (no time passes)."""
        st = self.state
        return self._world(st.family, st.seed).render(st, knobs(controls))

    def step(self, controls, dt: float | None = None) -> np.ndarray:
        """Advance one tick (dt, default 1/30 s) under `controls` and return the new frame."""
        k = knobs(controls)
        dt = DT if dt is None else float(dt)
        st = self.state
        w = self._world(st.family, st.seed)
        st.t += dt
        st.frame += 1
        turn, way, anim = camera_rates(k)
        st.yaw += turn * dt
        target = (k.pitch - 0.5) * 2.0
        st.pitch += (target - st.pitch) * (1.0 - math.exp(-dt / PITCH_TAU))
        v = way * w.UNIT_SPEED
        st.x += math.cos(st.yaw) * v * dt
        st.y += math.sin(st.yaw) * v * dt
        st.dist += v * dt
        st.anim += dt * anim
        target_z = getattr(w, "altitude_target", None)
        if target_z is not None:
            tz = target_z(st, k)
            st.z = _eased_altitude(st.z, tz, dt)
        return w.render(st, k)


class RendererWorld:
    """The procedural renderer as a World (vprod.world): reset(seed, controls, family) -> frame, step -> frame."""

    name = "renderer"

    def __init__(self, width: int = 256, height: int = 144, family: str | None = None):
        if family is not None and family not in FAMILIES:
            raise ValueError(f"unknown family {family!r} (one of {', '.join(FAMILIES)})")
        self.renderer = Renderer(width, height)
        self.family = family

    @property
    def state(self) -> RenderState:
        return self.renderer.state

    def reset(self, seed: int, controls, family: str | None = None) -> np.ndarray:
        fam = family or self.family or FAMILIES[int(seed) % len(FAMILIES)]
        self.renderer.reset(seed, fam, controls)
        return self.renderer.render(controls)

    def step(self, controls) -> np.ndarray:
        return self.renderer.step(controls)

    def prepare(self, families: tuple[str, ...] | None = None) -> None:
        """Build the current seed's content ahead of time (see Renderer.prepare)."""
        self.renderer.prepare(families)

    def set_family(self, family: str) -> None:
        self.renderer.set_family(family)


# --- captions ----------------------------------------------------------------------------------------------------

_HUE_NAMES = ((12, "red"), (38, "orange"), (65, "yellow"), (150, "green"), (185, "teal"), (250, "blue"),
              (285, "violet"), (330, "magenta"), (360, "red"))

#: The palette anchors of each family in degrees at hue 0.5; the hue knob rotates them (see families.py).
FAMILY_HUES = {"terrain": (100.0,), "city": (40.0,), "tunnel": (205.0, 265.0), "plasma": (320.0, 25.0),
               "starfield": (275.0, 200.0), "ocean": (195.0,)}


def colour_name(deg: float) -> str:
    d = deg % 360.0
    for top, name in _HUE_NAMES:
        if d < top:
            return name
    return "red"


def _colours(family: str, k: Knobs) -> list[str]:
    names: list[str] = []
    for base in FAMILY_HUES[family]:
        n = colour_name(base + k.hue_deg)
        if n not in names:
            names.append(n)
    return names


def caption_parts(family: str, controls) -> list[tuple[str, str]]:
    """The words of `caption`, each with what it tells: (control name or "family", words), in caption order —
    adjectives (energy, fog, daylight), the noun (the family, its colours: "family"), then the tail (speed, yaw,
    pitch, zoom). A control in its middle range has no words."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (one of {', '.join(FAMILIES)})")
    k = knobs(controls)
    cols = _colours(family, k)
    outdoor = family in ("terrain", "city", "ocean")
    parts: list[tuple[str, str]] = []

    def say(what: str, value: float, low: tuple = (), high: tuple = ()) -> None:
        """The word of the first (limit, word) band `value` falls in: below a `low` limit, else above a `high` one."""
        word = next((w for lim, w in low if value < lim), None) or next((w for lim, w in high if value > lim), None)
        if word:
            parts.append((what, word))

    say("energy", k.energy, low=((0.12, "calm"),), high=((0.8, "wild"), (0.6, "restless")))
    say("fog", k.fog, low=((0.08, "clear"),) if outdoor else (),
        high=((0.75, "fog-bound" if outdoor else "murky"), (0.45, "foggy" if outdoor else "hazy")))
    if outdoor:
        say("daylight", k.daylight, low=((0.15, "night"), (0.35, "twilight"), (0.6, "dusk")),
            high=((0.88, "bright midday"), (0.0, "sunny")))
    else:
        say("daylight", k.daylight, low=((0.2, "dark"), (0.45, "dim")), high=((0.85, "bright"),))
    c1 = cols[0]
    c2 = " and ".join(cols) if len(cols) > 1 else cols[0]
    sky = colour_name(215.0 + 0.3 * k.hue_deg)  # outdoor skies turn with a third of the hue knob
    noun = {
        "terrain": f"flight over {c1} mountains",
        "city": "flight over a city" + (f" with {c1} lit windows" if k.daylight < 0.45 else
                                        f" under {_a(sky)} sky" if sky != "blue" else ""),
        "tunnel": f"tunnel in {c2}",
        "plasma": f"plasma flow in {c2}",
        "starfield": f"starfield with {_a(c2)} nebula",
        "ocean": f"voyage over {_a(c1)} ocean",
    }[family]
    parts.append(("family", noun))
    say("speed", k.speed, low=((0.04, "still"), (0.25, "slow")), high=((0.85, "very fast"), (0.65, "fast")))
    say("yaw", k.turn, low=((-0.35, "turning left"),), high=((0.35, "turning right"),))
    say("pitch", k.pitch, low=((0.25, "looking down"),), high=((0.75, "looking up"),))
    say("zoom", k.zoom, low=((0.2, "wide angle"),), high=((0.8, "zoomed in"),))
    return parts


#: The parts of a caption after its noun (joined by commas), the rest before it (joined by spaces).
TAIL_PARTS = ("speed", "yaw", "pitch", "zoom")


def join_caption(parts: list[tuple[str, str]]) -> str:
    """Caption text from (some of) `caption_parts`: 'a foggy dusk flight over red mountains, slow'."""
    head = [w for what, w in parts if what not in TAIL_PARTS]
    tail = [w for what, w in parts if what in TAIL_PARTS]
    text = _a(" ".join(head)) if head else ""
    return ", ".join(([text] if text else []) + tail)


def caption(family: str, controls) -> str:
    """Plain words for a family under these controls, e.g. 'a foggy dusk flight over red mountains, slow'."""
    return join_caption(caption_parts(family, controls))


def _a(words: str) -> str:
    """The words with their indefinite article: 'an orange ocean', 'a blue sky'."""
    return ("an " if words[:1] in ("a", "e", "i", "o", "u") else "a ") + words
