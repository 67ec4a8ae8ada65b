"""`vprod bench effects` runs end to end (tiny sizes) and reports every case and both engine runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_bench_effects_reports_cases_and_engine_runs():
    env = {**os.environ, "VPROD_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "vprod", "bench", "effects", "--json", "--frames", "4", "--size",
                        "320x180", "--seconds", "1"], capture_output=True, text=True, timeout=240, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["bench"] == "effects" and res["size"] == "320x180"
    for name in ("segmentation", "segmentation+composite"):
        assert 0 < res["cases"][name]["ms_p50"] < 1000, res["cases"][name]
    assert any(k.startswith("style") for k in res["cases"]), sorted(res["cases"])
    runs = res["pipeline"]["runs"]
    assert {r["case"] for r in runs} == {"world alone (baseline)", "camera+virtual_background over world"}
    assert all(r["output_fps"] > 0 and r["faults"] == [] for r in runs), runs
    st = res["stream_style"]
    assert st["output_fps"] > 0 and st["faults"] == [], st
