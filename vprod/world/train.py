"""`vprod train tokenizer|world --data DIR --out DIR`: progress bars, resumable checkpoints, loss plots, bf16 on CPU.

Runs on several processes or machines through torchrun (DistributedDataParallel; gloo on CPU, nccl on GPU):

    torchrun --nproc-per-node 2 -m vprod train tokenizer --data data/worlds --out runs/tok

Each rank draws its own batches (seeded by rank); gradients are averaged; rank 0 writes checkpoints and plots.
The held-out split is the last `holdout` fraction of clips, never trained on.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import load_state, save_state, save_weights
from .tokenizer import Tokenizer, TokenizerConfig, frames_to_tensor


# --- shared plumbing ---
class Dist:
    """Rank, world size and device; DDP set up from torchrun's environment when WORLD_SIZE > 1."""

    def __init__(self, device: str = "auto"):
        torch.set_flush_denormal(True)  # tiny weights/gradients as denormals slow CPU math by orders of magnitude
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}" if device == "cuda" else device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def resume(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, env: Dist) -> tuple[int, float]:
    """Load a run's checkpoint if there is one: (step, seconds trained so far)."""
    state = load_state(path)
    if state is None:
        return 0, 0.0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    if env.main:
        print(f"resuming {path} at step {state['step']}", file=sys.stderr)
    return int(state["step"]), float(state["elapsed"])


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, model: torch.nn.Module) -> None:
    """Backward, gradient norm clipped to 1, one optimizer step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def plot_losses(log_path: Path, png: Path, keys: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.4))
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, keys):
        pts = [(r["step"], r[k]) for r in rows if k in r and r[k] is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, lw=1)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if k.startswith("loss"):
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def split_clips(n: int, holdout: float) -> tuple[list[int], list[int]]:
    k = max(1, int(round(n * holdout))) if n > 1 else 0
    return list(range(n - k)), list(range(n - k, n))


def psnr_batch(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (as uint8 would be measured)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) * 127.5).pow(2).mean().item()
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


# --- tokenizer ---
@dataclass
class TokenizerTrain:
    steps: int = 4000  # optimizer steps
    batch: int = 16  # frames per step per rank
    lr: float = 2e-3
    warmup: int = 100
    crop: tuple[int, int] = (128, 72)  # random crops (w, h) for most steps; full frames for the last `full_frac`
    full_frac: float = 0.2
    pool: int = 12000  # frames loaded into memory from the training clips
    latent_noise: float = 0.3  # max noise (× latent std) on the latents the decoder sees
    holdout: float = 0.05  # fraction of clips held out for evaluation
    eval_frames: int = 256
    eval_every: int = 500
    seed: int = 0
    bf16: bool = True


def load_frame_pool(data: str, clips: list[int], n: int, seed: int) -> np.ndarray:
    from .data import ClipDataset

    ds = ClipDataset(data)
    rng = np.random.default_rng(seed)
    per_clip = max(1, int(math.ceil(n / max(1, len(clips)))))
    out = []
    for ci in clips:
        frames = ds.load(ci, ("frames",))["frames"]
        idx = np.sort(rng.choice(len(frames), size=min(per_clip, len(frames)), replace=False))
        out.append(frames[idx])
        if sum(len(o) for o in out) >= n:
            break
    pool = np.concatenate(out)[:n]
    return pool


def log_step(env: Dist, outp: Path, row: dict, checkpoint: bool, model, opt, step: int, t0: float) -> None:
    """Append a step's row to log.jsonl; on `checkpoint` steps save the resumable state (main process only)."""
    if not env.main:
        return
    with (outp / "log.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    if checkpoint:
        save_state(outp / "checkpoint.pt", model=model.state_dict(), opt=opt.state_dict(), step=step,
                   elapsed=time.monotonic() - t0)


def finish_run(outp: Path, model, kind: str, config_json: str, trained: dict, curves: list[str]) -> dict:
    """Save `<kind>.safetensors` with how it was trained, plot the loss curves, write result.json."""
    weights = outp / f"{kind}.safetensors"
    save_weights(weights, model, kind, config_json, trained)
    plot_losses(outp / "log.jsonl", outp / "loss.png", curves, "world model" if kind == "world" else kind)
    result = {"weights": str(weights), **trained}
    (outp / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def train_tokenizer(data: str, out: str, tcfg: TokenizerTrain | None = None, mcfg: TokenizerConfig | None = None,
                    device: str = "auto", progress: bool = True, command: str = "") -> dict:
    tcfg = tcfg or TokenizerTrain()
    env = Dist(device)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tcfg.seed + env.rank)
    from .data import ClipDataset

    ds = ClipDataset(data)
    train_clips, held = split_clips(len(ds), tcfg.holdout)
    pool = load_frame_pool(data, train_clips, tcfg.pool, tcfg.seed + env.rank)
    evalset = load_frame_pool(data, held, tcfg.eval_frames, 12345)
    H, W = pool.shape[1:3]

    model = Tokenizer(mcfg or TokenizerConfig()).to(env.device)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=0.01, betas=(0.9, 0.99))
    step, elapsed = resume(outp / "checkpoint.pt", model, opt, env)
    net = env.wrap(model)
    rng = np.random.default_rng(tcfg.seed * 1000 + env.rank + step)
    bar = tqdm(total=tcfg.steps, initial=step, desc="tokenizer", disable=not (progress and env.main),
               file=sys.stderr, dynamic_ncols=True)
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=tcfg.bf16)
    t0 = time.monotonic() - elapsed
    while step < tcfg.steps:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, tcfg.steps, tcfg.lr, tcfg.warmup)
        idx = rng.integers(0, len(pool), tcfg.batch)
        batch = pool[idx]
        if step < tcfg.steps * (1 - tcfg.full_frac):
            cw, ch = min(tcfg.crop[0], W), min(tcfg.crop[1], H)
            x0 = int(rng.integers(0, (W - cw) // 8 + 1)) * 8
            y0 = int(rng.integers(0, (H - ch) // 8 + 1)) * 8
            batch = batch[:, y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            batch = batch[:, :, ::-1]
        x = frames_to_tensor(np.ascontiguousarray(batch), env.device)
        with autocast:
            recon, recon_noisy, _ = net(x, latent_noise=tcfg.latent_noise)
        loss_rec = F.mse_loss(recon.float(), x) + 0.5 * F.l1_loss(recon.float(), x)
        loss = loss_rec
        if recon_noisy is not None:
            loss = loss + 0.5 * (F.mse_loss(recon_noisy.float(), x) + 0.5 * F.l1_loss(recon_noisy.float(), x))
        optimizer_step(opt, loss, model)
        step += 1
        bar.update(1)
        row = {"step": step, "loss": env.mean(float(loss.item())), "loss_rec": env.mean(float(loss_rec.item())),
               "lr": opt.param_groups[0]["lr"]}
        if step % tcfg.eval_every == 0 or step == tcfg.steps:
            row["eval_psnr"] = evaluate_tokenizer(model, evalset, env.device)
            bar.set_postfix(psnr=f"{row['eval_psnr']:.2f}")
        log_step(env, outp, row, step % tcfg.eval_every == 0 or step == tcfg.steps, model, opt, step, t0)
    bar.close()
    elapsed = time.monotonic() - t0
    result = {}
    if env.main:
        # Normalize latents: per-channel statistics over the training pool, folded into the model.
        with torch.no_grad():
            zs = []
            for i in range(0, min(len(pool), 2048), 64):
                zs.append(model.encoder(frames_to_tensor(pool[i:i + 64], env.device)).float())
            zc = torch.cat(zs)
            model.set_latent_stats(zc.mean(dim=(0, 2, 3)), zc.std(dim=(0, 2, 3)))
        ps = evaluate_tokenizer(model, evalset, env.device)
        trained = {"data": str(data), "clips": len(ds), "held_out_clips": len(held), "steps": step,
                   "seconds": round(elapsed, 1), "processes": env.world, "device": str(env.device),
                   "train": asdict(tcfg), "heldout_psnr_db": round(ps, 2), "command": command}
        result = finish_run(outp, model, "tokenizer", model.cfg.to_json(), trained, ["loss", "eval_psnr"])
    env.barrier()
    env.close()
    return result


@torch.no_grad()
def evaluate_tokenizer(model: Tokenizer, frames: np.ndarray, device, batch: int = 32) -> float:
    """Mean PSNR (dB) of encode→decode on held-out frames, measured on uint8 output."""
    was = model.training
    model.eval()
    mse = []
    for i in range(0, len(frames), batch):
        x = frames_to_tensor(frames[i:i + batch], device)
        r = model.decode(model.encode(x))
        r8 = ((r.float().clamp(-1, 1) + 1) * 127.5).round()
        x8 = torch.as_tensor(frames[i:i + batch], device=device).movedim(-1, -3).float()
        mse.append(((r8 - x8) ** 2).mean(dim=(1, 2, 3)))
    model.train(was)
    m = torch.cat(mse)
    return float((10 * torch.log10(255.0 ** 2 / m.clamp_min(1e-10))).mean())


# --- world model ---
@dataclass
class WorldTrain:
    steps: int = 3000  # at most this many optimizer steps …
    minutes: float = 0.0  # … or this much training time (0: no limit); the LR schedule follows whichever ends first
    batch: int = 8  # windows per step per rank
    window: int = 5  # frames per training window (T)
    lr: float = 1e-3
    warmup: int = 100
    holdout: float = 0.05
    ctx_noise: float = 0.15  # max noise level on context frames (anti-drift, as GameNGen/DIAMOND)
    shortcut_frac: float = 0.25  # windows trained on the shortcut self-consistency target
    drop_p: float = 0.15  # each condition group dropped at random (classifier-free training)
    max_clips: int = 0  # encode and train on the first N clips only (0: all)
    rollout_frac: float = 0.25  # windows whose context is the model's own detached prediction (residual models)
    rollout_depth: int = 2  # rollout passes: context frames predicted from predicted frames this deep
    rollout_start: float = 0.3  # rollouts begin after this fraction of training (late training)
    rollout_temp: float = 1.0  # noise scale of the rollouts' sampler (the runtime's WorldModel.temperature: 0.75)
    rollout_steps: int = 1  # flow steps of a rollout frame (2: one or two at random, as the runtime's 1/2 steps)
    rollout_noise: bool = False  # rollout frames enter the context noised (level up to ctx_noise), as at run time
    stats_weight: float = 0.0  # weight of the latent-statistics term on rollout windows (see stats_loss)
    residual: bool = True  # new models flow to the change from the previous frame (DynamicsConfig.residual)
    control_film: bool = True  # control features on every token (DynamicsConfig.control_film); also added by --init
    camera: str = ""  # a camera head (motion.json): context frames moved by its flow (DynamicsConfig.camera_context)
    guide_frac: float = 0.2  # windows trained with a guidance scale > 1 on the model's own guided velocity
    guide_max: float = 3.0  # those scales are drawn from 1..guide_max
    eval_every: int = 250
    seed: int = 0
    bf16: bool = True


SHORTCUT_DS = (1 / 8, 1 / 4, 1 / 2)  # d for the self-consistency target (2d = 1/4, 1/2, 1)
SMALLEST_D = SHORTCUT_DS[0]  # steps this small use the flow-matching velocity (d input 0): the ladder's anchor


def d_input(d: torch.Tensor) -> torch.Tensor:
    """The step-size input for a step of size d: 0 (plain flow matching) at or below the smallest shortcut."""
    return torch.where(d <= SMALLEST_D + 1e-6, torch.zeros_like(d), d)


class LatentSet:
    """Datasets encoded by the tokenizer once, end to end: latents (fp16, memory-mapped), controls, families, caption
    embeddings. Clip indices run over the parts in order."""

    def __init__(self, paths: Path | str | Sequence[Path | str]):
        paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        self._z = [np.load(p / "latents.npy", mmap_mode="r") for p in paths]  # (clips, T, C, h, w) float16 each
        if len({z.shape[1:] for z in self._z}) > 1:
            shapes = ", ".join(f"{p}: {z.shape[1:]}" for p, z in zip(paths, self._z))
            raise ValueError(f"the datasets differ in clip length or latent shape ({shapes})")
        self._start = np.cumsum([0] + [len(z) for z in self._z])
        self.shape = (int(self._start[-1]),) + tuple(self._z[0].shape[1:])
        self.controls = np.concatenate([np.load(p / "controls.npy") for p in paths])  # (clips, T, n) float32
        self.family = np.concatenate([np.load(p / "family.npy") for p in paths])  # (clips, T) int16
        texts = [np.load(p / "text.npy") for p in paths]  # (U, 384) float32 each
        offsets = np.cumsum([0] + [len(t) for t in texts])
        self.caption_id = np.concatenate([np.load(p / "caption_id.npy") + o for p, o in zip(paths, offsets)])
        self.text = np.concatenate(texts)

    def __len__(self) -> int:
        return self.shape[0]

    def latents(self, clip: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        part = int(np.searchsorted(self._start, clip, side="right")) - 1
        return self._z[part][clip - self._start[part], start:stop]

    def split(self, holdout: float) -> tuple[list[int], list[int]]:
        """Training and held-out clips: the last `holdout` share of every part is held out."""
        train, held = [], []
        for a, b in zip(self._start[:-1], self._start[1:]):
            t, h = split_clips(int(b - a), holdout)
            train += [int(a) + i for i in t]
            held += [int(a) + i for i in h]
        return train, held


def encode_dataset(data: str, tokenizer_path: str, out: Path, device, progress: bool = True,
                   max_clips: int = 0) -> Path:
    """Encode every clip with the tokenizer (once; reused while the tokenizer file is unchanged)."""
    from .data import ClipDataset
    from .model import load_tokenizer
    from .text import embed

    out.mkdir(parents=True, exist_ok=True)
    stamp = (f"{Path(tokenizer_path).resolve()}:{Path(tokenizer_path).stat().st_mtime_ns}:{Path(data).resolve()}"
             f":{max_clips}")
    if (out / "stamp.txt").exists() and (out / "stamp.txt").read_text() == stamp:
        return out
    ds = ClipDataset(data)
    if max_clips:
        ds.paths = ds.paths[:max_clips]
    tok = load_tokenizer(tokenizer_path).to(device).eval()
    first = ds.load(0, ("frames",))["frames"]
    T = len(first)
    h, w = first.shape[1] // tok.cfg.downsample, first.shape[2] // tok.cfg.downsample
    z = np.lib.format.open_memmap(out / "latents.npy", mode="w+", dtype=np.float16,
                                  shape=(len(ds), T, tok.cfg.latent_channels, h, w))
    controls = np.zeros((len(ds), T, len(ds.control_names)), np.float32)
    family = np.zeros((len(ds), T), np.int16)
    caption_id = np.zeros((len(ds), T), np.int32)
    captions: dict[str, int] = {}
    for i in tqdm(range(len(ds)), desc="encode clips", disable=not progress, file=sys.stderr):
        c = ds[i]
        if len(c["frames"]) != T:
            raise ValueError(f"clip {i} has {len(c['frames'])} frames, the first has {T}: one length per dataset")
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            zi = torch.cat([tok.encode(frames_to_tensor(c["frames"][j:j + 32], device)) for j in range(0, T, 32)])
        z[i] = zi.float().cpu().numpy().astype(np.float16)
        controls[i] = c["controls"]
        family[i] = c["family"]
        caption_id[i] = [captions.setdefault(str(s), len(captions)) for s in c["captions"]]
    z.flush()
    text = embed(list(captions))
    np.save(out / "controls.npy", controls)
    np.save(out / "family.npy", family)
    np.save(out / "caption_id.npy", caption_id)
    np.save(out / "text.npy", text)
    (out / "captions.json").write_text(json.dumps(list(captions)))
    (out / "stamp.txt").write_text(stamp)
    return out


def make_batch(ls: LatentSet, clips: list[int], batch: int, window: int, rng, device, drop_p: float,
               n_families: int, flows: np.ndarray | None = None):
    ci = rng.choice(clips, batch)
    T = ls.shape[1]
    st = rng.integers(0, T - window + 1, batch)
    z = torch.from_numpy(np.stack([ls.latents(c, s, s + window) for c, s in zip(ci, st)]).astype(np.float32)).to(device)
    ctrl = torch.from_numpy(np.stack([ls.controls[c, s:s + window] for c, s in zip(ci, st)])).to(device)
    # the controls one frame earlier (the clip's first frame: its own, i.e. no change)
    prev_ctrl = torch.from_numpy(np.stack([ls.controls[c, np.maximum(np.arange(s, s + window) - 1, 0)]
                                           for c, s in zip(ci, st)])).to(device)
    fam = np.stack([ls.family[c, s:s + window] for c, s in zip(ci, st)]).astype(np.int64)
    fam[fam < 0] = n_families  # footage: 'unknown'
    text = torch.from_numpy(np.stack([ls.text[ls.caption_id[c, s:s + window]] for c, s in zip(ci, st)])).to(device)
    drop = torch.from_numpy(rng.random((batch, 1, 4)) < drop_p).to(device).expand(batch, window, 4).clone()
    drop[..., 1] = True  # no audio in rendered clips: the audio token is always 'absent' here
    cond = {"control": ctrl, "prev_control": prev_ctrl, "audio": torch.zeros(batch, window, 8, device=device),
            "text": text, "family": torch.from_numpy(fam).to(device), "drop": drop}
    if flows is not None:  # the camera's flow from each frame to the next (the window's last: to the frame after it)
        cond["ctx_flow"] = torch.from_numpy(np.stack([flows[c, s + 1:s + window + 1] for c, s in zip(ci, st)])).to(device)
    return z, cond


def clip_flows(ls: LatentSet, camera: str | Path, families: Sequence[str]) -> np.ndarray:
    """(clips, T + 1, 6) camera-head flows of every clip: row t moves frame t−1 to frame t (row 0 and the row past
    the end: no motion)."""
    from .motion import CameraHead

    head = CameraHead.load(camera)
    n, T = ls.controls.shape[:2]
    out = np.zeros((n, T + 1, 6), np.float32)
    for c in range(n):
        names = [families[f] if 0 <= f < len(families) else None for f in ls.family[c]]
        out[c, :T] = head.clip_flows(ls.controls[c], names)
    return out


def to_context(z: torch.Tensor, cond: dict) -> torch.Tensor:
    """Frames (B, T, …) as context: moved by the camera's flow to the next frame (camera-context models)."""
    flow = cond.get("ctx_flow")
    if flow is None:
        return z
    from .motion import warp_affine

    B, T = z.shape[:2]
    return warp_affine(z.flatten(0, 1), flow.reshape(B * T, -1)).view(z.shape)


def residual_base(z_ctx: torch.Tensor) -> torch.Tensor:
    """The latent each frame's change is measured from: the context frame before it (frame 0: itself)."""
    return torch.cat([z_ctx[:, :1], z_ctx[:, :-1]], dim=1)


def sample_frames(net, z_ctx, tau_ctx, cond, base, steps: int, temp: float, rng_t: torch.Generator,
                  scale: float) -> torch.Tensor:
    """Every frame of the windows as the runtime samples it: `steps` flow steps from noise × temp, the change added
    to `base` (residual models). Differentiable (the statistics term trains through it)."""
    B, T = z_ctx.shape[:2]
    ones = torch.ones(B, T, device=z_ctx.device)
    x = temp * torch.randn(z_ctx.shape, generator=rng_t, device=z_ctx.device)
    step = 1.0 / steps
    c = dict(cond, prev=base)
    for i in range(steps):
        v = net(z_ctx, tau_ctx, x, ones * (i * step), d_input(ones * step), c).float()
        x = x + step * v
    return base + scale * x


def noised_context(z: torch.Tensor, max_level: float, rng_t: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (B, T, …) as context: (1 − s)·z + s·noise with s drawn in [0, max_level) per frame; returns them and
    their flow time 1 − s (the level the model is told)."""
    sig = torch.rand(z.shape[:2], generator=rng_t, device=z.device) * max_level
    tau = 1.0 - sig
    noise = torch.randn(z.shape, generator=rng_t, device=z.device)
    return tau[..., None, None, None] * z + sig[..., None, None, None] * noise, tau


def rollout_steps(tcfg: "WorldTrain", rng_t: torch.Generator) -> int:
    """Flow steps for one rollout pass: 1, or 1..rollout_steps at random (the runtime's step counts)."""
    return 1 if tcfg.rollout_steps <= 1 else int(torch.randint(1, tcfg.rollout_steps + 1, (1,), generator=rng_t))


@torch.no_grad()
def self_rollout(net, z_ctx, tau_ctx, cond, scale: float, rng_t: torch.Generator, depth: int,
                 tcfg: "WorldTrain | None" = None):
    """Replace context frames 1.. with the model's own predictions (detached), `depth` times over, so that training
    sees the errors it will make at run time (late-training rollouts against drift). With tcfg's rollout_temp,
    rollout_steps and rollout_noise the predictions are made and enter the context as the runtime does it."""
    tcfg = tcfg or WorldTrain()
    B, T = z_ctx.shape[:2]
    dev = z_ctx.device
    ones = torch.ones(B, T, device=dev)
    for _ in range(depth):
        base = residual_base(z_ctx)
        pred = sample_frames(net, z_ctx, tau_ctx, cond, base, rollout_steps(tcfg, rng_t), tcfg.rollout_temp, rng_t,
                             scale)
        tau_new = ones
        if tcfg.rollout_noise:  # committed as the runtime does, its noise level given
            pred, tau_new = noised_context(pred, tcfg.ctx_noise, rng_t)
        pred = to_context(pred, cond)
        z_ctx = torch.cat([z_ctx[:, :1], pred[:, 1:]], dim=1)
        tau_ctx = torch.cat([tau_ctx[:, :1], tau_new[:, 1:]], dim=1)
    return z_ctx, tau_ctx


def latent_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel: the spatial mean (…, C), the spatial spread (…, C) and the means of a 3×4 grid of regions
    (…, C, 12). What a stream loses first when it drifts (colour, contrast, layout), and what stays comparable when
    the content has moved."""
    flat = z.flatten(-2)
    grid = F.adaptive_avg_pool2d(z.flatten(0, -4), (3, 4)).view(*z.shape[:-2], 12)
    return flat.mean(-1), flat.std(-1), grid


def stats_loss(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Squared distance of the latent statistics of sampled frames from those of the true frames, (B, T): mean,
    spread and regional means count equally."""
    a, b = latent_stats(pred.float()), latent_stats(truth.float())
    return ((a[0] - b[0]).pow(2).mean(-1) + (a[1] - b[1]).pow(2).mean(-1)
            + (a[2] - b[2]).pow(2).mean(dim=(-1, -2)))


def world_loss(model, net, z, cond, tcfg: WorldTrain, rng_t: torch.Generator, rollout_frac: float = 0.0):
    """Flow matching (d = 0) on most windows, the shortcut self-consistency target on the rest.

    Residual models flow to the scaled change from the previous context frame (noised, or the model's own
    prediction in rollout windows), which is also given to them as input; frame 0 has no previous frame and is left
    out of their loss."""
    B, T = z.shape[:2]
    dev = z.device
    residual = model.cfg.residual
    eps = torch.randn(z.shape, generator=rng_t, device=dev)
    # context: clean latents with a little noise, its level given to the model (tau_ctx < 1)
    z_ctx, tau_ctx = noised_context(z, tcfg.ctx_noise, rng_t)
    z_ctx = to_context(z_ctx, cond)
    n_sc = int(round(B * tcfg.shortcut_frac))
    n_ro = min(B - n_sc, int(round(B * rollout_frac))) if residual else 0
    if n_ro:  # the last n_ro windows see their own predictions as context
        sub = {k2: v[B - n_ro:] for k2, v in cond.items()}
        rz, rt = self_rollout(model, z_ctx[B - n_ro:], tau_ctx[B - n_ro:], sub, model.cfg.delta_scale, rng_t,
                              tcfg.rollout_depth, tcfg)
        z_ctx = torch.cat([z_ctx[:B - n_ro], rz])
        tau_ctx = torch.cat([tau_ctx[:B - n_ro], rt])
    x = z
    if residual:
        base = residual_base(z_ctx)
        x = (z - base) / model.cfg.delta_scale
        cond = dict(cond, prev=base)
    tau = torch.rand(B, T, generator=rng_t, device=dev)
    d = torch.zeros(B, T, device=dev)
    target = x - eps  # flow-matching velocity (noise at 0 → data at 1)
    n_g = 0
    if model.cfg.guidance_in:
        # guidance distillation: a share of the non-rollout windows get a scale w > 1; the flow-matching ones
        # learn the classifier-free-guided velocity of the model itself (conditional + w·(cond − uncond)), the
        # shortcut ones stay self-consistent at that w
        g = torch.ones(B, T, device=dev)
        n_g = int(round((B - n_ro) * tcfg.guide_frac))
        if n_g:
            pick = torch.randperm(B - n_ro, generator=rng_t, device=dev)[:n_g]
            g[pick] = 1.0 + torch.rand(n_g, 1, generator=rng_t, device=dev) * (tcfg.guide_max - 1.0)
        cond = dict(cond, guidance=g)
    if n_sc:
        ds = torch.tensor(SHORTCUT_DS, device=dev)[torch.randint(0, len(SHORTCUT_DS), (n_sc, 1), generator=rng_t,
                                                                 device=dev)].expand(n_sc, T)
        # tau on the grid of 2d so that tau + 2d <= 1
        k = torch.floor(torch.rand(n_sc, T, generator=rng_t, device=dev) / (2 * ds))
        tau[:n_sc] = k * 2 * ds
        d[:n_sc] = ds
    zt = (1 - tau)[..., None, None, None] * eps + tau[..., None, None, None] * x
    if n_sc:
        with torch.no_grad():
            sub = {k2: v[:n_sc] for k2, v in cond.items()}
            dq = d_input(d[:n_sc])  # the two half steps; the smallest ones are anchored on flow matching
            s1 = model.forward_train(z_ctx[:n_sc], tau_ctx[:n_sc], zt[:n_sc], tau[:n_sc], dq, sub)
            z2 = zt[:n_sc] + d[:n_sc][..., None, None, None] * s1
            s2 = model.forward_train(z_ctx[:n_sc], tau_ctx[:n_sc], z2, tau[:n_sc] + d[:n_sc], dq, sub)
            target = target.clone()
            target[:n_sc] = 0.5 * (s1 + s2)
            d = d.clone()
            d[:n_sc] = 2 * d[:n_sc]  # the pair of d-steps is the target for one 2d-step
    if n_g:
        fm = torch.zeros(B, dtype=torch.bool, device=dev)
        fm[n_sc:B - n_ro] = True
        sel = fm & (cond["guidance"][:, 0] > 1.0)
        if sel.any():
            with torch.no_grad():
                sub = {k2: v[sel] for k2, v in cond.items()}
                one = dict(sub, guidance=torch.ones_like(sub["guidance"]))
                unc = dict(one, drop=sub["drop"].clone())
                unc["drop"][..., 2:] = True  # prompt and family absent
                args = (z_ctx[sel], tau_ctx[sel], zt[sel], tau[sel], d[sel])
                vc = model.forward_train(*args, one)
                vu = model.forward_train(*args, unc)
                w = sub["guidance"][..., None, None, None]
                target = target.clone()
                target[sel] = (vu + w * (vc - vu)).to(target.dtype)
    pred = net(z_ctx, tau_ctx, zt, tau, d, cond)
    per = (pred.float() - target.float()).pow(2).mean(dim=(2, 3, 4))  # (B, T)
    if residual:
        per = per[:, 1:]
    loss = per.mean()
    st = None
    if n_ro and tcfg.stats_weight > 0:
        # the rollout windows' frames sampled as at run time (gradients through the sampler): their colour, spread
        # and layout should be the true frames' — the model's own context otherwise lets them settle elsewhere
        sub = {k2: v[B - n_ro:] for k2, v in cond.items()}
        zs = sample_frames(net, z_ctx[B - n_ro:], tau_ctx[B - n_ro:], sub, base[B - n_ro:], rollout_steps(tcfg, rng_t),
                           tcfg.rollout_temp, rng_t, model.cfg.delta_scale)
        st = stats_loss(zs[:, 1:], z[B - n_ro:, 1:]).mean()
        loss = loss + tcfg.stats_weight * st
    return loss, {"loss_fm": float(per[n_sc:B - n_ro].mean().detach()) if n_sc < B - n_ro else None,
                  "loss_sc": float(per[:n_sc].mean().detach()) if n_sc else None,
                  "loss_ro": float(per[B - n_ro:].mean().detach()) if n_ro else None,
                  "loss_stats": float(st.detach()) if st is not None else None}


def delta_std(ls: "LatentSet", clips: list[int], n: int = 64) -> float:
    """Std of frame-to-frame latent changes over up to `n` clips (the residual model's scale)."""
    z = np.stack([ls.latents(c).astype(np.float32) for c in clips[:n]])
    return float(np.diff(z, axis=1).std())


def data_dirs(data: str | Sequence[str]) -> list[str]:
    """Dataset folders from `--data A,B` (or a list): their clips are trained on together."""
    dirs = [d.strip() for d in data.split(",")] if isinstance(data, str) else [str(d) for d in data]
    return [d for d in dirs if d]


def train_world(data: str | Sequence[str], out: str, tokenizer: str | None, tcfg: WorldTrain | None = None,
                mcfg=None, device: str = "auto", progress: bool = True, command: str = "", tiny: bool = False,
                init: str | None = None) -> dict:
    from .dynamics import Dynamics, DynamicsConfig
    from .model import WEIGHTS_DIR

    tcfg = tcfg or WorldTrain()
    env = Dist(device)
    if env.world > 1 and tcfg.stats_weight > 0:
        raise ValueError("the latent-statistics term (--stats) runs on one process only: its sampler passes and the "
                         "training pass would be separate DistributedDataParallel forwards")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or str(WEIGHTS_DIR / "tokenizer.safetensors")
    from .data import ClipDataset

    dirs = data_dirs(data)
    families = ClipDataset(dirs[0]).families
    for d in dirs[1:]:
        if ClipDataset(d).families != families or ClipDataset(d).control_names != ClipDataset(dirs[0]).control_names:
            raise ValueError(f"{d}: its families or controls differ from {dirs[0]}'s (one model, one vocabulary)")
    # the first dataset's latents in latents/ (as always), further datasets' in latents-2/, latents-3/, …
    lat = [outp / ("latents" if i == 0 else f"latents-{i + 1}") for i in range(len(dirs))]
    if env.main:
        for d, p in zip(dirs, lat):
            encode_dataset(d, tokenizer, p, env.device, progress, tcfg.max_clips)
    env.barrier()
    ls = LatentSet(lat)
    if mcfg is None and init:
        from .checkpoint import read_metadata

        mcfg = DynamicsConfig.from_json(read_metadata(init)["config"])
    if mcfg is None:
        c, h, w = ls.shape[2:]
        mcfg = DynamicsConfig(latent_channels=c, latent_h=h, latent_w=w, families=max(1, len(families)))
        if tiny:
            mcfg.d_model, mcfg.layers, mcfg.heads, mcfg.context = 64, 2, 4, 2
    if tcfg.residual and not mcfg.residual:  # a new residual model, or a plain one turned residual (--init)
        mcfg.residual = True
        mcfg.delta_scale = round(delta_std(ls, ls.split(tcfg.holdout)[0]), 4)
    if tcfg.guide_frac > 0:
        mcfg.guidance_in = True
    if tcfg.control_film:
        mcfg.control_film = True
    flows = None
    if tcfg.camera:
        mcfg.camera_context = True
        flows = clip_flows(ls, tcfg.camera, families)
    elif mcfg.camera_context:
        raise ValueError("these weights draw frames from camera-moved context: train them with --camera motion.json")
    torch.manual_seed(tcfg.seed + env.rank)
    model = Dynamics(mcfg).to(env.device)
    if init:
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(init), strict=False)  # fine-tuning, fresh optimizer
        if unexpected or any(not k.startswith(("prev_in.", "guide_in.", "control_all.")) for k in missing):
            raise ValueError(f"{init} does not fit this model (missing {missing}, unexpected {unexpected})")
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    step, elapsed = resume(outp / "checkpoint.pt", model, opt, env)
    net = env.wrap(model)
    train_clips, held = ls.split(tcfg.holdout)
    rng = np.random.default_rng(tcfg.seed * 1000 + env.rank + step)
    gen = torch.Generator(device=env.device).manual_seed(tcfg.seed * 7919 + env.rank + step)
    bar = tqdm(total=tcfg.steps, initial=step, desc="world", disable=not (progress and env.main), file=sys.stderr,
               dynamic_ncols=True)
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=tcfg.bf16)
    t0 = time.monotonic() - elapsed
    budget = tcfg.minutes * 60 if tcfg.minutes > 0 else float("inf")

    def progress() -> float:
        return max(step / tcfg.steps, env.mean(time.monotonic() - t0) / budget)

    while progress() < 1.0:
        frac = progress()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(int(frac * 10000), 10000, tcfg.lr, int(10000 * tcfg.warmup / max(tcfg.steps, 1)))
        z, cond = make_batch(ls, train_clips, tcfg.batch, tcfg.window, rng, env.device, tcfg.drop_p, mcfg.families,
                             flows)
        with autocast:
            loss, parts = world_loss(model, net, z, cond, tcfg, gen,
                                     tcfg.rollout_frac if frac >= tcfg.rollout_start else 0.0)
        optimizer_step(opt, loss, model)
        step += 1
        bar.update(1)
        row = {"step": step, "loss": env.mean(float(loss.item())), "lr": opt.param_groups[0]["lr"],
               **{k: v for k, v in parts.items() if v is not None}}
        last = progress() >= 1.0
        if step % tcfg.eval_every == 0 or last:
            with torch.no_grad(), autocast:
                ez, econd = make_batch(ls, held, tcfg.batch, tcfg.window, np.random.default_rng(99), env.device,
                                       0.0, mcfg.families, flows)
                el, _ = world_loss(model, model, ez, econd, tcfg, torch.Generator(device=env.device).manual_seed(5))
            row["eval_loss"] = env.mean(float(el.item()))
            bar.set_postfix(loss=f"{row['loss']:.3f}", eval=f"{row['eval_loss']:.3f}")
        log_step(env, outp, row, step % tcfg.eval_every == 0 or last, model, opt, step, t0)
    bar.close()
    elapsed = time.monotonic() - t0
    result = {}
    if env.main:
        trained = {"data": ",".join(dirs), "clips": len(ls), "held_out_clips": len(held), "steps": step,
                   "seconds": round(elapsed, 1), "processes": env.world, "device": str(env.device),
                   "tokenizer": str(tokenizer), "families": families, "train": asdict(tcfg), "command": command,
                   "init": init or ""}
        result = finish_run(outp, model, "world", mcfg.to_json(), trained,
                            ["loss", "eval_loss"] + (["loss_stats"] if tcfg.stats_weight > 0 else []))
    env.barrier()
    env.close()
    return result
