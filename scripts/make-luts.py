#!/usr/bin/env python3
"""Make the .cube LUTs shipped in presets/luts/ (17³ points each, ~120 KB): our own colour grades.

    python scripts/make-luts.py [--out presets/luts]

teal-orange: the blockbuster grade — shadows pushed towards teal, highlights and skin towards orange, a gentle S
contrast curve. mono: black and white from Rec. 709 luma with the same S curve.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LUMA = np.array([0.2126, 0.7152, 0.0722])


def _lut_module():
    spec = importlib.util.spec_from_file_location("style_lut", ROOT / "plugins" / "style" / "lut.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def s_curve(x: np.ndarray, amount: float = 0.25) -> np.ndarray:
    """Contrast around mid-grey, keeping black and white: a blend with smoothstep."""
    return (1 - amount) * x + amount * x * x * (3 - 2 * x)


def teal_orange(rgb: np.ndarray) -> np.ndarray:
    y = rgb @ LUMA
    shadow = np.clip(1.0 - y / 0.55, 0, 1)[:, None] ** 1.5
    light = np.clip((y - 0.35) / 0.65, 0, 1)[:, None]
    out = rgb + shadow * np.array([-0.10, 0.03, 0.08]) + light * np.array([0.10, 0.02, -0.10])
    # keep the luma of the original (the grade moves hue, the curve moves light)
    out += (y - out @ LUMA)[:, None]
    return s_curve(np.clip(out, 0, 1))


def mono(rgb: np.ndarray) -> np.ndarray:
    y = s_curve(rgb @ LUMA, 0.35)
    return np.repeat(y[:, None], 3, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "presets" / "luts"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    lut = _lut_module()
    for name, fn, title in (("teal-orange", teal_orange, "vprod teal-orange"), ("mono", mono, "vprod mono")):
        path = out / f"{name}.cube"
        lut.write_cube(path, fn, 17, title)
        print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
