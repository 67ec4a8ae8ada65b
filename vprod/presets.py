"""Presets: TOML files describing size, fps, layers (source, effects, parameter values) and outputs.

    name = "solid"
    width = 1280
    height = 720
    fps = 30
    crossfade = 0.5                  # seconds, when switching to this preset

    [[layers]]
    id = "bg"
    source = "solid"
    params = { r = 0.1, g = 0.4, b = 0.8 }

      [[layers.effects]]
      type = "color"
      params = { saturation = 1.2 }

    [outputs.zmq]
    port = 5555

Validation reports every error at once, each with the file, the key and the allowed values; a preset with errors
is never played. Presets store real values; control surfaces speak 0..1.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .engine.element import ElementConfig
from .engine.params import ParamError, Params, TriggerParam
from .engine.pipeline import LAYER_PARAMS, Layer, Pipeline
from .plugins import PluginError, PluginRegistry

log = logging.getLogger("vprod.presets")

TOP_KEYS = {
    "name": "preset name (defaults to the file name)",
    "description": "one line for people",
    "width": "output width in pixels",
    "height": "output height in pixels",
    "fps": "frames per second",
    "crossfade": "seconds to crossfade when switching to this preset",
    "layers": "array of layers, bottom first",
    "outputs": "table of outputs: [outputs.<name>]",
    "control": "control servers: [control.zmq]",
}
# Sections owned by the control surfaces; each registers a validator (see `register_section`).
SECTION_VALIDATORS: dict[str, Callable[[Any, str], list[tuple[str, str]]]] = {}
LAYER_KEYS = {"id", "source", "params", "effects", "opacity", "blend", "enabled", "mask", "visible", "slew"}
EFFECT_KEYS = {"type", "name", "params", "slew", "enabled"}
ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
CONTROL_KEYS = {"zmq": {"port", "bind", "enabled"}}


def register_section(name: str, doc: str, validator: Callable[[Any, str], list[tuple[str, str]]]) -> None:
    """Let a subsystem (OSC, MIDI, OBS, audio…) own a top-level preset section and validate it."""
    TOP_KEYS[name] = doc
    SECTION_VALIDATORS[name] = validator


@dataclass
class PresetError:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class PresetInvalid(Exception):
    def __init__(self, errors: list[PresetError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass
class Preset:
    name: str
    path: Path | None
    data: dict[str, Any]
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    crossfade: float = 0.5
    layers: list[dict] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)
    control: dict[str, dict] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def preset_dirs(extra: list[Path] | None = None) -> list[Path]:
    dirs = list(extra or [])
    dirs.append(Path.cwd() / "presets")
    dirs.append(Path(__file__).resolve().parent.parent / "presets")
    return dirs


def find_preset(name_or_path: str, dirs: list[Path] | None = None) -> Path:
    """A preset by path, or by name in the preset folders ('solid' → presets/solid.toml)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    for d in preset_dirs(dirs):
        cand = d / (name_or_path if name_or_path.endswith(".toml") else f"{name_or_path}.toml")
        if cand.exists():
            return cand
    names = sorted({q.stem for d in preset_dirs(dirs) if d.is_dir() for q in d.glob("*.toml")})
    raise FileNotFoundError(f"no preset {name_or_path!r} (available: {', '.join(names) or 'none'})")


