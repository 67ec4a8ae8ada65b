"""Preset files: a valid one loads and builds; a broken one reports every error, each with file, key and allowed
values; `vprod presets validate` prints them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vprod import cli
from vprod.engine import FrameContext
from vprod.plugins import PluginRegistry
from vprod.presets import PresetInvalid, build, find_preset, load, validate_files

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry(dirs=[REPO / "plugins"], entry_points=False)


@pytest.fixture
def restore_logging():
    """`vprod.cli.main` configures logging; put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def errors_of(path: Path, registry) -> list:
    with pytest.raises(PresetInvalid) as e:
        load(path, registry)
    return e.value.errors


def by_key(errors) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in errors:
        assert e.key not in out, f"two errors for {e.key}"
        out[e.key] = e.message
    return out


# --- valid presets -------------------------------------------------------------------------------------------------

VALID = """
name = "show"
description = "two layers"
width = 64
height = 48
fps = 25
crossfade = 0.2

[[layers]]
id = "bg"
source = "solid"
params = { r = 0.1, g = 0.2, b = 0.6 }

  [[layers.effects]]
  type = "color"
  params = { saturation = 1.2 }

  [[layers.effects]]
  type = "blur"
  name = "soft"
  params = { radius = 2, mode = "box" }

[[layers]]
id = "glow"
source = "procedural"
blend = "screen"
opacity = 0.35
mask = "bg"
params = { pattern = "tunnel", hue = 300 }
slew = { hue = 0.5 }

[outputs.zmq]
port = 5599

[outputs.web]
type = "mjpeg"
port = 0
enabled = false
"""


def test_a_valid_preset_loads_with_its_values(tmp_path, registry):
    pr = load(write(tmp_path, "show.toml", VALID), registry)
    assert (pr.name, pr.width, pr.height, pr.fps, pr.crossfade) == ("show", 64, 48, 25.0, 0.2)
    bg, glow = pr.layers
    assert bg["id"] == "bg"
    assert bg["source"] == ("solid", {"r": 0.1, "g": 0.2, "b": 0.6}, {}, {})
    assert [(name, etype) for name, etype, *_ in bg["effects"]] == [("color", "color"), ("soft", "blur")]
    assert bg["effects"][1][2] == {"radius": 2.0, "mode": "box"}
    assert (glow["blend"], glow["opacity"], glow["mask"]) == ("screen", 0.35, "bg")
    assert glow["source"][3] == {"hue": 0.5}
    assert pr.outputs == {
        "zmq": {"type": "zmq", "enabled": True, "params": {}, "options": {"port": 5599}},
        "web": {"type": "mjpeg", "enabled": False, "params": {}, "options": {"port": 0}},
    }


def test_a_valid_preset_builds_a_pipeline_with_every_control_path(tmp_path, registry):
    pr = load(write(tmp_path, "show.toml", VALID), registry)
    p = build(pr, registry, open_elements=False)
    assert (p.name, p.width, p.height, p.fps, p.crossfade) == ("show", 64, 48, 25.0, 0.2)
    for path in ("/bg/r", "/bg/opacity", "/bg/color/saturation", "/bg/soft/radius", "/bg/soft/mode",
                 "/glow/pattern", "/glow/hue", "/glow/blend"):
        assert path in p.registry
    assert p.registry["/bg/soft/radius"][0].value == 2.0
    assert p.registry["/glow/opacity"][0].value == 0.35
    assert p.registry["/glow/hue"][0].slew == 0.5
    assert p.layers[1].mask == "bg"


def test_a_built_solid_preset_renders_its_colour(tmp_path, registry):
    path = write(tmp_path, "blue.toml", 'width = 32\nheight = 16\n[[layers]]\nid = "bg"\nsource = "solid"\n'
                                        'params = { r = 0.1, g = 0.2, b = 0.6 }\n')
    pr = load(path, registry)
    assert pr.name == "blue"  # from the file name
    p = build(pr, registry)
    try:
        out = p.render(FrameContext(width=32, height=16))
    finally:
        p.close_all()
    assert out.shape == (16, 32, 3)
    assert (out == np.array([26, 51, 153], np.uint8)).all()


