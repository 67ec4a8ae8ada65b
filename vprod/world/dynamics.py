"""The dynamics model: a transformer causal frame by frame over latent patch tokens, conditions in the same stream.

One frame is a group of tokens: condition tokens (control vector, audio features, text embedding, family) and the
144 patch tokens of its 32×18×8 latent (2×2 patches). A frame attends to itself (both ways), to a rolling cache of
the last `context` frames, and to a few learned, content-free sink tokens — so each frame costs the same forever.
Time enters as rotary position on frame index (periods that divide 1024, so `t mod 1024` is exact forever).

Sampling is flow matching (noise at τ=0 → data at τ=1) with the shortcut-model step-size input `d`, so 1, 2 or 4
steps come from one set of weights; guidance is distilled into the training targets (one pass per step).

Training sees a window of T frames twice: a clean stream (slightly noised, as context) and a noisy stream (the
targets). Noisy frame i attends to clean frames i-context..i-1 — exactly what the cache holds at run time.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

COND_GROUPS = ("control", "audio", "text", "family")
GUIDANCE_SPAN = 4.0  # guidance scales 1..1+GUIDANCE_SPAN map to the embedding's 0..1


@dataclass
class DynamicsConfig:
    latent_channels: int = 8  # channels of the tokenizer's latent
    latent_h: int = 18  # latent grid height (144 / 8)
    latent_w: int = 32  # latent grid width (256 / 8)
    patch: int = 2  # latent patch height: a patch of 2×patch_w×8 latent values is one token
    patch_w: int = 4  # latent patch width (2×4 patches: 72 tokens for a 18×32 latent)
    # Sized for two CPU cores (trained in ~40 min there, ~1 GFLOP per frame at 2 steps); a GPU takes d_model
    # 512–768, 12–16 layers and a longer context with the same code.
    d_model: int = 128  # transformer width
    layers: int = 5  # transformer blocks
    heads: int = 4  # attention heads (head size 32)
    mlp_ratio: float = 4.0  # MLP hidden size / d_model
    context: int = 3  # past frames each frame attends to (the KV cache length, in frames)
    sinks: int = 4  # learned content-free tokens every frame attends to
    n_controls: int = 8  # control vector length (vprod.world.CONTROL_NAMES)
    audio_dim: int = 8  # audio feature vector length
    text_dim: int = 384  # sentence-embedding size (all-MiniLM-L6-v2)
    families: int = 6  # renderer families (+1 'unknown' id = families)
    rope_time_dims: int = 8  # per-head dims rotated by frame index
    # Residual flow: the sampler makes the change from the previous frame's latent (scaled by delta_scale), and each
    # noisy frame also sees that latent as input (patch by patch). A model that knows nothing predicts 'no change'
    # rather than noise, and errors in its own previous frame are corrected rather than compounded.
    residual: bool = False
    delta_scale: float = 1.0  # std of frame-to-frame latent changes in the training data
    # Distilled guidance: the guidance scale is an input (cond["guidance"]), trained on the model's own
    # classifier-free-guided velocities, so one pass per step gives the guided result.
    guidance_in: bool = False
    # Control FiLM: features of the control vector and of its change since the previous frame are added to every token
    # of the frame (as the flow time is), not only carried by the control token — measured: a model with the token
    # alone changed its picture by < 1.2 grey levels when a knob moved where the renderer changed by 7-51.
    control_film: bool = False
    # Camera context: each context frame is moved by the camera head's flow (vprod.world.motion) to where the camera
    # goes next, before the next frame is drawn from it; the model makes what the camera head cannot (what comes in
    # at the edges, parallax, animation). The runtime then warps its newest context frame the same way.
    camera_context: bool = False

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_h // self.patch) * (self.latent_w // self.patch_w)

    @property
    def cond_tokens(self) -> int:
        return len(COND_GROUPS)

    @property
    def frame_tokens(self) -> int:
        return self.cond_tokens + self.tokens_per_frame

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "DynamicsConfig":
        return cls(**json.loads(text))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of a scalar per batch element (t in 0..1 scaled ×1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_angles(frame_index: torch.Tensor, dims: int) -> torch.Tensor:
    """Rotation angles for frame indices; periods are powers of two (2..2^(dims/2)·…) so `index mod 1024` is exact."""
    periods = 2.0 ** torch.arange(2, 2 + dims // 2, device=frame_index.device, dtype=torch.float32)  # 4,8,16,…
    idx = (frame_index % 1024).float()
    return idx[..., None] * (2 * math.pi / periods)


def rope_tables(angles: torch.Tensor, dims: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation tables for `rotate`: angles (B, L, dims/2) → cos and signed sin, each (B, 1, L, head_dim); the
    channels past `dims` keep cos 1, sin 0. Made once per pass and shared by every layer (and by q and k)."""
    b, n = angles.shape[:2]
    cos = torch.ones(b, 1, n, head_dim, device=angles.device)
    sin = torch.zeros(b, 1, n, head_dim, device=angles.device)
    if dims:
        cos[..., :dims] = angles.cos().repeat_interleave(2, dim=-1)[:, None]
        s = angles.sin()[:, None]
        sin[..., 0:dims:2] = -s
        sin[..., 1:dims:2] = s
    return cos, sin


