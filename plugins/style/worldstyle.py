"""World-model style transfer: the camera takes the look of a vprod world and keeps the person's structure.

SDEdit-style video-to-video on our own model, at the model's size (256×144), once per stylised frame:

1. **The world.** The family's world under the current controls, drawn by the procedural renderer the model was
   trained on (and which the world model itself starts from), advancing in real time. It is encoded by the
   tokenizer and committed to the dynamics' KV cache as clean context (the last 2 frames): the denoiser continues
   this world.
2. **Look transfer in latent space.** The camera frame is encoded (z_c), and its low frequencies are moved towards
   the world's: z_0 = z_c + a·(L(z_w) − L(z_c)), L a box low-pass over 7×7 latent cells (56 pixels). The camera
   keeps its detail — the edges that make the person — and takes the world's colour and light. The world's
   low-pass is smoothed over time, so a family cut or a knob turn glides instead of jumping.
3. **SDEdit.** z_0 is noised to flow time 1 − s and denoised in 1 or 2 shortcut steps under the prompt, family,
   controls and guidance, with the world in the cache: the model redraws the picture as its world.
   A residual model (cfg.residual) generates the change from `prev` = z_0, from noise s·ε towards "no change".
   The noise ε drifts slowly between frames (an AR(1) process, ρ = 0.9) rather than being drawn afresh: measured
   on presets/media/person.mp4 (its own frame-to-frame change 3.1 levels), fresh noise flickers at 10.1, ρ = 0.9 at
   4.2, fixed noise at 2.6 but freezes a pattern on the screen.
4. **Decode**; at output size the camera's own fine detail (what the 256×144 round trip cannot carry) is added
   back, scaled by `detail`.

`strength` drives both: a = strength and s = texture·strength (`texture` 0.25 by default).

Why (scripts/measure-worldstyle.py; three photographs × six families, shipped weights; docs/effects/styles.md):
plain SDEdit on our model (s = strength, no look transfer) loses the person before it takes the look — at the
strength where the edges still agree at 0.60 the Lab distance to the family's palette has only fallen to 0.61 of
the input's, and at 0.8 the edges are gone (0.11). Look transfer alone keeps the edges (0.89 at strength 0.8, colour
ratio 0.33). Adding a quarter of the strength as noise keeps nearly as much (0.87) and moves further in colour
(0.31) and in the tokenizer's own latent statistics (0.48 against 0.52): the default. Half the strength as noise
costs edges (0.78) for more look. The residual weights keep a noisy `prev` noisy (they were trained with context
noise ≤ 0.15), so the noise goes into the generated change instead. The model's own rollout drifts away from its
family within 50 frames (Lab distance 5 → 160 for plasma), so the world in the cache is the renderer's, not a
rollout.
"""

from __future__ import annotations

import math
import threading
import time

import cv2
import numpy as np

from vprod.engine import (ChoiceParam, Effect, FloatParam, FrameContext, IntParam, Mailbox, TextParam,
                          TriggerParam, resolve_path)
from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.render import FAMILIES, RendererWorld

#: Noise level (1 − flow time) at strength 1, the default of the `texture` parameter (see the module docstring).
NOISE_AT_FULL = 0.25
#: Radius of the latent low-pass in latent cells (8 px each at 256×144): the scale of the "look".
LOOK_RADIUS = 3
#: Frame-to-frame correlation of the SDEdit noise.
NOISE_RHO = 0.9
#: Time constant (seconds of stylised frames) of the smoothing of the world's look.
LOOK_SMOOTH_S = 0.4
#: World frames kept in the KV cache as context.
WORLD_CONTEXT = 2


