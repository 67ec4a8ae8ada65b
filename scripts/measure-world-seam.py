#!/usr/bin/env python3
"""Measure the seam a turning camera shows in the world model's picture (docs/world-model, "No seam when the camera
turns").

Per family, `--seeds` streams of `--frames` frames with the camera turning right steadily (yaw `--yaw`, the other
knobs neutral). At each frame where a join of the memory's canvas is in view (the canvas's own edge, and with a
canvas twice the picture wide also the picture's edge meeting its mirror image), the decoded latent's mean pixel step
across that cell boundary ÷ the median step across the picture's other cell boundaries: 1 = the join is as smooth as
anywhere else in the picture; a visible seam is well above 1. Prints one JSON line per family: median, p90, n.

    python scripts/measure-world-seam.py [--frames 120] [--seeds 3] [--yaw 0.85] [--strip row.png]

--strip writes one row of pictures, each family's first seed at the frame where a join was nearest the middle of the
picture (the step across it marked by a tick above and below), to look at.

A seam can also be a bar: columns beside a join darker or brighter than the picture round them (cells made as the
picture's edge cells, drawn inside it). Per family also: `bar`, at each join the mean |colour of the two cells
either side − colour of the cells 3–5 cells away|, row by row, ÷ the median of the same at the picture's other cell
boundaries (median, p90); and `bar_worst`, per frame the largest of that statistic over all the picture's
boundaries ÷ its median, the median over frames (a bar anywhere, at a join or not).

(Run against another checkout with PYTHONPATH=that/checkout to compare.)
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import torch

from vprod.world import NEUTRAL
from vprod.world.model import WorldModel
from vprod.world.render import FAMILIES

CELL = 8  # pixels per latent cell (the tokenizer's down-sampling)


def joins_in_view(model: WorldModel) -> list[int]:
    """The cell boundaries of the picture (1 … w − 1) where the memory's canvas joins."""
    mem = model.memory
    w, cw = mem.w, mem.canvas.shape[-1]
    return sorted(b for b in {(mem.ox + k * w) % cw for k in range(cw // w)} if 0 < b < w)


def join_ratios(picture: np.ndarray, joins: list[int]) -> list[float]:
    f = picture.astype(np.float32)
    steps = np.abs(f[:, CELL::CELL] - f[:, CELL - 1:-1:CELL]).mean(axis=(0, 2))  # boundary b at index b − 1
    others = np.median([s for i, s in enumerate(steps) if i + 1 not in joins])
    return [float(steps[b - 1] / max(others, 1e-6)) for b in joins]


def bar_profile(picture: np.ndarray) -> np.ndarray:
    """Per cell boundary b (5 … w − 5 cells): mean over rows and channels of |the colour of cells b−2 … b+1 −
    that of cells b−5 … b−3 and b+2 … b+4|, by the mean of each row's columns."""
    f = picture.astype(np.float32)
    cells = f.reshape(f.shape[0], -1, CELL, 3).mean(axis=2)  # (rows, cells, 3)
    n = cells.shape[1]
    out = np.full(n, np.nan, np.float32)
    for b in range(5, n - 4):
        near = cells[:, b - 2:b + 2].mean(axis=1)
        far = np.concatenate([cells[:, b - 5:b - 2], cells[:, b + 2:b + 5]], axis=1).mean(axis=1)
        out[b] = float(np.abs(near - far).mean())
    return out


def bar_ratios(picture: np.ndarray, joins: list[int]) -> tuple[list[float], float]:
    prof = bar_profile(picture)
    ok = ~np.isnan(prof)
    med = max(float(np.median(prof[ok])), 1e-6)
    return [float(prof[b] / med) for b in joins if ok[b]], float(np.nanmax(prof) / med)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--yaw", type=float, default=0.85)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--strip", help="write a row of pictures (one per family) with a join in view here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = WorldModel()
    knobs = NEUTRAL.copy()
    knobs[0] = a.yaw
    row = []
    for family in FAMILIES:
        ratios: list[float] = []
        bars: list[float] = []
        worst: list[float] = []
        shown: tuple[int, np.ndarray, int] | None = None  # (distance from the middle, picture, join)
        for seed in range(1, a.seeds + 1):
            model.reset(seed, knobs, family=family)
            for _ in range(a.frames):
                z = model.next_latent(knobs)
                joins = joins_in_view(model)
                if joins:
                    picture = model.decode(z)
                    ratios += join_ratios(picture, joins)
                    at, top = bar_ratios(picture, joins)
                    bars += at
                    worst.append(top)
                    w = model.memory.w
                    b = min(joins, key=lambda j: abs(j - w // 2))
                    if seed == 1 and (shown is None or abs(b - w // 2) < shown[0]):
                        shown = (abs(b - w // 2), picture, b)
        if shown is not None:
            pic = np.ascontiguousarray(shown[1])
            x = shown[2] * CELL
            pic[:6, x - 1:x + 1] = pic[-6:, x - 1:x + 1] = (255, 0, 0)
            row.append(pic)
        r, bar = np.asarray(ratios), np.asarray(bars)
        print(json.dumps({"family": family, "median": round(float(np.median(r)), 2) if len(r) else None,
                          "p90": round(float(np.percentile(r, 90)), 2) if len(r) else None, "n": len(r),
                          "bar": round(float(np.median(bar)), 2) if len(bar) else None,
                          "bar_p90": round(float(np.percentile(bar, 90)), 2) if len(bar) else None,
                          "bar_worst": round(float(np.median(worst)), 2) if worst else None}),
              flush=True)
    if a.strip and row:
        gap = np.full((row[0].shape[0], 4, 3), 255, np.uint8)
        out = np.concatenate([x for pic in row for x in (pic, gap)][:-1], axis=1)
        cv2.imwrite(a.strip, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
