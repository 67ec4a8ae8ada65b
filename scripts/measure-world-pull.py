#!/usr/bin/env python3
"""Measure how the memory's pull shapes the world model's picture (docs/world-model, "A sharper picture").

The shipped world model and the renderer open the same world (seed `--seed`) in every family and run `--frames`
frames, held (speed 0, the other knobs NEUTRAL's) and moving (speed 0.45 and yaw 0.65: flying and turning right), once
per pull in `--pulls` (`WorldModel.memory_pull`, the plugin's /bg/memory). One JSON line per family, case and pull:
PSNR of the model's frames 12 / 40 / the last against the renderer's, the pictures' sharpness (mean variance of the
luma's Laplacian, vprod.world.metrics.sharpness) and mean change a frame (grey levels) from frame 21 on, the
renderer's too.

    python scripts/measure-world-pull.py [--pulls 0.2,0.5] [--frames 120] [--strip pull.jpg] [--set NAME=VALUE]

--strip writes, for city and ocean moving, rows renderer / one row per pull at frames 25, 50, 75 and 100.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.metrics import mean_abs_change, psnr, sharpness
from vprod.world.render import FAMILIES, RendererWorld

CASES = {"held": {"speed": 0.0}, "moving": {"speed": 0.45, "yaw": 0.65}}
STRIP_AT = (25, 50, 75, 100)


def run(world, family: str, case: str, pull: float | None, seed: int, frames: int, keep: dict) -> dict:
    """One run: the renderer's own figures where `pull` is None, else the model's at that pull."""
    knobs = NEUTRAL.copy()
    for name, v in CASES[case].items():
        knobs[CONTROL_NAMES.index(name)] = v
    truth = RendererWorld(256, 144)
    truth.reset(seed, knobs, family)
    if pull is not None:
        world.memory_pull = pull
        world.reset(seed, knobs, family)
    at = (12, 40, frames)
    scores, sharp, change, prev = [], [], [], None
    for t in range(1, frames + 1):
        g = truth.step(knobs)
        f = g if pull is None else world.step(knobs)
        if t in at and pull is not None:
            scores.append(round(psnr(f, g), 1))
        if t > 20:
            sharp.append(sharpness(f))
            change.append(mean_abs_change(f, prev))
        if t in STRIP_AT:
            keep.setdefault((family, case, pull), []).append(f)
        prev = f
    out = {"family": family, "case": case, "pull": pull if pull is not None else "renderer",
           "sharpness": round(float(np.mean(sharp)), 1), "change": round(float(np.mean(change)), 2)}
    if pull is not None:
        out["psnr_12_40_last"] = scores
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pulls", default="0.2,0.5")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--strip", default=None, help="write renderer / one row per pull here (city and ocean, moving)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a WorldModel attribute first (a number), e.g. still_speed=0: a held world pulled as a "
                         "moving one")
    a = ap.parse_args()
    pulls = [float(x) for x in a.pulls.split(",")]
    from vprod.world.model import WorldModel, attribute_settings

    world = WorldModel()
    for name, value in attribute_settings(world, a.set, "--set").items():
        setattr(world, name, value)
    keep: dict = {}
    for fam in FAMILIES:
        for case in CASES:
            for pull in [None, *pulls]:
                print(json.dumps(run(world, fam, case, pull, a.seed, max(a.frames, max(STRIP_AT)), keep)),
                      flush=True)
    if a.strip:
        import cv2

        rows = [np.concatenate(keep[(fam, "moving", p)], 1) for fam in ("city", "ocean") for p in [None, *pulls]]
        cv2.imwrite(a.strip, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])


if __name__ == "__main__":
    main()
