"""Plugin discovery: first-party folders with a manifest, third-party entry points — imported only when used.

A folder plugin is ``<dir>/<name>/plugin.toml``::

    name = "solid"
    version = "0.1.0"
    description = "One colour, for checking a set-up."

    [elements.solid]
    kind = "source"                # source | effect | sink
    python = "solid:SolidSource"   # module inside the folder : class
    doc = "A single colour."

Third-party packages register elements in the entry-point group ``vprod.plugins``; the entry point's name is the
element id and its object the element class: ``[project.entry-points."vprod.plugins"] mysource = "pkg.mod:Cls"``.

Discovery reads manifests and entry-point names only and never raises: a bad manifest or a module that fails to
import is set aside (quarantined) with one log line naming the plugin and why, and everything else goes on.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tomllib
import types
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .engine.element import KINDS, Element

log = logging.getLogger("vprod.plugins")

ENTRY_POINT_GROUP = "vprod.plugins"
_NS = "vprod_plugins"  # package name under which folder plugins are imported


def default_plugin_dirs() -> list[Path]:
    """`VPROD_PLUGIN_PATH` (os.pathsep-separated), the user's folder, then the first-party `plugins/`."""
    dirs = [Path(p) for p in os.environ.get("VPROD_PLUGIN_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "vprod" / "plugins")
    dirs.append(Path(__file__).resolve().parent.parent / "plugins")
    return dirs


class PluginError(RuntimeError):
    pass


@dataclass
class ElementEntry:
    id: str
    kind: str
    plugin: "PluginInfo"
    python: str = ""  # "module:Class" inside the plugin folder, or the entry point's value
    doc: str = ""
    _cls: type[Element] | None = None
    _ep: metadata.EntryPoint | None = None


@dataclass
class PluginInfo:
    name: str
    version: str = ""
    description: str = ""
    origin: str = ""  # folder path or distribution name
    path: Path | None = None
    elements: dict[str, ElementEntry] = field(default_factory=dict)
    error: str = ""  # set when quarantined


class PluginRegistry:
    def __init__(self, dirs: list[Path] | None = None, entry_points: bool = True):
        self.plugins: dict[str, PluginInfo] = {}
        self.elements: dict[str, ElementEntry] = {}
        for d in dirs if dirs is not None else default_plugin_dirs():
            self._scan_dir(Path(d))
        if entry_points:
            self._scan_entry_points()

    # --- discovery (never raises) ---
    def _quarantine(self, info: PluginInfo, why: str) -> None:
        info.error = why
        log.warning("plugin %s set aside: %s", info.name, why)

    def _scan_dir(self, d: Path) -> None:
        if not d.is_dir():
            return
        for manifest in sorted(d.glob("*/plugin.toml")):
            folder = manifest.parent
            info = PluginInfo(name=folder.name, origin=str(folder), path=folder)
            try:
                data = tomllib.loads(manifest.read_text(encoding="utf-8"))
                info.name = str(data.get("name", folder.name))
                info.version = str(data.get("version", ""))
                info.description = str(data.get("description", ""))
                if info.name in self.plugins:
                    log.info("plugin %s at %s shadowed by %s", info.name, folder, self.plugins[info.name].origin)
                    continue
                self.plugins[info.name] = info
                for eid, spec in (data.get("elements") or {}).items():
                    kind = spec.get("kind", "")
                    if kind not in KINDS:
                        raise ValueError(f"element {eid!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
                    if ":" not in str(spec.get("python", "")):
                        raise ValueError(f"element {eid!r}: python must be 'module:Class'")
                    self._add(ElementEntry(eid, kind, info, spec["python"], spec.get("doc", "")))
            except (OSError, ValueError, tomllib.TOMLDecodeError, AttributeError) as e:
                self.plugins.setdefault(info.name, info)
                self._quarantine(info, f"bad manifest {manifest}: {e}")

    def _scan_entry_points(self) -> None:
        try:
            eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception as e:  # noqa: BLE001
            log.warning("could not read entry points: %s", e)
            return
        for ep in eps:
            dist = getattr(ep, "dist", None)
            pname = dist.name if dist is not None else ep.value.split(":")[0].split(".")[0]
            info = self.plugins.setdefault(pname, PluginInfo(pname, version=dist.version if dist else "",
                                                             origin=f"entry point {ep.value}"))
            entry = ElementEntry(ep.name, "", info, ep.value)  # kind known once loaded
            entry._ep = ep
            self._add(entry)

    def _add(self, entry: ElementEntry) -> None:
        if entry.id in self.elements:
            other = self.elements[entry.id].plugin.name
            log.warning("element %s of plugin %s ignored: plugin %s already provides it",
                        entry.id, entry.plugin.name, other)
            return
        entry.plugin.elements[entry.id] = entry
        self.elements[entry.id] = entry

    # --- loading (lazy) ---
    def load(self, element_id: str) -> type[Element]:
        """The element class for `element_id`, importing its plugin on first use. Raises PluginError."""
        entry = self.elements.get(element_id)
        if entry is None:
            raise PluginError(f"unknown element {element_id!r} (known: {', '.join(sorted(self.elements))})")
        info = entry.plugin
        if info.error:
            raise PluginError(f"plugin {info.name} is set aside: {info.error}")
        if entry._cls is None:
            try:
                cls = entry._ep.load() if entry._ep is not None else self._import_folder(entry)
                if not (isinstance(cls, type) and issubclass(cls, Element)):
                    raise TypeError(f"{entry.python} is not a vprod Source, Effect or Sink class")
                if entry.kind and cls.kind != entry.kind:
                    raise TypeError(f"{entry.python} is a {cls.kind}, but the manifest says {entry.kind}")
            except (Exception, SystemExit) as e:  # noqa: BLE001 - quarantine, whatever the plugin did
                self._quarantine(info, f"{type(e).__name__}: {e}")
                raise PluginError(f"plugin {info.name} is set aside: {info.error}") from None
            entry.kind = cls.kind
            cls.element_id = element_id  # type: ignore[misc]
            cls.plugin_name = info.name  # type: ignore[misc]
            entry._cls = cls
        return entry._cls

    def _import_folder(self, entry: ElementEntry):
        info = entry.plugin
        if _NS not in sys.modules:
            ns = types.ModuleType(_NS)
            ns.__path__ = []  # type: ignore[attr-defined]
            sys.modules[_NS] = ns
        pkg = f"{_NS}.{info.name}"
        if pkg not in sys.modules:
            m = types.ModuleType(pkg)
            m.__path__ = [str(info.path)]  # type: ignore[attr-defined]
            m.__file__ = str(info.path / "plugin.toml")
            sys.modules[pkg] = m
        mod_name, _, attr = entry.python.partition(":")
        module = importlib.import_module(f"{pkg}.{mod_name}")
        return getattr(module, attr)

    def kind_of(self, element_id: str) -> str:
        entry = self.elements.get(element_id)
        return entry.kind if entry else ""

    def ids(self, kind: str | None = None) -> list[str]:
        return sorted(e for e, en in self.elements.items() if kind is None or not en.kind or en.kind == kind)

    def describe(self) -> list[dict]:
        """Every plugin, its elements and each element's parameters (imports every plugin)."""
        out = []
        for info in sorted(self.plugins.values(), key=lambda i: i.name):
            elements = []
            for eid in sorted(info.elements):
                try:
                    cls = self.load(eid)
                    elements.append({"id": eid, "kind": cls.kind, "doc": (cls.__doc__ or "").strip().split("\n")[0],
                                     "params": {k: p.describe() for k, p in cls.params.items()},
                                     "options": {k: {"default": d, "doc": h} for k, (d, h) in cls.options.items()}})
                except PluginError:
                    pass
            out.append({"name": info.name, "version": info.version, "description": info.description,
                        "origin": info.origin, "error": info.error, "elements": elements})
        return out
