"""OBS control surface: OBS scene changes steer vprod (obs-websocket v5, through obsws-python).

    [obs]
    url = "ws://127.0.0.1:4455"        # --obs-url overrides it
    password = ""                      # --obs-password, then VPROD_OBS_PASSWORD, then this; never logged
    studio_preview = false             # also follow the studio-mode preview scene
    enabled = true

    [obs.scenes]
    "Intro" = "worlds"                                    # switch to a preset (name or path)
    "Outro" = { preset = "solid", crossfade = 2.0 }       # … with its own crossfade, in seconds
    "Live"  = { "/bg/r" = 1.0, "/bg/g" = 0.0 }            # set parameters, each 0..1 (normalized)

When OBS's program scene changes, the mapped action goes to the daemon at once (parameter sets through the control
bus, preset switches through `daemon.request_preset`, off the websocket thread); the frame loop applies it on the
next frame. Scenes not in the map are ignored. On each connect the current program scene's mapping is applied once.
A dead OBS is retried in the background (0.5 s doubling to 5 s) with one log line; a wrong password is one error
and is retried only every 30 s. A preset with an [obs] section replaces the scene map (and reconnects if the address
or password changed); a preset without one keeps the map in force.

`vprod obs setup` puts vprod's MJPEG stream into an OBS scene as a Media Source (`setup_media_source`).
`BenchSender` is this surface's sender for `vprod bench control --surfaces obs`.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import presets
from ..engine.bus import Event
from ..engine.params import ParamError
from . import register_surface
from .badinput import BadInput

log = logging.getLogger("vprod.control.obs")

DEFAULT_URL = "ws://127.0.0.1:4455"
DEFAULT_STREAM = "http://127.0.0.1:8080/stream.mjpg"
PASSWORD_ENV = "VPROD_OBS_PASSWORD"
PASSWORD_HELP = "set [obs].password, --obs-password or VPROD_OBS_PASSWORD"
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 5.0  # OBS not there: retry after 0.5, 1, 2, 4, 5, 5 … s
AUTH_RETRY_S = 30.0  # wrong password: OBS will not change its mind soon; try again now and then
CONNECT_TIMEOUT_S = 3.0
WATCH_S = 0.2  # how often the connection's event thread is checked for life
NEXT_FRAME_WAIT_S = 10.0  # at most this long for the loop's next frame before a path counts as unknown
OBS_KEYS = {
    "url": "obs-websocket address, ws://HOST:PORT (default ws://127.0.0.1:4455)",
    "password": "obs-websocket password (or --obs-password, VPROD_OBS_PASSWORD)",
    "enabled": "true/false: connect to OBS at all",
    "studio_preview": "true/false: also follow studio-mode preview scene changes",
    "scenes": "table: OBS scene name → preset name/path, or a table of parameter paths → 0..1",
}
SCENE_KEYS = ("preset", "crossfade")
PATH_RE = re.compile(r"^(/[A-Za-z0-9_][A-Za-z0-9_.-]*){2,}$")


# --- the [obs] section ---
@dataclass
class SceneAction:
    """What one OBS scene does: switch preset (with an optional crossfade) or set parameters (0..1)."""

    preset: str | None = None
    crossfade: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.preset:
            fade = "" if self.crossfade is None else f" ({self.crossfade:g} s crossfade)"
            return f"preset {self.preset}{fade}"
        return ", ".join(f"{p}={v}" for p, v in self.params.items())


@dataclass
class ObsConfig:
    url: str = DEFAULT_URL
    password: str = field(default="", repr=False)  # never in a log line, a status or a repr
    enabled: bool = True
    studio_preview: bool = False
    scenes: dict[str, SceneAction] = field(default_factory=dict)
    base_dir: Path | None = None  # the folder of the preset that brought the map: its preset names resolve there

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_url(self.url)


def parse_url(url: Any) -> tuple[str, int]:
    """ws://HOST[:PORT] → (host, port); ValueError naming the expected form."""
    bad = ValueError(f"{url!r} is not an obs-websocket address like {DEFAULT_URL}")
    if not isinstance(url, str):
        raise bad
    try:
        parts = urlsplit(url)
        port = parts.port or 4455
    except ValueError:
        raise bad from None
    if parts.scheme != "ws" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise bad
    return parts.hostname, port


