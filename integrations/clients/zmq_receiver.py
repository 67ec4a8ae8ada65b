#!/usr/bin/env python3
"""Receive vprod's ZeroMQ frame stream — needs only pyzmq and numpy (opencv-python to save or show frames).

Wire format v1, one multipart message per frame: [b"frame", header, payload]
  header  UTF-8 JSON: {"v": 1, "seq": int, "pts": seconds, "width": W, "height": H, "format": "rgb24",
                       "stride": W*3, "preset": name}
  payload raw H×W×3 uint8 RGB, row-major.

    python integrations/clients/zmq_receiver.py                      # print fps and the centre pixel
    python integrations/clients/zmq_receiver.py --save last.png      # also save the latest frame
    python integrations/clients/zmq_receiver.py --show               # a window (needs a display)
"""

import argparse
import json
import time

import numpy as np
import zmq


def frames(endpoint: str = "tcp://127.0.0.1:5555", timeout_ms: int = 5000):
    """Yield (header, image) for every frame received; image is an H×W×3 uint8 RGB array."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 4)  # stay current: old frames are dropped, not queued
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SUBSCRIBE, b"frame")
    sock.connect(endpoint)
    try:
        while True:
            topic, raw_header, payload = sock.recv_multipart(copy=False)
            header = json.loads(bytes(raw_header.buffer))
            if header.get("v") != 1 or header.get("format") != "rgb24":
                raise ValueError(f"unsupported stream: {header}")
            img = np.frombuffer(payload.buffer, np.uint8).reshape(header["height"], header["width"], 3)
            yield header, img
    finally:
        sock.close(linger=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: run until Ctrl-C)")
    ap.add_argument("--save", help="write the latest frame to this image file")
    ap.add_argument("--show", action="store_true", help="show the stream in a window")
    args = ap.parse_args()
    n, t0, last_report = 0, time.monotonic(), time.monotonic()
    try:
        for header, img in frames(args.endpoint):
            n += 1
            if args.save or args.show:
                import cv2

                bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                if args.save:
                    cv2.imwrite(args.save, bgr)
                if args.show:
                    cv2.imshow("vprod", bgr)
                    cv2.waitKey(1)
            now = time.monotonic()
            if now - last_report >= 1.0 or n == args.frames:
                h, w = img.shape[:2]
                print(json.dumps({"frames": n, "fps": round(n / (now - t0), 2), "seq": header["seq"],
                                  "pts": header["pts"], "size": f"{w}x{h}", "preset": header["preset"],
                                  "centre_rgb": img[h // 2, w // 2].tolist()}), flush=True)
                last_report = now
            if n == args.frames:
                break
    except zmq.Again:
        raise SystemExit(f"no frame from {args.endpoint} within 5 s: is `vprod run` going?") from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
