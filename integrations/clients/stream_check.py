#!/usr/bin/env python3
"""Check a running daemon from outside: frame rate and format of the ZeroMQ stream, the daemon's own frame times
and dropped ticks, and (with --latency PATH) how many frames a control `set` takes to show in the pixels.
Prints JSON.

    vprod run presets/solid.toml &
    python integrations/clients/stream_check.py --seconds 10 --latency /bg/r     # r toggles 0 ↔ 1

    vprod run presets/worlds.toml &
    python integrations/clients/stream_check.py --seconds 30 --cycle /bg/family  # every family in turn
"""

import argparse
import json
import time

import numpy as np
import zmq


class Daemon:
    def __init__(self, stream: str, control: str):
        ctx = zmq.Context.instance()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        self.sub.setsockopt(zmq.RCVTIMEO, 5000)
        self.sub.connect(stream)
        self.req = ctx.socket(zmq.REQ)
        self.req.setsockopt(zmq.RCVTIMEO, 5000)
        self.req.connect(control)

    def call(self, **kw) -> dict:
        self.req.send_json(kw)
        return self.req.recv_json()

    def frame(self, flags: int = 0):
        _, h, p = self.sub.recv_multipart(flags)
        hd = json.loads(h)
        return hd, np.frombuffer(p, np.uint8).reshape(hd["height"], hd["width"], 3)

    def newest(self):
        try:
            while True:
                hd, img = self.frame(zmq.NOBLOCK)
        except zmq.Again:
            return self.frame()


def rate(d: Daemon, seconds: float, cycle: str | None) -> dict:
    choices = []
    if cycle:
        spec = [p for p in d.call(op="params")["params"] if p["path"] == cycle]
        choices = spec[0].get("choices", []) if spec else []
    d.frame()
    before = d.call(op="status")["status"]
    t0, n, formats, shown = time.monotonic(), 0, set(), []
    while (now := time.monotonic()) - t0 < seconds:
        if choices:
            want = choices[min(len(choices) - 1, int((now - t0) / seconds * len(choices)))]
            if not shown or shown[-1] != want:
                d.call(op="set", path=cycle, value=want, raw=True)
                shown.append(want)
        hd, _ = d.frame()
        formats.add(f"{hd['width']}x{hd['height']} {hd['format']}")
        n += 1
    st = d.call(op="status")["status"]
    return {"fps": round(n / (time.monotonic() - t0), 2), "frames": n, "formats": sorted(formats), "cycled": shown,
            "dropped_ticks": st["dropped"] - before["dropped"], "frame_ms_p50": st["frame_ms_p50"],
            "frame_ms_p99": st["frame_ms_p99"], "faults": st["faults"]}


def latency(d: Daemon, path: str, trials: int) -> dict:
    """Frames from the newest frame seen when a `set` is sent to the first frame showing it (red channel)."""
    before = d.call(op="get", path=path)["norm"]
    out = []
    for i in range(trials):
        value = 1.0 if i % 2 == 0 else 0.0
        last = d.newest()[0]["seq"]
        d.call(op="set", path=path, value=value)
        while True:
            hd, img = d.frame()
            if img[hd["height"] // 2, hd["width"] // 2, 0] == round(value * 255):
                out.append(hd["seq"] - last)
                break
    d.call(op="set", path=path, value=before)
    return {"max": max(out), "median": float(np.median(out)), "trials": len(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", default="tcp://127.0.0.1:5555")
    ap.add_argument("--control", default="tcp://127.0.0.1:5556")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--cycle", help="a choice parameter to step through during the run, e.g. /bg/family")
    ap.add_argument("--latency", metavar="PATH", help="a parameter that sets the red channel, e.g. /bg/r")
    ap.add_argument("--trials", type=int, default=40)
    a = ap.parse_args()
    d = Daemon(a.stream, a.control)
    res = rate(d, a.seconds, a.cycle)
    if a.latency:
        res["set_to_pixels_frames"] = latency(d, a.latency, a.trials)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
