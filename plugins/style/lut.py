"""Colour lookup tables from .cube files (the Adobe/Resolve text format) and their fast application.

    lut = load_cube("presets/luts/teal-orange.cube")   # LutError "<file>:<line>: <what>" when malformed
    lut.prepare()                                      # once: the fast form (below)
    graded = apply_lut(lut, frame)

The format: `TITLE "…"`, `LUT_1D_SIZE N` or `LUT_3D_SIZE N`, optional `DOMAIN_MIN r g b` / `DOMAIN_MAX r g b`
(`LUT_1D_INPUT_RANGE` / `LUT_3D_INPUT_RANGE lo hi`, Resolve's older spelling, too), `#` comments, then the table,
three numbers a line; in a 3D table red changes fastest, then green, then blue.

Speed: a 1D LUT becomes a 256-entry table per channel (cv2.LUT, ~1 ms at 1280×720). A 3D LUT is interpolated
trilinearly once for every one of the 256³ 8-bit colours into a packed table (64 MB, ~0.7 s); a frame is then one
gather per pixel (~10 ms at 1280×720 on one core), exact to the 8-bit result of trilinear interpolation — the
identity LUT gives back every pixel unchanged. Interpolating per pixel instead (eight corners, numpy or torch's
grid_sample) measured 40–100 ms a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


class LutError(ValueError):
    """A .cube file that cannot be used; the message names the file and, where it applies, the line."""


@dataclass
class Lut:
    kind: str  # "1d" or "3d"
    size: int
    table: np.ndarray  # float32: 1D (N, 3); 3D (N, N, N, 3) indexed [b][g][r] (the file's order)
    domain_min: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    domain_max: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    title: str = ""
    source: str = ""
    _fast: np.ndarray | None = field(default=None, repr=False)

    def describe(self) -> str:
        name = f" {self.title!r}" if self.title else ""
        return f"{self.kind.upper()} LUT{name}, {self.size} points{'³' if self.kind == '3d' else ''}, from {self.source}"

    def _positions(self) -> np.ndarray:
        """(256, 3): where each 8-bit input level falls on each channel's grid (0..size−1)."""
        v = np.arange(256, dtype=np.float64)[:, None] / 255.0
        span = np.maximum(self.domain_max - self.domain_min, 1e-12)
        u = np.clip((v - self.domain_min) / span, 0.0, 1.0)
        return u * (self.size - 1)

    def prepare(self) -> None:
        """Build the fast form (see the module docstring); call once, off the frame loop for a 3D LUT."""
        if self._fast is not None:
            return
        pos = self._positions()
        n = self.size
        i0 = np.minimum(np.floor(pos).astype(np.int64), n - 2)
        f = (pos - i0).astype(np.float32)
        if self.kind == "1d":
            out = np.empty((256, 3), np.float32)
            for c in range(3):
                out[:, c] = self.table[i0[:, c], c] * (1 - f[:, c]) + self.table[i0[:, c] + 1, c] * f[:, c]
            self._fast = _to_u8(out).reshape(256, 1, 3)
            return
        t = self.table  # [b][g][r][rgb]
        ir, ig, ib = i0[:, 0], i0[:, 1], i0[:, 2]
        fr, fg = f[:, 0, None, None], f[None, :, 1, None]
        fb = f[:, 2, None, None]
        packed = np.empty((256, 256, 256), np.uint32)  # [r][g][b] → r | g << 8 | b << 16 of the output colour
        for r in range(256):  # one red level at a time: memory stays small at any LUT size
            a = fr[r, 0, 0]
            tr = t[:, :, ir[r]] * (1 - a) + t[:, :, ir[r] + 1] * a  # (N_b, N_g, 3)
            tg = tr[:, ig] * (1 - fg) + tr[:, ig + 1] * fg  # (N_b, 256, 3)
            tb = tg[ib] * (1 - fb) + tg[ib + 1] * fb  # (256b, 256g, 3)
            px = _to_u8(tb).astype(np.uint32)
            packed[r] = (px[..., 0] | (px[..., 1] << 8) | (px[..., 2] << 16)).T
        self._fast = packed.reshape(-1)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def apply_lut(lut: Lut, frame: np.ndarray) -> np.ndarray:
    """`frame` (H, W, 3) uint8 RGB through the LUT (prepared on first use)."""
    if lut._fast is None:
        lut.prepare()
    if lut.kind == "1d":
        return cv2.LUT(frame, lut._fast)
    # the pixel's own bytes as the index: BGRA in memory is b | g<<8 | r<<16 | a<<24 (little-endian)
    bgra = cv2.cvtColor(frame, cv2.COLOR_RGB2BGRA)
    idx = bgra.view(np.uint32)[..., 0]
    idx &= 0x00FFFFFF
    # packed table order is [r][g][b], i.e. index r<<16 | g<<8 | b: exactly the BGRA word without alpha
    out = np.take(lut._fast, idx)
    return cv2.cvtColor(out.view(np.uint8).reshape(*frame.shape[:2], 4), cv2.COLOR_RGBA2RGB)