def rotate(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate each pair of channels (2i, 2i+1) of the last dimension by its angle:
    (a, b) → (a·cos − b·sin, b·cos + a·sin)."""
    cos, sin = tables
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (b, a) for each pair (a, b)
    return x * cos.to(x.dtype) + swapped * sin.to(x.dtype)


def gelu_tanh_inference(u: torch.Tensor) -> torch.Tensor:
    """GELU's tanh form, 0.5·u·(1 + tanh(c·(u + 0.044715·u³))), as u·sigmoid(2c·(…)) — the same function (equal to
    within float rounding) at 0.6× the time on a CPU, whose tanh is slow (76×512 values: 41 µs against 69 µs), worked
    in place on one new tensor; for inference (no gradient through the in-place steps)."""
    t = u * u
    return t.mul_(0.044715).add_(1.0).mul_(u).mul_(2.0 * math.sqrt(2.0 / math.pi)).sigmoid_().mul_(u)


class Block(nn.Module):
    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        hidden = int(d * cfg.mlp_ratio)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    # The layers are called through torch.nn.functional with their own weights: the same arithmetic as calling the
    # modules, without a module call's Python overhead (8–16 µs each, against 31–109 µs for the matmuls here).
    def qkv_heads(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                  qkv: tuple[torch.Tensor, torch.Tensor] | None = None):
        """rope: rope_tables() of the tokens' frame indices, or None (no rotation: the sinks, or a frame whose
        turn is in `qkv`: the qkv weight and bias with the frame's rotation folded in, Dynamics.turned_qkv)."""
        b, n, d = x.shape
        n1 = self.norm1
        w, bias = qkv or (self.qkv.weight, self.qkv.bias)
        qkv = F.linear(F.layer_norm(x, n1.normalized_shape, n1.weight, n1.bias, n1.eps), w, bias)
        qkv = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rope is None:
            return qkv[0], qkv[1], qkv[2]
        q, k = rotate(qkv[:2], rope)  # q and k in one go
        return q, k, qkv[2]

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        b, h, n, hd = attn.shape
        x = x + F.linear(attn.transpose(1, 2).reshape(b, n, h * hd), self.proj.weight, self.proj.bias)
        n2 = self.norm2
        u = F.linear(F.layer_norm(x, n2.normalized_shape, n2.weight, n2.bias, n2.eps), self.fc1.weight, self.fc1.bias)
        u = F.gelu(u, approximate="tanh") if torch.is_grad_enabled() else gelu_tanh_inference(u)
        return x + F.linear(u, self.fc2.weight, self.fc2.bias)