class WorldStyler:
    """The synchronous core: `style(frame_256x144) -> frame_256x144`. Not thread-safe; one thread owns it."""

    def __init__(self, world, seed: int = 0):
        import torch

        self.torch = torch
        self.world = world  # vprod.world.model.WorldModel: tokenizer, dynamics, conditions
        self.cfg = world.dyn.cfg
        self.w = self.cfg.latent_w * world.tok.cfg.downsample
        self.h = self.cfg.latent_h * world.tok.cfg.downsample
        self.renderer = RendererWorld(self.w, self.h)
        self.seed = int(seed)
        self.family: str = world.families[0]
        self.controls = np.asarray(NEUTRAL, np.float32).copy()
        self.strength = 0.6
        self.steps = 2
        self.guidance = 1.0
        # how strength splits into look transfer (a = look·strength) and noise (s = noise_at_full·strength);
        # scripts/measure-worldstyle.py compares other splits (plain SDEdit: look 0, noise_at_full 1)
        self.look = 1.0
        self.noise_at_full = NOISE_AT_FULL
        self.noise_rho = NOISE_RHO
        self.gen = torch.Generator(device="cpu").manual_seed(self.seed)
        self._eps = None
        self._look = None  # smoothed low-pass of the world's latent
        self._t = 0
        self._fresh = True
        self.timings: dict[str, float] = {}

    # --- steering (call from the owning thread) ---
    def set_family(self, family: str) -> None:
        if family not in self.world.families:
            raise ValueError(f"unknown family {family!r} (one of {', '.join(self.world.families)})")
        if family != self.family:
            self.family = family
            if not self._fresh:
                self.renderer.set_family(family)

    def set_prompt(self, text: str | None) -> None:
        self.world.set_prompt(text or None)  # the first prompt loads the sentence model (seconds)

    def reset(self) -> None:
        """Start the world again from the family's opening view; forget the smoothed look and the noise."""
        self._fresh = True

    # --- the work ---
    def _lowpass(self, z):
        f = self.torch.nn.functional
        k = LOOK_RADIUS
        return f.avg_pool2d(f.pad(z, (k, k, k, k), mode="replicate"), 2 * k + 1, stride=1)

    def _world_latent(self, dt: float):
        if self._fresh:
            frame = self.renderer.reset(self.seed, self.controls, self.family)
        else:
            frame = self.renderer.renderer.step(self.controls, dt)  # the world moves in real time
        return self.world.encode(frame)

    def style(self, frame, dt: float = 1 / 15):
        """One stylised frame: `frame` (h, w, 3) uint8 RGB at the model size → the same size, stylised."""
        torch = self.torch
        from vprod.world.train import d_input

        wm, cfg = self.world, self.cfg
        t0 = time.perf_counter()
        wm.family = self.family
        cond = wm._cond(self.controls)
        zw = self._world_latent(dt)
        zc = wm.encode(frame)
        t1 = time.perf_counter()
        # the world's look, smoothed over time
        lw = self._lowpass(zw)
        if self._fresh or self._look is None:
            self._look = lw
            self._eps = torch.randn(zc.shape, generator=self.gen)
            self.cache = wm.dyn.new_cache()
        else:
            k = 1.0 - math.exp(-dt / LOOK_SMOOTH_S)
            self._look = self._look + k * (lw - self._look)
            n = torch.randn(zc.shape, generator=self.gen)
            self._eps = self.noise_rho * self._eps + math.sqrt(1 - self.noise_rho ** 2) * n
        self._fresh = False
        a = self.look * float(self.strength)
        s = min(1.0, self.noise_at_full * float(self.strength))
        z0 = zc + a * (self._look - self._lowpass(zc))
        self._t += 1
        t = self._t
        with torch.no_grad(), wm._dyn_autocast():
            # the world as context: its newest frames, clean (the cache keeps the last `context` frames)
            wm.dyn.commit(self.cache, zw, cond, t - 1)
            while len(self.cache) > WORLD_CONTEXT:
                self.cache.pop(0)
            uncond = None
            if cfg.guidance_in:
                cond["guidance"] = torch.tensor([float(self.guidance)])
            elif self.guidance > 1.0:
                uncond = dict(cond, drop=cond["drop"].clone())
                uncond["drop"][:, 2:] = True  # prompt and family absent
            if cfg.residual:  # SDEdit on the change from z_0, whose clean value is "no change"
                cond["prev"] = z0
                if uncond is not None:
                    uncond["prev"] = z0
                z = s * self._eps
            else:
                z = (1.0 - s) * z0 + s * self._eps
            n = int(self.steps) if s > 0 else 0
            d = s / max(n, 1)
            for i in range(n):
                tau = torch.full((1,), 1.0 - s + i * d)
                dd = d_input(torch.full((1,), d))
                v = wm.dyn.step_velocity(self.cache, z, tau, dd, cond, t).float()
                if uncond is not None:
                    vu = wm.dyn.step_velocity(self.cache, z, tau, dd, uncond, t).float()
                    v = vu + float(self.guidance) * (v - vu)
                z = z + d * v
            if cfg.residual:
                z = z0 + cfg.delta_scale * z
        t2 = time.perf_counter()
        out = wm.decode(z)
        t3 = time.perf_counter()
        self.timings = {"encode_ms": (t1 - t0) * 1e3, "denoise_ms": (t2 - t1) * 1e3, "decode_ms": (t3 - t2) * 1e3,
                        "total_ms": (t3 - t0) * 1e3}
        return out


