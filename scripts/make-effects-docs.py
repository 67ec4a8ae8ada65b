#!/usr/bin/env python3
"""Make the pictures of docs/effects/: the `style` plugin's looks and a frame of each camera preset.

    python scripts/make-effects-docs.py [--only styles|stream|call]

styles.png: every look of the style plugin on scikit-image's astronaut (NASA, public domain) at 1280×720, each
through the real element (the world style at three families). stream-style.png: a frame taken from the ZeroMQ
stream of `vprod run presets/stream-style.toml` (on a machine without a camera it plays presets/media/person.mp4);
call-background.png: the same for presets/call-background.toml (the person over the world model).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "effects"
W, H = 1280, 720


def astronaut() -> np.ndarray:
    from skimage import data

    img = data.astronaut()  # 512×512: a 16:9 band with the face and the suit
    return np.ascontiguousarray(cv2.resize(img[40:40 + 288], (W, H), interpolation=cv2.INTER_CUBIC))


def save_png(path: Path, rgb: np.ndarray) -> None:
    """A small PNG: 256 colours chosen for the picture (Pillow), dithered; plain PNG without Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image
    except ImportError:
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return
    Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(path)


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (8 + 11 * len(text), 26), (0, 0, 0), -1)
    cv2.putText(out, text, (5, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def styles_strip() -> None:
    from vprod.engine import ElementConfig, FrameContext
    from vprod.plugins import PluginRegistry

    reg = PluginRegistry()
    img = astronaut()
    ctx = FrameContext(width=W, height=H)
    looks = [("cartoon", {}), ("pencil", {"color": 0.3}), ("edge_glow", {}),
             ("color_transfer", {"reference": str(ROOT / "docs" / "samples" / "plasma.png")}),
             ("lut", {"file": str(ROOT / "presets" / "luts" / "teal-orange.cube")}),
             ("lut", {"file": str(ROOT / "presets" / "luts" / "mono.cube")})]
    tiles = [("input", img)]
    for family in ("terrain", "plasma", "ocean"):
        el = reg.load("worldstyle")(ElementConfig(layer="cam", width=W, height=H), {"family": family})
        el.open()
        try:
            deadline = time.monotonic() + 60
            while el.frames < 6 and time.monotonic() < deadline:  # the world's look settles over a few frames
                out = el.process(img, ctx)
                time.sleep(1 / 30)
            out = el.process(img, ctx)
        finally:
            el.close()
        tiles.append((f"worldstyle {family}", out))
    for eid, values in looks:
        el = reg.load(eid)(ElementConfig(layer="cam", width=W, height=H), values)
        el.open()
        out = el.process(img, ctx)
        name = eid + (f" {Path(values['file']).stem}" if "file" in values else "")
        tiles.append((name, out))
    small = [label(cv2.resize(t, (426, 240), interpolation=cv2.INTER_AREA), n) for n, t in tiles]
    while len(small) % 5:
        small.append(np.zeros_like(small[0]))
    grid = np.concatenate([np.concatenate(small[i:i + 5], axis=1) for i in range(0, len(small), 5)], axis=0)
    save_png(OUT / "styles.png", np.ascontiguousarray(grid))


def _free_port(udp: bool = False) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_screenshot(preset: str = "stream-style", seconds: float = 12.0) -> None:
    """docs/effects/<preset>.png: a frame of `vprod run presets/<preset>.toml` from its ZeroMQ stream, taken after
    `seconds` of streaming."""
    import zmq

    zport = _free_port()
    cmd = [sys.executable, "-m", "vprod", "run", str(ROOT / "presets" / f"{preset}.toml"), "--zmq-port", str(zport),
           "--mjpeg-port", str(_free_port()), "--control-port", str(_free_port()), "--osc-port", str(_free_port(True))]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"frame")
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    sock.connect(f"tcp://127.0.0.1:{zport}")
    try:
        img, deadline = None, time.monotonic() + seconds + 30
        started = None
        while time.monotonic() < deadline:
            try:
                _topic, hdr, payload = sock.recv_multipart()
            except zmq.Again:
                if proc.poll() is not None:
                    raise SystemExit(f"vprod exited with code {proc.returncode}") from None
                continue
            h = json.loads(hdr)
            started = started or time.monotonic()
            img = np.frombuffer(payload, np.uint8).reshape(h["height"], h["width"], 3)
            if time.monotonic() - started > seconds:  # the style has been running a while
                break
        if img is None:
            raise SystemExit("no frame arrived on the ZeroMQ stream")
        save_png(OUT / f"{preset}.png", img)
    finally:
        sock.close(linger=0)
        proc.terminate()
        proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["styles", "stream", "call"])
    args = ap.parse_args()
    if args.only in (None, "styles"):
        styles_strip()
    if args.only in (None, "stream"):
        stream_screenshot("stream-style")
    if args.only in (None, "call"):
        stream_screenshot("call-background")


if __name__ == "__main__":
    main()
