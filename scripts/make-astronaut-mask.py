#!/usr/bin/env python3
"""Make tests/data/astronaut_person_mask.png: the hand-checked person mask of scikit-image's astronaut photograph
(NASA, public domain), the reference the segmentation tests score the model against.

Procedure (re-run this script to reproduce the file bit for bit; OpenCV's GrabCut is deterministic):
1. GrabCut (OpenCV, 10 iterations, colour GMMs) inside a bounding rectangle around the woman, seeded with
   rectangles picked by hand on the 512x512 photograph: definite person (face, hair, neck ring, the suit's chest,
   arms and badge) and definite background (the flag, the wall at both top corners and beside the head, the
   shuttle model and its black stand).
2. Clean-up: the largest connected component only, holes filled, a 3x3 opening.
3. The helmet she holds in front of her is an object, not the person; whether a person segmenter keeps it is a
   matter of taste, so a hand-placed ellipse around it is marked "not scored" (value 128).
4. The result was checked by eye on an overlay (`--overlay out.png` writes one): the outline follows the hair,
   the face, the shoulders and the suit down to the bottom edge, and no flag, wall or shuttle pixel is inside.

Values in the PNG: 255 person, 0 background, 128 not scored.

    python scripts/make-astronaut-mask.py [--overlay /tmp/overlay.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from skimage import data

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "astronaut_person_mask.png"

# (x0, y0, x1, y1) on the 512x512 photograph, picked by hand.
BOUNDS = (12, 10, 372, 512)  # the woman (and the helmet) are inside; GrabCut's "probably background" outside
PERSON = [
    (175, 40, 285, 95),  # hair
    (185, 95, 265, 170),  # face
    (150, 175, 290, 260),  # neck ring and collar
    (60, 300, 340, 500),  # the suit's chest and arms, the badge
    (30, 330, 70, 470),  # left arm
]
BACKGROUND = [
    (0, 0, 60, 200),  # flag, top left
    (0, 250, 15, 512),  # flag, down the left edge
    (60, 0, 150, 120),  # wall left of the head
    (310, 0, 512, 60),  # wall, top right
    (310, 60, 370, 230),  # wall right of the head, left of the shuttle
    (375, 0, 512, 280),  # shuttle model
    (372, 280, 512, 345),  # the stand behind the helmet
]
HELMET = ((392, 432), (118, 95), 0)  # ellipse (centre, half-axes, angle): not scored


def make_mask() -> np.ndarray:
    img = data.astronaut()
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    gc = np.full((h, w), cv2.GC_BGD, np.uint8)
    x0, y0, x1, y1 = BOUNDS
    gc[y0:y1, x0:x1] = cv2.GC_PR_FGD
    for x0, y0, x1, y1 in BACKGROUND:
        gc[y0:y1, x0:x1] = cv2.GC_BGD
    for x0, y0, x1, y1 in PERSON:
        gc[y0:y1, x0:x1] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(bgr, gc, None, bgd, fgd, 10, cv2.GC_INIT_WITH_MASK)
    fg = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
    if n > 1:
        fg = (lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # fill holes: flood the background from the border, everything not reached is person
    flood = fg.copy()
    pad = np.zeros((h + 2, w + 2), np.uint8)
    cv2.floodFill(flood, pad, (w - 1, 0), 1)
    fg = fg | (1 - flood)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    out = fg * 255
    ell = np.zeros((h, w), np.uint8)
    cv2.ellipse(ell, HELMET[0], HELMET[1], HELMET[2], 0, 360, 1, -1)
    out[ell > 0] = 128
    return out


def overlay(mask: np.ndarray) -> np.ndarray:
    img = data.astronaut().astype(np.float32)
    tint = img.copy()
    tint[mask == 255] = tint[mask == 255] * 0.55 + np.float32([0, 255, 0]) * 0.45
    tint[mask == 128] = tint[mask == 128] * 0.55 + np.float32([0, 0, 255]) * 0.45
    edge = cv2.morphologyEx((mask == 255).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    tint[edge] = (255, 255, 0)
    return cv2.cvtColor(np.clip(tint, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--overlay", help="also write the photograph with the mask tinted over it (PNG)")
    args = ap.parse_args()
    m = make_mask()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT), m, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{OUT}: person {np.mean(m == 255):.3f}, not scored {np.mean(m == 128):.3f}, {OUT.stat().st_size} bytes")
    if args.overlay:
        cv2.imwrite(args.overlay, overlay(m))


if __name__ == "__main__":
    main()
