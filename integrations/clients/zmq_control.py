#!/usr/bin/env python3
"""Send one request to vprod's ZeroMQ control (REQ → REP on tcp://127.0.0.1:5556) and print the JSON reply.

    python integrations/clients/zmq_control.py params
    python integrations/clients/zmq_control.py get /bg/r
    python integrations/clients/zmq_control.py set /bg/r 0.5          # normalized 0..1
    python integrations/clients/zmq_control.py set /bg/hue 200 --raw  # real units
    python integrations/clients/zmq_control.py preset solid
    python integrations/clients/zmq_control.py status
"""

import argparse
import json
import sys

import zmq


def request(req: dict, endpoint: str = "tcp://127.0.0.1:5556", timeout_ms: int = 3000) -> dict:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.connect(endpoint)
    try:
        sock.send_json(req)
        return sock.recv_json()
    finally:
        sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("op", choices=["params", "get", "set", "preset", "presets", "status"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--raw", action="store_true", help="set: the value is in real units, not 0..1")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    a = ap.parse_args()
    req: dict = {"op": a.op}
    if a.op in ("get", "set"):
        if not a.args:
            ap.error(f"{a.op} needs a path like /bg/r")
        req["path"] = a.args[0]
    if a.op == "set":
        if len(a.args) < 2:
            ap.error("set needs a value")
        try:
            req["value"] = json.loads(a.args[1])
        except json.JSONDecodeError:
            req["value"] = a.args[1]  # text, or a choice by name
        if a.raw:
            req["raw"] = True
    if a.op == "preset":
        if not a.args:
            ap.error("preset needs a name or a path")
        req["name"] = a.args[0]
    try:
        reply = request(req, a.endpoint)
    except zmq.Again:
        print(f"no answer from {a.endpoint}: is `vprod run` going?", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
