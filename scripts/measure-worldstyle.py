#!/usr/bin/env python3
"""Measure the world-model style: how much of the picture's structure it keeps and how far it moves the look towards
a world family, across strengths, for the shipped formulation and two simpler ones; and its flicker on a moving
clip. Prints JSON (docs/effects/styles.md quotes it).

    python scripts/measure-worldstyle.py [--weights W.safetensors] [--photos astronaut,chelsea,coffee]

Structure kept: correlation of Sobel gradient magnitudes between input and output at 256×144 (1 = the same edges).
Look: Lab distance (mean + spread) of the output to the family's own frames (the renderer, neutral knobs), divided
by the input's distance (1 = no move, 0 = the family's colour statistics). Texture: the same ratio for the
total-variation distance between gradient-magnitude histograms (how busy or smooth the picture is), and for the
per-channel mean and spread of the tokenizer's latents (the look in the world model's own features). Flicker: mean absolute change between
consecutive output frames on presets/media/person.mp4, next to the clip's own.
Variants: "shipped" (look transfer a = strength, noise s = 0.5·strength), "sdedit" (noise only, s = strength: plain
SDEdit on our model), "look-only" (look transfer, no noise). One torch thread.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("terrain", "city", "tunnel", "plasma", "starfield", "ocean")
VARIANTS = {"shipped": (1.0, 0.5), "half-noise": (1.0, 0.25), "sdedit": (0.0, 1.0),
            "look-only": (1.0, 0.0)}  # (look, noise_at_full)


def photo(name: str, w: int = 256, h: int = 144) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    band = img[: min(img.shape[0], int(img.shape[1] * h / w))]
    return np.ascontiguousarray(cv2.resize(band, (w, h), interpolation=cv2.INTER_AREA))


def edges(a: np.ndarray, b: np.ndarray) -> float:
    def mag(x):
        g = cv2.GaussianBlur(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.0)
        return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)).ravel()

    x, y = mag(a), mag(b)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum() + 1e-12))


def lab(x: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(x, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)


def grad_hist(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    m = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    h, _ = np.histogram(np.minimum(m, 511), bins=32, range=(0, 512))
    return h / h.sum()


def family_frames(family: str) -> list[np.ndarray]:
    from vprod.world import NEUTRAL
    from vprod.world.render import RendererWorld

    frames = []
    for seed in range(4):
        rw = RendererWorld(256, 144)
        frames.append(rw.reset(seed, NEUTRAL, family))
        frames += [rw.step(NEUTRAL) for _ in range(12)][5::6]
    return frames


def palette(family: str):
    frames = family_frames(family)
    px = np.concatenate([lab(f) for f in frames])
    return px.mean(0), px.std(0), np.mean([grad_hist(f) for f in frames], axis=0)


def dist(img, pal) -> float:
    px = lab(img)
    return float(np.linalg.norm(px.mean(0) - pal[0]) + np.linalg.norm(px.std(0) - pal[1]))


def texture_dist(img, pal) -> float:
    return float(0.5 * np.abs(grad_hist(img) - pal[2]).sum())


def latent_stats(world, frames) -> np.ndarray:
    """Per-channel mean and spread of the tokenizer's latents: the look in the world model's own features."""
    z = np.concatenate([world.encode(f).numpy() for f in frames])  # (N, C, h, w)
    return np.concatenate([z.mean(axis=(0, 2, 3)), z.std(axis=(0, 2, 3))])


def latent_dist(world, img, ref) -> float:
    return float(np.linalg.norm(latent_stats(world, [img]) - ref))


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="", help="world model weights (default: the shipped ones)")
    ap.add_argument("--photos", default="astronaut,chelsea,coffee")
    ap.add_argument("--strengths", default="0,0.3,0.6,0.8,1.0")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from vprod.plugins import PluginRegistry
    from vprod.world.model import WorldModel, load_dynamics

    PluginRegistry().load("worldstyle")
    ws = importlib.import_module("vprod_plugins.style.worldstyle")
    dyn = load_dynamics(args.weights)[0] if args.weights else None
    world = WorldModel(dynamics=dyn)
    photos = {n: photo(n) for n in args.photos.split(",")}
    pals = {f: palette(f) for f in FAMILIES}
    lat = {f: latent_stats(world, family_frames(f)) for f in FAMILIES}
    strengths = [float(s) for s in args.strengths.split(",")]
    out: dict = {"weights": args.weights or "shipped", "residual": bool(world.dyn.cfg.residual),
                 "photos": list(photos), "families": list(FAMILIES), "variants": {}}
    for vname, (look, noise) in VARIANTS.items():
        rows = []
        for s in strengths:
            e, r, t, lt, per_family = [], [], [], [], {}
            for fam in FAMILIES:
                fe, fr, ft, fl = [], [], [], []
                for img in photos.values():
                    st = ws.WorldStyler(world)
                    st.set_family(fam)
                    st.strength, st.look, st.noise_at_full = s, look, noise
                    for _ in range(3):
                        o = st.style(img)
                    fe.append(edges(img, o))
                    fr.append(dist(o, pals[fam]) / dist(img, pals[fam]))
                    ft.append(texture_dist(o, pals[fam]) / texture_dist(img, pals[fam]))
                    fl.append(latent_dist(world, o, lat[fam]) / latent_dist(world, img, lat[fam]))
                per_family[fam] = {"edges": round(float(np.mean(fe)), 3), "look_ratio": round(float(np.mean(fr)), 3),
                                   "texture_ratio": round(float(np.mean(ft)), 3),
                                   "latent_ratio": round(float(np.mean(fl)), 3)}
                e += fe
                r += fr
                t += ft
                lt += fl
            rows.append({"strength": s, "edges_mean": round(float(np.mean(e)), 3),
                         "edges_min": round(float(np.min(e)), 3), "look_ratio_mean": round(float(np.mean(r)), 3),
                         "texture_ratio_mean": round(float(np.mean(t)), 3),
                         "latent_ratio_mean": round(float(np.mean(lt)), 3),
                         "per_family": per_family})
        out["variants"][vname] = rows
    # flicker on the moving clip, by noise correlation between frames
    cap = cv2.VideoCapture(str(ROOT / "presets" / "media" / "person.mp4"))
    clip = []
    while len(clip) < 45:
        ok, bgr = cap.read()
        if not ok:
            break
        clip.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (256, 144), interpolation=cv2.INTER_AREA))

    def flicker(frames):
        return round(float(np.mean([np.abs(frames[i].astype(float) - frames[i - 1]).mean()
                                    for i in range(1, len(frames))])), 2)

    out["flicker"] = {"clip": flicker(clip)}
    for rho in (0.0, 0.9, 1.0):
        st = ws.WorldStyler(world)
        st.set_family("ocean")
        st.strength, st.noise_rho = 0.6, rho
        out["flicker"][f"noise_rho_{rho}"] = flicker([st.style(f) for f in clip])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
