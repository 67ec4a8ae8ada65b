#!/usr/bin/env python3
"""Make presets/media/person.mp4: a small looping "webcam" clip of a person, for presets that need a camera on a
machine without one (the `fallback` option of the webcam source).

The picture is scikit-image's astronaut portrait (NASA, public domain): a 16:9 head-and-shoulders window over it
that pans and zooms slowly, as a hand-held or auto-framing camera does, so the person moves in the frame. The
motion is periodic, so the clip loops without a jump. 640x360, 15 fps, 8 s: H.264 (CRF 26) through the `ffmpeg`
command, ~100 KB, which OpenCV's own FFmpeg decodes; without `ffmpeg`, MPEG-4 Part 2 through OpenCV (~640 KB).

    python scripts/make-person-clip.py [--out presets/media/person.mp4]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
from skimage import data

OUT = Path(__file__).resolve().parent.parent / "presets" / "media" / "person.mp4"
W, H, FPS, SECONDS = 640, 360, 15, 8


def frame_at(photo: np.ndarray, t: float) -> np.ndarray:
    """The window at time t (seconds): zoom 1.08..1.20 and a pan of ±22 px across, ±6 px down, one period = clip."""
    pw = photo.shape[1]
    phase = 2 * math.pi * t / SECONDS
    zoom = 1.14 + 0.06 * math.sin(phase)
    cw = pw / zoom
    ch = cw * H / W
    cx = pw / 2 + 22 * math.sin(phase + 0.7)
    cy = ch / 2 + 4 + 6 * (1 - math.cos(2 * phase)) / 2
    # the affine map from the output pixel grid to the photograph
    sx = cw / W
    m = np.float32([[sx, 0, cx - cw / 2], [0, sx, cy - ch / 2]])
    return cv2.warpAffine(photo, m, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    frames = (frame_at(photo, i / FPS) for i in range(FPS * SECONDS))
    if shutil.which("ffmpeg"):
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-crf", "26", "-preset", "slow",
               "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(out)]
        with subprocess.Popen(cmd, stdin=subprocess.PIPE) as enc:
            for f in frames:
                enc.stdin.write(f.tobytes())
            enc.stdin.close()
        if enc.returncode:
            raise SystemExit(f"ffmpeg failed ({enc.returncode}) writing {out}")
    else:
        vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
        if not vw.isOpened():
            raise SystemExit(f"OpenCV cannot write {out} (mp4v)")
        for f in frames:
            vw.write(f)
        vw.release()
    print(f"{out}: {FPS * SECONDS} frames, {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
