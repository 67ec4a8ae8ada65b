"""OBS control surface: the [obs] section, scene events → bus events (in-memory daemon), and a real OBS 29 under
Xvfb switching scenes → the mapped preset's / parameters' pixels in the ZeroMQ stream, reconnects, passwords and
`vprod obs setup`."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from daemon_helpers import (
    SOLID_PRESET,
    SOLID_RGB,
    WAIT,
    Control,
    FrameStream,
    near,
    rgb8,
    run_vprod,
    solid_preset_text,
    wait_obs_colour,
)

from vprod.control import obs as obsctl
from vprod.engine.bus import ControlBus
from vprod.engine.params import ChoiceParam, FloatParam, ParamState
from vprod.plugins import PluginRegistry
from vprod.presets import PresetInvalid, load

PASSWORD = "vprod-test-pw"
RED = (0.9, 0.1, 0.1)
LIVE = {"/bg/r": 1.0, "/bg/g": 0.5, "/bg/b": 0.0}
LIVE_RGB = (255, 128, 0)
OBS_TOL = 16  # JPEG, then OBS's RGB → YUV → RGB


# --- unit: the [obs] section ---
def test_section_parses_presets_crossfades_and_parameter_sets():
    cfg, errors = obsctl.parse_section({
        "url": "ws://10.0.0.2:4460", "password": "pw", "studio_preview": True,
        "scenes": {"Intro": "worlds", "Outro": {"preset": "solid.toml", "crossfade": 2},
                   "Live": {"/bg/r": 1.0, "/bg/g": 0, "/fx/mode": "mirror", "/bg/on": True,
                            "/bg/tint": [0.1, 0.2, 0.3]}}})
    assert errors == []
    assert cfg.host_port == ("10.0.0.2", 4460) and cfg.password == "pw" and cfg.studio_preview and cfg.enabled
    assert cfg.scenes["Intro"] == obsctl.SceneAction(preset="worlds")
    assert cfg.scenes["Outro"] == obsctl.SceneAction(preset="solid.toml", crossfade=2.0)
    assert cfg.scenes["Live"].params == {"/bg/r": 1.0, "/bg/g": 0, "/fx/mode": "mirror", "/bg/on": True,
                                         "/bg/tint": [0.1, 0.2, 0.3]}
    assert "pw" not in repr(cfg)


@pytest.mark.parametrize("section, key, words", [
    ({"url": "http://127.0.0.1:4455"}, "obs.url", "ws://127.0.0.1:4455"),
    ({"url": "ws://127.0.0.1:notaport"}, "obs.url", "obs-websocket address"),
    ({"password": 1234}, "obs.password", "text"),
    ({"enabled": "yes"}, "obs.enabled", "true or false"),
    ({"studio_preview": 1}, "obs.studio_preview", "true or false"),
    ({"port": 4455}, "obs.port", "unknown key"),
    ({"scenes": ["Intro"]}, "obs.scenes", "must be a table"),
    ({"scenes": {"Intro": 3}}, "obs.scenes.Intro", "neither a preset name nor a table"),
    ({"scenes": {"Intro": ""}}, "obs.scenes.Intro", "empty preset name"),
    ({"scenes": {"Intro": {}}}, "obs.scenes.Intro", "maps the scene to nothing"),
    ({"scenes": {"Live": {"/bg/r": 1.5}}}, 'obs.scenes.Live."/bg/r"', "outside 0..1"),
    ({"scenes": {"Live": {"/bg/r": float("nan")}}}, 'obs.scenes.Live."/bg/r"', "outside 0..1"),
    ({"scenes": {"Live": {"/bg/r": {"x": 1}}}}, 'obs.scenes.Live."/bg/r"', "not a value 0..1"),
    ({"scenes": {"Live": {"/bg": 1.0}}}, 'obs.scenes.Live."/bg"', "parameter path"),
    ({"scenes": {"Live": {"bg/r": 1.0}}}, 'obs.scenes.Live."bg/r"', 'start with "/"'),
    ({"scenes": {"My Scene": {"preset": "solid", "/bg/r": 1.0}}}, 'obs.scenes."My Scene"', "not both"),
    ({"scenes": {"Live": {"crossfade": 1.0, "/bg/r": 1.0}}}, "obs.scenes.Live.crossfade", "needs a preset"),
    ({"scenes": {"Out": {"preset": "solid", "crossfade": -1}}}, "obs.scenes.Out.crossfade", "0..60"),
    ({"scenes": {"Out": {"preset": 7}}}, "obs.scenes.Out.preset", "not a preset name"),
])
def test_malformed_sections_name_the_key(section, key, words):
    _cfg, errors = obsctl.parse_section(section)
    assert any(k == key and words in msg for k, msg in errors), errors


def test_malformed_map_is_a_preset_error_naming_file_and_key(tmp_path):
    p = tmp_path / "show.toml"
    p.write_text(solid_preset_text("show", (0.1, 0.2, 0.6), extra='[obs]\npassword = "secret"\n'
                                   '[obs.scenes]\n"Live" = { "/bg/r" = 2.0 }\n"Intro" = 5\n'))
    with pytest.raises(PresetInvalid) as ei:
        load(p, PluginRegistry())
    text = str(ei.value)
    assert f'{p}: obs.scenes.Live."/bg/r": 2.0 is outside 0..1' in text
    assert f"{p}: obs.scenes.Intro: 5 is neither" in text
    assert "secret" not in text


def test_password_comes_from_cli_then_environment_then_preset():
    section = {"url": "ws://127.0.0.1:4460", "password": "from-preset"}
    assert obsctl.resolve_config(section, {}, {}).password == "from-preset"
    assert obsctl.resolve_config(section, {}, {"VPROD_OBS_PASSWORD": "from-env"}).password == "from-env"
    cfg = obsctl.resolve_config(section, {"obs_password": "from-cli", "obs_url": "ws://127.0.0.1:4461"},
                                {"VPROD_OBS_PASSWORD": "from-env"})
    assert (cfg.password, cfg.url) == ("from-cli", "ws://127.0.0.1:4461")
    assert obsctl.resolve_config(None, {}, {}).url == obsctl.DEFAULT_URL


# --- unit: scene events → bus events, on an in-memory daemon ---
class FakeEngine:
    """Engine.resolve over three parameters; `frames` counts up each time it is read (a loop that runs)."""

    pipeline = "a pipeline"

    def __init__(self):
        self._frames = 0
        self.params = {"/bg/r": ParamState(FloatParam(0.1), 0.1, 0.1),
                       "/bg/hue": ParamState(FloatParam(0.0, min=-180.0, max=180.0), 0.0, 0.0),
                       "/fx/mode": ParamState(ChoiceParam(choices=("a", "b", "c")), "a", "a")}

    @property
    def frames(self) -> int:
        self._frames += 1
        return self._frames

    def resolve(self, path):
        if path not in self.params:
            raise KeyError(f"no parameter at {path!r} (known: {', '.join(self.params)})")
        return self.params[path]


class FakeDaemon:
    def __init__(self, tmp_path: Path, extra: dict | None = None):
        self.bus = ControlBus()
        self.engine = FakeEngine()
        self.config = SimpleNamespace(extra=extra or {})
        self.preset = SimpleNamespace(path=tmp_path / "show.toml", dir=tmp_path, data={})
        self.requests: list[tuple] = []
        self.fail = False

    def request_preset(self, name, crossfade=None, source=""):
        self.requests.append((name, crossfade, source))
        return "no such preset" if self.fail else None


def make_control(tmp_path, scenes: dict, **kw) -> tuple[obsctl.ObsControl, FakeDaemon]:
    d = FakeDaemon(tmp_path)
    cfg, errors = obsctl.parse_section({"scenes": scenes, **kw})
    assert errors == []
    cfg.base_dir = tmp_path  # as if the map came from tmp_path/show.toml
    return obsctl.ObsControl(d, cfg, str(tmp_path / "show.toml")), d


def test_program_scene_with_parameters_posts_real_values_to_the_bus(tmp_path):
    ctl, d = make_control(tmp_path, {"Live": {"/bg/r": 1.0, "/bg/hue": 0.25, "/fx/mode": 1.0}})
    ctl.scene_changed("Live", "program", stamp=123.0)
    assert d.bus.drain() == []  # nothing before the apply thread runs
    assert ctl.apply_queued() == 1
    evs = d.bus.drain()
    assert [(e.kind, e.path, e.value, e.source, e.stamp) for e in evs] == [
        ("set", "/bg/r", 1.0, "obs", 123.0), ("set", "/bg/hue", -90.0, "obs", 123.0),
        ("set", "/fx/mode", "c", "obs", 123.0)]
    st = ctl.status()
    assert (st["events"], st["applied"], st["program_scene"], st["last_applied_scene"]) == (1, 1, "Live", "Live")


def test_scene_with_a_preset_asks_the_daemon_to_switch(tmp_path):
    (tmp_path / "mine.toml").write_text(solid_preset_text("mine", RED))
    ctl, d = make_control(tmp_path, {"Intro": "mine", "Outro": {"preset": "solid", "crossfade": 1.5},
                                     "Gone": "not-a-preset"})
    for scene in ("Intro", "Outro", "Gone"):
        ctl.scene_changed(scene)
    ctl.apply_queued()
    # names resolve next to the preset holding the map (then the preset folders), whatever preset plays now
    assert d.requests == [(str(tmp_path / "mine.toml"), None, "obs"), (str(SOLID_PRESET), 1.5, "obs"),
                          ("not-a-preset", None, "obs")]
    assert d.bus.drain() == []


def test_unmapped_scenes_and_preview_changes_are_ignored_unless_asked(tmp_path):
    ctl, d = make_control(tmp_path, {"Live": {"/bg/r": 1.0}})
    ctl.scene_changed("Backstage")
    ctl.scene_changed("Live", "preview")
    assert ctl.apply_queued() == 0 and d.bus.drain() == []
    st = ctl.status()
    assert (st["events"], st["bad_input"], st["preview_scene"]) == (2, 0, "Live")

    ctl, d = make_control(tmp_path, {"Live": {"/bg/r": 1.0}}, studio_preview=True)
    ctl.scene_changed("Live", "preview")
    assert ctl.apply_queued() == 1 and [e.path for e in d.bus.drain()] == ["/bg/r"]


def test_bad_entries_at_run_time_are_counted_and_the_rest_applies(tmp_path, caplog):
    ctl, d = make_control(tmp_path, {"Live": {"/nope/r": 1.0, "/bg/r": 0.5}, "Gone": "missing"})
    with caplog.at_level(logging.WARNING, "vprod.control.obs"):
        for _ in range(3):
            ctl.scene_changed("Live")
        ctl.scene_changed(None)
        d.fail = True
        ctl.scene_changed("Gone")
        ctl.apply_queued()
    assert [e.path for e in d.bus.drain()] == ["/bg/r"] * 3
    st = ctl.status()
    assert st["bad_input_by_kind"] == {"unknown-path": 3, "malformed": 1, "preset": 1}
    warned = [r.getMessage() for r in caplog.records]
    assert sum("/nope/r" in m for m in warned) == 1, warned  # once per kind, then counted


def test_a_path_of_a_pipeline_not_yet_playing_is_tried_again_after_one_frame(tmp_path):
    ctl, d = make_control(tmp_path, {"Live": {"/bg/r": 1.0, "/new/x": 0.5}})
    ctl.next_frame_wait_s = 0.5
    ctl.scene_changed("Live")

    class Loop(FakeEngine):  # the loop takes the new pipeline on its next frame
        @property
        def frames(self):
            self.params["/new/x"] = ParamState(FloatParam(0.0, min=0.0, max=10.0), 0.0, 0.0)
            return super().frames

    d.engine = Loop()
    ctl.apply_queued()
    assert [(e.path, e.value) for e in d.bus.drain()] == [("/bg/r", 1.0), ("/new/x", 5.0)]
    assert ctl.status()["bad_input"] == 0


def test_a_preset_with_an_obs_section_replaces_the_map_one_without_keeps_it(tmp_path):
    ctl, _d = make_control(tmp_path, {"Live": {"/bg/r": 1.0}})
    ctl.on_preset(SimpleNamespace(data={}, path=tmp_path / "other.toml", dir=tmp_path))
    assert list(ctl.cfg.scenes) == ["Live"] and not ctl._wake.is_set()
    ctl.on_preset(SimpleNamespace(data={"obs": {"scenes": {"Intro": "solid"}}}, path=tmp_path / "b.toml",
                                  dir=tmp_path))
    assert list(ctl.cfg.scenes) == ["Intro"] and not ctl._wake.is_set()  # same address: no reconnect
    ctl.on_preset(SimpleNamespace(data={"obs": {"url": "ws://127.0.0.1:4999"}}, path=tmp_path / "c.toml",
                                  dir=tmp_path))
    assert ctl.cfg.url == "ws://127.0.0.1:4999" and ctl._wake.is_set()


def test_factory_builds_only_with_an_obs_section_or_obs_url(tmp_path):
    d = FakeDaemon(tmp_path)
    assert obsctl.factory(d, SimpleNamespace(data={}, path=None, dir=tmp_path)) is None
    d.config.extra["obs_url"] = "ws://127.0.0.1:4999"
    ctl = obsctl.factory(d, SimpleNamespace(data={}, path=None, dir=tmp_path))
    assert ctl is not None and ctl.cfg.url == "ws://127.0.0.1:4999" and ctl.cfg.scenes == {}
    d.config.extra.clear()
    ctl = obsctl.factory(d, SimpleNamespace(data={"obs": {"scenes": {"A": "solid"}}}, path=None, dir=tmp_path))
    assert ctl is not None and ctl.cfg.url == obsctl.DEFAULT_URL


def test_nobody_listening_is_one_warning_retried_with_backoff(tmp_path, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        ctl, _d = make_control(tmp_path, {}, url=f"ws://127.0.0.1:{port}", password="hush-hush")
        with caplog.at_level(logging.DEBUG, "vprod.control.obs"):
            ctl.start()
            try:
                deadline = time.monotonic() + WAIT
                while ctl.connect_failures < 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
                st = ctl.status()
            finally:
                ctl.stop()
    assert st["state"] == "retrying" and st["connect_failures"] >= 3, st
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"ws://127.0.0.1:{port}: not reachable" in warnings[0], warnings
    assert "hush-hush" not in caplog.text and "hush-hush" not in str(st) and "hush-hush" not in ctl.describe()


# --- integration: a real OBS under Xvfb, real `vprod run` daemons ---
SCENES = ("Solid", "Red", "Live", "Backstage")


@pytest.fixture(scope="module")
def obs():
    """One OBS for this module (tests that stop or kill it start it again)."""
    from peers.obs import ObsStudio

    with ObsStudio(password=PASSWORD, width=640, height=360) as o:
        yield o


def obs_client(obs):
    """A fresh client (an earlier one dies when a test restarts OBS) on an OBS that has our scenes and a Cut.

    OBS saves its scene collection a moment after a change, so a SIGKILL can lose scenes made just before."""
    cl = obs.client()
    have = {s["sceneName"] for s in cl.get_scene_list().scenes}
    for scene in SCENES:
        if scene not in have:
            cl.create_scene(scene)
    cl.set_current_scene_transition("Cut")  # OBS reports a scene change when its transition ends
    return cl


def show_preset(tmp_path: Path, url: str | None = None, extra: str = "") -> Path:
    """show.toml (the solid colours of presets/solid.toml) mapping OBS scenes; red.toml next to it."""
    (tmp_path / "red.toml").write_text(solid_preset_text("red", RED, crossfade=0.0))
    live = ", ".join(f'"{k}" = {v}' for k, v in LIVE.items())
    obs = "[obs]\n" + (f'url = "{url}"\n' if url else "") + extra + (
        f'[obs.scenes]\n"Solid" = {{ preset = "{SOLID_PRESET}", crossfade = 0.0 }}\n"Red" = "red"\n'
        f'"Live" = {{ {live} }}\n')
    p = tmp_path / "show.toml"
    p.write_text(solid_preset_text("show", (0.1, 0.2, 0.6), crossfade=0.0, extra=obs))
    return p


def obs_status(ctl: Control) -> dict:
    return ctl.req("status")["status"]["controls"]["obs"]


def wait_status(ctl: Control, pred, what: str, timeout: float = WAIT) -> dict:
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = obs_status(ctl)
        if pred(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"the OBS control never got {what} within {timeout:g} s; status {st}")


def wait_frames(frames: FrameStream, n: int = 10) -> None:
    """n more frames arrive: the stream keeps running."""
    frames.first_frame_at_or_after(frames.last_seq + n)


@pytest.mark.integration
def test_obs_scenes_switch_presets_and_set_parameters(obs, daemons, tmp_path):
    cl = obs_client(obs)
    cl.set_current_program_scene("Red")  # already on air when vprod connects: applied once on connect
    d = daemons(show_preset(tmp_path, obs.url), env={"VPROD_OBS_PASSWORD": PASSWORD})
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour(rgb8(RED), tol=1)
        st = wait_status(ctl, lambda s: s["connected"], "connected")
        assert st["program_scene"] == "Red" and st["scenes_mapped"] == 3

        cl.set_current_program_scene("Live")  # parameter sets on the red preset's layer
        frames.wait_colour(LIVE_RGB, tol=1)
        seq = frames.last_seq
        cl.set_current_program_scene("Backstage")  # not in the map: nothing changes
        wait_status(ctl, lambda s: s["program_scene"] == "Backstage", "the Backstage event")
        wait_frames(frames, 5)
        assert all(near(rgb, LIVE_RGB, 1) for _seq, _t, rgb in frames.seen_since(seq))

        cl.set_current_program_scene("Solid")  # presets/solid.toml has no [obs]: the map stays in force
        frames.wait_colour(SOLID_RGB, tol=1)
        cl.set_current_program_scene("Red")
        frames.wait_colour(rgb8(RED), tol=1)
        st = obs_status(ctl)
        assert st["events"] >= 4 and st["applied"] == 4 and st["bad_input"] == 0, st
        assert st["reconnects"] == 0 and st["state"] == "connected"
    assert not d.errors(), d.log()
    assert PASSWORD not in d.log()


@pytest.mark.integration
def test_obs_studio_preview_changes_apply_when_asked(obs, daemons, tmp_path):
    cl = obs_client(obs)
    cl.set_current_program_scene("Backstage")
    d = daemons(show_preset(tmp_path, obs.url, "studio_preview = true\n"), args=["--obs-password", PASSWORD])
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        wait_status(ctl, lambda s: s["connected"], "connected")
        cl.set_studio_mode_enabled(True)
        try:
            cl.set_current_preview_scene("Live")
            frames.wait_colour(LIVE_RGB, tol=1)
            assert obs_status(ctl)["preview_scene"] == "Live"
        finally:
            cl.set_studio_mode_enabled(False)
    assert PASSWORD not in d.log()


@pytest.mark.integration
def test_obs_killed_and_restarted_vprod_reconnects(obs, daemons, tmp_path):
    cl = obs_client(obs)
    cl.set_current_program_scene("Backstage")
    d = daemons(show_preset(tmp_path, obs.url), args=["--obs-password", PASSWORD])
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour(SOLID_RGB, tol=1)
        wait_status(ctl, lambda s: s["connected"], "connected")
        obs.stop_obs(crash=True)  # SIGKILL: no goodbye on the websocket
        wait_status(ctl, lambda s: s["state"] == "retrying", "retrying")
        wait_frames(frames)  # the stream runs on without OBS
        obs.start_obs()
        st = wait_status(ctl, lambda s: s["connected"] and s["reconnects"] == 1, "reconnected")
        cl = obs_client(obs)
        cl.set_current_program_scene("Live")
        frames.wait_colour(LIVE_RGB, tol=1)
        assert obs_status(ctl)["events"] >= 1
    lost = [m for m in d.records() if m[1] == "vprod.control.obs" and m[0] == "WARNING"]
    assert len(lost) == 1 and "connection lost" in lost[0][2], lost  # one line, not one per retry
    assert st["connect_failures"] >= 1


@pytest.mark.integration
def test_obs_not_running_at_start_connects_when_it_starts(obs, daemons, tmp_path):
    obs.stop_obs()
    try:
        d = daemons(show_preset(tmp_path), args=["--obs-url", obs.url, "--obs-password", PASSWORD])
        with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
            frames.wait_colour(SOLID_RGB, tol=1)
            wait_status(ctl, lambda s: s["state"] == "retrying" and s["connect_failures"] >= 2, "two failures")
            wait_frames(frames)
        d.wait_log(r"OBS at ws://127\.0\.0\.1:\d+: not reachable")
    finally:
        obs.start_obs()
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        wait_status(ctl, lambda s: s["connected"], "connected", timeout=WAIT + 10)
        obs_client(obs).set_current_program_scene("Red")
        frames.wait_colour(rgb8(RED), tol=1)
    warnings = [m for m in d.records("WARNING") if m[1] == "vprod.control.obs"]
    assert len(warnings) == 1, warnings  # however many retries it took


@pytest.mark.integration
@pytest.mark.parametrize("password, words", [
    ("not-the-password", "wrong password (set [obs].password, --obs-password or VPROD_OBS_PASSWORD)"),
    (None, "asks for a password and none was given (set [obs].password, --obs-password or VPROD_OBS_PASSWORD)"),
])
def test_wrong_or_missing_password_is_one_clear_error_and_the_stream_runs(obs, daemons, tmp_path, password, words):
    cl = obs_client(obs)
    args = ["--obs-password", password] if password else []
    d = daemons(show_preset(tmp_path, obs.url), args=args, env={"VPROD_OBS_PASSWORD": ""})
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        frames.wait_colour(SOLID_RGB, tol=1)
        st = wait_status(ctl, lambda s: s["state"] == "wrong password", "wrong password")
        cl.set_current_program_scene("Red")  # not connected: nothing follows
        seq = frames.last_seq
        wait_frames(frames, 45)  # 1.5 s: a fast retry loop (0.5 s) would have tried again by now
        assert all(near(rgb, SOLID_RGB, 1) for _seq, _t, rgb in frames.seen_since(seq))
        assert obs_status(ctl)["auth_failures"] == 1
    errors = [m for m in d.errors() if "OBS" in m]
    assert errors == [f"OBS at {obs.url}: {words}"], d.log()
    assert st["last_error"] == errors[0] and not st["connected"]
    assert password is None or password not in d.log()
    cl.set_current_program_scene("Backstage")


@pytest.mark.integration
def test_obs_setup_adds_the_stream_as_a_media_source_idempotently(obs, daemons, tmp_path):
    cl = obs_client(obs)
    d = daemons(SOLID_PRESET)
    with FrameStream(d.zmq_port) as frames:
        frames.wait_colour(SOLID_RGB)
    args = ["obs", "setup", "--url", obs.url, "--scene", "Backstage", "--stream",
            f"http://127.0.0.1:{d.mjpeg_port}/stream.mjpg"]
    r = run_vprod(args, tmp_path, env={"VPROD_OBS_PASSWORD": PASSWORD})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "added Media Source 'vprod'" in r.stdout and "'Backstage'" in r.stdout, r.stdout
    items = [i["sourceName"] for i in cl.get_scene_item_list("Backstage").scene_items]
    assert items == ["vprod"]
    assert cl.get_input_settings("vprod").input_kind == "ffmpeg_source"
    cl.set_current_program_scene("Backstage")
    wait_obs_colour(obs, cl, "vprod", SOLID_RGB, OBS_TOL)

    r = run_vprod(args + ["--password", PASSWORD], tmp_path, env={"VPROD_OBS_PASSWORD": ""})  # again: updates
    assert r.returncode == 0 and "updated Media Source 'vprod'" in r.stdout, r.stdout + r.stderr
    assert [i["sourceName"] for i in cl.get_scene_item_list("Backstage").scene_items] == ["vprod"]

    r = run_vprod(args + ["--password", "nope"], tmp_path)
    assert r.returncode == 1 and "wrong password" in r.stdout and "nope" not in r.stdout + r.stderr, r.stdout
    r = run_vprod(["obs", "setup", "--url", obs.url, "--password", PASSWORD, "--scene", "No such"], tmp_path)
    assert r.returncode == 1 and "no scene 'No such'" in r.stdout, r.stdout
    cl.remove_input("vprod")