def _norm_value(v: Any) -> str | None:
    """None if `v` is a valid 0..1 value for a scene's parameter set, else what is wrong with it."""
    if isinstance(v, (bool, str)):
        return None  # booleans, choice names and text go through the parameter's own from_norm
    if isinstance(v, (int, float)):
        if not math.isfinite(v) or not 0 <= v <= 1:
            return f"{v!r} is outside 0..1 (scene values are normalized)"
        return None
    if isinstance(v, list) and len(v) == 3 and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                   and 0 <= c <= 1 for c in v):
        return None  # a colour
    return f"{v!r} is not a value 0..1 (a number, true/false, a name, or [r, g, b])"


def _toml_key(k: str) -> str:
    """A key as TOML writes it: bare if it can be, else quoted ("My Scene", "/bg/r")."""
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_scene(key: str, value: Any, errors: list[tuple[str, str]]) -> SceneAction | None:
    if isinstance(value, str):
        if not value.strip():
            errors.append((key, "an empty preset name (a preset name like \"solid\" or a path to a .toml file)"))
            return None
        return SceneAction(preset=value)
    if not isinstance(value, dict):
        errors.append((key, (f"{value!r} is neither a preset name nor a table of parameters "
                             "(e.g. \"solid\" or { \"/bg/r\" = 1.0 })")))
        return None
    if not value:
        errors.append((key, "an empty table maps the scene to nothing (give \"/layer/param\" = 0..1, or preset)"))
        return None
    act, ok = SceneAction(), True
    for k, v in value.items():
        if k == "preset":
            if not isinstance(v, str) or not v.strip():
                errors.append((f"{key}.preset", f"{v!r} is not a preset name or path"))
                ok = False
            else:
                act.preset = v
        elif k == "crossfade":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 60:
                errors.append((f"{key}.crossfade", f"{v!r} is not seconds in 0..60"))
                ok = False
            else:
                act.crossfade = float(v)
        elif k.startswith("/"):
            if not PATH_RE.match(k):
                errors.append((f"{key}.{_toml_key(k)}",
                               "not a parameter path like \"/bg/r\" or \"/layer/effect/param\""))
                ok = False
                continue
            why = _norm_value(v)
            if why:
                errors.append((f"{key}.{_toml_key(k)}", why))
                ok = False
            else:
                act.params[k] = v
        else:
            hint = " (parameter paths start with \"/\")" if "/" in k else ""
            allowed = f"a parameter path like \"/bg/r\", {', '.join(SCENE_KEYS)}"
            errors.append((f"{key}.{_toml_key(k)}", f"unknown key{hint} (allowed: {allowed})"))
            ok = False
    if act.preset and act.params:
        errors.append((key, ("a scene either switches preset or sets parameters, not both "
                             "(put the values in that preset)")))
        ok = False
    elif act.crossfade is not None and not act.preset:
        errors.append((f"{key}.crossfade", "a crossfade needs a preset to switch to"))
        ok = False
    return act if ok else None


def parse_section(data: Any, section: str = "obs") -> tuple[ObsConfig, list[tuple[str, str]]]:
    """The [obs] section → its config and every error as (key, message), keys like "obs.scenes.Intro"."""
    cfg, errors = ObsConfig(), []
    if not isinstance(data, dict):
        return cfg, [(section, "must be a table ([obs])")]
    for k in data:
        if k not in OBS_KEYS:
            errors.append((f"{section}.{k}", f"unknown key (allowed: {', '.join(OBS_KEYS)})"))
    if "url" in data:
        try:
            parse_url(data["url"])
            cfg.url = data["url"]
        except ValueError as e:
            errors.append((f"{section}.url", str(e)))
    if "password" in data:
        if isinstance(data["password"], str):
            cfg.password = data["password"]
        else:
            errors.append((f"{section}.password", "must be text (a quoted string)"))  # the value is not echoed
    for k in ("enabled", "studio_preview"):
        if k in data:
            if isinstance(data[k], bool):
                setattr(cfg, k, data[k])
            else:
                errors.append((f"{section}.{k}", f"{data[k]!r} must be true or false"))
    scenes = data.get("scenes", {})
    if not isinstance(scenes, dict):
        errors.append((f"{section}.scenes", "must be a table: [obs.scenes] with \"Scene name\" = …"))
        scenes = {}
    for name, value in scenes.items():
        act = _parse_scene(f"{section}.scenes.{_toml_key(name)}", value, errors)
        if act is not None:
            cfg.scenes[name] = act
    return cfg, errors


