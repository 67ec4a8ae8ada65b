"""`vprod bench world`: the shipped world model through the bench's sequential and two-thread pipelines and in the
daemon's frame loop (speed itself is measured by the bench, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_world_runs_every_case_and_reports_memory():
    out = subprocess.run([sys.executable, "-m", "vprod", "bench", "world", "--json", "--frames", "8",
                          "--memory-frames", "40", "--size", "320x180", "--seconds", "1.5"], capture_output=True, text=True, timeout=600,
                         check=True).stdout
    res = json.loads(out[out.index("{"):])
    assert res["weights"] == "shipped" and res["output"] == "320x180"
    cases = {(r["threads"], r["steps"]): r for r in res["runs"]}
    assert set(cases) == {(t, s) for t in (1, 2) for s in (1, 2, 4)}
    assert cases[(2, 1)]["mode"] == "model ‖ decoder" and cases[(1, 1)]["mode"] == "sequential"
    assert all(r["fps_p50"] > 0 and r["matmul_gflops"] > 0 and r["decode_ms"] > 0 for r in res["runs"])
    mem = res["memory"]
    assert mem["frames"] == 40 and len(mem["rss_mb"]) == 20 and mem["cache_frames"] == res["model"]["context"]
    engine = {(r["steps"], r["fps"], r["knobs"]): r for r in res["engine"]}  # the source in the real frame loop
    assert set(engine) == {(s, f, k) for s, f in ((2, 30), (1, 60)) for k in ("held", "moving", "zooming")}
    for r in engine.values():
        assert r["new_pictures_per_s"] > 0 and r["output_fps"] > 0 and r["sample_ms"] > 0 and r["faults"] == [], r