def test_an_effect_can_start_bypassed_and_be_switched_on_live(tmp_path, registry):
    path = write(tmp_path, "fx.toml", 'width = 32\nheight = 16\n[[layers]]\nid = "bg"\nsource = "solid"\n'
                                      'params = { r = 0.5, g = 0.5, b = 0.5 }\n'
                                      '[[layers.effects]]\ntype = "color"\nname = "dim"\nenabled = false\n'
                                      'params = { brightness = -0.5 }\n')
    p = build(load(path, registry), registry)
    try:
        ctx = FrameContext(width=32, height=16)
        assert int(p.render(ctx)[0, 0, 0]) == 128  # bypassed
        p.registry["/bg/dim/enabled"][0].set(True)
        on = int(p.render(ctx)[0, 0, 0])
        p.registry["/bg/dim/enabled"][0].set(False)
        off = int(p.render(ctx)[0, 0, 0])
    finally:
        p.close_all()
    assert on < 10 and off == 128, (on, off)


def test_a_non_boolean_effect_enabled_is_reported(tmp_path, registry):
    path = write(tmp_path, "bad.toml", '[[layers]]\nid = "bg"\nsource = "solid"\n'
                                       '[[layers.effects]]\ntype = "color"\nenabled = "no"\n')
    with pytest.raises(PresetInvalid) as e:
        load(path, registry)
    assert "layers[0].effects[0].enabled" in str(e.value), str(e.value)


def test_defaults_fill_what_a_preset_leaves_out(tmp_path, registry):
    pr = load(write(tmp_path, "min.toml", '[[layers]]\nsource = "solid"\n'), registry)
    assert (pr.width, pr.height, pr.fps, pr.crossfade) == (1280, 720, 30.0, 0.5)
    assert pr.layers[0]["id"] == "layer0"
    assert pr.outputs == {}


def test_the_shipped_presets_are_valid(registry):
    assert validate_files([str(REPO / "presets" / "solid.toml"), str(REPO / "presets" / "default.toml")],
                          registry) == []


# --- broken presets ------------------------------------------------------------------------------------------------

BROKEN = """
name = "broken"
colour = "blue"

[[layers]]
id = "bg"
source = "solid"
params = { r = 2.0, g = "green", shine = 1 }

[[layers]]
id = "bg"
source = "plasma"

[[layers]]
id = "fg"
source = "solid"
mask = "nowhere"

[outputs.ndi]
port = 1
"""


def test_a_broken_preset_reports_every_error_with_file_key_and_allowed_values(tmp_path, registry):
    path = write(tmp_path, "broken.toml", BROKEN)
    errs = errors_of(path, registry)
    assert {e.file for e in errs} == {str(path)}
    got = by_key(errs)
    assert set(got) == {"colour", "layers[0].params.r", "layers[0].params.g", "layers[0].params.shine",
                        "layers[1].id", "layers[1].source", "layers[2].mask", "outputs.ndi"}
    assert "unknown key" in got["colour"]
    for top in ("crossfade", "fps", "height", "layers", "name", "outputs", "width"):
        assert top in got["colour"]
    assert "out of range" in got["layers[0].params.r"] and "0..1" in got["layers[0].params.r"]
    assert "'green'" in got["layers[0].params.g"] and "0..1" in got["layers[0].params.g"]
    assert "unknown parameter of solid (allowed: b, g, r)" in got["layers[0].params.shine"]
    assert "'bg' is used by another layer" in got["layers[1].id"]
    allowed_sources = ", ".join(registry.ids("source"))
    assert "solid" in allowed_sources and "zmq" not in allowed_sources  # sources only, every one of them
    assert f"unknown source 'plasma' (allowed: {allowed_sources})" in got["layers[1].source"]
    assert "no layer 'nowhere' (layers: bg, fg)" in got["layers[2].mask"]
    assert "unknown sink 'ndi' (allowed: mjpeg, record, virtual_camera, zmq)" in got["outputs.ndi"]