def add_detail(styled_up: np.ndarray, camera: np.ndarray, camera_low: np.ndarray, amount: float) -> np.ndarray:
    """styled + amount·(camera − camera_low): the camera's fine detail on the enlarged stylised picture.

    Two saturating uint8 passes instead of int16 arithmetic (a third of the time at 1280×720): the detail is
    halved and centred on 128, then doubled back; it loses its lowest bit, which nobody sees."""
    if amount <= 0:
        return styled_up
    a = float(amount)
    hi = cv2.addWeighted(camera, a / 2, camera_low, -a / 2, 128.0)
    return cv2.addWeighted(styled_up, 1.0, hi, 2.0, -256.0)


# --- the effect ---------------------------------------------------------------------------------------------------


CONTROL_DOCS = {
    "yaw": "The world's camera turn rate (moves its look sideways): 0 left, 0.5 straight, 1 right",
    "pitch": "The world's camera pitch: 0 down, 0.5 level, 1 up",
    "speed": "How fast the world's look moves",
    "zoom": "The world's field of view: 0 wide, 1 zoomed in",
    "daylight": "Time of day of the look: 0 night, 0.5 dusk, 1 noon",
    "hue": "Palette shift around the colour wheel",
    "energy": "Motion intensity of the world",
    "fog": "Fog / weather density of the look",
}