def _check_params(errors, file, key, cls, values: Any, slew: Any) -> tuple[dict, dict, dict]:
    """Split a `params` table into live parameter values and fixed options, checking both."""
    params, options = {}, {}
    if values is None:
        values = {}
    if not isinstance(values, dict):
        errors.append(PresetError(file, key, "must be a table, e.g. params = { name = value }"))
        return params, options, {}
    allowed = sorted(list(cls.params) + list(cls.options))
    for name, v in values.items():
        k = f"{key}.{name}"
        if name in cls.params:
            spec = cls.params[name]
            if isinstance(spec, TriggerParam):
                errors.append(PresetError(file, k, "is a trigger; it cannot be stored in a preset"))
                continue
            try:
                params[name] = spec.coerce(v)
                if hasattr(spec, "min") and isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and not (spec.min <= v <= spec.max):
                    errors.append(PresetError(file, k, f"{v!r} is out of range (allowed: {spec.allowed()})"))
            except ParamError as e:
                errors.append(PresetError(file, k, f"{e} (allowed: {spec.allowed()})"))
        elif name in cls.options:
            options[name] = v
        else:
            errors.append(PresetError(file, k, f"unknown parameter of {cls.element_id} "
                                               f"(allowed: {', '.join(allowed) or 'none'})"))
    slews = {}
    if slew is not None:
        if not isinstance(slew, dict):
            errors.append(PresetError(file, key.rsplit(".", 1)[0] + ".slew", "must be a table of seconds"))
        else:
            for name, s in slew.items():
                if name not in cls.params or not isinstance(s, (int, float)) or s < 0:
                    errors.append(PresetError(file, f"{key.rsplit('.', 1)[0]}.slew.{name}",
                                              f"must name a parameter ({', '.join(cls.params)}) with seconds ≥ 0"))
                else:
                    slews[name] = float(s)
    return params, options, slews


