"""Shared fixtures. tests/ is on sys.path (pytest's default import mode), so `daemon_helpers` and `peers.obs`
import as top-level modules from every test file."""

from __future__ import annotations

import pytest

from daemon_helpers import DaemonPool


@pytest.fixture
def daemons(tmp_path):
    """`daemons(preset, **kw)` starts `vprod run` as a subprocess; every one is stopped by pid at teardown."""
    pool = DaemonPool(tmp_path)
    try:
        yield pool
    finally:
        pool.close()
