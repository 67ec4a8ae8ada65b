"""Control surfaces: each turns outside input into bus events; none touches an element directly.

A surface lives in its own module here and, on import (cheap: heavy libraries load in `start`), calls
`register_surface(name, factory)` and, if it owns a preset section, `presets.register_section`. The daemon builds
every registered surface after the ZeroMQ control:

    factory(daemon, preset) -> control object or None (None: not configured, nothing to start)

A control object has `name`, `start()`, `stop()`, `status() -> dict` (shown by the ZeroMQ `status` request and
`vprod doctor --daemon`), `describe() -> str` (one banner line) and may have `on_preset(preset)`, called on the
daemon's thread after a preset switch succeeded (mappings live in presets).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

log = logging.getLogger("vprod.control")

# Modules that register surfaces; a module that does not exist yet is skipped.
SURFACE_MODULES = ("vprod.control.osc", "vprod.control.midi", "vprod.control.obs", "vprod.control.audio",
                   "vprod.control.modulators")
_FACTORIES: dict[str, Callable[[Any, Any], Any]] = {}
_loaded = False


def register_surface(name: str, factory: Callable[[Any, Any], Any]) -> None:
    _FACTORIES[name] = factory


def load_surfaces() -> dict[str, Callable[[Any, Any], Any]]:
    """Import every surface module once (registering their preset sections and factories)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in SURFACE_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:
                    raise
    return dict(_FACTORIES)


def build_surfaces(daemon, preset) -> list:
    """The configured control objects for this daemon and preset (unstarted)."""
    out = []
    for name, factory in load_surfaces().items():
        try:
            ctl = factory(daemon, preset)
        except Exception as e:  # noqa: BLE001 - one broken surface never stops the others or the output
            log.error("control %s is off: %s", name, e)
            continue
        if ctl is not None:
            out.append(ctl)
    return out
