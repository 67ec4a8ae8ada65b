"""The look head: how a knob change alters the picture at once, as a change of the latent.

The dynamics learns what the controls do from clips, and it learns the slow part (motion, the animation clock) far
better than the instant part: a knob that darkens, tints, fogs or zooms the picture at once moved the dynamics'
prediction by under 0.1 of the latent change the renderer makes (vprod/world/weights/README.md has the figures).
The look head is trained on exactly that instant part: the renderer draws the same moment (same camera, clock and
content) under two control vectors, both frames go through the tokenizer, and a small convolutional network learns
the latent change from (latent before, controls before, controls after). At run time the world model adds it to
each new latent whose controls differ from the previous frame's; the dynamics then carries the new look on.

    vprod train look --out runs/look1            # renders its own pairs; weights + loss plot + held-out figures
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import NUM_CONTROLS


@dataclass
class LookConfig:
    latent_channels: int = 8
    width: int = 64  # conv channels
    layers: int = 3  # conditioned 3×3 conv layers between the stem and the output
    n_controls: int = NUM_CONTROLS
    # the picture as a whole reaches every cell: its mean features join the knobs in each layer's scale and shift
    # (a fog's or a dusk's colour is the whole sky's, not the 11 cells a stack of 3×3 layers sees)
    pooled: bool = False
    dilations: tuple[int, ...] = ()  # per conditioned layer (default 1 each): a wider view of the picture's depth

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "LookConfig":
        d = json.loads(text)
        d["dilations"] = tuple(d.get("dilations", ()))
        return cls(**d)


class LookNet(nn.Module):
    """(latent, controls before, controls after) → latent change. Zero change when the controls are equal."""

    def __init__(self, cfg: LookConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LookConfig()
        w = cfg.width
        dil = tuple(cfg.dilations) or (1,) * cfg.layers
        if len(dil) != cfg.layers:
            raise ValueError(f"LookConfig.dilations has {len(dil)} values for {cfg.layers} layers")
        self.dilations = dil
        self.stem = nn.Conv2d(cfg.latent_channels, w, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(w, w, 3, padding=d, dilation=d) for d in dil)
        self.film = nn.Sequential(nn.Linear(3 * cfg.n_controls, 128), nn.SiLU(), nn.Linear(128, 2 * w * cfg.layers))
        self.pool = nn.Linear(w, 128) if cfg.pooled else None  # the picture's mean features into the film
        self.out = nn.Conv2d(w, cfg.latent_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def reach(self) -> int:
        """How many cells away a cell's change can see (the stack's receptive radius)."""
        return 2 + sum(self.dilations)

    def forward(self, z: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.stem(z))
        knobs = torch.cat([c0, c1, c1 - c0], dim=-1)
        if self.pool is None:
            film = self.film(knobs)
        else:  # the first layer's features joined by the picture's mean
            film = self.film[2](self.film[1](self.film[0](knobs) + self.pool(h.mean(dim=(-2, -1)))))
        scale_shift = film.view(z.shape[0], -1, 2, self.cfg.width)
        for i, conv in enumerate(self.convs):
            s, b = scale_shift[:, i, 0, :, None, None], scale_shift[:, i, 1, :, None, None]
            h = h + F.silu(conv(h) * (1 + s) + b)
        # the change is exactly zero where the controls did not change (no drift from a still knob)
        moved = (c1 - c0).abs().amax(dim=-1).gt(0).to(z.dtype)[:, None, None, None]
        return self.out(h) * moved


# ---------------------------------------------------------------------------------------------------------------
# Pairs: the same moment under two control vectors


def render_pairs(n_states: int, per_state: int = 4, width: int = 256, height: int = 144, seed: int = 0,
                 progress: bool = True) -> dict[str, np.ndarray]:
    """`n_states` moments (random family, seed, controls and 0–20 frames of travel), each drawn under its own
    controls and under `per_state` changed ones (1–4 knobs set anew; one in eight unchanged)."""
    from tqdm import tqdm

    from .render import FAMILIES, Renderer

    rng = np.random.default_rng([seed, 11])
    r = Renderer(width, height)
    before, after, c0s, c1s = [], [], [], []
    for _ in tqdm(range(n_states), desc="look pairs", unit="moment", disable=not progress, file=sys.stderr):
        c = rng.uniform(0, 1, NUM_CONTROLS)
        r.reset(int(rng.integers(1 << 30)), FAMILIES[int(rng.integers(len(FAMILIES)))], c)
        for _ in range(int(rng.integers(0, 21))):
            c = np.clip(c + rng.normal(0, 0.02, NUM_CONTROLS), 0, 1)
            r.step(c)
        f0 = r.render(c)
        for _ in range(per_state):
            c1 = c.copy()
            if rng.random() >= 1 / 8:
                k = rng.choice(NUM_CONTROLS, size=int(rng.integers(1, 5)), replace=False)
                c1[k] = rng.uniform(0, 1, len(k))
            before.append(f0)
            after.append(r.render(c1))
            c0s.append(c)
            c1s.append(c1)
    return {"before": np.stack(before), "after": np.stack(after), "c0": np.asarray(c0s, np.float32),
            "c1": np.asarray(c1s, np.float32)}


# ---------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class LookTrain:
    states: int = 1500  # rendered moments (× per_state pairs)
    per_state: int = 4
    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    holdout: float = 0.1
    seed: int = 0
    # with the memory on, the look head changes the memory's canvas: the picture with this many rows mirrored above
    # and below (WorldModel.memory_pad). This share of the batches is shown so (both latents' rows mirrored alike)
    pad: int = 0
    pad_share: float = 0.5


def train_look(out: str, tokenizer: str | None = None, tcfg: LookTrain | None = None, progress: bool = True,
               command: str = "", width: int = LookConfig.width, pooled: bool = False,
               dilations: tuple[int, ...] = ()) -> dict:
    from tqdm import tqdm

    from .memory import mirror_rows
    from .model import WEIGHTS_DIR, load_tokenizer
    from .tokenizer import frames_to_tensor
    from .train import cosine_lr, finish_run, optimizer_step

    tcfg = tcfg or LookTrain()
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or str(WEIGHTS_DIR / "tokenizer.safetensors")
    tok = load_tokenizer(tokenizer)
    t0 = time.monotonic()
    pairs = render_pairs(tcfg.states, tcfg.per_state, seed=tcfg.seed, progress=progress)

    @torch.no_grad()
    def encode(frames: np.ndarray, what: str) -> torch.Tensor:
        chunks = tqdm(range(0, len(frames), 64), desc=f"encode {what}", disable=not progress, file=sys.stderr)
        return torch.cat([tok.encode(frames_to_tensor(frames[i:i + 64])).float() for i in chunks])

    z0, z1 = encode(pairs["before"], "before"), encode(pairs["after"], "after")
    c0, c1 = torch.from_numpy(pairs["c0"]), torch.from_numpy(pairs["c1"])
    n = len(z0)
    n_held = max(1, round(n * tcfg.holdout / tcfg.per_state)) * tcfg.per_state  # whole moments held out
    he = slice(n - n_held, n)  # held-out moments: the last ones (training draws from 0 .. n - n_held)
    torch.manual_seed(tcfg.seed)
    model = LookNet(LookConfig(latent_channels=z0.shape[1], width=width, pooled=pooled,
                               layers=len(dilations) or LookConfig.layers, dilations=tuple(dilations)))
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(tcfg.seed)
    log = outp / "log.jsonl"
    log.write_text("")
    bar = tqdm(range(tcfg.steps), desc="look", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, tcfg.steps, tcfg.lr, 50)
        i = torch.from_numpy(rng.integers(0, n - n_held, tcfg.batch))
        zb, target = z0[i], z1[i] - z0[i]
        if tcfg.pad > 0 and rng.random() < tcfg.pad_share:
            zb, target = mirror_rows(zb, tcfg.pad), mirror_rows(target, tcfg.pad)
        loss = F.mse_loss(model(zb, c0[i], c1[i]), target)
        optimizer_step(opt, loss, model)
        row = {"step": step + 1, "loss": float(loss.item())}
        if (step + 1) % 250 == 0 or step + 1 == tcfg.steps:
            row["eval_loss"] = held_out_mse(model, z0[he], c0[he], c1[he], z1[he])
            bar.set_postfix(eval=f"{row['eval_loss']:.4f}")
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
    model.eval()
    figures = look_figures(model, tok, pairs, z0, he)
    trained = {"pairs": n, "held_out_pairs": n_held, "steps": tcfg.steps, "seconds": round(time.monotonic() - t0, 1),
               "tokenizer": tokenizer, "train": asdict(tcfg), "held_out": figures, "command": command}
    return finish_run(outp, model, "look", model.cfg.to_json(), trained, ["loss", "eval_loss"])


@torch.no_grad()
def held_out_mse(model: LookNet, z0, c0, c1, z1) -> float:
    return float(F.mse_loss(model(z0, c0, c1), z1 - z0))


@torch.no_grad()
def look_figures(model: LookNet, tok, pairs: dict, z0: torch.Tensor, held: slice) -> dict:
    """Held-out PSNR of the 'after' frame: the look head's prediction, the unchanged 'before' frame (what a model
    that ignores the knob shows) and the tokenizer's own round trip of 'after' (the ceiling)."""
    from .metrics import psnr
    from .tokenizer import frames_to_tensor, tensor_to_frames

    after = pairs["after"][held]
    moved = np.abs(pairs["c1"][held] - pairs["c0"][held]).max(1) > 0
    c0, c1 = torch.from_numpy(pairs["c0"][held]), torch.from_numpy(pairs["c1"][held])
    zb = z0[held]
    pred = tensor_to_frames(tok.decode(zb + model(zb, c0, c1)))
    same = tensor_to_frames(tok.decode(zb))
    ceil = tensor_to_frames(tok.decode(tok.encode(frames_to_tensor(after))))

    def mean_psnr(x):
        return round(float(np.mean([psnr(a, b) for a, b in zip(x[moved], after[moved])])), 2)

    return {"moved_pairs": int(moved.sum()), "psnr_look_head_db": mean_psnr(pred),
            "psnr_unchanged_db": mean_psnr(same), "psnr_tokenizer_ceiling_db": mean_psnr(ceil)}


def load_look(path: str | Path) -> LookNet:
    from .checkpoint import load_weights

    model, _ = load_weights(path, lambda cfg: LookNet(LookConfig.from_json(cfg)), "look")
    return model.eval()
