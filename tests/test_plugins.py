"""Plugin discovery and loading: manifests are read without importing; a broken plugin is set aside, never fatal."""

from __future__ import annotations

import logging
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import vprod.plugins as plugins_mod
from vprod.engine import Effect, Source
from vprod.plugins import ENTRY_POINT_GROUP, PluginError, PluginRegistry, default_plugin_dirs


@pytest.fixture(autouse=True)
def forget_imported_plugins():
    """Folder plugins are imported as `vprod_plugins.<name>`; drop the ones a test imported."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("vprod_plugins.") or name.startswith("tp_"):
            del sys.modules[name]


def make_plugin(root: Path, folder: str, manifest: str, **modules: str) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "plugin.toml").write_text(textwrap.dedent(manifest), encoding="utf-8")
    for mod, src in modules.items():
        (d / f"{mod}.py").write_text(textwrap.dedent(src), encoding="utf-8")
    return d


def warnings_from(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "vprod.plugins" and r.levelno >= logging.WARNING]


SOURCE_MODULE = """
    from vprod.engine import Source, FloatParam
    import numpy as np

    class {cls}(Source):
        \"\"\"A test source.\"\"\"
        params = {{"level": FloatParam(0.5, 0.0, 1.0, doc="Level")}}

        def process(self, ctx):
            return np.zeros((ctx.height, ctx.width, 3), np.uint8)