def _validate(data: Any, section: str) -> list[tuple[str, str]]:
    return parse_section(data, section)[1]


def resolve_config(section: Any, extra: dict | None = None, env: dict | None = None,
                   base_dir: Path | None = None) -> ObsConfig:
    """The preset's [obs] section with the command line and the environment on top.

    Address: --obs-url, then [obs].url. Password: --obs-password, then VPROD_OBS_PASSWORD, then [obs].password.
    """
    extra = extra or {}
    env = os.environ if env is None else env
    cfg, errors = parse_section(section if section is not None else {})
    if errors:  # the preset was validated on load; this is a caller's mistake
        raise ValueError("; ".join(f"{k}: {m}" for k, m in errors))
    cfg.base_dir = base_dir
    if extra.get("obs_url"):
        parse_url(extra["obs_url"])
        cfg.url = extra["obs_url"]
    pw = extra.get("obs_password") or env.get(PASSWORD_ENV)
    if pw:
        cfg.password = pw
    return cfg


presets.register_section("obs", "OBS scene events → presets and parameters: [obs] url, password, studio_preview, "
                                "enabled and [obs.scenes]", _validate)


# --- the surface ---
class _AuthFailed(Exception):
    pass


class _Unreachable(Exception):
    pass


class ObsControl:
    """Follows OBS's program scene (and, if asked, the studio-mode preview) and applies the scene map."""

    name = "obs"

    def __init__(self, daemon, cfg: ObsConfig, preset_file: str = ""):
        self.daemon = daemon
        self.cfg = cfg  # replaced whole (never mutated) when a preset brings a new [obs] section
        self.preset_file = preset_file
        self.bad = BadInput("obs", log)
        self.state = "starting"
        self.last_error = ""
        self.connections = 0  # successful connects; reconnects = connections - 1
        self.connect_failures = 0
        self.auth_failures = 0
        self.events = 0  # scene changes received from OBS
        self.applied = 0  # scene actions handed to the daemon
        self.program_scene: str | None = None
        self.preview_scene: str | None = None
        self.last_applied: str | None = None
        self.obs_version = ""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # (scene, action, stamp, why) → the apply thread
        self._stop = threading.Event()
        self._wake = threading.Event()  # settings changed or stopping: leave the current connection / wait
        self._said: set[str] = set()  # conditions already logged since the last good connection
        self._client = None  # the obsws_python.EventClient while connected
        self._threads: list[threading.Thread] = []
        self.next_frame_wait_s = NEXT_FRAME_WAIT_S

    # --- what the daemon sees ---
    def describe(self) -> str:
        n = len(self.cfg.scenes)
        extra = ", studio preview" if self.cfg.studio_preview else ""
        return f"obs            {self.cfg.url} {self.state} ({n} scene{'' if n == 1 else 's'} mapped{extra})"

    def status(self) -> dict:
        return {"url": self.cfg.url, "state": self.state, "connected": self.state == "connected",
                "reconnects": max(0, self.connections - 1), "events": self.events, "applied": self.applied,
                "program_scene": self.program_scene, "preview_scene": self.preview_scene,
                "last_applied_scene": self.last_applied, "scenes_mapped": len(self.cfg.scenes),
                "studio_preview": self.cfg.studio_preview, "obs_version": self.obs_version,
                "connect_failures": self.connect_failures, "auth_failures": self.auth_failures,
                "last_error": self.last_error, **self.bad.status()}

    def start(self) -> None:
        self.state = "connecting"
        self._threads = [threading.Thread(target=self._connection_loop, name="obs-connection", daemon=True),
                         threading.Thread(target=self._apply_loop, name="obs-apply", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._queue.put(None)
        self._abort(self._client)
        for t in self._threads:
            t.join(2.0)
        self.state = "stopped"

    def on_preset(self, preset) -> None:
        """A preset with an [obs] section brings its scene map (and maybe a new address or password)."""
        section = preset.data.get("obs")
        if section is None:
            return  # the show's OBS wiring stays as it is
        new = resolve_config(section, self.daemon.config.extra, base_dir=preset.dir)
        old, self.cfg = self.cfg, new
        self.preset_file = str(preset.path or "")
        self.check_presets(preset)
        if (new.url, new.password, new.enabled) != (old.url, old.password, old.enabled):
            log.info("OBS settings changed (%s): %s", self.preset_file,
                     f"connecting to {new.url}" if new.enabled else "disconnecting (enabled = false)")
            self._said.clear()
            self._wake.set()

    def check_presets(self, preset) -> None:
        """Warn (once per preset load) about mapped presets that do not exist; the map itself stays."""
        for scene, act in self.cfg.scenes.items():
            if act.preset:
                try:
                    presets.find_preset(act.preset, [preset.dir])
                except FileNotFoundError as e:
                    log.warning("%s: obs.scenes.%s: %s", preset.path or "preset", _toml_key(scene), e)

    def preset_target(self, name: str) -> str:
        """A mapped preset name as a path, found next to the preset that holds the map (the playing one may be
        elsewhere); the name itself if not found (the daemon then says so)."""
        try:
            return str(presets.find_preset(name, [self.cfg.base_dir] if self.cfg.base_dir else None))
        except FileNotFoundError:
            return name

    # --- events: websocket thread → apply thread ---
    def scene_changed(self, scene: Any, kind: str = "program", stamp: float | None = None) -> None:
        """OBS says its `kind` ("program" or "preview") scene is now `scene`; the mapped action is queued."""
        stamp = time.monotonic() if stamp is None else stamp
        self.events += 1
        if not isinstance(scene, str):
            self.bad.report("malformed", f"{kind} scene change without a scene name ({scene!r})")
            return
        if kind == "preview":
            self.preview_scene = scene
            if not self.cfg.studio_preview:
                return
        else:
            self.program_scene = scene
        act = self.cfg.scenes.get(scene)
        if act is None:
            log.debug("OBS %s scene %r is not in [obs.scenes]; ignored", kind, scene)
            return
        self._queue.put((scene, act, stamp, kind))

    def apply_queued(self) -> int:
        """Apply every queued scene action now, on this thread (the apply thread, or a unit test)."""
        n = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return n
            if item is not None:
                self.apply(*item)
                n += 1

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            try:
                self.apply(*item)
            except Exception:  # noqa: BLE001 - one bad action never ends the surface
                log.exception("OBS scene %r: applying its mapping failed", item[0])

    def apply(self, scene: str, act: SceneAction, stamp: float, why: str = "program") -> None:
        """Hand one scene's action to the daemon: a preset switch, or parameter sets posted to the bus."""
        self.last_applied = scene
        self.applied += 1
        log.info("OBS %s scene %r → %s", why, scene, act.describe())
        if act.preset:
            err = self.daemon.request_preset(self.preset_target(act.preset), act.crossfade, "obs")
            if err:  # the daemon has logged the details; the current preset keeps playing
                self.bad.report("preset", f"scene {scene!r}: preset {act.preset!r} did not load")
            return
        missing = self._post_params(scene, act.params, stamp, report=False)
        if missing:
            # The loop may not have taken the pipeline yet (the daemon is starting, or a preset switch asked for
            # a moment ago lands on the next frame): one more frame, then a path still unknown is bad input.
            self._wait_next_frame(self.daemon.engine)
            self._post_params(scene, {p: act.params[p] for p in missing}, stamp, report=True)

    def _post_params(self, scene: str, params: dict, stamp: float, report: bool) -> list[str]:
        """Post each parameter set (0..1 → real units) to the bus; returns the paths the engine does not know."""
        engine, missing = self.daemon.engine, []
        for path, norm in params.items():
            try:
                real = engine.resolve(path).spec.from_norm(norm)
            except KeyError as e:
                if report:
                    self.bad.report("unknown-path", f"scene {scene!r} ({self.preset_file}): {e.args[0]}")
                missing.append(path)
                continue
            except ParamError as e:
                self.bad.report("bad-value", f"scene {scene!r} ({self.preset_file}): {path}: {e}")
                continue
            self.daemon.bus.post(Event("set", path, real, "obs", stamp=stamp))
        return missing

    def _wait_next_frame(self, engine) -> None:
        start = engine.frames
        deadline = time.monotonic() + self.next_frame_wait_s
        while (engine.frames <= start or engine.pipeline is None) and time.monotonic() < deadline:
            if self._stop.wait(0.005):
                return

    # --- the connection ---
    def _say_once(self, key: str, level: int, msg: str, *args) -> None:
        if key in self._said:
            log.debug(msg, *args)
        else:
            self._said.add(key)
            log.log(level, msg, *args)

    def _connection_loop(self) -> None:
        try:
            import obsws_python  # noqa: F401
        except ImportError as e:
            self.state = f"off: obsws-python does not import ({e})"
            log.error("OBS control is off: obsws-python does not import (%s); pip install obsws-python", e)
            return
        # obsws-python logs the password at INFO and a traceback for each refused connection: we say it ourselves.
        logging.getLogger("obsws_python").setLevel(logging.CRITICAL + 1)
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            cfg = self.cfg
            self._wake.clear()
            if not cfg.enabled:
                self.state = "disabled"
                self._wake.wait()
                continue
            try:
                client = self._connect(cfg)
            except _AuthFailed as e:
                self.auth_failures += 1
                self.state, self.last_error = "wrong password", str(e)
                self._say_once("auth", logging.ERROR, "%s", e)
                self._wake.wait(AUTH_RETRY_S)
                continue
            except _Unreachable as e:
                self.connect_failures += 1
                self.state, self.last_error = "retrying", str(e)
                self._say_once("unreachable", logging.WARNING, "OBS at %s: not reachable (%s); retrying in the "
                               "background every %g to %g s", cfg.url, e, BACKOFF_MIN_S, BACKOFF_MAX_S)
                self._wake.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            while not self._wake.is_set() and client.worker.is_alive():
                self._wake.wait(WATCH_S)
            self._client = None
            self._abort(client)
            if self._stop.is_set():
                return
            if not self._wake.is_set():
                self.state = "retrying"
                self.last_error = "connection lost"
                self._said.add("unreachable")  # this line says it; retries stay quiet until connected again
                log.warning("OBS at %s: connection lost; reconnecting in the background", cfg.url)

    def _connect(self, cfg: ObsConfig):
        """Connect, subscribe to scene events, read the current scene and apply its mapping once."""
        import obsws_python as obsws
        from obsws_python.error import OBSSDKError

        host, port = cfg.host_port

        def open_client(cls, **kw):
            try:
                return cls(host=host, port=port, password=cfg.password, timeout=CONNECT_TIMEOUT_S, **kw)
            except OBSSDKError as e:
                why = str(e)
                if "no password" in why:
                    raise _AuthFailed(f"OBS at {cfg.url}: asks for a password and none was given "
                                      f"({PASSWORD_HELP})") from None
                if "identify" in why and cfg.password:
                    raise _AuthFailed(f"OBS at {cfg.url}: wrong password ({PASSWORD_HELP})") from None
                raise _Unreachable(why) from None
            except Exception as e:  # noqa: BLE001 - refused, timed out, not a websocket, not obs-websocket …
                raise _Unreachable(_why(e)) from None

        events_before = self.events
        client = open_client(obsws.EventClient, subs=obsws.Subs.SCENES)

        # obsws-python calls back by function name; the handlers run on its websocket thread and must not raise.
        def on_current_program_scene_changed(data):
            self._guarded(getattr(data, "scene_name", None), "program")

        def on_current_preview_scene_changed(data):
            self._guarded(getattr(data, "scene_name", None), "preview")

        client.callback.register([on_current_program_scene_changed, on_current_preview_scene_changed])
        try:
            req = open_client(obsws.ReqClient)
            try:
                ver = req.get_version()
                cur = req.get_current_program_scene()
            finally:
                req.disconnect()
        except _AuthFailed:
            self._abort(client)
            raise
        except Exception as e:  # noqa: BLE001 - OBS went away between the two connections
            self._abort(client)
            raise _Unreachable(_why(e)) from None
        scene = getattr(cur, "scene_name", None) or getattr(cur, "current_program_scene_name", None)
        self.obs_version = f"OBS {ver.obs_version}, obs-websocket {ver.obs_web_socket_version}"
        self._client = client
        self.connections += 1
        self.state, self.last_error = "connected", ""
        self._said.clear()
        log.info("OBS at %s: %s (%s; program scene %r)", cfg.url,
                 "connected" if self.connections == 1 else f"reconnected (reconnect {self.connections - 1})",
                 self.obs_version, scene)
        if self._stop.is_set():
            self._abort(client)
            return client
        if isinstance(scene, str) and self.events == events_before:  # an event that came meanwhile is newer
            self.program_scene = scene
            self._apply_on_connect(scene)
        return client

    def _apply_on_connect(self, scene: str) -> None:
        act = self.cfg.scenes.get(scene)
        if act is None or scene == self.last_applied:
            return  # unmapped, or already applied before the connection dropped
        playing = self.daemon.preset.path if self.daemon.preset is not None else None
        if act.preset and playing is not None and Path(self.preset_target(act.preset)).resolve() == playing.resolve():
            self.last_applied = scene
            return  # already playing it: a crossfade to itself would only reset its values
        self._queue.put((scene, act, time.monotonic(), "program (on connect)"))

    def _guarded(self, scene, kind: str) -> None:
        try:
            self.scene_changed(scene, kind)
        except Exception:  # noqa: BLE001 - an exception here would end obsws-python's event thread
            log.exception("OBS %s scene change %r: handling failed", kind, scene)

    @staticmethod
    def _abort(client) -> None:
        """Close a client's websocket now, waking its event thread (no close handshake: OBS may be gone)."""
        if client is None:
            return
        ws = getattr(getattr(client, "base_client", None), "ws", None)
        if ws is not None:
            try:
                ws.abort()
                ws.shutdown()
            except Exception:  # noqa: BLE001 - best effort: the socket may be closed already
                pass
        worker = getattr(client, "worker", None)
        if worker is not None and worker is not threading.current_thread():
            worker.join(1.0)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def factory(daemon, preset) -> ObsControl | None:
    """Built when the preset has an [obs] section or the command line gives --obs-url."""
    extra = getattr(daemon.config, "extra", None) or {}
    section = preset.data.get("obs")
    if section is None and not extra.get("obs_url"):
        return None
    cfg = resolve_config(section, extra, base_dir=preset.dir)
    ctl = ObsControl(daemon, cfg, str(preset.path or ""))
    ctl.check_presets(preset)
    return ctl


register_surface("obs", factory)


# --- vprod obs setup ---
def media_source_settings(stream: str) -> dict:
    """A Media Source (ffmpeg_source) that plays a live MJPEG stream with little buffering and reconnects."""
    return {"is_local_file": False, "input": stream, "input_format": "", "restart_on_activate": True,
            "close_when_inactive": False, "buffering_mb": 1, "hw_decode": False, "reconnect_delay_sec": 1}


def setup_media_source(url: str = DEFAULT_URL, password: str | None = None, scene: str | None = None,
                       stream: str = DEFAULT_STREAM, name: str = "vprod", out=print) -> int:
    """Add (or update) a Media Source named `name` playing `stream` in `scene` (default: the program scene).

    Idempotent: an existing input of that name is updated and put into the scene if it is not there yet; a new
    scene item is scaled to fit the canvas. Returns an exit code; every line says what was done."""
    try:
        host, port = parse_url(url)
    except ValueError as e:
        out(f"vprod obs setup: {e}")
        return 2
    if password is None:
        password = os.environ.get(PASSWORD_ENV, "")
    logging.getLogger("obsws_python").setLevel(logging.CRITICAL + 1)  # it would log the password
    import obsws_python as obsws
    from obsws_python.error import OBSSDKError, OBSSDKRequestError

    try:
        cl = obsws.ReqClient(host=host, port=port, password=password, timeout=CONNECT_TIMEOUT_S)
    except OBSSDKError as e:
        if "no password" in str(e):
            out(f"vprod obs setup: OBS at {url} asks for a password (--password or {PASSWORD_ENV})")
        elif password:
            out(f"vprod obs setup: OBS at {url}: wrong password (--password or {PASSWORD_ENV})")
        else:
            out(f"vprod obs setup: OBS at {url}: {e}")
        return 1
    except Exception as e:  # noqa: BLE001
        out(f"vprod obs setup: OBS at {url} is not reachable ({_why(e)}); start OBS and enable its WebSocket "
            "server (Tools -> WebSocket Server Settings)")
        return 1
    try:
        scenes = [s["sceneName"] for s in cl.get_scene_list().scenes]
        if scene is None:
            cur = cl.get_current_program_scene()
            scene = getattr(cur, "scene_name", None) or cur.current_program_scene_name
        elif scene not in scenes:
            out(f"vprod obs setup: OBS has no scene {scene!r} (scenes: {', '.join(scenes)})")
            return 1
        settings = media_source_settings(stream)
        inputs = {i["inputName"]: i.get("inputKind", "") for i in cl.get_input_list().inputs}
        if name in inputs:
            if inputs[name] != "ffmpeg_source":
                out(f"vprod obs setup: OBS already has an input {name!r} of kind {inputs[name]!r}, not a Media "
                    "Source; choose another --name")
                return 1
            cl.set_input_settings(name, settings, True)
            cl.trigger_media_input_action(name, "OBS_WEBSOCKET_MEDIA_INPUT_ACTION_RESTART")
            out(f"updated Media Source {name!r}: {stream}")
            items = [i["sourceName"] for i in cl.get_scene_item_list(scene).scene_items]
            if name in items:
                out(f"scene {scene!r} already shows {name!r}")
                return 0
            item_id = cl.create_scene_item(scene, name, True).scene_item_id
            out(f"added {name!r} to scene {scene!r}")
        else:
            item_id = cl.create_input(scene, name, "ffmpeg_source", settings, True).scene_item_id
            out(f"added Media Source {name!r} ({stream}) to scene {scene!r}")
        video = cl.get_video_settings()
        cl.set_scene_item_transform(scene, item_id, {
            "positionX": 0.0, "positionY": 0.0, "alignment": 5, "boundsType": "OBS_BOUNDS_SCALE_INNER",
            "boundsAlignment": 0, "boundsWidth": float(video.base_width), "boundsHeight": float(video.base_height)})
        out(f"fitted it to the {video.base_width}x{video.base_height} canvas")
        return 0
    except OBSSDKRequestError as e:
        out(f"vprod obs setup: OBS refused a request: {e}")
        return 1
    finally:
        cl.disconnect()


def setup_command(args) -> int:
    return setup_media_source(url=args.url, password=args.password, scene=args.scene, stream=args.stream,
                              name=args.name)


# --- vprod bench control --surfaces obs ---
class BenchSender:
    """A real OBS under Xvfb; two scenes mapped to the two /bg/r levels; send() cuts to one of them."""

    def __init__(self, ctx):
        from ..bench_control import LEVELS
        from ..obs_peer import free_port

        self.ctx = ctx
        self.port = free_port()
        self.scenes = {level: f"vprod-bench-{i}" for i, level in enumerate(LEVELS)}
        self.obs = None
        self.client = None

    def daemon_args(self) -> list[str]:
        return ["--obs-url", f"ws://127.0.0.1:{self.port}"]

    def preset_extra(self) -> str:
        lines = ["[obs.scenes]"] + [f'"{scene}" = {{ "/bg/r" = {level} }}' for level, scene in self.scenes.items()]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        from ..obs_peer import ObsStudio

        # A small canvas: OBS renders with software GL on the same cores as the daemon.
        self.obs = ObsStudio(port=self.port, width=320, height=180)
        try:
            self.obs.start()
            self.client = self.obs.client()
            for scene in self.scenes.values():
                self.client.create_scene(scene)
            # OBS reports a scene change when its transition ends: a Cut, so the number is vprod's, not a fade's.
            self.client.set_current_scene_transition("Cut")
            self._wait_connected()
        except BaseException:
            self.stop()
            raise

    def _wait_connected(self, timeout: float = 60.0) -> None:
        """Until the daemon's status says its OBS control is connected (it retries every 0.5 to 5 s)."""
        from ..bench_control import wait_for_status

        wait_for_status(self.ctx, lambda st: st["controls"].get("obs", {}).get("state") == "connected", timeout,
                        "the daemon's OBS control did not connect")

    def send(self, level: float) -> None:
        self.client.set_current_program_scene(self.scenes[level])

    def stop(self) -> None:
        if self.obs is not None:
            self.obs.stop()
            self.obs = None
