"""The daemon's lifecycle: load the preset, start outputs and controls, run the frame loop, shut down on signals.

First SIGINT/SIGTERM: graceful (sinks closed, exit 0 within ~2 s); a second one exits at once. A preset that
fails to load never replaces the one playing; a port in use turns that one output off with one error line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import presets as presets_mod
from .control.tempo import Tempo
from .engine import ControlBus, Engine, ElementConfig
from .engine.pipeline import Pipeline
from .plugins import PluginError, PluginRegistry
from .memory import keep_freed_memory
from .presets import Preset, PresetInvalid, PresetWatcher
from .threads import configure_threads

log = logging.getLogger("vprod.daemon")

DEFAULT_OUTPUTS = {"zmq": {}, "mjpeg": {}}
PORT_OVERRIDES = {"zmq": "zmq_port", "mjpeg": "mjpeg_port"}


class StopRequested(BaseException):
    """Raised by the signal handler while the daemon is still starting (loading a model can take seconds).

    A BaseException, so a plugin's `except Exception` around its own loading does not swallow it."""


@dataclass
class DaemonConfig:
    preset: str = "presets/default.toml"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    bind: str | None = None  # None: each output's own (127.0.0.1 by default)
    zmq_port: int | None = None
    mjpeg_port: int | None = None
    control_port: int | None = None
    outputs: list[str] | None = None  # only these outputs (names in the preset), None: all enabled ones
    record: str | None = None  # add a `record` output to this file
    watch: bool = True
    threads: int | None = None
    extra: dict = field(default_factory=dict)  # for control surfaces added later (osc, midi, obs)