def test_preset_invalid_message_has_one_line_per_error(tmp_path, registry):
    path = write(tmp_path, "broken.toml", BROKEN)
    with pytest.raises(PresetInvalid) as e:
        load(path, registry)
    lines = str(e.value).splitlines()
    assert len(lines) == len(e.value.errors) == 8
    assert all(line.startswith(f"{path}: ") for line in lines)


LAYER = '[[layers]]\nid = "bg"\nsource = "solid"\n'


@pytest.mark.parametrize("text,key,fragments", [
    ('width = "wide"\n' + LAYER, "width", ["'wide'", "integer 16..7680"]),
    ("width = 1281\n" + LAYER, "width/height", ["even"]),
    ("fps = 0\n" + LAYER, "fps", ["number 1..240"]),
    ("crossfade = -1\n" + LAYER, "crossfade", ["number 0..60"]),
    ('name = "x"\n', "layers", ["at least one"]),
    (LAYER + "opacity = 1.5\n", "layers[0].opacity", ["out of range", "0..1"]),
    (LAYER + 'blend = "burn"\n', "layers[0].blend", ["'burn'", "normal, add, multiply"]),
    (LAYER + 'enabled = "perhaps"\n', "layers[0].enabled", ["true/false"]),
    (LAYER + 'visible = "no"\n', "layers[0].visible", ["true or false"]),
    (LAYER + "speed = 2\n", "layers[0].speed", ["unknown key", "effects", "source"]),
    ('[[layers]]\nid = "9lives"\nsource = "solid"\n', "layers[0].id", ["'9lives'", "letter"]),
    ('[[layers]]\nid = "bg"\n', "layers[0].source", ["missing", "procedural, solid"]),
    ('[[layers]]\nid = "bg"\nsource = "blur"\n', "layers[0].source", ["'blur' is a", "not a source",
                                                                       "procedural, solid"]),
    (LAYER + 'params = { r = "red" }\n', "layers[0].params.r", ["'red'", "0..1"]),
    (LAYER + "params = 3\n", "layers[0].params", ["must be a table"]),
    (LAYER + "slew = { r = -1 }\n", "layers[0].slew.r", ["seconds", "r, g, b"]),
    (LAYER + '[[layers.effects]]\ntype = "sharpen"\n', "layers[0].effects[0].type",
     ["unknown effect 'sharpen' (allowed: blur, ", "color"]),  # the list grows with the plugins
    (LAYER + '[[layers.effects]]\ntype = "blur"\nparams = { radius = 500 }\n', "layers[0].effects[0].params.radius",
     ["out of range", "0..200 px"]),
    (LAYER + '[[layers.effects]]\ntype = "blur"\nparams = { mode = "motion" }\n',
     "layers[0].effects[0].params.mode", ["'motion'", "gaussian, box"]),
    (LAYER + '[[layers.effects]]\ntype = "blur"\nstrength = 1\n', "layers[0].effects[0].strength", ["unknown key"]),
    (LAYER + '[outputs.stream]\ntype = "solid"\n', "outputs.stream.type", ["'solid' is a", "not a sink",
                                                                            "mjpeg"]),
    (LAYER + "[outputs.zmq]\nqos = 3\n", "outputs.zmq.qos",
     ["unknown parameter of zmq", "bind, endpoint, hwm, port"]),
    (LAYER + "[outputs.zmq]\nenabled = 1\n", "outputs.zmq.enabled", ["true or false"]),
    (LAYER + "[control.osc]\nport = 9000\n", "control.osc", ["unknown control", "zmq"]),
    (LAYER + "[control.zmq]\nhost = 1\n", "control.zmq.host", ["unknown key", "bind, enabled, port"]),
])
def test_each_kind_of_mistake_is_reported_at_its_key(tmp_path, registry, text, key, fragments):
    path = write(tmp_path, "p.toml", text)
    got = by_key(errors_of(path, registry))
    assert key in got, got
    for f in fragments:
        assert f in got[key], (f, got[key])