class WorldStyleEffect(Effect):
    """The camera restyled by the world model: keeps the person, takes a world's look (on its own thread)."""

    params = {
        "strength": FloatParam(0.8, 0.0, 1.0, slew=0.2,
                               doc="How far the picture goes towards the world: 0 the camera through the "
                                   "tokenizer, 1 the world's colours and light with the person's outline"),
        "texture": FloatParam(NOISE_AT_FULL, 0.0, 1.0, slew=0.2,
                              doc="Share of the strength that is noise the model redraws as the world's texture "
                                  "(noise = texture × strength): 0 colours and light only; 1 plain SDEdit, where "
                                  "the person dissolves beyond strength ~0.6"),
        "steps": ChoiceParam("2", ("1", "2"), doc="Denoising steps per stylised frame: 1 faster, 2 finer"),
        "prompt": TextParam("", max_len=300, doc="Words the denoiser is conditioned on (empty: none)"),
        "family": ChoiceParam("terrain", FAMILIES, doc="The world whose look is taken"),
        **{name: FloatParam(round(float(NEUTRAL[i]), 3), 0.0, 1.0, slew=0.2, doc=CONTROL_DOCS[name])
           for i, name in enumerate(CONTROL_NAMES)},
        "guidance": FloatParam(1.0, 1.0, 4.0, doc="Strength of prompt and family in the denoiser (above 1: a second "
                                                  "pass per step unless the weights have guidance distilled in)"),
        "detail": FloatParam(0.5, 0.0, 1.0, doc="The camera's own fine detail added back at output size (the model "
                                                "works at 256x144)"),
        "seed": IntParam(0, 0, 1_000_000, doc="Seed of the world and of the noise, used by reset"),
        "reset": TriggerParam(doc="Start the world's look again from the family's opening view"),
    }
    options = {
        "weights": ("", "world model weights (.safetensors); empty: the shipped ones"),
        "tokenizer": ("", "tokenizer weights (.safetensors); empty: the shipped ones"),
        "threads": (1, "torch threads for the model thread"),
        "device": ("cpu", "cpu or cuda"),
    }

    def open(self) -> None:
        from vprod.threads import configure_torch
        from vprod.world.model import WEIGHTS_DIR, WorldModel, load_dynamics, load_tokenizer

        configure_torch(int(self.opts["threads"]))
        paths = []
        for key, default in (("weights", "world.safetensors"), ("tokenizer", "tokenizer.safetensors")):
            raw = str(self.opts[key] or "")
            paths.append(resolve_path(raw, self.config.preset_dir)[0] if raw else WEIGHTS_DIR / default)
        for p in paths:
            if not p.is_file():
                raise RuntimeError(f"world model weights not found: {p} (the camera passes through unstyled)")
        try:
            dyn, meta = load_dynamics(paths[0])
            world = WorldModel(load_tokenizer(paths[1]), dyn, device=self.opts["device"],
                               families=tuple(meta["trained"].get("families", FAMILIES)))
        except Exception as e:  # noqa: BLE001 - any failure to load is the same thing to the user
            raise RuntimeError(f"world model cannot load from {paths[0]} / {paths[1]}: {type(e).__name__}: {e} "
                               f"(the camera passes through unstyled)") from None
        self.styler = WorldStyler(world, int(self.p.seed))
        self._in = Mailbox()  # newest camera frame at the model size (latest wins)
        self._out: np.ndarray | None = None  # newest stylised frame at the model size
        self._out_seq = 0
        self._up_key = None
        self._up: np.ndarray | None = None
        self._error = ""
        self._reset = False
        self._prompt: str | None = None
        self._stop = threading.Event()
        self.frames = 0  # stylised frames made (for benchmarks)
        self._opened = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="worldstyle", daemon=True)
        self._thread.start()

    # --- the model thread ---
    def _apply_params(self) -> None:
        st, p = self.styler, self.p
        if p.prompt != self._prompt:
            self._prompt = p.prompt
            st.set_prompt(self._prompt)
        st.set_family(p.family)
        st.controls = np.array([p.get(n) for n in CONTROL_NAMES], np.float32)
        st.strength = float(p.strength)
        st.noise_at_full = float(p.texture)
        st.steps = int(p.steps)
        st.guidance = float(p.guidance)
        if self._reset:
            self._reset = False
            st.seed = int(p.seed)
            st.gen.manual_seed(st.seed)
            st.reset()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            frame = self._in.take(0.2)
            if frame is None:
                continue
            try:
                self._apply_params()
                now = time.monotonic()
                out = self.styler.style(frame, dt=min(max(now - last, 1 / 60), 0.2))
                last = now
                self._out = out  # one reference assignment: the frame loop sees the old or the new one
                self._out_seq += 1
                self.frames += 1
                if self.frames == 1:
                    self.log.info("%s: styling; first picture after %.1f s (%.0f ms each on the model thread)",
                                  self.label, time.monotonic() - self._opened, self.styler.timings["total_ms"])
            except Exception as e:  # noqa: BLE001 - reported through process(); the thread carries on
                self._error = f"{type(e).__name__}: {e}"
                time.sleep(0.5)

    # --- the frame loop's side ---
    def process(self, frame: np.ndarray, ctx: FrameContext) -> np.ndarray:
        if self.p.fired("reset"):
            self._reset = True
        small = cv2.resize(frame, (self.styler.w, self.styler.h), interpolation=cv2.INTER_AREA)
        self._in.put(small)
        if self._error:
            err, self._error = self._error, ""
            raise RuntimeError(f"world style: {err}")
        out, seq = self._out, self._out_seq
        if out is None:
            return frame  # the first stylised frame is still being made: the camera as it is
        h, w = frame.shape[:2]
        key = (seq, w, h)
        if key != self._up_key:  # the same stylised frame is enlarged once
            self._up = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
            self._up_key = key
        amount = float(self.p.detail)
        if amount <= 0:
            return self._up
        low = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        return add_detail(self._up, frame, low, amount)

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._in.close()
            self._thread.join(2.0)