class Daemon:
    def __init__(self, config: DaemonConfig, registry: PluginRegistry | None = None):
        self.config = config
        self.registry = registry or PluginRegistry()
        self.bus = ControlBus()
        self.stop_event = threading.Event()
        self.engine: Engine | None = None
        self.preset: Preset | None = None
        self.controls: list = []  # objects with start() / stop() / status()
        self.watcher = PresetWatcher(self._on_preset_file_changed)
        self.preset_errors = 0
        self.running = False  # True once the frame loop may see the stop event; until then a signal raises
        self._switch_lock = threading.Lock()
        self.tempo = Tempo()  # BPM and beat phase: MIDI clock, audio or preset → modulators

    # --- presets ---
    def _load(self, name_or_path: str) -> Preset:
        dirs = [self.preset.dir] if self.preset else []
        path = presets_mod.find_preset(name_or_path, dirs)
        return presets_mod.load(path, self.registry)

    def _build(self, preset: Preset) -> Pipeline:
        e = self.engine
        return presets_mod.build(preset, self.registry, e.width, e.height, e.fps)

    def request_preset(self, name_or_path: str, crossfade: float | None = None, source: str = "") -> str | None:
        """Switch to a preset by name or path; returns None on success, else the error (nothing changes)."""
        with self._switch_lock:
            try:
                preset = self._load(name_or_path)
                pipeline = self._build(preset)
            except (FileNotFoundError, PresetInvalid, PluginError) as e:
                self.preset_errors += 1
                msg = str(e)
                log.error("preset %s not loaded, still playing %s:\n%s", name_or_path,
                          self.preset.name if self.preset else "nothing", msg)
                return msg
            self.preset = preset
            self.engine.switch(pipeline, crossfade, source)
            self.watcher.watch(preset.path)
            log.info("switching to preset %s (%s)", preset.name, preset.path)
        for ctl in self.controls:  # mappings (MIDI, OBS scenes, OSC targets, modulators) follow the preset
            hook = getattr(ctl, "on_preset", None)
            if hook is not None:
                try:
                    hook(preset)
                except Exception as e:  # noqa: BLE001
                    log.error("control %s did not take preset %s: %s", ctl.name, preset.name, e)
        return None

    def _on_preset_file_changed(self, path: Path) -> None:
        log.info("%s changed, reloading", path)
        self.request_preset(str(path), source="reload")

    # --- outputs ---
    def _output_specs(self, preset: Preset) -> dict[str, dict]:
        outs = {k: dict(v) for k, v in preset.outputs.items()} if preset.outputs else {
            k: {"type": k, "enabled": True, "params": {}, "options": {}} for k in DEFAULT_OUTPUTS}
        if self.config.record:
            outs["record"] = {"type": "record", "enabled": True, "params": {},
                              "options": {"path": self.config.record}}
        wanted = self.config.outputs
        for name, spec in outs.items():
            if wanted is not None:
                spec["enabled"] = name in wanted or spec["type"] in wanted
            opts = spec["options"] = dict(spec.get("options", {}))
            attr = PORT_OVERRIDES.get(spec["type"])
            if attr and getattr(self.config, attr) is not None:
                opts["port"] = getattr(self.config, attr)
            if self.config.bind:
                opts["bind"] = self.config.bind
        if wanted is not None:
            for w in wanted:
                if w not in outs and w in self.registry.elements:
                    outs[w] = {"type": w, "enabled": True, "params": {}, "options": {}}
        return outs

    def _start_outputs(self, preset: Preset) -> None:
        for name, spec in self._output_specs(preset).items():
            if not spec["enabled"]:
                continue
            try:
                cls = self.registry.load(spec["type"])
            except PluginError as e:
                log.error("output %s is off: %s", name, e)
                continue
            known = {k: v for k, v in spec["options"].items() if k in cls.options}
            cfg = ElementConfig(layer="", name=name, width=self.engine.width, height=self.engine.height,
                                fps=self.engine.fps, options=known, preset_dir=str(preset.dir))
            self.engine.add_sink(name, cls(cfg, spec["params"]))

    # --- lifecycle ---
    def start(self) -> None:
        configure_threads(self.config.threads)
        keep_freed_memory()
        path = presets_mod.find_preset(self.config.preset)
        preset = presets_mod.load(path, self.registry)  # raises PresetInvalid: the CLI reports and exits
        c = self.config
        self.engine = Engine(c.width or preset.width, c.height or preset.height, c.fps or preset.fps, bus=self.bus)
        self.preset = preset
        self.engine.switch(self._build(preset), 0.0, "start")
        self._start_outputs(preset)
        self._start_controls(preset)
        if c.watch:
            self.watcher.watch(preset.path)
            self.watcher.start()

    def _start_controls(self, preset: Preset) -> None:
        from .control.zmq_control import ZmqControl

        zc = preset.control.get("zmq", {})
        if zc.get("enabled", True):
            port = self.config.control_port or zc.get("port", 5556)
            bind = self.config.bind or zc.get("bind", "127.0.0.1")
            self.controls.append(ZmqControl(self, f"tcp://{bind}:{port}"))
        from .control import build_surfaces

        self.controls += build_surfaces(self, preset)
        for ctl in self.controls:
            try:
                ctl.start()
            except Exception as e:  # noqa: BLE001 - a control that cannot start must not stop the output
                log.error("%s", e)

    def banner(self) -> str:
        e = self.engine
        lines = [f"vprod {self.preset.name} ({self.preset.path}) at {e.width}x{e.height} {e.fps:g} fps"]
        time.sleep(0.2)  # let the outputs bind so the banner tells the truth
        for name, r in e.sinks.items():
            where = getattr(r.sink, "where", None)
            state = "off (see the error above)" if r.state == "failed" else (where() if callable(where) else r.state)
            lines.append(f"  output {name:<15} {state}")
        for ctl in self.controls:
            lines.append(f"  control {ctl.describe()}")
        return "\n".join(lines)

    def run(self, max_frames: int | None = None) -> int:
        self.install_signals()
        self.running = True
        try:
            self.engine.run(self.stop_event, max_frames)
        finally:
            self.shutdown()
        return 0

    def install_signals(self) -> None:
        """First SIGINT/SIGTERM stops gracefully (or aborts a start in progress); a second exits at once."""
        if threading.current_thread() is not threading.main_thread() or getattr(self, "_old_handlers", None):
            return
        count = {"n": 0}

        def handler(signum, _frame):
            count["n"] += 1
            if count["n"] > 1:
                os._exit(130)  # second signal: force
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stop_event.set()
            if not self.running:
                raise StopRequested(signal.Signals(signum).name)

        self._old_handlers = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def shutdown(self) -> None:
        self.watcher.stop()
        for ctl in self.controls:
            try:
                ctl.stop()
            except Exception as e:  # noqa: BLE001
                log.warning("control did not stop cleanly: %s", e)
        if self.engine:
            self.engine.close()
        for s, h in (getattr(self, "_old_handlers", None) or {}).items():
            signal.signal(s, h)
        self._old_handlers = None
        log.info("stopped after %d frames (%d dropped)", self.engine.frames if self.engine else 0,
                 self.engine.clock.dropped_total if self.engine else 0)

    def status(self) -> dict:
        s = self.engine.stats()
        s["preset_file"] = str(self.preset.path) if self.preset else ""
        s["preset_errors"] = self.preset_errors
        s["controls"] = {c.name: c.status() for c in self.controls}
        return s


def print_banner(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
