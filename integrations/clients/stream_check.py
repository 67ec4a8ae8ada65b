#!/usr/bin/env python3
"""Check a running `vprod run presets/solid.toml` from outside: frame rate and format of the ZeroMQ stream, and
how many frames a ZeroMQ `set` on /bg/r takes to show in the pixels. Prints JSON.

    vprod run presets/solid.toml &
    python integrations/clients/stream_check.py --seconds 10 --trials 40
"""

import argparse
import json
import time

import numpy as np
import zmq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", default="tcp://127.0.0.1:5555")
    ap.add_argument("--control", default="tcp://127.0.0.1:5556")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--trials", type=int, default=40)
    a = ap.parse_args()
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"frame")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.connect(a.stream)
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(a.control)

    def frame(flags=0):
        _, h, p = sub.recv_multipart(flags)
        hd = json.loads(h)
        return hd, np.frombuffer(p, np.uint8).reshape(hd["height"], hd["width"], 3)

    frame()
    t0, n, formats = time.monotonic(), 0, set()
    while time.monotonic() - t0 < a.seconds:
        hd, img = frame()
        n += 1
        formats.add(f"{hd['width']}x{hd['height']} {hd['format']}")
    fps = n / (time.monotonic() - t0)

    req.send_json({"op": "get", "path": "/bg/r"})
    before = req.recv_json()["norm"]
    latency = []
    for i in range(a.trials):
        value = 1.0 if i % 2 == 0 else 0.0
        try:
            while True:  # drain: measure from the newest frame seen
                hd, _ = frame(zmq.NOBLOCK)
        except zmq.Again:
            hd, _ = frame()
        last = hd["seq"]
        req.send_json({"op": "set", "path": "/bg/r", "value": value})
        req.recv_json()
        while True:
            hd, img = frame()
            if img[hd["height"] // 2, hd["width"] // 2, 0] == round(value * 255):
                latency.append(hd["seq"] - last)
                break
    req.send_json({"op": "set", "path": "/bg/r", "value": before})
    req.recv_json()
    print(json.dumps({"fps": round(fps, 2), "frames": n, "formats": sorted(formats),
                      "set_to_pixels_frames": {"max": max(latency), "median": float(np.median(latency)),
                                               "trials": len(latency)}}))


if __name__ == "__main__":
    main()
