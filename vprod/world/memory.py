"""The world's memory: a latent panorama of the world around the camera that each new frame is pulled towards.

The dynamics alone forget the world: each frame is drawn from the last few, their small errors compound, and within
~30 frames (1 s) a terrain or a city has washed out into a lavender haze (docs/world-model, "The world's memory").
The memory keeps what the world looks like where the camera is:

- a canvas of latent cells, `pad` cells more above and below the picture (rows beyond it mirrored), made from the
  opening frame and, beside it, the same frame mirrored left to right (encoded as a picture of its own, so the
  mirror is exact in pixels): a cylinder around the camera twice the picture wide, with no seam — turning the camera
  shows the world's mirror image and then the world again, and pitching it looks at the rows above or below. (A
  cylinder one picture wide joined the picture's right edge to its left: a hard vertical seam crossed the picture
  whenever the camera turned.);
- the window the camera sees, moved by whole cells as the camera head moves the picture (vprod.world.motion, cells
  mode) — exact, so nothing blurs however far the camera turns;
- each new frame is pulled some of the way to the window (WorldModel.memory_pull);
- the knobs' look (daylight, hue, fog, …) reaches the canvas through the look head, always from the canvas as it was
  made and the knobs it was made under, so that a knob walked back and forth for hours leaves no trace (its changes
  added up frame by frame drifted the stream to black in the evaluation); the frames follow it by the pull, boosted
  for a few frames after each change (WorldModel.look_pull).

A reset starts a new canvas from its opening frame; a new family one from the renderer's opening view of that
family, dissolved in over WorldModel.memory_fade_frames (90) so the picture turns rather than cuts; a zoom the lens
has magnified far, one from the same view at that zoom, dissolved in from the picture as shown
(WorldModel.lens_refocus).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def mirror_rows(z: torch.Tensor, pad: int) -> torch.Tensor:
    """z (…, H, W) with `pad` rows mirrored above and below (a new tensor): the canvas's rows as the look head sees
    them (vprod.world.look trains on them too)."""
    if pad <= 0:
        return z.clone()
    h = z.shape[-2]
    p = min(pad, h - 1)
    top = z[..., 1:p + 1, :].flip(-2)
    bottom = z[..., -p - 1:-1, :].flip(-2)
    ext = torch.cat([top, z, bottom], dim=-2)
    if p < pad:  # a very short picture: repeat the edge rows for the rest
        ext = torch.nn.functional.pad(ext, (0, 0, pad - p, pad - p), mode="replicate")
    return ext


class WorldMemory:
    """A latent canvas (C, H + 2·pad, 2·W) around the camera and the window (C, H, W) it sees now.

    `mirror`: the latent of the opening frame mirrored left to right (its own encoding); None: z's cells in mirrored
    order (close: the cells' own insides stay unmirrored). (WorldModel.ring_latents encodes the two as one picture,
    so that no cell of the canvas is an edge cell.) `edge` (1, C, H, W): what the encoder's padding adds to the
    picture's edge cells (zero inside), added to every window: the picture's edge cells as the tokenizer makes and
    draws them, wherever the window is."""

    def __init__(self, z: torch.Tensor, controls: torch.Tensor | None = None, pad: int = 4,
                 mirror: torch.Tensor | None = None, edge: torch.Tensor | None = None):
        self.pad = int(pad)
        self.h, self.w = z.shape[-2:]
        self.controls = controls  # the knobs the canvas was made under (the look head's starting point)
        self._make(z, mirror, edge)
        self.canvas = self.whole(None)
        self.ox, self.oy = 0, 0  # the window's offset in cells: columns (any), rows (−pad..pad)
        self._fade: _Fade | None = None  # a new canvas fading in over the old one
        self._glide: _Glide | None = None  # a look change on its way in
        self._other: tuple | None = None  # the same world made under other knobs (add_made): base, mirror, edge, knobs
        # a making its maker adds once the knobs come nearer to it (WorldModel: the world in daylight), or None
        self.to_make = None

    def _make(self, z: torch.Tensor, mirror: torch.Tensor | None, edge: torch.Tensor | None) -> None:
        """The canvas's two halves as made: the picture's (`base`) and its mirror image's; the edge cells' part."""
        self.base, self.mirror_base = self._halves(z, mirror)
        self.edge_made = edge  # as made; `edge` follows the look (relook's edge_change)
        self.edge = edge

    def _halves(self, z: torch.Tensor, mirror: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The picture's half and the mirror image's (z's cells mirrored if not given), with the pad rows."""
        return mirror_rows(z, self.pad), mirror_rows(z.flip(-1) if mirror is None else mirror, self.pad)

    def whole(self, change: torch.Tensor | None) -> torch.Tensor:
        """The canvas: the picture's half with the look `change` (of the half as made), and the mirror half with the
        change mirrored (the look head runs on the picture's half only: a look is a smooth field)."""
        if change is None:
            return torch.cat([self.base, self.mirror_base], -1)
        return torch.cat([self.base + change, self.mirror_base + change.flip(-1)], -1)

    # --- the window ---
    def _crop(self, canvas: torch.Tensor, ox: int, oy: int, edge: torch.Tensor | None) -> torch.Tensor:
        """The window of `canvas` at offset (ox, oy), with the picture's `edge` cells' part."""
        oy = max(-self.pad, min(self.pad, oy))
        ox %= 2 * self.w
        rows = canvas[..., self.pad + oy:self.pad + oy + self.h, :]
        if ox == 0:
            win = rows[..., :self.w]
        elif ox <= self.w:
            win = torch.cat([rows[..., -ox:], rows[..., :self.w - ox]], -1)
        else:
            win = rows[..., 2 * self.w - ox:3 * self.w - ox]
        return win if edge is None else win + edge

    def window(self, dx: int = 0, dy: int = 0) -> torch.Tensor:
        """What the camera sees — after a move of the picture by (dx, dy) cells, if given (nothing is moved)."""
        return self._crop(self.canvas, self.ox + int(dx), self.oy - int(dy), self.edge)

    def shift(self, kx: int, ky: int) -> None:
        """The picture moved by (kx, ky) whole cells (content right / down): the window moves the other way (the
        window on an old canvas fading out with it)."""
        self.ox += int(kx)
        self.oy = max(-self.pad, min(self.pad, self.oy - int(ky)))
        if self._fade is not None:
            f = self._fade
            f.ox += int(kx)
            f.oy = max(-self.pad, min(self.pad, f.oy - int(ky)))

    @property
    def fading(self) -> bool:
        """Whether a new canvas is fading in (replace) now."""
        return self._fade is not None

    def _faded(self) -> float | torch.Tensor:
        """How far the fade has come (0 … 1, smooth at both ends); 1 when none is under way. A fade with an `order`
        answers per cell of the window (1, 1, H, W): each cell fades over `local` of the fade, starting `order` ×
        (1 − local) of the way through it."""
        if self._fade is None:
            return 1.0
        f = self._fade
        a = f.done / f.total
        if f.order is not None:
            a = ((a - f.order * (1.0 - f.local)) / f.local).clamp(0.0, 1.0)[None, None]
        return a * a * (3 - 2 * a)

    def edge_now(self) -> torch.Tensor | None:
        """The picture's edge cells' part now (while a new canvas fades in, the old one's faded to it)."""
        if self._fade is None or self._fade.edge is None or self.edge is None:
            return self.edge
        return self._fade.edge + self._faded() * (self.edge - self._fade.edge)

    # --- each frame ---
    def apply(self, z: torch.Tensor, pull: float, dx: int = 0, dy: int = 0) -> torch.Tensor:
        """The new frame `z` pulled `pull` of the way towards what the memory holds at the window (moved by (dx, dy)
        cells: where z is, if not at the window)."""
        self._glide_on()
        if self._fade is not None:  # a new canvas fading in: one frame further
            self._fade.done += 1
        target = self.target(dx, dy)
        if self._fade is not None and self._fade.done >= self._fade.total:
            self._fade = None
        return z + pull * (target - z)

    def target(self, dx: int = 0, dy: int = 0) -> torch.Tensor:
        """What the memory holds at the window moved by (dx, dy) (see window) — while a new canvas fades in, the old
        canvas's window there (it turns with the camera too) faded towards it as far as the last apply() took it."""
        win = self.window(dx, dy)
        if self._fade is None:
            return win
        f = self._fade
        old = self._crop(f.canvas, f.ox + int(dx), f.oy - int(dy), f.edge)
        return old + self._faded() * (win - old)

    def relook(self, change: torch.Tensor, frames: int = 0, edge_change: torch.Tensor | None = None) -> None:
        """The look head's change of the canvas as made (`base`, under `controls`) to the knobs now: at once, or in
        equal parts over the next `frames` frames (apply() takes a part each), so the pull moves no frame by more
        than a part of it. `edge_change`: the same knobs' change of the edge cells' part as made (the encoder's
        padding adds to a dark picture's edges what it does not add to a bright one's: WorldModel._canvas_look);
        None leaves the edge part as it is."""
        edge_end = self.edge if edge_change is None or self.edge_made is None else self.edge_made + edge_change
        if frames <= 1:
            self.canvas, self.edge, self._glide = self.whole(change), edge_end, None
        else:
            self._glide = _Glide(self.canvas[..., :self.w] - self.base, change, self.edge, edge_end, 0, int(frames))

    def _glide_on(self) -> None:
        g = self._glide
        if g is not None:
            g.done += 1
            a = g.done / g.total
            self.canvas = self.whole(g.start + a * (g.end - g.start))
            if g.edge_end is not None and g.edge_start is not None:
                self.edge = g.edge_start + a * (g.edge_end - g.edge_start)
            if g.done >= g.total:
                self._glide = None

    # --- the same world made under other knobs ---
    def add_made(self, z: torch.Tensor, controls: torch.Tensor, mirror: torch.Tensor | None = None,
                 edge: torch.Tensor | None = None) -> None:
        """The same world made under other knobs too (`z`, `mirror`, `edge` as at __init__): the look head starts
        from whichever of the two was made under knobs nearer the knobs asked for (prefer)."""
        self._other = (*self._halves(z, mirror), edge, controls)

    def other_knobs(self) -> torch.Tensor | None:
        """The knobs of the world's other making — made (add_made) or still to make (to_make) —, or None."""
        if self._other is not None:
            return self._other[3]
        return None if self.to_make is None else self.to_make[0]

    def nearest(self, c: torch.Tensor, distance) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(base, knobs made under, edge part as made) of the making nearest `c` by `distance(knobs, c)`."""
        if self._other is not None and self.controls is not None and \
                distance(self._other[3], c) < distance(self.controls, c):
            return self._other[0], self._other[3], self._other[2]
        return self.base, self.controls, self.edge_made

    def prefer(self, c: torch.Tensor, distance) -> None:
        """Make the look start from the making nearest `c` (the picture as it is stays: the next relook goes on from
        it; a glide under way stops where it has come)."""
        if self.nearest(c, distance)[0] is self.base:
            return
        self._glide = None
        was = (self.base, self.mirror_base, self.edge_made, self.controls)
        self.base, self.mirror_base, self.edge_made, self.controls = self._other
        self._other = was

    def replace(self, z: torch.Tensor, controls: torch.Tensor | None = None, fade_frames: int = 0,
                old: torch.Tensor | None = None, mirror: torch.Tensor | None = None,
                edge: torch.Tensor | None = None, order: torch.Tensor | None = None, local: float = 1.0) -> None:
        """A new canvas from `z` (the new world's opening latent, under `controls`; `mirror` and `edge` as at
        __init__), faded in over `fade_frames` from the canvas now (or from `old`: the canvas now under the new knobs,
        when a prompt changed them too), which turns on with the camera while it fades out. `order` (H, W), 0 … 1:
        the window's cells fade one after another in that order, each over `local` of the fade (see _faded);
        None: all at once."""
        canvas, edge_was = self.canvas if old is None else old, self.edge
        if self._fade is not None:  # a fade under way: from where it has come (the old canvas lined up with this)
            f, a = self._fade, self._faded()
            a = float(a.mean()) if isinstance(a, torch.Tensor) else a  # (a fade in order: how far it is in all)
            was = torch.roll(f.canvas, f.ox - self.ox, -1)
            canvas = was + a * (canvas - was)
            if f.edge is not None and edge_was is not None:
                edge_was = f.edge + a * (edge_was - f.edge)
        fade = _Fade(canvas, edge_was, self.ox, self.oy, 0, int(fade_frames), order, float(local))
        self._make(z, mirror, edge)
        self.controls, self._other, self.to_make = controls, None, None
        self.canvas, self._glide = self.whole(None), None
        self.ox, self.oy = 0, 0
        self._fade = fade if fade_frames > 0 else None


@dataclass
class _Glide:
    """A look change on its way into the canvas (the change of the half as made) and the edge cells' part."""

    start: torch.Tensor
    end: torch.Tensor
    edge_start: torch.Tensor | None
    edge_end: torch.Tensor | None
    done: int
    total: int


def outer_cells(x: torch.Tensor, k: int) -> torch.Tensor:
    """x with its cells more than `k` in from every edge set to zero (a new tensor)."""
    x = x.clone()
    x[..., k:-k, k:-k] = 0
    return x


@dataclass
class _Fade:
    """An old canvas fading out: its window's offset (moved with the camera), its edge cells' part, how far, and
    the order its window's cells fade in (None: all at once), each over `local` of it."""

    canvas: torch.Tensor
    edge: torch.Tensor | None
    ox: int
    oy: int
    done: int
    total: int
    order: torch.Tensor | None = None
    local: float = 1.0