# --- parsing ------------------------------------------------------------------------------------------------------

def load_cube(path: str | Path) -> Lut:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise LutError(f"{path}: not a text .cube file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise LutError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_cube(text, str(path))


def _floats(parts: list[str], n: int, where: str, what: str) -> list[float]:
    if len(parts) != n:
        raise LutError(f"{where}: {what} needs {n} number{'s' if n > 1 else ''}, got {len(parts)}")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise LutError(f"{where}: {what}: {' '.join(parts)!r} is not {n} number{'s' if n > 1 else ''}") from None
    if not all(np.isfinite(vals)):
        raise LutError(f"{where}: {what}: not finite")
    return vals


def parse_cube(text: str, name: str = "<cube>") -> Lut:
    """Parse .cube text; every problem is a LutError naming `name` and the line."""
    kind, size, size_line = "", 0, 0
    title = ""
    dmin = np.zeros(3, np.float32)
    dmax = np.ones(3, np.float32)
    rows: list[list[float]] = []
    first_data = 0
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{name}:{no}"
        parts = line.split()
        key = parts[0].upper()
        if key[0].isdigit() or key[0] in "+-.":
            if not kind:
                raise LutError(f"{where}: table data before LUT_1D_SIZE or LUT_3D_SIZE")
            rows.append(_floats(parts, 3, where, "a table line"))
            first_data = first_data or no
            continue
        if rows:
            raise LutError(f"{where}: keyword {parts[0]} after the table data started (line {first_data})")
        if key == "TITLE":
            title = line[len(parts[0]):].strip().strip('"')
        elif key in ("LUT_1D_SIZE", "LUT_3D_SIZE"):
            if kind:
                raise LutError(f"{where}: {parts[0]} after {'LUT_1D_SIZE' if kind == '1d' else 'LUT_3D_SIZE'} "
                               f"(line {size_line}): one table per file")
            (n,) = _floats(parts[1:], 1, where, parts[0])
            lo, hi = (2, 65536) if key == "LUT_1D_SIZE" else (2, 256)
            if n != int(n) or not lo <= n <= hi:
                raise LutError(f"{where}: {parts[0]} {parts[1]} is not a whole number in {lo}..{hi}")
            kind, size, size_line = ("1d" if key == "LUT_1D_SIZE" else "3d"), int(n), no
        elif key == "DOMAIN_MIN":
            dmin = np.array(_floats(parts[1:], 3, where, "DOMAIN_MIN"), np.float32)
        elif key == "DOMAIN_MAX":
            dmax = np.array(_floats(parts[1:], 3, where, "DOMAIN_MAX"), np.float32)
        elif key in ("LUT_1D_INPUT_RANGE", "LUT_3D_INPUT_RANGE"):
            lo, hi = _floats(parts[1:], 2, where, parts[0])
            dmin, dmax = np.full(3, lo, np.float32), np.full(3, hi, np.float32)
        else:
            raise LutError(f"{where}: unknown keyword {parts[0]!r} (TITLE, LUT_1D_SIZE, LUT_3D_SIZE, DOMAIN_MIN, "
                           f"DOMAIN_MAX, LUT_1D_INPUT_RANGE, LUT_3D_INPUT_RANGE)")
    if not kind:
        raise LutError(f"{name}: no LUT_1D_SIZE or LUT_3D_SIZE line: not a .cube LUT")
    want = size if kind == "1d" else size ** 3
    if len(rows) != want:
        raise LutError(f"{name}: {kind.upper()} LUT of size {size} needs {want} table lines, found {len(rows)}"
                       + (f" (the table starts at line {first_data})" if first_data else ""))
    if np.any(dmax <= dmin):
        raise LutError(f"{name}: DOMAIN_MAX must be above DOMAIN_MIN on every channel")
    table = np.asarray(rows, np.float32)
    if kind == "3d":
        table = table.reshape(size, size, size, 3)  # red fastest: [b][g][r]
    return Lut(kind, size, table, dmin, dmax, title, name)


def write_cube(path: str | Path, fn, size: int = 17, title: str = "") -> None:
    """Write a 3D .cube of `size`³ points from `fn(rgb (M, 3) in 0..1) -> (M, 3)` (for making LUTs)."""
    g = np.linspace(0.0, 1.0, size)
    b, gg, r = np.meshgrid(g, g, g, indexing="ij")
    rgb = np.stack([r.ravel(), gg.ravel(), b.ravel()], axis=1)  # red fastest
    out = np.clip(fn(rgb), 0.0, 1.0)
    lines = [f'TITLE "{title}"'] if title else []
    lines += [f"LUT_3D_SIZE {size}", "DOMAIN_MIN 0.0 0.0 0.0", "DOMAIN_MAX 1.0 1.0 1.0"]
    lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in out]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