def test_a_boolean_for_a_number_parameter_is_reported(tmp_path, registry):
    got = by_key(errors_of(write(tmp_path, "p.toml", LAYER + "params = { r = true }\n"), registry))
    assert "layers[0].params.r" in got


def test_invalid_toml_is_reported_with_its_line(tmp_path, registry):
    path = write(tmp_path, "bad.toml", 'name = "x"\nwidth = 64\nheight = = 48\n')
    (err,) = errors_of(path, registry)
    assert err.file == str(path)
    assert "not valid TOML" in err.message
    assert "line 3" in err.message


def test_a_missing_file_is_reported_not_raised(tmp_path, registry):
    (err,) = errors_of(tmp_path / "nope.toml", registry)
    assert "cannot read" in err.message


def test_validate_files_collects_errors_from_every_file(tmp_path, registry):
    a = write(tmp_path, "a.toml", 'colour = 1\n' + LAYER)
    b = write(tmp_path, "b.toml", "width = 3\nheight = 99\n" + LAYER)
    good = write(tmp_path, "good.toml", LAYER)
    errs = validate_files([str(a), str(good), str(b)], registry)
    # b: width is out of range (so the default stands), height is in range but odd
    assert [(Path(e.file).name, e.key) for e in errs] == [("a.toml", "colour"), ("b.toml", "width"),
                                                           ("b.toml", "width/height")]


# --- the command line ----------------------------------------------------------------------------------------------


def test_cli_validate_prints_every_error_and_returns_1(tmp_path, capsys, restore_logging):
    bad = write(tmp_path, "broken.toml", BROKEN)
    good = write(tmp_path, "good.toml", LAYER)
    rc = cli.main(["presets", "validate", str(bad), str(good)])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    assert sum(line.startswith(f"{bad}: ") for line in lines) == 8
    assert f"{bad}: layers[1].source: unknown source 'plasma'" in out
    assert f"{bad}: outputs.ndi: unknown sink 'ndi'" in out
    assert f"{good}: ok" in lines
    assert f"{bad}: ok" not in out


def test_cli_validate_accepts_the_shipped_solid_preset(capsys, restore_logging):
    path = str(REPO / "presets" / "solid.toml")
    assert cli.main(["presets", "validate", path]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{path}: ok"]


def test_cli_validate_without_files_is_a_usage_error(capsys, restore_logging):
    assert cli.main(["presets", "validate"]) == 2
    assert "at least one" in capsys.readouterr().err


# --- finding presets -----------------------------------------------------------------------------------------------


def test_find_preset_by_name_in_the_shipped_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./presets here
    assert find_preset("solid") == REPO / "presets" / "solid.toml"
    assert find_preset("solid.toml") == REPO / "presets" / "solid.toml"


def test_find_preset_looks_in_extra_folders_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    write(mine, "solid.toml", LAYER)
    write(mine, "stage.toml", LAYER)
    assert find_preset("stage", dirs=[mine]) == mine / "stage.toml"
    assert find_preset("solid", dirs=[mine]) == mine / "solid.toml"


def test_find_preset_by_path(tmp_path):
    p = write(tmp_path, "anywhere.toml", LAYER)
    assert find_preset(str(p)) == p


def test_find_preset_names_the_available_ones_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        find_preset("nosuch")
    assert "'nosuch'" in str(e.value)
    assert "default" in str(e.value) and "solid" in str(e.value)