"""


def simple_plugin(root: Path, name: str, element: str, kind: str = "source", cls: str = "TestSource") -> Path:
    return make_plugin(root, name, f"""
        name = "{name}"
        version = "0.1.0"
        [elements.{element}]
        kind = "{kind}"
        python = "mod:{cls}"
        """, mod=SOURCE_MODULE.format(cls=cls))


# --- discovery -----------------------------------------------------------------------------------------------------


def test_discovery_reads_manifests_without_importing(tmp_path):
    marker = tmp_path / "imported.txt"
    make_plugin(tmp_path / "plugins", "tp_side", """
        name = "tp_side"
        version = "1.0.0"
        description = "Writes a file when imported."
        [elements.sidefx]
        kind = "effect"
        python = "side:SideEffect"
        doc = "From the manifest."
        """, side=f"""
        from pathlib import Path
        from vprod.engine import Effect

        Path({str(marker)!r}).write_text("imported")

        class SideEffect(Effect):
            pass
        """)
    reg = PluginRegistry(dirs=[tmp_path / "plugins"], entry_points=False)
    assert not marker.exists()
    assert "vprod_plugins.tp_side.side" not in sys.modules
    entry = reg.elements["sidefx"]
    assert (entry.kind, entry.doc, entry.python) == ("effect", "From the manifest.", "side:SideEffect")
    info = reg.plugins["tp_side"]
    assert (info.version, info.description, info.error) == ("1.0.0", "Writes a file when imported.", "")
    assert reg.kind_of("sidefx") == "effect"
    assert reg.ids("effect") == ["sidefx"] and reg.ids("source") == []

    cls = reg.load("sidefx")
    assert marker.read_text() == "imported"
    assert issubclass(cls, Effect) and cls.__name__ == "SideEffect"
    assert (cls.element_id, cls.plugin_name) == ("sidefx", "tp_side")
    assert reg.load("sidefx") is cls  # imported once


def test_a_missing_plugin_folder_is_skipped(tmp_path):
    reg = PluginRegistry(dirs=[tmp_path / "nope"], entry_points=False)
    assert reg.plugins == {} and reg.elements == {}


def test_loading_an_unknown_element_names_the_known_ones(tmp_path):
    simple_plugin(tmp_path, "tp_a", "alpha")
    reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    with pytest.raises(PluginError, match=r"unknown element 'beta' \(known: alpha\)"):
        reg.load("beta")


def test_the_first_party_plugins_are_discovered():
    reg = PluginRegistry(dirs=[Path(__file__).resolve().parent.parent / "plugins"], entry_points=False)
    for eid, kind in [("solid", "source"), ("procedural", "source"), ("color", "effect"), ("blur", "effect"),
                      ("zmq", "sink"), ("mjpeg", "sink")]:
        assert reg.kind_of(eid) == kind


# --- quarantine ----------------------------------------------------------------------------------------------------


def test_a_plugin_whose_import_raises_is_set_aside_with_one_log_line_and_others_still_load(tmp_path, caplog):
    make_plugin(tmp_path, "tp_boom", """
        name = "tp_boom"
        [elements.boomsrc]
        kind = "source"
        python = "boom:BoomSource"
        """, boom="""
        raise RuntimeError("needs the foo driver")
        """)
    simple_plugin(tmp_path, "tp_fine", "finesrc")
    with caplog.at_level(logging.INFO, logger="vprod.plugins"):
        reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
        assert warnings_from(caplog) == []  # discovery imported nothing, so nothing failed yet
        with pytest.raises(PluginError) as e:
            reg.load("boomsrc")
        assert "tp_boom" in str(e.value) and "needs the foo driver" in str(e.value)
        with pytest.raises(PluginError):
            reg.load("boomsrc")  # still set aside, not retried
        assert issubclass(reg.load("finesrc"), Source)
    (line,) = warnings_from(caplog)
    assert "tp_boom" in line and "RuntimeError: needs the foo driver" in line
    assert reg.plugins["tp_boom"].error == "RuntimeError: needs the foo driver"
    assert reg.plugins["tp_fine"].error == ""


def test_a_plugin_that_exits_on_import_is_set_aside(tmp_path):
    make_plugin(tmp_path, "tp_exit", """
        name = "tp_exit"
        [elements.quitter]
        kind = "source"
        python = "q:Quitter"
        """, q="""
        import sys
        sys.exit("install the foo SDK first")
        """)
    reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    with pytest.raises(PluginError, match="install the foo SDK first"):
        reg.load("quitter")


def test_a_missing_class_in_a_module_sets_the_plugin_aside(tmp_path):
    simple_plugin(tmp_path, "tp_typo", "typo", cls="TestSource")
    (tmp_path / "tp_typo" / "plugin.toml").write_text(
        'name = "tp_typo"\n[elements.typo]\nkind = "source"\npython = "mod:TestSauce"\n')
    reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    with pytest.raises(PluginError, match="TestSauce"):
        reg.load("typo")


@pytest.mark.parametrize("element_toml,why", [
    ('[elements.x]\nkind = "filter"\npython = "m:X"\n', "kind 'filter' is not one of source, effect, sink"),
    ('[elements.x]\nkind = "source"\n', "python must be 'module:Class'"),
    ('[elements.x]\nkind = "source"\npython = "m.X"\n', "python must be 'module:Class'"),
    ("[elements.x\n", "bad manifest"),
    ("elements = 3\n", "bad manifest"),
])
def test_a_bad_manifest_is_set_aside_with_one_log_line_naming_it(tmp_path, caplog, element_toml, why):
    make_plugin(tmp_path, "tp_bad", 'name = "tp_bad"\n' + element_toml)
    simple_plugin(tmp_path, "tp_good", "goodsrc")
    with caplog.at_level(logging.INFO, logger="vprod.plugins"):
        reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    (line,) = warnings_from(caplog)
    assert "tp_bad" in line and why in line
    assert why in reg.plugins["tp_bad"].error
    assert str(tmp_path / "tp_bad" / "plugin.toml") in line
    assert "x" not in reg.elements
    assert issubclass(reg.load("goodsrc"), Source)


def test_good_elements_of_a_plugin_with_a_bad_manifest_are_not_loaded(tmp_path):
    make_plugin(tmp_path, "tp_half", """
        name = "tp_half"
        [elements.a_ok]
        kind = "source"
        python = "mod:TestSource"
        [elements.b_bad]
        kind = "gadget"
        python = "mod:TestSource"
        """, mod=SOURCE_MODULE.format(cls="TestSource"))
    reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    with pytest.raises(PluginError, match="set aside"):
        reg.load("a_ok")


def test_a_kind_mismatch_between_manifest_and_class_is_reported(tmp_path, caplog):
    simple_plugin(tmp_path, "tp_liar", "liar", kind="effect")  # the class is a Source
    reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    with caplog.at_level(logging.INFO, logger="vprod.plugins"):
        with pytest.raises(PluginError) as e:
            reg.load("liar")
    assert "is a source, but the manifest says effect" in str(e.value)
    (line,) = warnings_from(caplog)
    assert "tp_liar" in line and "manifest says effect" in line


def test_a_class_that_is_not_an_element_is_reported(tmp_path):
    make_plugin(tmp_path, "tp_plain", """
        name = "tp_plain"
        [elements.plain]
        kind = "source"
        python = "mod:Plain"
        """, mod="class Plain:\n    pass\n")
    reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    with pytest.raises(PluginError, match="not a vprod Source, Effect or Sink class"):
        reg.load("plain")


# --- duplicates ----------------------------------------------------------------------------------------------------


def test_duplicate_element_ids_keep_the_first(tmp_path, caplog):
    simple_plugin(tmp_path, "tp_alpha", "twin", cls="AlphaSource")
    simple_plugin(tmp_path, "tp_beta", "twin", cls="BetaSource")
    with caplog.at_level(logging.INFO, logger="vprod.plugins"):
        reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    assert reg.elements["twin"].plugin.name == "tp_alpha"
    assert reg.load("twin").__name__ == "AlphaSource"
    assert "twin" not in reg.plugins["tp_beta"].elements
    (line,) = warnings_from(caplog)
    assert "twin" in line and "tp_beta" in line and "tp_alpha" in line


def test_an_earlier_folder_wins_over_a_later_one(tmp_path):
    simple_plugin(tmp_path / "first", "tp_twin_a", "same", cls="FirstSource")
    simple_plugin(tmp_path / "second", "tp_twin_b", "same", cls="SecondSource")
    reg = PluginRegistry(dirs=[tmp_path / "second", tmp_path / "first"], entry_points=False)
    assert reg.load("same").__name__ == "SecondSource"


def test_a_plugin_name_in_an_earlier_folder_shadows_the_later_one(tmp_path):
    simple_plugin(tmp_path / "user", "tp_dup", "user_el")
    simple_plugin(tmp_path / "shipped", "tp_dup", "shipped_el")
    reg = PluginRegistry(dirs=[tmp_path / "user", tmp_path / "shipped"], entry_points=False)
    assert reg.plugins["tp_dup"].path == tmp_path / "user" / "tp_dup"
    assert "user_el" in reg.elements and "shipped_el" not in reg.elements


# --- entry points --------------------------------------------------------------------------------------------------

EP_MODULE = """
    import numpy as np
    from vprod.engine import Effect, FloatParam

    class GlowEffect(Effect):
        \"\"\"Adds a glow.\"\"\"
        params = {"amount": FloatParam(0.3, 0.0, 1.0, doc="How much")}

        def process(self, frame, ctx):
            return frame