class Dynamics(nn.Module):
    def __init__(self, cfg: DynamicsConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DynamicsConfig()
        d = cfg.d_model
        pin = cfg.latent_channels * cfg.patch * cfg.patch_w
        self.patch_in = nn.Linear(pin, d)
        self.patch_out = nn.Linear(d, pin)
        if cfg.residual:
            self.prev_in = nn.Linear(pin, d)  # the previous frame's latent, into the noisy frame's tokens
            nn.init.zeros_(self.prev_in.weight)
            nn.init.zeros_(self.prev_in.bias)
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens_per_frame, d) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(cfg.cond_tokens + 1, d) * 0.02)  # conds…, latent
        self.sink = nn.Parameter(torch.randn(1, cfg.sinks, d) * 0.02)
        self.control_in = nn.Sequential(nn.Linear(cfg.n_controls, d), nn.SiLU(), nn.Linear(d, d))
        self.audio_in = nn.Sequential(nn.Linear(cfg.audio_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.text_in = nn.Linear(cfg.text_dim, d)
        self.family_emb = nn.Embedding(cfg.families + 1, d)
        self.null = nn.Parameter(torch.zeros(cfg.cond_tokens, d))  # a dropped (absent) modality
        self.time_in = nn.Sequential(nn.Linear(128, d), nn.SiLU(), nn.Linear(d, d))
        if cfg.control_film:
            self.control_all = nn.Sequential(nn.Linear(2 * cfg.n_controls, d), nn.SiLU(), nn.Linear(d, d))
            nn.init.zeros_(self.control_all[2].weight)
            nn.init.zeros_(self.control_all[2].bias)
        if cfg.guidance_in:
            self.guide_in = nn.Linear(64, d)
            nn.init.zeros_(self.guide_in.weight)
            nn.init.zeros_(self.guide_in.bias)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(d)
        self._cond_memo: list[tuple] = []  # see cond_tokens
        self._turn_memo: tuple | None = None  # see turned_qkv
        self._cond_params = [p for m in (self.control_in, self.audio_in, self.text_in, self.family_emb) for p in
                             m.parameters()] + [self.null, self.type_emb]
        if cfg.control_film:
            self._cond_params += list(self.control_all.parameters())

    # --- tokens ---
    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) latent → (B, N, C·ph·pw)."""
        ph, pw = self.cfg.patch, self.cfg.patch_w
        b, c, h, w = z.shape
        return z.view(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(
            b, (h // ph) * (w // pw), c * ph * pw)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        cfg, ph, pw = self.cfg, self.cfg.patch, self.cfg.patch_w
        b = x.shape[0]
        return x.view(b, cfg.latent_h // ph, cfg.latent_w // pw, cfg.latent_channels, ph, pw).permute(
            0, 3, 1, 4, 2, 5).reshape(b, cfg.latent_channels, cfg.latent_h, cfg.latent_w)

    def frame_tokens(self, z: torch.Tensor, tau: torch.Tensor, d: torch.Tensor, cond: dict,
                     noisy: bool = True) -> torch.Tensor:
        """One frame per batch element → (B, frame_tokens, d_model).

        z: (B, C, H, W) latent at flow time `tau` (1 = clean); d: shortcut step size (0 = plain flow matching);
        cond: {"control": (B, n_controls), "audio": (B, audio_dim), "text": (B, text_dim), "family": (B,) long,
               "drop": (B, 4) bool — True where that group is absent (or float 0..1: a blend towards absent),
               "family_w": optional (B, families + 1) weights that blend family embeddings (replaces "family"),
               "prev_control": (B, n_controls) the previous frame's controls — control_film models (default: same),
               "prev": (B, C, H, W) the previous frame's latent — residual models, noisy frames only,
               "guidance": (B,) guidance scale — models with guidance_in, noisy frames only (default 1)}.
        """
        b = z.shape[0]
        x = self.patch_in(self.patchify(z)) + self.pos + self.type_emb[-1]
        if noisy and self.cfg.residual:
            x = x + self.prev_in(self.patchify(cond["prev"]))
        conds, film = self.cond_tokens(cond)
        t = self.time_in(torch.cat([timestep_embedding(tau, 64), timestep_embedding(d, 64)], dim=-1))
        if film is not None:
            t = t + film
        if noisy and self.cfg.guidance_in:
            g = cond.get("guidance")
            g = torch.ones(b, device=z.device) if g is None else g
            t = t + self.guide_in(timestep_embedding((g.float() - 1.0) / GUIDANCE_SPAN, 64))
        return torch.cat([conds, x], dim=1) + t[:, None, :]

    _COND_KEYS = ("control", "prev_control", "audio", "text", "family", "family_w", "drop")

    def cond_tokens(self, cond: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The condition tokens (B, cond_tokens, d_model) and the controls' FiLM features (B, d_model) or None.

        They depend on the conditions alone, not on the frame's latent or flow time: a frame's sampling steps and
        its commit share them. Without gradients the last two answers are kept with the tensors they came from and
        given again while a condition holds those very tensors (a new or changed tensor is worked out afresh; the
        tensors are not to be changed in place once used)."""
        memo = not torch.is_grad_enabled()
        if memo:
            # the weights' versions (an optimizer step or a load changes them in place) and autocast are part of it
            key = tuple(cond.get(k) for k in self._COND_KEYS)
            state = (sum(p._version for p in self._cond_params),
                     torch.is_autocast_enabled(cond["control"].device.type))
            for hit in self._cond_memo:
                if hit[1] == state and all(a is b for a, b in zip(hit[0], key)):
                    return hit[2], hit[3]
        b = cond["control"].shape[0]
        fam_w = cond.get("family_w")  # soft family (B, families + 1): a blend of embeddings during a switch
        fam = self.family_emb(cond["family"]) if fam_w is None else fam_w.to(self.family_emb.weight.dtype) @ \
            self.family_emb.weight
        conds = torch.stack([self.control_in(cond["control"]), self.audio_in(cond["audio"]),
                             self.text_in(cond["text"]), fam], dim=1)
        drop = cond.get("drop")
        if drop is not None and drop.dtype == torch.bool:
            conds = torch.where(drop[..., None], self.null.expand(b, -1, -1).to(conds.dtype), conds)
        elif drop is not None:  # 0..1: how absent each group is (a prompt fading in or out)
            conds = conds + drop[..., None].to(conds.dtype) * (self.null.to(conds.dtype) - conds)
        conds = conds + self.type_emb[:-1]
        film = None
        if self.cfg.control_film:
            c = cond["control"]
            pc = cond.get("prev_control")
            film = self.control_all(torch.cat([c, torch.zeros_like(c) if pc is None else c - pc], dim=-1))
            if drop is not None:  # a dropped control group takes its features with it
                film = film * (1 - drop[:, 0:1].to(film.dtype))
        if memo:
            self._cond_memo = [(key, state, conds, film)] + self._cond_memo[:1]
        return conds, film

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states of a frame's tokens → velocity latent (B, C, H, W)."""
        return self.unpatchify(self.patch_out(self.norm_out(h[:, self.cfg.cond_tokens:])))

    def forward(self, *args, **kwargs):  # what DistributedDataParallel calls
        return self.forward_train(*args, **kwargs)

    # --- training: T frames, clean stream + noisy stream, one pass ---
    def forward_train(self, z_ctx: torch.Tensor, tau_ctx: torch.Tensor, z_noisy: torch.Tensor, tau: torch.Tensor,
                      d: torch.Tensor, cond: dict, frame0: int | torch.Tensor = 0) -> torch.Tensor:
        """z_ctx, z_noisy: (B, T, C, H, W); tau_ctx, tau, d: (B, T); cond values with a leading (B, T).

        Returns the predicted velocity for every noisy frame, (B, T, C, H, W).
        """
        b, T = z_ctx.shape[:2]
        cfg = self.cfg
        F_ = cfg.frame_tokens

        def flat(v):
            return v.reshape(b * T, *v.shape[2:])

        cflat = {k: flat(v) for k, v in cond.items()}
        ctx = self.frame_tokens(flat(z_ctx), flat(tau_ctx), torch.zeros_like(flat(tau_ctx)), cflat,
                                noisy=False).view(b, T * F_, -1)
        noisy = self.frame_tokens(flat(z_noisy), flat(tau), flat(d), cflat).view(b, T * F_, -1)
        x = torch.cat([self.sink.expand(b, -1, -1), ctx, noisy], dim=1)
        frame_idx = torch.arange(T, device=x.device) + frame0
        fi = torch.cat([torch.zeros(cfg.sinks, device=x.device, dtype=torch.long),
                        frame_idx.repeat_interleave(F_), frame_idx.repeat_interleave(F_)])
        angles = rope_angles(fi, cfg.rope_time_dims)[None]
        angles[:, : cfg.sinks] = 0  # sinks carry no time: rotation by angle 0
        rope = rope_tables(angles, cfg.rope_time_dims, cfg.d_model // cfg.heads)
        mask = self.train_mask(T, x.device)
        for blk in self.blocks:
            q, k, v = blk.qkv_heads(x, rope)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = blk.finish(x, attn)
        out = x[:, cfg.sinks + T * F_:].reshape(b * T, F_, -1)
        return self.readout(out).view(b, T, cfg.latent_channels, cfg.latent_h, cfg.latent_w)

    def train_mask(self, T: int, device) -> torch.Tensor:
        """Boolean (L, L), True = may attend. Sinks see sinks; clean frame i sees clean i-W..i; noisy frame i
        sees clean i-W..i-1 and itself."""
        cfg = self.cfg
        F_, S, W = cfg.frame_tokens, cfg.sinks, cfg.context
        L = S + 2 * T * F_
        fid = torch.full((L,), -1, dtype=torch.long, device=device)
        fid[S:S + T * F_] = torch.arange(T, device=device).repeat_interleave(F_)
        fid[S + T * F_:] = torch.arange(T, device=device).repeat_interleave(F_)
        is_noisy = torch.zeros(L, dtype=torch.bool, device=device)
        is_noisy[S + T * F_:] = True
        is_sink = fid < 0
        qi, ki = fid[:, None], fid[None, :]
        qn, kn = is_noisy[:, None], is_noisy[None, :]
        clean_k = ~kn & ~is_sink[None, :]
        m = is_sink[None, :].expand(L, L).clone()  # everyone sees the sinks
        # clean query: clean keys in [i-W, i]
        m |= ~qn & ~is_sink[:, None] & clean_k & (ki <= qi) & (ki >= qi - W)
        # noisy query: clean keys in [i-W, i-1], and its own noisy frame
        m |= qn & clean_k & (ki < qi) & (ki >= qi - W)
        m |= qn & kn & (ki == qi)
        return m

    # --- inference: one frame at a time with a rolling cache ---
    def new_cache(self, batch: int = 1) -> "KVCache":
        return KVCache(self.cfg, self.sink_kv(batch))

    @torch.no_grad()
    def sink_kv(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer keys/values of the sink tokens (they attend only to each other, as in training)."""
        x = self.sink.expand(batch, -1, -1)
        out = []
        for blk in self.blocks:
            q, k, v = blk.qkv_heads(x, None)
            out.append((k, v))
            x = blk.finish(x, F.scaled_dot_product_attention(q, k, v))
        return out

    def turned_qkv(self, frame_index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the qkv weight and bias with frame `frame_index`'s rotary time folded in (inference).

        Every token of a frame has the frame's index, so its turn of the queries' and keys' time channels is one
        linear map of the qkv output — folded into the weight's rows it costs nothing per token, and a frame's
        sampling steps and its commit share it (made once per frame: 2 ops for all layers and 2 per layer, where
        turning q and k took ~8 per layer and pass). The weights' versions are part of the key (a training step or
        a load changes them in place)."""
        cfg = self.cfg
        weights = [t for blk in self.blocks for t in (blk.qkv.weight, blk.qkv.bias)]
        versions = tuple((t._version, t.data_ptr()) for t in weights)  # (a move to a device makes new tensors)
        memo = self._turn_memo
        if memo is None or memo[0] != versions:
            dev = weights[0].device
            d, hd, half = cfg.d_model, cfg.d_model // cfg.heads, cfg.rope_time_dims // 2
            # the turning rows of q and k: per head, channel pairs (2i, 2i+1) for i < half, in pair order
            pair = torch.arange(half, device=dev)
            starts = torch.tensor([w * d + h * hd for w in (0, 1) for h in range(cfg.heads)], device=dev)
            a = (starts[:, None] + 2 * pair[None]).flatten()
            rows = torch.stack([a, a + 1], -1).flatten()  # a0, b0, a1, b1, …
            partner = torch.stack([a + 1, a], -1).flatten()
            angle = pair.repeat(2 * cfg.heads).repeat_interleave(2)
            sign = torch.tensor([-1.0, 1.0], device=dev).repeat(len(a))  # a' = a·cos − b·sin, b' = b·cos + a·sin
            wb = torch.stack([torch.cat([blk.qkv.weight, blk.qkv.bias[:, None]], 1) for blk in self.blocks])
            memo = self._turn_memo = (versions, rows, angle, sign, wb[:, rows], wb[:, partner],
                                      [(blk.qkv.weight.clone(), blk.qkv.bias.clone()) for blk in self.blocks], None)
        _, rows, angle, sign, own, other, turned, made_for = memo
        key = frame_index % 1024  # the rotation's periods divide 1024 (rope_angles)
        if made_for != key:
            ang = rope_angles(torch.tensor([key], device=rows.device), cfg.rope_time_dims)[0][angle]
            new = torch.addcmul(own * ang.cos()[:, None], other, (ang.sin() * sign)[:, None])
            for (w, b), layer in zip(turned, new):
                w.index_copy_(0, rows, layer[:, :-1])
                b.index_copy_(0, rows, layer[:, -1])
            self._turn_memo = memo[:-1] + (key,)
        return turned

    @torch.no_grad()
    def step_velocity(self, cache: "KVCache", z: torch.Tensor, tau: torch.Tensor, d: torch.Tensor, cond: dict,
                      frame_index: int) -> torch.Tensor:
        """Velocity for the frame being generated, attending to sinks + cache + itself (the cache is unchanged)."""
        x = self.frame_tokens(z, tau, d, cond)
        turned = self.turned_qkv(frame_index)
        for li, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_heads(x, None, turned[li])
            attn = F.scaled_dot_product_attention(q, *cache.with_new(li, k, v))
            x = blk.finish(x, attn)
        return self.readout(x)

    @torch.no_grad()
    def commit(self, cache: "KVCache", z_clean: torch.Tensor, cond: dict, frame_index: int,
               tau_ctx: float = 1.0) -> None:
        """Run a finished frame through the model as context and push its keys/values into the cache."""
        b = z_clean.shape[0]
        x = self.frame_tokens(z_clean, torch.full((b,), tau_ctx, device=z_clean.device),
                              torch.zeros(b, device=z_clean.device), cond, noisy=False)
        turned = self.turned_qkv(frame_index)
        new_kv = []
        last = len(self.blocks) - 1
        for li, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_heads(x, None, turned[li])
            new_kv.append((k, v))
            if li == last:  # only the keys/values are kept: the last block's attention and MLP would be thrown away
                break
            attn = F.scaled_dot_product_attention(q, *cache.with_new(li, k, v))
            x = blk.finish(x, attn)
        cache.push(new_kv)


class KVCache:
    """Keys/values of the sinks and of the last `context` frames per layer; bounded — the oldest frame falls out."""

    def __init__(self, cfg: DynamicsConfig, sinks: list[tuple[torch.Tensor, torch.Tensor]]):
        self.cfg = cfg
        self.frames: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # [frame][layer] -> (k, v), oldest first
        self._sink_kv = sinks
        # per layer: (keys, values, new frame's tokens, the place of each cached frame in them), see with_new
        self._joined: dict[int, tuple[torch.Tensor, torch.Tensor, int, list[int]]] = {}

    def with_new(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sinks + cached frames + the new frame's `k`, `v` of one layer: what a frame attends to. The cached part
        is joined once with room for a frame behind it, so a pass copies only its own tokens in (the sampling steps
        and the commit of a frame use the same room: the answer holds until the next call); a push to a full cache
        then writes the new frame where the oldest was (attention does not depend on the order of the keys), any
        other change joins them anew."""
        n = k.shape[2]
        kv = self._joined.get(layer)
        if kv is None or kv[2] != n:
            ks, vs = self._sink_kv[layer]
            room = k.new_empty(ks.shape[:2] + (n, ks.shape[3]), dtype=ks.dtype)
            kv = self._joined[layer] = (torch.cat([ks] + [f[layer][0] for f in self.frames] + [room], 2),
                                        torch.cat([vs] + [f[layer][1] for f in self.frames] + [room], 2), n,
                                        list(range(len(self.frames))))
        kb, vb = kv[0], kv[1]
        kb[:, :, -n:] = k
        vb[:, :, -n:] = v
        return kb, vb

    def push(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        full = len(self.frames) >= self.cfg.context
        self.frames.append(kv)
        if len(self.frames) > self.cfg.context:
            self.frames.pop(0)
        if not full:
            self._joined.clear()
            return
        for layer, (kb, vb, _, places) in self._joined.items():  # the oldest frame's place takes the new one
            k, v = kv[layer]
            place = places.pop(0)
            places.append(place)
            at = self._sink_kv[layer][0].shape[2] + place * k.shape[2]
            kb[:, :, at:at + k.shape[2]] = k
            vb[:, :, at:at + k.shape[2]] = v

    def pop(self, index: int = -1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Take a frame out: the newest (to replace it) or, with index 0, the oldest."""
        self._joined.clear()
        return self.frames.pop(index)

    def clear(self) -> None:
        self.frames.clear()
        self._joined.clear()

    def __len__(self) -> int:
        return len(self.frames)

    def nbytes(self) -> int:
        n = sum(t.numel() * t.element_size() for f in self.frames for kv in f for t in kv)
        return n + sum(t.numel() * t.element_size() for kv in self._sink_kv for t in kv)
