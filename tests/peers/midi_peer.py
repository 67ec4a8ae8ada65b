"""A second process with real MIDI ports (python-rtmidi on JACK), driven by the tests over stdin/stdout.

    python midi_peer.py send --to vprod            # an output port connected to the first input port named *vprod*
    python midi_peer.py send --virtual NAME        # a virtual output port NAME that the daemon opens by name
    python midi_peer.py listen --from vprod-out    # prints what the port named *vprod-out* sends

`send` reads one JSON command per line and answers "ok" (or "error: …") once it is sent:
    {"bytes": [176, 20, 64]}                      one raw message (anything, junk included)
    {"sweep": [20, 0, 127], "channel": 1}         CC 20 from 0 to 127, one message per value
    {"clock": 120, "beats": 8, "start": true}     Start, then 24 ticks per beat at 120 BPM, paced in real time
    {"sysex": 2000, "size": 200}                  a SysEx flood: 2000 messages of 200 bytes, as fast as it goes
`listen` prints one JSON list of bytes per message received. The port's environment (JACK_DEFAULT_SERVER) comes
from the test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import rtmidi


def wait_port(rt, part: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        names = rt.get_ports()
        for i, n in enumerate(names):
            if part in n:
                return i
        if time.monotonic() > deadline:
            raise SystemExit(f"no port with {part!r} within {timeout:g} s (ports: {names})")
        time.sleep(0.05)


def clock(out, bpm: float, beats: int, start: bool) -> None:
    if start:
        out.send_message([0xFA])
    interval = 60.0 / bpm / 24
    t0 = time.perf_counter()
    for i in range(beats * 24):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        out.send_message([0xF8])


def send(args) -> None:
    out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=args.virtual or "vprod-test-sender")
    if args.virtual:
        out.open_virtual_port(args.virtual)
    else:
        out.open_port(wait_port(out, args.to), "out")
    print("ready", flush=True)
    try:
        commands(out)
    finally:  # a client that leaves without closing makes jackd wait for it (seconds) when it stops
        out.close_port()
        out.delete()


def commands(out) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            ch = cmd.get("channel", 1) - 1
            if "bytes" in cmd:
                out.send_message(cmd["bytes"])
            elif "sweep" in cmd:
                cc, a, b = cmd["sweep"]
                for v in range(a, b + (1 if b >= a else -1), 1 if b >= a else -1):
                    out.send_message([0xB0 | ch, cc, v])
                    time.sleep(0.001)
            elif "clock" in cmd:
                clock(out, cmd["clock"], cmd.get("beats", 8), cmd.get("start", False))
            elif "sysex" in cmd:
                body = [0xF0, 0x7D] + [i % 128 for i in range(cmd.get("size", 100) - 3)] + [0xF7]
                for _ in range(cmd["sysex"]):
                    out.send_message(body)
            else:
                raise ValueError(f"unknown command {cmd}")
            time.sleep(0.05)  # JACK delivers once per period (~21 ms): let it go out before saying "ok"
            print("ok", flush=True)
        except Exception as e:  # noqa: BLE001 - the test reads the reason
            print(f"error: {type(e).__name__}: {e}", flush=True)


def listen(args) -> None:
    inp = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="vprod-test-listener")
    inp.ignore_types(sysex=False, timing=False, active_sense=True)
    inp.set_callback(lambda ev, _d: print(json.dumps(ev[0]), flush=True))
    inp.open_port(wait_port(inp, getattr(args, "from")), "in")
    print("ready", flush=True)
    try:
        for _ in sys.stdin:  # until the test closes stdin
            pass
    finally:
        inp.close_port()
        inp.delete()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--to")
    g.add_argument("--virtual")
    s = sub.add_parser("listen")
    s.add_argument("--from", required=True)
    args = ap.parse_args()
    send(args) if args.cmd == "send" else listen(args)


if __name__ == "__main__":
    main()
