#!/usr/bin/env python3
"""Measure whether the speed knob flies the world model (docs/world-model, "Speed flies the world").

The shipped world model and the renderer open the same world (seed `--seed`) with the speed knob at each of
`--speeds` and the yaw knob at `--yaw` (the other knobs NEUTRAL's; the model's opening view is the renderer's, as `make run` opens it) and run
150 frames. One JSON line per family and speed: PSNR of the model's frames 1 / 4 / 12 / 40 / 80 / 150 against the
renderer's with flight off (`WorldModel.fly` False: the world stays where it opened, as before) and on (shipped),
how many times the flying world was made again, the pictures' sharpness from frame 13 on (mean variance of the
luma's Laplacian) and, flying, each frame's from 3 frames before a new view to 15 after (the dissolve into it),
averaged over the new views.

    python scripts/measure-world-fly.py [--speeds 0.45,0.9] [--seed 3] [--strip fly.jpg] [--set NAME=VALUE]
                                        [--against NAME=VALUE]

--strip writes, for terrain, city and tunnel at the first speed, rows renderer / flight off / flight on at frames
12, 40, 80 and 150 (with --against: renderer / flying with those settings / flight on).
(Run against another checkout with PYTHONPATH=that/checkout to compare.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.metrics import psnr, sharpness
from vprod.world.render import FAMILIES, RendererWorld

AT = (1, 4, 12, 40, 80, 150)
STRIP_AT = (12, 40, 80, 150)


def run(world, family: str, speed: float, seed: int, keep: dict, yaw: float = 0.5, against: dict | None = None
        ) -> dict:
    knobs = NEUTRAL.copy()
    knobs[CONTROL_NAMES.index("speed")] = speed
    knobs[CONTROL_NAMES.index("yaw")] = yaw
    out: dict = {"family": family, "speed": speed, "yaw": yaw}
    for fly in (False, "against", True) if against else (False, True):
        world.fly = bool(fly)
        shipped = {name: getattr(world, name) for name in against} if fly == "against" else {}
        for name in shipped:
            setattr(world, name, against[name])
        truth = RendererWorld(256, 144)
        truth.reset(seed, knobs, family)
        world.reset(seed, knobs, family)
        scores, made, sharp = [], [], []
        for t in range(1, max(AT) + 1):
            g = truth.step(knobs)
            before = world._fly_made
            f = world.step(knobs)
            if world._fly_made != before:
                made.append(t - 1)
            if t in AT:
                scores.append(round(psnr(f, g), 1))
            sharp.append(sharpness(f))
            if t in STRIP_AT:
                keep.setdefault((family, speed, "truth"), []).append(g) if fly is True else None
                keep.setdefault((family, speed, fly), []).append(f)
        for name, value in shipped.items():
            setattr(world, name, value)
        key = {False: "off", True: "fly", "against": "against"}[fly]
        out[key] = scores
        out["sharpness_" + key] = round(float(np.mean(sharp[12:])), 1)
        if fly is True:
            out["made_again"] = len(made)
            # each frame's sharpness from 3 frames before a new view to 15 after, averaged over the new views
            around = [sharp[i - 3:i + 16] for i in made if 3 <= i <= len(sharp) - 16]
            if around:
                out["sharpness_around_new_views"] = np.round(np.mean(around, 0), 1).tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--speeds", default="0.45,0.9")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--yaw", type=float, default=0.5, help="the yaw knob while flying (0.5: straight on)")
    ap.add_argument("--strip", default=None, help="write renderer / flight off (or --against) / flight on rows here")
    ap.add_argument("--against", action="append", default=[], metavar="NAME=VALUE",
                    help="also fly with this WorldModel attribute set (a number), e.g. fly_pull=0.5: 'against' and "
                         "'sharpness_against' in the output, and the strip's middle row")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a WorldModel attribute first (a number), e.g. refocus_local=1.0: the shipped one's other")
    a = ap.parse_args()
    speeds = [float(x) for x in a.speeds.split(",")]
    from vprod.world.model import WorldModel, attribute_settings

    world = WorldModel()
    for name, value in attribute_settings(world, a.set, "--set").items():
        setattr(world, name, value)
    against = attribute_settings(world, a.against, "--against")
    keep: dict = {}
    for fam in FAMILIES:
        for sp in speeds:
            print(json.dumps(run(world, fam, sp, a.seed, keep, a.yaw, against)), flush=True)
    if a.strip:
        import cv2

        rows = []
        for fam in ("terrain", "city", "tunnel"):
            for name in ("truth", "against" if against else False, True):
                rows.append(np.concatenate(keep[(fam, speeds[0], name)], 1))
        cv2.imwrite(a.strip, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])


if __name__ == "__main__":
    main()