def _num(errors, file, key, v, lo, hi, integer=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
    if integer and not isinstance(v, int):
        ok = False
    if not ok:
        errors.append(PresetError(file, key, f"{v!r} is not allowed ({'integer' if integer else 'number'} {lo}..{hi})"))
    return ok


def parse(data: dict, file: str, registry: PluginRegistry, name: str = "") -> tuple[Preset, list[PresetError]]:
    """Check a preset's data; returns the preset and every error found."""
    from .control import load_surfaces

    load_surfaces()  # the control surfaces' sections ([osc], [midi], [obs], [audio], [[modulators]])
    errors: list[PresetError] = []
    for k in data:
        if k not in TOP_KEYS:
            errors.append(PresetError(file, k, f"unknown key (allowed: {', '.join(sorted(TOP_KEYS))})"))
    pr = Preset(name=str(data.get("name") or name or Path(file).stem), path=Path(file) if file else None, data=data)
    if "width" in data and _num(errors, file, "width", data["width"], 16, 7680, True):
        pr.width = data["width"]
    if "height" in data and _num(errors, file, "height", data["height"], 16, 4320, True):
        pr.height = data["height"]
    if "fps" in data and _num(errors, file, "fps", data["fps"], 1, 240):
        pr.fps = float(data["fps"])
    if "crossfade" in data and _num(errors, file, "crossfade", data["crossfade"], 0, 60):
        pr.crossfade = float(data["crossfade"])
    if pr.width % 2 or pr.height % 2:
        errors.append(PresetError(file, "width/height", "must be even (video encoders and cameras need it)"))

    layers = data.get("layers", [])
    if not isinstance(layers, list) or not layers:
        errors.append(PresetError(file, "layers", "needs at least one [[layers]] table"))
        layers = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        key = f"layers[{i}]"
        if not isinstance(layer, dict):
            errors.append(PresetError(file, key, "must be a table"))
            continue
        for k in layer:
            if k not in LAYER_KEYS:
                errors.append(PresetError(file, f"{key}.{k}", f"unknown key (allowed: {', '.join(sorted(LAYER_KEYS))})"))
        lid = layer.get("id", f"layer{i}")
        if not isinstance(lid, str) or not ID_RE.match(lid):
            errors.append(PresetError(file, f"{key}.id", f"{lid!r} is not a valid id (a letter, then letters, "
                                                          "digits, - or _)"))
        elif lid in seen:
            errors.append(PresetError(file, f"{key}.id", f"{lid!r} is used by another layer"))
        seen.add(str(lid))
        spec = {"id": lid, "effects": []}
        src = layer.get("source")
        cls = _load(errors, file, f"{key}.source", registry, src, "source")
        if cls is not None:
            spec["source"] = (src, *_check_params(errors, file, f"{key}.params", cls, layer.get("params"),
                                                   layer.get("slew")))
        for lp in ("opacity", "blend", "enabled"):
            if lp in layer:
                try:
                    spec[lp] = LAYER_PARAMS[lp].coerce(layer[lp])
                    if lp == "opacity" and not 0 <= layer[lp] <= 1:
                        raise ParamError(f"{layer[lp]!r} is out of range")
                except (ParamError, TypeError) as e:
                    errors.append(PresetError(file, f"{key}.{lp}", f"{e} (allowed: {LAYER_PARAMS[lp].allowed()})"))
        spec["mask"] = layer.get("mask", "")
        if not isinstance(spec["mask"], str):
            errors.append(PresetError(file, f"{key}.mask", "must be the id of another layer"))
            spec["mask"] = ""
        spec["key"] = key
        spec["visible"] = layer.get("visible", True)
        if not isinstance(spec["visible"], bool):
            errors.append(PresetError(file, f"{key}.visible", "must be true or false"))
        effects = layer.get("effects", [])
        if not isinstance(effects, list):
            errors.append(PresetError(file, f"{key}.effects", "must be an array of tables ([[layers.effects]])"))
            effects = []
        names: set[str] = set()
        for j, eff in enumerate(effects):
            ekey = f"{key}.effects[{j}]"
            if not isinstance(eff, dict):
                errors.append(PresetError(file, ekey, "must be a table"))
                continue
            for k in eff:
                if k not in EFFECT_KEYS:
                    errors.append(PresetError(file, f"{ekey}.{k}", f"unknown key (allowed: {', '.join(sorted(EFFECT_KEYS))})"))
            etype = eff.get("type")
            ecls = _load(errors, file, f"{ekey}.type", registry, etype, "effect")
            ename = eff.get("name") or etype
            if isinstance(ename, str) and ename in names:
                ename = f"{ename}{j}"
            names.add(str(ename))
            if not isinstance(eff.get("enabled", True), bool):
                errors.append(PresetError(file, f"{ekey}.enabled", "must be true or false"))
            elif eff.get("enabled", True) is False:
                spec.setdefault("effects_off", set()).add(str(ename))
            if ecls is not None:
                spec["effects"].append((ename, etype, *_check_params(errors, file, f"{ekey}.params", ecls,
                                                                     eff.get("params"), eff.get("slew"))))
        pr.layers.append(spec)
    for spec in pr.layers:
        if spec["mask"] and spec["mask"] not in seen:
            errors.append(PresetError(file, f"{spec['key']}.mask", f"no layer {spec['mask']!r} "
                                                                         f"(layers: {', '.join(sorted(seen))})"))

    outputs = data.get("outputs", {})
    if not isinstance(outputs, dict):
        errors.append(PresetError(file, "outputs", "must be a table of [outputs.<name>] tables"))
        outputs = {}
    for oname, o in outputs.items():
        okey = f"outputs.{oname}"
        if not isinstance(o, dict):
            errors.append(PresetError(file, okey, "must be a table"))
            continue
        stype = o.get("type", oname)
        scls = _load(errors, file, f"{okey}.type" if "type" in o else okey, registry, stype, "sink")
        enabled = o.get("enabled", True)
        if not isinstance(enabled, bool):
            errors.append(PresetError(file, f"{okey}.enabled", "must be true or false"))
        if scls is not None:
            rest = {k: v for k, v in o.items() if k not in ("type", "enabled")}
            params, options, _ = _check_params(errors, file, okey, scls, rest, None)
            pr.outputs[oname] = {"type": stype, "enabled": enabled is True, "params": params, "options": options}

    control = data.get("control", {})
    if not isinstance(control, dict):
        errors.append(PresetError(file, "control", "must be a table"))
        control = {}
    for cname, c in control.items():
        if cname not in CONTROL_KEYS or not isinstance(c, dict):
            errors.append(PresetError(file, f"control.{cname}", f"unknown control (allowed: {', '.join(CONTROL_KEYS)})"))
            continue
        for k in c:
            if k not in CONTROL_KEYS[cname]:
                errors.append(PresetError(file, f"control.{cname}.{k}",
                                          f"unknown key (allowed: {', '.join(sorted(CONTROL_KEYS[cname]))})"))
        pr.control[cname] = dict(c)

    for section, validate in SECTION_VALIDATORS.items():
        if section in data:
            for key, msg in validate(data[section], section):
                errors.append(PresetError(file, key, msg))
    return pr, errors


def _load(errors, file, key, registry: PluginRegistry, element_id, kind):
    if not isinstance(element_id, str) or not element_id:
        errors.append(PresetError(file, key, f"missing (allowed {kind}s: {', '.join(registry.ids(kind))})"))
        return None
    if element_id not in registry.elements:
        errors.append(PresetError(file, key, f"unknown {kind} {element_id!r} "
                                             f"(allowed: {', '.join(registry.ids(kind))})"))
        return None
    try:
        cls = registry.load(element_id)
    except PluginError as e:
        errors.append(PresetError(file, key, str(e)))
        return None
    if cls.kind != kind:
        errors.append(PresetError(file, key, f"{element_id!r} is a {cls.kind}, not a {kind} "
                                             f"(allowed: {', '.join(registry.ids(kind))})"))
        return None
    return cls


def load(path: str | Path, registry: PluginRegistry) -> Preset:
    """Read and check a preset file; raises PresetInvalid with every error."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PresetInvalid([PresetError(file, "-", f"cannot read: {e.strerror or e}")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetInvalid([PresetError(file, "-", f"not valid TOML: {e}")]) from None
    pr, errors = parse(data, file, registry, path.stem)
    if errors:
        raise PresetInvalid(errors)
    return pr


def validate_files(paths: list[str], registry: PluginRegistry) -> list[PresetError]:
    errors: list[PresetError] = []
    for p in paths:
        try:
            load(p, registry)
        except PresetInvalid as e:
            errors.extend(e.errors)
    return errors


def build(preset: Preset, registry: PluginRegistry, width: int | None = None, height: int | None = None,
          fps: float | None = None, open_elements: bool = True) -> Pipeline:
    """Instantiate (and open) a preset's layers at the output geometry (the daemon's, if given)."""
    w, h, f = width or preset.width, height or preset.height, fps or preset.fps

    def cfg(layer_id, name, options):
        return ElementConfig(layer=layer_id, name=name, width=w, height=h, fps=f, options=options,
                             preset_dir=str(preset.dir))

    layers = []
    for spec in preset.layers:
        sid, params, options, slew = spec["source"]
        src = registry.load(sid)(cfg(spec["id"], sid, options), params, slew)
        effects = []
        for ename, etype, eparams, eoptions, eslew in spec["effects"]:
            effects.append((ename, registry.load(etype)(cfg(spec["id"], ename, eoptions), eparams, eslew)))
        lp = Params.build(LAYER_PARAMS, {k: spec[k] for k in ("opacity", "blend", "enabled") if k in spec})
        layers.append(Layer(spec["id"], src, effects, lp, mask=spec["mask"], visible=spec["visible"],
                            effects_off=set(spec.get("effects_off", ()))))
    p = Pipeline(preset.name, layers, w, h, f, preset.crossfade, str(preset.path or ""))
    if open_elements:
        p.open_all()
    return p


class PresetWatcher:
    """Polls the playing preset's file; on a change calls `on_change(path)` (which reloads or reports)."""

    def __init__(self, on_change: Callable[[Path], None], interval: float = 0.3):
        self.on_change = on_change
        self.interval = interval
        self.path: Path | None = None
        self._mtime: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="preset-watch", daemon=True)

    def watch(self, path: Path | None) -> None:
        self.path = path
        self._mtime = self._stat(path)

    @staticmethod
    def _stat(path: Path | None) -> float | None:
        try:
            return path.stat().st_mtime_ns if path else None
        except OSError:
            return None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            path = self.path
            m = self._stat(path)
            if path is not None and m is not None and m != self._mtime:
                self._mtime = m
                try:
                    self.on_change(path)
                except Exception as e:  # noqa: BLE001
                    log.error("reloading %s failed: %s", path, e)
