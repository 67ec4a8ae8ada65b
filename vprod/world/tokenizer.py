"""The tokenizer: a small convolutional autoencoder, frames ↔ latents, 8× down, 8 channels.

256×144 RGB → 32×18×8 latent (2×2 latent patches then make the 144 tokens of a frame). A pixel-unshuffle stem does
the first 2× for free; two strided convolutions do the rest. Latents are normalized per channel (statistics
measured on the training set and stored with the weights), so the dynamics model sees unit-variance inputs. The
decoder is trained on noised latents too, so it turns a generated latent — never quite on the data manifold —
into a clean picture.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TokenizerConfig:
    latent_channels: int = 8  # channels of the latent grid
    widths: tuple[int, ...] = (32, 64, 96)  # conv widths at 1/2, 1/4, 1/8 resolution (decode ≈1.5 GFLOP)
    blocks: int = 1  # residual blocks per resolution
    # per-channel latent mean/std, measured on data after training (identity until then)
    latent_mean: list[float] = field(default_factory=lambda: [0.0] * 8)
    latent_std: list[float] = field(default_factory=lambda: [1.0] * 8)

    @property
    def downsample(self) -> int:
        return 2 ** len(self.widths)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TokenizerConfig":
        d = json.loads(text)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        w = cfg.widths
        self.stem = nn.Conv2d(3 * 4, w[0], 3, padding=1)  # after pixel-unshuffle(2)
        layers: list[nn.Module] = []
        for i, ch in enumerate(w):
            layers += [ResBlock(ch) for _ in range(cfg.blocks)]
            if i + 1 < len(w):
                layers.append(nn.Conv2d(ch, w[i + 1], 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(w[-1], cfg.latent_channels, 1)

    def forward(self, x):
        return self.out(F.silu(self.body(self.stem(F.pixel_unshuffle(x, 2)))))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        w = cfg.widths[::-1]
        self.inp = nn.Conv2d(cfg.latent_channels, w[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, ch in enumerate(w):
            layers += [ResBlock(ch) for _ in range(cfg.blocks)]
            if i + 1 < len(w):
                layers += [nn.Conv2d(ch, w[i + 1] * 4, 3, padding=1), nn.PixelShuffle(2)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(w[-1], 3 * 4, 3, padding=1)  # then pixel-shuffle(2) to full size

    def forward(self, z):
        return F.pixel_shuffle(self.out(F.silu(self.body(self.inp(z)))), 2)


class Tokenizer(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] ↔ normalized latents (B, C, H/8, W/8)."""

    def __init__(self, cfg: TokenizerConfig | None = None):
        super().__init__()
        self.cfg = cfg or TokenizerConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        c = self.cfg.latent_channels
        self.register_buffer("mean", torch.tensor(self.cfg.latent_mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(self.cfg.latent_std, dtype=torch.float32).view(1, c, 1, 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (self.encoder(x) - self.mean) / self.std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z * self.std + self.mean)

    def forward(self, x: torch.Tensor, latent_noise: float = 0.0):
        """Training pass: (reconstruction, reconstruction from noised latents or None, raw latent).

        The noised copy has per-sample noise up to `latent_noise` × the latent's std: the decoder learns to clean
        imperfect latents. Both decodes run as one batch (one decoder call, DDP-friendly)."""
        z = self.encoder(x)
        if latent_noise <= 0:
            return self.decoder(z), None, z
        sigma = torch.rand(z.shape[0], 1, 1, 1, device=z.device, dtype=z.dtype) * latent_noise
        zn = z.detach() + sigma * z.detach().std() * torch.randn_like(z)
        r = self.decoder(torch.cat([z, zn]))
        return r[: len(z)], r[len(z):], z

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fold measured raw-latent statistics into the normalization (mean/std per channel)."""
        self.mean.copy_(mean.view_as(self.mean))
        self.std.copy_(std.clamp_min(1e-4).view_as(self.std))
        self.cfg.latent_mean = [float(v) for v in mean.flatten()]
        self.cfg.latent_std = [float(v) for v in std.clamp_min(1e-4).flatten()]


def frames_to_tensor(frames, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """uint8 (..., H, W, 3) numpy/tensor → (..., 3, H, W) in [-1, 1]."""
    t = torch.as_tensor(frames, device=device)
    t = t.movedim(-1, -3).to(dtype)
    return t / 127.5 - 1.0


def tensor_to_frames(x: torch.Tensor):
    """(..., 3, H, W) in [-1, 1] → uint8 numpy (..., H, W, 3)."""
    x = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
