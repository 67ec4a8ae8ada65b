#!/usr/bin/env python3
"""Measure what the zoom knob does to the world model's picture (docs/world-model, "The zoom knob as a lens").

Two parts, one JSON line per family each:

- `renderer`: is the renderer's zoom a pinhole camera's — a magnification of the picture about its optical centre?
  One moment (seed `--seed`, after 6 neutral frames) rendered at zoom 0.5 and at each of `--zooms`; PSNR of the
  zoomed frame against the neutral one as it is (`plain`) and seen through the lens (`lens`: vprod.world.motion.lens
  about vprod.world.render.optical_row). Zooming out (lens < 1) brings in what the neutral frame never held: the
  lens shows it mirrored, and the PSNR is taken over the middle 72 % of the picture then.
- `model`: the shipped world model after a zoom jump. The model and the renderer open the same world at NEUTRAL
  (the model's is the renderer's opening view, as `make run` opens it), 4 frames, then 40 frames with the zoom knob
  at each of `--zooms`; PSNR of the model's frames 1 / 4 / 12 / 40 against the renderer's, with the lens off (the
  zoom asked of the dynamics and the look head, as before), the lens alone (`lens_refocus` None) and the lens with
  the world made again at the knob's zoom (`refocus`, shipped); and the pictures' sharpness at frame 12 (variance
  of the luma's Laplacian; the renderer's in `truth`).

    python scripts/measure-world-zoom.py [--zooms 0.15,0.85] [--seed 5] [--strip zoom.jpg]

--strip writes rows renderer / lens off / lens alone / refocus (frame 12 after the jump) for terrain, city and
starfield at each zoom.
(Run against another checkout with PYTHONPATH=that/checkout to compare.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.metrics import laplacian, psnr
from vprod.world.motion import lens, present
from vprod.world.render import FAMILIES, Renderer, RendererWorld, optical_row

ZOOM = CONTROL_NAMES.index("zoom")


def _zoom(z: float) -> np.ndarray:
    c = np.array(NEUTRAL, np.float32)
    c[ZOOM] = z
    return c


def renderer_part(family: str, zooms: list[float], seed: int) -> dict:
    r = Renderer(256, 144)
    r.reset(seed, family, NEUTRAL)
    for _ in range(6):
        r.step(NEUTRAL)
    plain = r.render(NEUTRAL)  # one moment, under each zoom
    out: dict = {"part": "renderer", "family": family}
    for z in zooms:
        zoomed = r.render(_zoom(z))
        m = lens(0.5, z, optical_row(family, r.state.pitch))
        mid = (slice(20, 124), slice(36, 220)) if m[0, 0] < 1 else (slice(None), slice(None))
        out[f"zoom {z}"] = {"lens": round(float(m[0, 0]), 3),
                            "plain": round(psnr(plain[mid], zoomed[mid]), 1),
                            "lens_db": round(psnr(present(plain, m)[mid], zoomed[mid]), 1)}
    return out


VARIANTS = {"off": (False, None), "lens": (True, None), "refocus": (True, 1.25)}


def _sharpness(frame: np.ndarray) -> float:
    return round(float(laplacian(frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).var()), 1)


def model_part(world, family: str, zooms: list[float], seed: int, keep: dict) -> dict:
    out: dict = {"part": "model", "family": family}
    for z in zooms:
        row: dict = {}
        for name, (on, refocus) in VARIANTS.items():
            world.lens, world.lens_refocus = on, refocus
            truth = RendererWorld(256, 144)
            truth.reset(seed, NEUTRAL, family)
            world.reset(seed, NEUTRAL, family)
            for _ in range(4):
                truth.step(NEUTRAL)
                world.step(NEUTRAL)
            scores = []
            for k in range(1, 41):
                g, f = truth.step(_zoom(z)), world.step(_zoom(z))
                if k in (1, 4, 12, 40):
                    scores.append(round(psnr(f, g), 1))
                if k == 12:
                    keep[(family, z, name)] = (g, f)
                    row.setdefault("sharpness", {})[name] = _sharpness(f)
                    row["sharpness"]["truth"] = _sharpness(g)
            row[name] = scores
        out[f"zoom {z}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zooms", default="0.15,0.85")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--strip", default=None, help="write renderer / lens off / lens on rows here")
    a = ap.parse_args()
    zooms = [float(x) for x in a.zooms.split(",")]
    for fam in FAMILIES:
        print(json.dumps(renderer_part(fam, zooms, a.seed)), flush=True)
    from vprod.world.model import WorldModel

    world = WorldModel()
    keep: dict = {}
    for fam in FAMILIES:
        print(json.dumps(model_part(world, fam, zooms, a.seed, keep)), flush=True)
    if a.strip:
        import cv2

        rows = []
        for fam in ("terrain", "city", "starfield"):
            for z in zooms:
                g = keep[(fam, z, "off")][0]
                rows.append(np.concatenate([g] + [keep[(fam, z, name)][1] for name in VARIANTS], 1))
        cv2.imwrite(a.strip, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])


if __name__ == "__main__":
    main()
