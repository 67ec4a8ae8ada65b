#!/usr/bin/env python3
"""Frame rate of a running daemon from outside, optionally cycling a choice parameter (e.g. every world family).

    vprod run presets/worlds.toml &
    python integrations/clients/fps_check.py --seconds 30 --cycle /bg/family

Prints JSON: frames/s received over the run, and the daemon's own status (frame time p50/p99, dropped ticks).
"""

import argparse
import json
import time

import zmq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", default="tcp://127.0.0.1:5555")
    ap.add_argument("--control", default="tcp://127.0.0.1:5556")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--cycle", help="a choice parameter path to step through during the run, e.g. /bg/family")
    a = ap.parse_args()
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"frame")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.connect(a.stream)
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(a.control)

    def call(**kw):
        req.send_json(kw)
        return req.recv_json()

    choices = []
    if a.cycle:
        spec = [p for p in call(op="params")["params"] if p["path"] == a.cycle]
        choices = spec[0]["choices"] if spec else []
    sub.recv_multipart()
    before = call(op="status")["status"]
    t0, n, sizes, shown = time.monotonic(), 0, set(), []
    while (now := time.monotonic()) - t0 < a.seconds:
        if choices:
            want = choices[min(len(choices) - 1, int((now - t0) / a.seconds * len(choices)))]
            if not shown or shown[-1] != want:
                call(op="set", path=a.cycle, value=want, raw=True)
                shown.append(want)
        _, h, _ = sub.recv_multipart()
        hd = json.loads(h)
        sizes.add(f"{hd['width']}x{hd['height']}")
        n += 1
    st = call(op="status")["status"]
    print(json.dumps({"fps": round(n / (time.monotonic() - t0), 2), "frames": n, "sizes": sorted(sizes),
                      "cycled": shown, "dropped_ticks": st["dropped"] - before["dropped"],
                      "frame_ms_p50": st["frame_ms_p50"], "frame_ms_p99": st["frame_ms_p99"],
                      "faults": st["faults"]}))


if __name__ == "__main__":
    main()