"""


@pytest.fixture
def entry_points(monkeypatch, tmp_path):
    """Install fake entry points for the `vprod.plugins` group; returns the list to fill."""
    eps: list[metadata.EntryPoint] = []
    calls = []

    def fake_entry_points(**kw):
        calls.append(kw)
        return [ep for ep in eps if ep.group == kw.get("group")]

    monkeypatch.setattr(plugins_mod.metadata, "entry_points", fake_entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    return eps


def test_an_entry_point_plugin_loads_lazily_and_takes_its_kind_from_the_class(tmp_path, entry_points):
    (tmp_path / "tp_epglow.py").write_text(textwrap.dedent(EP_MODULE), encoding="utf-8")
    entry_points.append(metadata.EntryPoint("glow", "tp_epglow:GlowEffect", ENTRY_POINT_GROUP))
    entry_points.append(metadata.EntryPoint("other", "x:Y", "some.other.group"))
    reg = PluginRegistry(dirs=[], entry_points=True)
    assert set(reg.elements) == {"glow"}
    assert "tp_epglow" not in sys.modules
    assert reg.kind_of("glow") == ""  # unknown until loaded
    assert "glow" in reg.ids("source") and "glow" in reg.ids("effect")
    cls = reg.load("glow")
    assert cls.__name__ == "GlowEffect" and issubclass(cls, Effect)
    assert reg.kind_of("glow") == "effect"
    assert reg.ids("source") == [] and reg.ids("effect") == ["glow"]
    assert cls.element_id == "glow" and cls.plugin_name == "tp_epglow"
    assert reg.plugins["tp_epglow"].origin == "entry point tp_epglow:GlowEffect"


def test_an_entry_point_that_fails_to_import_is_set_aside(tmp_path, entry_points, caplog):
    entry_points.append(metadata.EntryPoint("ghost", "tp_missing_mod:Ghost", ENTRY_POINT_GROUP))
    reg = PluginRegistry(dirs=[], entry_points=True)
    with caplog.at_level(logging.INFO, logger="vprod.plugins"):
        with pytest.raises(PluginError, match="tp_missing_mod"):
            reg.load("ghost")
    (line,) = warnings_from(caplog)
    assert "tp_missing_mod" in line and "ModuleNotFoundError" in line


def test_a_folder_plugin_wins_over_an_entry_point_with_the_same_id(tmp_path, entry_points):
    (tmp_path / "tp_epglow2.py").write_text(textwrap.dedent(EP_MODULE), encoding="utf-8")
    entry_points.append(metadata.EntryPoint("shared", "tp_epglow2:GlowEffect", ENTRY_POINT_GROUP))
    simple_plugin(tmp_path / "plugins", "tp_folder", "shared", cls="FolderSource")
    reg = PluginRegistry(dirs=[tmp_path / "plugins"], entry_points=True)
    assert reg.load("shared").__name__ == "FolderSource"


def test_entry_point_discovery_that_raises_is_logged_not_fatal(tmp_path, monkeypatch, caplog):
    simple_plugin(tmp_path, "tp_solo", "solo")

    def broken(**kw):
        raise OSError("corrupt site-packages")

    monkeypatch.setattr(plugins_mod.metadata, "entry_points", broken)
    with caplog.at_level(logging.INFO, logger="vprod.plugins"):
        reg = PluginRegistry(dirs=[tmp_path], entry_points=True)
    assert "solo" in reg.elements
    assert any("corrupt site-packages" in line for line in warnings_from(caplog))


# --- describe ------------------------------------------------------------------------------------------------------


def test_describe_lists_every_element_with_its_params_type_range_and_default(tmp_path):
    make_plugin(tmp_path, "tp_desc", """
        name = "tp_desc"
        version = "2.1.0"
        description = "For describe()."
        [elements.fancy]
        kind = "effect"
        python = "fx:FancyEffect"
        """, fx="""
        from vprod.engine import ChoiceParam, Effect, FloatParam, IntParam

        class FancyEffect(Effect):
            \"\"\"Does fancy things.

            More words.
            \"\"\"
            params = {
                "radius": FloatParam(0.5, 0.0, 2.0, unit="px", doc="Radius"),
                "steps": IntParam(3, 1, 9, doc="Steps"),
                "mode": ChoiceParam("soft", ("hard", "soft"), doc="Mode"),
            }
            options = {"device": ("cpu", "Where it runs")}
        """)
    make_plugin(tmp_path, "tp_broken", """
        name = "tp_broken"
        [elements.gone]
        kind = "source"
        python = "nothere:Gone"
        """)
    reg = PluginRegistry(dirs=[tmp_path], entry_points=False)
    desc = {p["name"]: p for p in reg.describe()}
    assert set(desc) == {"tp_broken", "tp_desc"}
    d = desc["tp_desc"]
    assert (d["version"], d["description"], d["error"]) == ("2.1.0", "For describe().", "")
    (el,) = d["elements"]
    assert (el["id"], el["kind"], el["doc"]) == ("fancy", "effect", "Does fancy things.")
    assert el["params"]["radius"] == {"type": "float", "default": 0.5, "doc": "Radius", "min": 0.0, "max": 2.0,
                                      "unit": "px", "slew": 0.0}
    steps = el["params"]["steps"]
    assert (steps["type"], steps["min"], steps["max"], steps["default"]) == ("int", 1, 9, 3)
    mode = el["params"]["mode"]
    assert (mode["type"], mode["choices"], mode["default"]) == ("choice", ["hard", "soft"], "soft")
    assert el["options"] == {"device": {"default": "cpu", "doc": "Where it runs"}}
    broken = desc["tp_broken"]
    assert broken["elements"] == [] and "nothere" in broken["error"]


# --- where plugins come from ---------------------------------------------------------------------------------------


def test_default_plugin_dirs_put_vprod_plugin_path_first_and_the_shipped_folder_last(tmp_path, monkeypatch):
    monkeypatch.setenv("VPROD_PLUGIN_PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    dirs = default_plugin_dirs()
    assert dirs[:3] == [tmp_path / "a", tmp_path / "b", tmp_path / "cfg" / "vprod" / "plugins"]
    assert dirs[-1] == Path(plugins_mod.__file__).resolve().parent.parent / "plugins"
