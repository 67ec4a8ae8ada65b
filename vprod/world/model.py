"""The world model as a world: `reset(seed, controls, family)`, `observe(frame)`, `step(controls) → frame`.

Per frame: sample the next latent in `steps` flow steps (one transformer pass each, the cache unchanged), decode
it, then commit the clean latent to the cache (one more pass). Memory is the sinks plus the last `context` frames:
each frame costs the same forever.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import CONTROL_NAMES, NEUTRAL, NUM_CONTROLS
from .checkpoint import load_weights
from .dynamics import Dynamics, DynamicsConfig
from .look import LookNet, load_look
from .memory import WorldMemory, outer_cells
from .motion import REF_H, REF_W, CameraHead, flight_spread, lens, magnify, present, resample
from .prompt import HUE, PromptHead, PromptReading, hue_offset, steer
from .tokenizer import Tokenizer, TokenizerConfig, frames_to_tensor, tensor_to_frames

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
LOOK_WEIGHTS = WEIGHTS_DIR / "look.safetensors"
CAMERA_WEIGHTS = WEIGHTS_DIR / "motion.json"
PROMPT_WEIGHTS = WEIGHTS_DIR / "prompt.safetensors"
ZOOM = CONTROL_NAMES.index("zoom")
PITCH = CONTROL_NAMES.index("pitch")
SPEED = CONTROL_NAMES.index("speed")


def attribute_settings(world, items: list[str], flag: str) -> dict[str, float]:
    """NAME=VALUE items (a measuring script's `flag` options) → {name: value}, each name an attribute of `world` and
    each value a number; an unknown name stops the script, naming it."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if not hasattr(world, name):
            raise SystemExit(f"{flag} {item}: {type(world).__name__} has no attribute {name!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise SystemExit(f"{flag} {item}: give NAME=NUMBER") from None
    return out


def load_tokenizer(path: str | Path = WEIGHTS_DIR / "tokenizer.safetensors") -> Tokenizer:
    model, _ = load_weights(path, lambda cfg: Tokenizer(TokenizerConfig.from_json(cfg)), "tokenizer")
    return model.eval()


def load_dynamics(path: str | Path = WEIGHTS_DIR / "world.safetensors") -> tuple[Dynamics, dict]:
    model, meta = load_weights(path, lambda cfg: Dynamics(DynamicsConfig.from_json(cfg)), "world")
    return model.eval(), meta


class Flight(NamedTuple):
    """The renderer's camera path since a reset (Renderer.travel flies it): the way flown along and across the
    opening heading and its length, in seconds at unit speed (speed**1.3 · s), the animation seconds, the steps, and
    the turn (radians)."""

    along: float = 0.0
    across: float = 0.0
    length: float = 0.0
    anim: float = 0.0
    steps: int = 0
    yaw: float = 0.0


def _zoom_of(controls) -> float:
    """The zoom knob of a control vector (a NaN: NEUTRAL's)."""
    return float(np.nan_to_num(controls[ZOOM], nan=NEUTRAL[ZOOM]))


def _same_move(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.allclose(a, b))


class FlowSampler:
    """Few-step sampler: `steps` Euler steps of size d = 1/steps on the shortcut model (d is an input)."""

    def __init__(self, model: Dynamics, steps: int = 2):
        self.model = model
        self.steps = steps

    @torch.no_grad()
    def sample(self, cache, cond: dict, frame_index: int, noise: torch.Tensor, guidance: float = 1.0,
               uncond: dict | None = None) -> torch.Tensor:
        """`guidance` > 1 with `uncond` (the same conditions with prompt and family dropped) applies
        classifier-free guidance: a second pass per step."""
        z = noise
        b = z.shape[0]
        d = 1.0 / self.steps
        from .train import d_input

        for i in range(self.steps):
            tau = torch.full((b,), i * d, device=z.device)
            dd = d_input(torch.full((b,), d, device=z.device))
            v = self.model.step_velocity(cache, z, tau, dd, cond, frame_index).float()
            if guidance > 1.0 and uncond is not None:
                vu = self.model.step_velocity(cache, z, tau, dd, uncond, frame_index).float()
                v = vu + guidance * (v - vu)
            z = z + d * v
        return z


class SideWork:
    """One piece of the next frame's work that a second thread may do first: the model thread posts it (with a key
    saying what it was made for), the decoder's thread runs it while it would wait, and the model thread takes the
    answer if the key still fits — waiting if it is under way, doing the work itself if nobody has started it."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._job: list | None = None  # [key, work, answer, state: "pending" | "running" | "done" | "failed"]

    def post(self, key, work) -> None:
        with self._cv:
            self._job = [key, work, None, "pending"]

    def run(self) -> None:
        """Do the posted work, if any is waiting (the other thread)."""
        with self._cv:
            job = self._job
            if job is None or job[3] != "pending":
                return
            job[3] = "running"
        try:
            answer, state = job[1](), "done"
        except Exception:  # noqa: BLE001 - the model thread does the work itself and meets the error there
            answer, state = None, "failed"
        with self._cv:
            job[2], job[3] = answer, state
            self._cv.notify_all()

    def holds(self, fits) -> bool:
        """Whether the work posted, if any, is for a key that `fits` (waiting, under way or done)."""
        with self._cv:
            return self._job is not None and self._job[3] != "failed" and fits(self._job[0])

    def take(self, fits):
        """The answer of the posted work if `fits(key)`, else None (then: do it yourself); clears the post if it fits
        (other work posted stays: a look pass that finds a refocus's new view under way leaves it)."""
        with self._cv:
            job = self._job
            if job is None or not fits(job[0]):
                return None
            self._job = None
            if job[3] == "pending":
                return None
            self._cv.wait_for(lambda: job[3] in ("done", "failed"))
            return job[2]


class WorldModel:
    """The trained tokenizer + dynamics served as a world (see vprod.world)."""

    name = "worldmodel"

    def __init__(self, tokenizer: Tokenizer | None = None, dynamics: Dynamics | None = None, steps: int = 2,
                 device: str = "cpu", dtype: torch.dtype = torch.bfloat16, families: tuple[str, ...] = (),
                 look: LookNet | None | bool = True, dynamics_dtype: torch.dtype | None = None,
                 camera: CameraHead | str | Path | None | bool = True):
        from .render import FAMILIES

        self.device = torch.device(device)
        # on a CPU the tokenizer's convolutions run channels-last, oneDNN's fast layout for them (measured, 1 thread,
        # bf16: decode 15.6 → 11.0 ms alone, 13.8 → 12.4 ms beside the model thread; the pictures differ by ≤ 1 grey
        # level)
        fmt = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        self.tok = (tokenizer or load_tokenizer()).to(self.device, memory_format=fmt).eval()
        if dynamics is None:
            dynamics, meta = load_dynamics()
            families = tuple(meta["trained"].get("families", families))
        self.dyn = dynamics.to(self.device).eval()
        # the look head (vprod.world.look): a knob's instant change of the picture; True = the shipped one if present
        if look is True:
            look = load_look(LOOK_WEIGHTS) if LOOK_WEIGHTS.is_file() else None
        self.look = look.to(self.device).eval() if look else None
        # the look head acts once the knobs have moved this far since it last acted (small steps add up its error)
        self.look_step = 0.05
        # … and its change glides in over this many frames (the frame's without the memory, the memory's with it): a
        # knob jump near a family switch otherwise made the one visible jump of the stream (measured: ratio 4.9 with
        # the change at once; 3 frames = the plugin's 0.1 s; see docs/world-model, "A knob's look through the memory")
        self.look_glide = 3
        # … and acts at most every this many frames: knobs that move every frame get a look pass every other frame,
        # each gliding in over the next ones (the model thread's worst case, every knob jittered each frame: 1.7 ms a
        # frame less, measured; see docs/world-model, "Speed")
        self.look_every = 2
        self._look_t = -1  # the frame the look head last acted at
        # the next frame's look pass, posted by prepare() for the decoder's thread (see prepare)
        self._side = SideWork()
        self._renderer = None  # the renderer that makes the world's views (_opening_view), with the worlds it built
        self._render_lock = threading.Lock()
        # the camera head (vprod.world.motion): the global motion the motion knobs ask for, moving the picture by
        # whole latent cells (dynamics trained on camera-moved context, cfg.camera_context, need it and use it on
        # their context): True = the shipped one where present (a file name: that one)
        if camera is True:
            camera = CAMERA_WEIGHTS if self.dyn.cfg.camera_context or CAMERA_WEIGHTS.is_file() else None
        if isinstance(camera, (str, Path)):
            if not Path(camera).is_file():
                raise FileNotFoundError(f"camera head {camera} not found (these world weights move their context by "
                                        "it; `vprod train motion --out DIR` makes one)")
            camera = CameraHead.load(camera)
        self.camera: CameraHead | None = camera or None
        self._ctx_raw: torch.Tensor | None = None  # the newest context frame before the camera moved it …
        self._ctx_flow: np.ndarray | None = None  # … and the flow it was moved by (camera context)
        self._ctx_move: np.ndarray | None = None  # … or the whole-cell move (cells mode)
        if self.camera is not None and self.dyn.cfg.camera_context:
            self.camera.where = "context"
        self._look_rest: torch.Tensor | None = None
        self._look_left = 0
        self._look_ref: torch.Tensor | None = None
        self.families = families or FAMILIES
        self.sampler = FlowSampler(self.dyn, steps)
        self.dtype = dtype  # the convolutional parts: tokenizer and look head
        # The dynamics' matmuls are small (76 tokens × 128 wide): on a CPU, bf16 autocast's casts cost more than
        # they save (measured, 1 thread: sample + commit 16.3 ms in bf16, 12.6 ms in fp32), while the
        # convolutions gain from bf16 (decode 10.6 ms against 17.2 ms). A GPU runs both in `dtype`.
        self.dynamics_dtype = dynamics_dtype or (torch.float32 if self.device.type == "cpu" else dtype)
        self.text: np.ndarray | None = None  # prompt embedding (384,) or None
        self.family: str | None = None  # the family the world shows: the prompt's where it names one, else …
        self.family_asked: str | None = None  # … the one asked for (reset, set_family: the family knob)
        # The prompt head (vprod.world.prompt): the family and the knob offsets a prompt's words describe, loaded with
        # the first prompt; True = the shipped one where present (None: a prompt is the dynamics' text token alone)
        self.prompt_head: PromptHead | None | bool = True
        self.prompt: PromptReading | None = None
        self._offset = (np.zeros(NUM_CONTROLS, np.float32), np.zeros(NUM_CONTROLS, np.float32), 0)  # from, to, t0
        self._knobs: np.ndarray | None = None  # the knobs last asked for (before the prompt's offset)
        self.gen = torch.Generator(device="cpu")
        self.cache = None
        self.last_cond: dict | None = None
        self.t = 0
        self.last_latent: torch.Tensor | None = None
        self.timings: dict[str, float] = {}
        self.guidance = 1.0
        self.temperature = 0.75  # noise scale of the sampler's start: < 1 trades variety for fidelity (measured best)
        # Each generated frame enters the context with this much noise (and its level), as training showed the
        # model noised context: the model then leans less on its own small errors, which otherwise compound
        # (measured: 16-frame rollout PSNR +4 dB at 0.1; see docs/world-model).
        self.ctx_noise = 0.1
        # The 8-float audio token (vprod.control.audio's audio_vec) or None: audio absent, as in training so far.
        self.audio: np.ndarray | None = None
        # A prompt or family change blends the condition tokens from what they were to the new ones over this many
        # frames (smoothstep), so the world turns rather than cuts (0: at once).
        self.transition_frames = 12
        self._blend: tuple[dict, int] | None = None  # (condition state the blend starts from, frame it started)
        # The world's memory (vprod.world.memory): each new frame is pulled this far towards the latent panorama of
        # the world around the camera; pad: cells of it above and below the view (measured on 12 rollouts × 64
        # frames, 16-frame PSNR: no memory 21.5 dB, pull 0.1 22.2, 0.2 22.4; a memory learning from the frames at
        # 0.05: 22.1). 0.5, not 0.2: the rollouts the same (23.87 dB at h=16), but a picture that keeps the memory's
        # detail — the stream's sharpness 7.8 → 12.9, Fréchet on the encoder's features 1.69 → 1.18, and held knobs
        # 2–8 dB nearer the renderer (docs/world-model, "A sharper picture: the memory's pull 0.5")
        self.memory_pull = 0.5
        # … and up to this far while the world flies: there the lens and the views made along the flight move the
        # picture, and the dynamics' own frame adds mostly a blur (a flying city's sharpness: the memory's 102–111,
        # the frame's 41–58 at pull 0.5). The pull rises with the flight's magnification a frame, to fly_pull from
        # fly_pull_spread on (a tunnel from speed ~0.3, a city from ~0.55, a terrain at ~0.9; an ocean at 0.9 half
        # way: its waves are the dynamics' to move — full at 0.005, a night ocean's stream fell under the renderer's
        # change); never below memory_pull (docs/world-model, "A flying world keeps its detail")
        self.fly_pull = 0.8
        self.fly_pull_spread = 0.01
        self._step_spread = 1.0  # the flight's magnification this frame (_fly_step)
        # … and so as the speed knob falls under still_speed, fully at 0: the renderer's world barely moves there
        # (speed is its animation rate too; at 0 it holds still), and what the dynamics add is a shimmer (a held
        # ocean changed 1.34 grey levels a frame at pull 0.5 and 0.62 at 0.8 whatever its speed under 0.1; the
        # renderer's 0 at speed 0, 0.68 at 0.05)
        self.still_speed = 0.1
        self._still = 0.0  # how still the world is asked to be this frame, 0..1 (_fly_step)
        self.memory_pad = 9
        # the picture's outer cells whose part of the latent (what the encoder's zero padding adds) the memory keeps
        # apart (ring_latents); it follows the look (_canvas_look) while look_edges is on
        self.edge_cells = 2
        self.look_edges = True
        self.look_ring = True  # the look head sees the canvas's half go on round the ring (_canvas_look)
        # A memory the model makes itself (a reset, a family switch) at night or in fog is also drawn in daylight and
        # clear air (NEUTRAL's daylight and fog), and the look head starts from whichever of the two was made nearer
        # the knobs: a canvas made at night holds next to nothing of the world, and no look can light it again (a
        # night terrain turned to day was a pale haze for the rest of its family's stretch), nor make a night city's
        # lit windows from a day one (docs/world-model, "A world made at night")
        self.canvas_lit = True
        # a family switch dissolves the memory into the new world's over this many frames (or the transition, if
        # longer): two worlds differ by far more than a frame's motion, and a 24-frame dissolve still changed the
        # picture by up to 7.6× a frame's median change (docs/world-model, "Smooth switches")
        self.memory_fade_frames = 90
        self.memory: WorldMemory | None = None
        # while the look head's change glides into the memory (look_glide frames), each frame is pulled at least this
        # far towards it, easing back to memory_pull over as many frames again (docs/world-model, "A knob's look
        # through the memory")
        self.look_pull = 0.6
        self._pull_boost = 0  # frames the pull is still boosted for …
        self._boost_ease = 1  # … easing back over the last this many
        self.seed = 0
        # cells mode: the dynamics' own frame keeps its patch grid on the world. Its context moves by whole patches
        # only, and the picture shown is that frame moved on by the cells in between (`_phase`), the cells entering
        # it taken from the memory: the frame the model draws depends on where the patch grid falls (a one-cell
        # move of its context changed it by twice a frame's own change, a whole patch by a tenth of it), so moving
        # the context cell by cell made every cell move of a turn a visible tick (docs/world-model, "No tick when the
        # camera moves a cell")
        self.patch_phase = True
        self._phase = (0, 0)  # cells (x, y): the picture is the dynamics' frame moved by these (right / down)
        # The zoom knob is a lens in front of the world: the world (its memory, the dynamics' frames, the look and the
        # camera heads' knobs) stays at the zoom it was made at, and the picture is shown magnified about the
        # camera's optical centre by what the knob asks for (present's view) — a pinhole camera's zoom, which the
        # renderer's is (a zoom from 0.5 to 0.8 magnified so: 26–37 dB against the renderer's own, 12–21 unmagnified;
        # docs/world-model, "The zoom knob as a lens"). Asked of the look head, a zoom drew a haze. A world is made at
        # the zoom it opens at (or is seen at, in true frames); zooming out shows the world's mirror image at the
        # sides, as its ring holds it, until the world is made again at the new zoom (lens_refocus).
        self.lens = True
        self._zoom_made: float | None = None  # the zoom the world is made at (None: the knob's, no lens)
        self._lens = np.eye(3)  # the newest latent's lens (picture → shown picture)
        # A lens magnifies the picture the world holds, which holds no more detail for it: zoomed in 2×, a starfield's
        # stars blur away. Once the lens magnifies (or shrinks) by this much, a world the model made from the renderer
        # is made again at the knob's zoom — the picture as shown dissolving into it over refocus_frames (the picture
        # sharpens, as a camera's focus pulls in) — and the lens starts again from 1 (None: never)
        self.lens_refocus: float | None = 1.25
        self.refocus_frames = 12
        self.refocus_local = 0.3  # … each cell of the window over this share of them, the optical centre's first
        # a new view made ahead (prepare) serves a refocus to a camera pitch this much off, and to a zoom the lens
        # shows the rest of (up to sqrt(lens_refocus)): with knobs that jitter (the bench's pipeline), views made
        # ahead for a zoom and pitch exactly as they came never served, and each was made on the model thread
        self.refocus_slack = 0.05
        self._made_by_renderer = False  # the world's memory is the renderer's opening view (reset, family switch)
        # Speed flies the world: the picture is magnified as the camera head's fitted flow spreads it at the speed
        # asked for (about the optical centre, as the lens), and once it is fly_refocus larger the world is made
        # again (as at a refocus) from the renderer's view where the flight has taken the camera, looking where it
        # looks (a world the model made from the renderer; none of it for one seen in true frames)
        self.fly = True
        self.fly_refocus = 1.25  # … made again once the flight magnifies the picture this much
        # … its new view posted for the decoder's thread (prepare) up to this many frames before (posted for the next
        # frame only, the decoder had not begun it when the model thread needed it: made on the model thread, each
        # time, in the bench's pipeline)
        self.fly_ahead = 3
        self._flight = Flight()  # the renderer's camera path since the reset
        self._fly_made = Flight()  # … where the memory's views were made
        self._fly_scale = 1.0  # how much the flight has magnified the picture since
        self._shown: torch.Tensor | None = None  # the newest latent next_latent handed on (its picture: `view`)

    @property
    def steps(self) -> int:
        return self.sampler.steps

    @steps.setter
    def steps(self, n: int) -> None:
        self.sampler.steps = int(n)

    def _autocast(self, dtype: torch.dtype | None = None):
        dtype = dtype or self.dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def _dyn_autocast(self):
        return self._autocast(self.dynamics_dtype)

    def _target(self) -> dict:
        """The prompt and family conditions as plain numbers (what a blend moves between)."""
        fam_w = np.zeros(len(self.families) + 1, np.float32)
        fam_w[self.families.index(self.family) if self.family in self.families else len(self.families)] = 1.0
        text = np.zeros(384, np.float32) if self.text is None else np.asarray(self.text, np.float32)
        return {"family_w": fam_w, "family_off": float(self.family is None), "text": text,
                "text_off": float(self.text is None)}

    def _blended(self) -> dict | None:
        """The conditions part-way through a prompt/family blend, or None when none is under way."""
        if self._blend is None:
            return None
        start, t0 = self._blend
        x = (self.t - t0) / max(1, self.transition_frames)
        if x >= 1.0:
            self._blend = None
            return None
        s = x * x * (3 - 2 * x)
        end = self._target()
        out = {k: (1 - s) * start[k] + s * end[k] for k in end}
        # an absent prompt has no vector of its own: while it fades in (or out) the present one is used
        if start["text_off"] == 1.0:
            out["text"] = end["text"]
        elif end["text_off"] == 1.0:
            out["text"] = start["text"]
        return out

    def _begin_blend(self) -> None:
        """Called before the prompt or family changes: blend from the conditions in effect now."""
        if self.cache is None or self.transition_frames <= 0:
            return
        self._blend = (self._blended() or self._target(), self.t)

    def _control_tensor(self, controls) -> torch.Tensor:
        c = np.clip(np.nan_to_num(np.asarray(controls, np.float32), nan=0.5), 0, 1).reshape(1, NUM_CONTROLS)
        return torch.from_numpy(c).to(self.device)

    def _cond(self, controls) -> dict:
        fam = self.families.index(self.family) if self.family in self.families else len(self.families)
        text = self.text if self.text is not None else np.zeros(384, np.float32)
        audio = self.audio
        drop = torch.tensor([[False, audio is None, self.text is None, self.family is None]], device=self.device)
        a = torch.zeros(1, 8) if audio is None else torch.from_numpy(
            np.clip(np.nan_to_num(np.asarray(audio, np.float32), nan=0.0), 0, 1).reshape(1, 8))
        ctrl = self._control_tensor(controls)
        prev = ctrl if self.last_cond is None else self.last_cond["control"]  # for the control's change
        cond = {"control": ctrl, "prev_control": prev, "audio": a.to(self.device),
                "text": torch.from_numpy(np.asarray(text, np.float32)[None]).to(self.device),
                "family": torch.tensor([fam], device=self.device), "drop": drop}
        mix = self._blended()
        if mix is not None:
            cond["text"] = torch.from_numpy(mix["text"][None].astype(np.float32)).to(self.device)
            cond["family_w"] = torch.from_numpy(mix["family_w"][None].astype(np.float32)).to(self.device)
            cond["drop"] = torch.tensor([[0.0, float(audio is None), mix["text_off"], mix["family_off"]]],
                                        device=self.device)
        return cond

    def encode(self, frame: np.ndarray) -> torch.Tensor:
        with torch.no_grad(), self._autocast():
            return self.tok.encode(frames_to_tensor(frame[None], self.device)).float()

    def decode(self, z: torch.Tensor) -> np.ndarray:
        with torch.no_grad(), self._autocast():
            return tensor_to_frames(self.tok.decode(z))[0]

    # --- the World contract ---
    def reset(self, seed: int, controls, family: str | None = None, first_frame: np.ndarray | None = None):
        """Start a world: the opening frame is the renderer's (or `first_frame`), encoded into the context."""
        self.gen.manual_seed(int(seed))
        self.family_asked = family if family is not None else self.families[int(seed) % len(self.families)]
        self.family = self._family_to_show()
        target = self._prompt_offset()
        self._offset = (target, target, 0)  # a new world opens with the prompt's look in full
        self._knobs = np.asarray(controls, np.float32)
        controls = steer(controls, target)
        self.seed = int(seed)
        rendered = first_frame is None
        self._zoom_made = _zoom_of(controls)  # made at the knob's zoom: shown as made, no lens
        self._flight = self._fly_made = Flight()
        self._fly_scale = self._step_spread = 1.0
        self._still = 0.0
        controls = self._made_at(controls)
        if rendered:
            first_frame = self._opening_view(controls)
        self.cache = self.dyn.new_cache()
        self.t = 0
        self._blend = None
        self.last_cond = None
        self.last_cond = self._cond(controls)  # (no change of controls at the first frame)
        self._look_ref = self.last_cond["control"]
        self._look_rest, self._look_left, self._look_t = None, 0, -self.look_every
        self._pull_boost = 0
        if self.camera is not None:
            self.camera.reset(controls)
        self._phase = (0, 0)
        self._lens = np.eye(3)
        self._made_by_renderer = rendered
        z = self.encode(first_frame)
        self.memory = self.new_memory(z, first_frame)  # (before the commit: what enters a turn is the memory's)
        if rendered:
            self._add_lit(self.memory, controls)
        self._commit_newest(z, self.last_cond, 1.0)
        self._shown = z
        return first_frame

    def _add_lit(self, mem: WorldMemory | None, controls) -> None:
        """When `controls` are night or fog (canvas_lit): the memory's world is to be made in daylight and clear air
        too — once the knobs come nearer to those (_lit_when_nearer), so a world that stays at night costs nothing
        more (made at once, a family switch at night took 61 ms instead of 28 on two threads)."""
        lit = self._lit_knobs(controls)
        if mem is not None and lit is not None:
            mem.to_make = (self._control_tensor(lit), self.seed, self.family)

    def _lit_when_nearer(self, mem: WorldMemory, c: torch.Tensor) -> None:
        """The memory's daylight making, made now if the knobs `c` have come nearer to it than to the canvas's."""
        if mem.to_make is None or mem.controls is None:
            return
        lit, seed, family = mem.to_make
        if self._look_distance(lit, c) < self._look_distance(mem.controls, c):
            mem.to_make = None
            base, mirror, edge = self.ring_latents(self._opening_view(lit[0].cpu().numpy(), seed, family))
            mem.add_made(base, lit, mirror, edge)

    @staticmethod
    def _look_distance(a: torch.Tensor, b: torch.Tensor) -> float:
        """How far apart two knob settings are for the look's making: their daylight and fog."""
        j = [CONTROL_NAMES.index("daylight"), CONTROL_NAMES.index("fog")]
        return float((a[..., j] - b[..., j]).abs().max())

    def _lit_knobs(self, controls) -> np.ndarray | None:
        """The knobs a memory of the model's own is drawn under for `controls` (canvas_lit: their daylight and fog
        NEUTRAL's), or None where those are the knobs themselves (near enough) or no look head can turn it."""
        if not self.canvas_lit or self.look is None:
            return None
        lit = np.asarray(controls, np.float32).copy()
        for name in ("daylight", "fog"):
            j = CONTROL_NAMES.index(name)
            lit[j] = NEUTRAL[j]
        return None if float(np.abs(lit - controls).max()) < 0.2 else lit

    def _opening_view(self, controls, seed: int | None = None, family: str | None = None,
                      at: Flight | None = None) -> np.ndarray:
        """The renderer's opening view of this world (or of `seed`, `family`) under `controls`, flown on to `at`
        (the memory's views' `_fly_made` if not given)."""
        from .render import Renderer

        h = self.dyn.cfg.latent_h * self.tok.cfg.downsample
        w = self.dyn.cfg.latent_w * self.tok.cfg.downsample
        # one renderer, kept: it keeps the seed's worlds it built (built anew, a terrain took 60 ms of a refocus's
        # view's ~90 on one thread). Locked: the decoder's thread makes a refocus's view (prepare) while the model
        # thread may make another.
        with self._render_lock:
            r = self._renderer
            if r is None or (r.width, r.height) != (w, h):
                r = self._renderer = Renderer(w, h)
            r.reset(self.seed if seed is None else seed, self.family if family is None else family, controls)
            at = self._fly_made if at is None else at
            if at.steps:
                r.travel(controls, at.along, at.anim, frames=at.steps, across=at.across, turn=at.yaw,
                         length=at.length)
            return r.render(controls)

    def observe(self, frame: np.ndarray) -> None:
        """The frame just produced truly was `frame`: it replaces our own in the context."""
        self.cache.pop()
        if self.camera is not None:
            self.camera.view = np.eye(3)  # the true frame is the shown picture: no rest of a move left
        if self._knobs is not None:  # … taken at the knobs' zoom: the world is made at it from now on
            self._zoom_made = _zoom_of(self.steered(self._knobs))
        self._lens = np.eye(3)
        self._made_by_renderer = False
        z = self.encode(frame)
        self._shown = z
        self.memory = self.new_memory(z, frame)
        if self._phase != (0, 0):  # the dynamics' frame is the picture moved back by the phase
            back = self._cells_move(-self._phase[0], -self._phase[1], z.shape[-2:])
            z = self._moved(z, back, self._frame_window())
        self._commit_newest(z, self.last_cond, 1.0)

    def new_memory(self, z: torch.Tensor, frame: np.ndarray | None = None) -> WorldMemory | None:
        """A memory made from latent `z` — of `frame` (decoded from z if not given): the canvas is the frame and its
        mirror image encoded as a ring (ring_latents), whose picture half is z inside — or None while memory_pull
        is 0."""
        if self.memory_pull <= 0:
            return None
        if frame is None:
            frame = self.decode(z)
        base, mirror, edge = self.ring_latents(frame, z)
        return WorldMemory(base, self.last_cond["control"], pad=self.memory_pad, mirror=mirror, edge=edge)

    def memory_from_view(self) -> None:
        """A memory made from the latent in view now (the memory turned on while the world runs): the dynamics'
        frame as it is (not moved on ahead of the next step), which the picture is moved on from by the phase."""
        self.memory = self.new_memory(self._ctx_raw if self._ctx_raw is not None else self.last_latent)
        self._made_by_renderer = False
        if self.memory is not None:
            self.memory.shift(*self._phase)  # made from the dynamics' frame: the picture is it moved by the phase

    def _frame_window(self) -> torch.Tensor | None:
        """What the memory holds where the dynamics' frame is (the picture's window moved back by the phase; while
        a new world fades in, the fade so far); None without a memory."""
        return None if self.memory is None else self.memory.target(-self._phase[0], -self._phase[1])

    def _cells_move(self, kx: int, ky: int, hw) -> np.ndarray | None:
        """`resample`'s map for a move by whole cells (content right / down), or None for no move."""
        if not kx and not ky:
            return None
        h, w = hw
        return np.array([[1.0, 0.0, -kx * REF_W / w], [0.0, 1.0, -ky * REF_H / h], [0.0, 0.0, 1.0]])

    @staticmethod
    def _is_shift(move: np.ndarray | None) -> bool:
        """Whether a cells-mode map moves by whole cells only (not a zoom step)."""
        return move is not None and abs(move[0, 0] - 1.0) < 1e-9

    @staticmethod
    def _cells_of(move: np.ndarray, hw) -> tuple[int, int]:
        """The whole cells (x, y) a `_cells_move` map moves by (the inverse of it)."""
        h, w = hw
        return int(round(-move[0, 2] * w / REF_W)), int(round(-move[1, 2] * h / REF_H))

    def _context_step(self, kx: int, ky: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """For a move of the picture by (kx, ky) cells: the move of the dynamics' context — whole patches, once the
        phase passes half a patch — and the phase after it."""
        if not self.patch_phase:
            return (kx, ky), self._phase
        pw, ph = self.dyn.cfg.patch_w, self.dyn.cfg.patch
        px, py = self._phase[0] + kx, self._phase[1] + ky
        mx, my = pw * round(px / pw), ph * round(py / ph)
        return (mx, my), (px - mx, py - my)

    def ring_latents(self, frame: np.ndarray, z: torch.Tensor | None = None, margin: int = 2,
                     edge_cells: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The memory's canvas for `frame`: the frame and its mirror image side by side — a ring, each edge meeting
        its own mirror image — encoded as one picture (with `margin` cells more round the ring and of rows mirrored
        above and below, then cut off), so that no cell of it is an edge cell. (Encoded on their own, the picture's
        edge cells carry the encoder's zero padding: wherever a turn brings them into view — the joins, the
        context's own edge moved in — they draw a dark vertical bar.)
        Returns the two halves (1, C, h, w), the picture's and the mirror image's, and the edge: what the padding
        adds to the outer `edge_cells` cells of `frame`'s own latent `z` (encoded if not given) — the decoder draws
        the picture's edges from such cells — zero inside. The picture's half plus the edge is z."""
        f = self.tok.cfg.downsample
        frame = np.asarray(frame)
        ring = np.concatenate([frame, frame[:, ::-1]], 1)
        px = margin * f
        ring = np.pad(ring, ((px, px), (0, 0), (0, 0)), mode="symmetric")
        ring = np.pad(ring, ((0, 0), (px, px), (0, 0)), mode="wrap")
        ring = self.encode(np.ascontiguousarray(ring))[..., margin:-margin, margin:-margin]
        w = frame.shape[1] // f
        base, mirror = ring[..., :w], ring[..., w:]
        if z is None:
            z = self.encode(frame)
        edge = outer_cells(z - base, int(self.edge_cells if edge_cells is None else edge_cells))
        base = z - edge  # (z inside: the window where the picture is holds z itself)
        return base, mirror, edge

    def _commit_newest(self, z: torch.Tensor, cond: dict, tau: float) -> None:
        """z into the context as its newest frame (with its noise level). Camera-context weights see it moved by the
        flow the camera head expects for the next step if the controls stay, and in cells mode by the whole patches
        it expects (see patch_phase), so that step commits nothing again unless they moved (see next_latent)."""
        self._ctx_raw, self._ctx_flow, self._ctx_move = z, None, None
        if self.camera is not None and self.camera.where == "context":
            self._ctx_flow = self.camera.peek(cond["control"][0].cpu().numpy(), self._family_weights())
            z = self.camera.warp(z, self._ctx_flow)
        elif self.camera is not None and self.camera.where == "cells":
            move = self.camera.peek_move(cond["control"][0].cpu().numpy(), self._family_weights(),
                                         tuple(z.shape[-2:]))
            if self._is_shift(move):  # the context's part of it (see patch_phase)
                k = self._cells_of(move, z.shape[-2:])
                m, phase = self._context_step(*k)
                move = self._cells_move(*m, z.shape[-2:])
                win = None if self.memory is None else self.memory.target(k[0] - phase[0], k[1] - phase[1])
            else:
                win = None
            self._ctx_move = move
            if move is not None:
                z = self._moved(z, move, win)
        with torch.no_grad(), self._dyn_autocast():
            self.dyn.commit(self.cache, z, cond, self.t, tau_ctx=tau)
        self.last_latent, self._last_tau = z, tau

    def _moved(self, z: torch.Tensor, move: np.ndarray, win: torch.Tensor | None) -> torch.Tensor:
        """The latent `z` moved by the cells mode's `move` (resample); the cells that enter at its edges are taken
        from `win`, the memory's window where z will be after the move (None: no memory) — the world's own picture
        there, where the frame alone can only mirror its own edge. (Past the memory's pad rows its window stops;
        the rows that then enter are its edge rows.)"""
        if win is None or not self._is_shift(move):  # (a zoom step: no memory of it)
            return resample(z, move, wrap=self.camera.wrap)
        h, w = z.shape[-2:]
        kx, ky = self._cells_of(move, (h, w))
        edge = self.memory.edge_now() if self.memory is not None else None
        if edge is None:
            out = torch.roll(z, (ky, kx), (-2, -1))  # (what comes round is what enters: overwritten below)
        else:  # the edge cells moved in are inside cells now, and the cells now at the edge are edge cells
            out = torch.roll(z - edge, (ky, kx), (-2, -1)) + edge
        if kx:
            cols = slice(0, kx) if kx > 0 else slice(w + kx, w)
            out[..., cols] = win[..., cols]
        if ky:
            rows = slice(0, ky) if ky > 0 else slice(h + ky, h)
            out[..., rows, :] = win[..., rows, :]
        return out

    def step(self, controls) -> np.ndarray:
        z = self.next_latent(controls)
        return self.decode_timed(z, self.view)

    @property
    def view(self) -> np.ndarray | None:
        """How the newest latent's picture is shown (the camera head's sub-cell rest, cells mode, then the zoom's
        lens), or None where it is shown as it is."""
        cam = self.camera
        rest = cam.view if cam is not None and cam.where == "cells" and cam.gain else None
        if self._lens is None or np.array_equal(self._lens, np.eye(3)):
            return None if rest is None else rest.copy()
        return self._lens.copy() if rest is None else self._lens @ rest

    def _made_at(self, controls) -> np.ndarray:
        """The knobs as the world is made under them: the zoom the world was made at (the lens shows the rest)."""
        c = np.array(controls, np.float32)
        if self.lens and self._zoom_made is not None:
            c[ZOOM] = self._zoom_made
        return c

    def _lens_for(self, zoom: float) -> np.ndarray:
        """The lens showing the world made at _zoom_made as the zoom knob at `zoom` sees it, about the optical
        centre of the family shown (the families' weights during a blend) at the camera's pitch."""
        if not self.lens or self._zoom_made is None or (abs(zoom - self._zoom_made) < 1e-6
                                                         and self._fly_scale == 1.0):
            return np.eye(3)
        row = self._optical_row()
        return magnify(self._fly_scale, row) @ lens(self._zoom_made, zoom, row)

    def _optical_row(self) -> float:
        """The optical centre's row (a share of the height from the top) of the family shown (the families' weights
        during a blend) at the camera's pitch: where a zoom or a flight magnifies the picture about."""
        from .render import optical_row

        if self.camera is not None:
            pitch = self.camera.pitch
        else:
            pitch = (float(np.nan_to_num(self.steered(self._knobs)[PITCH], nan=0.5)) - 0.5) * 2.0
        weights = self._family_weights() or {None: 1.0}
        return sum(w * optical_row(f, pitch) for f, w in weights.items()) / sum(weights.values())

    def _from_centre(self, hw) -> torch.Tensor:
        """Each latent cell's distance from the optical centre (its column in the middle, its row _optical_row), in
        pixels alike across and down, as a share of the farthest cell's (H, W)."""
        h, w = hw
        ys = (torch.arange(h, dtype=torch.float32) + 0.5 - self._optical_row() * h) / w
        xs = (torch.arange(w, dtype=torch.float32) + 0.5 - 0.5 * w) / w
        r = (ys[:, None] ** 2 + xs[None, :] ** 2).sqrt()
        return (r / r.max()).to(self.device)

    def _refocus_due(self, zoom: float, fly_scale: float | None = None) -> bool:
        """Whether the world is to be made again at the knob's `zoom` and where the flight has gone: the zoom's lens
        magnifies or shrinks the picture by lens_refocus or more, or the flight (by `fly_scale`, default the
        flight's now) by fly_refocus, and the world is the renderer's, with no dissolve under way."""
        if not (self.lens and self.lens_refocus and self._zoom_made is not None and self._made_by_renderer
                and self.memory is not None and not self.memory.fading and self._shown is not None):
            return False
        fly = self._fly_scale if fly_scale is None else fly_scale
        zs = lens(self._zoom_made, zoom)[0, 0]
        # (the flight's magnification alone: with the zoom's, a zoom knob that jitters made the world again whenever it
        # jittered up, unforeseen — every ~14 frames in the bench's pipeline instead of ~50)
        return abs(math.log(zs)) >= math.log(self.lens_refocus) or abs(math.log(fly)) >= math.log(self.fly_refocus)

    def _refocus_knobs(self, controls: np.ndarray) -> tuple[float, torch.Tensor, torch.Tensor]:
        """For a refocus to the zoom of `controls` (steered): that zoom, the knobs as the world will be made under
        them then, and the knobs its new view is made under — the memory's making's, at the camera's pitch and zoom
        now (the pitch as the camera head eases it, as the renderer's camera does: a pitch knob that jitters then
        leaves a view made ahead a frame before still fitting)."""
        zoom = _zoom_of(controls)
        c = np.array(controls, np.float32)
        c[ZOOM] = zoom
        c_t = self._control_tensor(c)
        made = self._at_camera(self.memory.controls, c_t)
        if self.camera is not None:
            made[0, PITCH] = float(np.clip(self.camera.pitch * 0.5 + 0.5, 0.0, 1.0))
        return zoom, c_t, made

    def _at_camera(self, knobs: torch.Tensor | None, c: torch.Tensor) -> torch.Tensor:
        """A making's `knobs` (None: `c`'s) with the zoom and the pitch of `c`: the camera's now."""
        k = (c if knobs is None else knobs)[0].cpu().numpy().copy()
        k[ZOOM], k[PITCH] = c[0, ZOOM].item(), c[0, PITCH].item()
        return self._control_tensor(k)

    def _refocus_view(self, made: torch.Tensor, at: Flight
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The new view of a refocus: the renderer's opening view under `made`, flown on to `at`, as the memory's
        ring."""
        return self.ring_latents(self._opening_view(made[0].cpu().numpy(), at=at))

    def _flies(self) -> bool:
        """Whether speed flies this world (fly): a world the model made from the renderer (its memory on: what is
        made again), with the lens and its refocus on and a camera head to say how a step spreads the picture."""
        return bool(self.fly and self.lens and self.lens_refocus and self._made_by_renderer
                    and self.camera is not None and self.memory is not None)

    def _flown(self, controls, steps: int = 1) -> Flight:
        """Where the flight is after `steps` more steps at `controls` (steered), as the renderer's camera goes: it
        turns as the camera head turns the picture (its gain), then flies on where it looks."""
        from .render import DT, camera_rates, knobs

        turn, way, anim = (r * DT for r in camera_rates(knobs(controls)))
        turn *= self.camera.gain if self.camera is not None else 1.0
        f = self._flight
        along, across, yaw = f.along, f.across, f.yaw
        for _ in range(steps):
            yaw += turn
            along, across = along + way * math.cos(yaw), across + way * math.sin(yaw)
        return Flight(along, across, f.length + steps * way, f.anim + steps * anim, f.steps + steps, yaw)

    def _fly_step(self, controls) -> None:
        """One step's flight at `controls` (steered): on along the path, and the picture magnified by its spread; and
        how still the speed knob asks the world to be (both set the frame's pull, _pull)."""
        self._flight = self._flown(controls)
        # (a world it does not fly — seen in true frames, its memory off — is shown as it is)
        self._step_spread = self._spread(controls)
        self._fly_scale = self._fly_scale * self._step_spread if self._flies() else 1.0
        speed = float(np.nan_to_num(controls[SPEED], nan=0.5))
        self._still = max(0.0, 1.0 - speed / self.still_speed) if self.still_speed > 0 else 0.0

    def _pull(self) -> float:
        """How far this frame is pulled to the memory: memory_pull, rising to fly_pull as the world flies (with
        fly_pull_spread 0: fly_pull at any flight) or is asked to hold still."""
        spread = abs(math.log(self._step_spread))
        flying = min(1.0, spread / self.fly_pull_spread) if self.fly_pull_spread > 0 else float(spread > 0)
        return self.memory_pull + max(flying, self._still) * max(0.0, self.fly_pull - self.memory_pull)

    def _spread(self, controls) -> float:
        """How much one step at `controls` (steered) magnifies the picture as it flies (1: not at all)."""
        if not self._flies():
            return 1.0
        return max(0.5, 1.0 + flight_spread(self.camera.maps, controls, self._family_weights()))

    def _refocus_fits(self, made: torch.Tensor, camera: bool = True):
        """Whether posted side work (by its key) is a new view made ahead for this world under the knobs `made`, but
        for a camera pitch up to refocus_slack off and a zoom the lens shows the rest of (magnified or shrunk up to
        sqrt(lens_refocus)); camera False: whatever the camera's pitch and zoom."""
        seed, family = self.seed, self.family
        ends = torch.zeros(NUM_CONTROLS, dtype=torch.bool)
        ends[[ZOOM, PITCH]] = True
        zoom = float(made[0, ZOOM])

        def fits(key) -> bool:
            if key[0] != "refocus" or key[2:] != (seed, family):
                return False
            if float((key[1] - made).abs()[0][~ends].max()) != 0:
                return False
            if not camera:
                return True
            rest = abs(math.log(lens(float(key[1][0, ZOOM]), zoom)[0, 0]))
            return (rest < 0.5 * math.log(self.lens_refocus or 1.0) + 1e-9
                    and abs(float(key[1][0, PITCH]) - float(made[0, PITCH])) < self.refocus_slack)

        return fits

    def _refocus(self, controls: np.ndarray) -> None:
        """The world made again at the zoom of `controls` (the knobs steered, the zoom the knob's) and where the
        flight has taken the camera: the renderer's opening view under the knobs its memory was made under (a world
        made at night and in daylight is made so again — the second when the knobs come nearer to it) but the
        camera's pitch and zoom now, flown on to the flight's place and heading, the look for the knobs now on it, its
        window in the middle of the new ring (the view looks where the camera looks), dissolving in from the
        picture as shown now — which also becomes the dynamics' context, so the picture goes on from itself and only
        sharpens. The lens starts again from 1 (or from where the knob has gone since the new view was made ahead on
        the decoder's thread: `prepare`). (Made under the knobs of the moment instead, a world refocused in fog kept
        the fog: no look clears it again.)"""
        zoom, c, made = self._refocus_knobs(controls)
        ahead = self._side.take(self._refocus_fits(made))
        at = self._flight
        if ahead is not None:
            made, at, (base, mirror, edge) = ahead
            zoom = float(made[0, ZOOM])
            c = self._at_camera(c, made)
        else:
            base, mirror, edge = self._refocus_view(made, at)
        scale = float(lens(self._zoom_made, zoom)[0, 0])
        flown = abs(math.log(scale)) < math.log(self.lens_refocus)  # made again for the flight, not the zoom
        # the picture as shown, at the zoom the world is made at now: the newest latent's through that lens (the
        # lens from there to the knob's zoom, if another, is shown on it: next_latent sets it after the refocus)
        cam = self.camera
        view = self._lens_for(zoom)
        if cam is not None and cam.where == "cells" and cam.gain:
            view = view @ cam.view
        z = self.encode(present(self.decode(self._shown), view))
        old = self.memory
        self._zoom_made = zoom
        self._fly_made, self._fly_scale = at, 1.0
        # the picture as shown dissolves into the new view (a canvas of its own cells: it fades out in 12 frames)
        mem = WorldMemory(z, c, pad=self.memory_pad)
        # … the middle first: a zoom or a flight moves the picture least about its optical centre, where the two
        # pictures meet best; each cell dissolves over refocus_local of the frames (a mix of two latents that do not
        # meet draws a blur: dissolved all at once, a flying city's sharpness fell from 66 to 25 in the middle of each)
        mem.replace(base, made, self.refocus_frames, mirror=mirror, edge=edge,
                    order=self._from_centre(base.shape[-2:]) if self.refocus_local < 1.0 else None,
                    local=self.refocus_local)
        # the window where the camera looks: the new view is made where it looks (the flight's heading: the turn so
        # far), so in the middle of the new ring — the world there, where the old ring's window may have shown the
        # mirror image (the view is made at the camera's pitch, as at a switch: no rows to move)
        mem.ox = 0
        if self.look is not None and not torch.equal(made, c):
            change, edge_change = self._canvas_look(mem.base, made, c, mem.edge_made)
            mem.relook(change, 0, edge_change)
        other = old.other_knobs()
        if other is not None:  # the world's other making, made again once the knobs come nearer to it
            mem.to_make = (self._at_camera(other, c), self.seed, self.family)
        self.memory = mem
        self._look_ref, self._look_rest, self._look_left = c, None, 0
        self._phase = (0, 0)
        if self.camera is not None:
            self.camera.view = np.eye(3)
        self.cache = self.dyn.new_cache()
        self._commit_newest(z, self.last_cond, 1.0)
        self._shown = z
        # the frame follows the dissolve closely, easing back to memory_pull over its last look_glide frames (the
        # picture sharpens sooner) — or over all of it where the flight made the world again: let go over the last
        # few frames, a flying world, made again every ~13 frames, jumped where the dynamics (their context begun
        # anew) took over, by 5× the stream's median change
        self._pull_boost = int(self.refocus_frames)
        self._boost_ease = self._pull_boost if flown else max(1, int(self.look_glide))

    def next_latent(self, controls) -> torch.Tensor:
        """Sample the next frame's latent and commit it to the context (the model's share of a frame)."""
        t0 = time.perf_counter()
        self._knobs = np.asarray(controls, np.float32)
        controls = self.steered(controls)
        zoom = _zoom_of(controls)
        self._fly_step(controls)
        if self._refocus_due(zoom):
            self._refocus(controls)
        controls = self._made_at(controls)
        flow = None
        if self.camera is not None:
            flow = self.camera.flow(controls, self._family_weights())
            if self.camera.where == "context":
                # the newest context frame is moved to where the camera goes this step, and the dynamics draws the
                # frame from it; committed so already unless the knobs moved the flow since (then: once more)
                if self._ctx_flow is None or float(np.abs(flow - self._ctx_flow).max()) > self.camera.tolerance:
                    self.cache.pop()
                    self._ctx_flow = flow
                    self.last_latent = self.camera.warp(self._ctx_raw, flow)
                    with torch.no_grad(), self._dyn_autocast():
                        self.dyn.commit(self.cache, self.last_latent, self.last_cond, self.t, tau_ctx=self._last_tau)
                flow = None
            elif self.camera.where == "cells":
                # the move's whole patches shift the newest context frame (exactly: nearest), so the dynamics draws
                # the next frame where the camera went; the cells between stay in the phase the picture is moved on
                # by, and the rest under a cell in the view the decoded picture is shown by. Committed so already
                # (see _commit_newest) unless the knobs changed the move since: then once more
                hw = tuple(self._ctx_raw.shape[-2:])
                move = self.camera.advance(flow, hw)
                if move is not None and self.memory is not None:  # the memory turns with the camera (no zoom)
                    self.memory.shift(*self.camera.cells)
                if self._is_shift(move):  # the context moves by whole patches
                    m, self._phase = self._context_step(*self.camera.cells)
                    move = self._cells_move(*m, hw)
                if not _same_move(move, self._ctx_move):
                    self.cache.pop()
                    self._ctx_move = move
                    moved = self._ctx_raw if move is None else self._moved(self._ctx_raw, move, self._frame_window())
                    self.last_latent = moved
                    with torch.no_grad(), self._dyn_autocast():
                        self.dyn.commit(self.cache, moved, self.last_cond, self.t, tau_ctx=self._last_tau)
                flow = None
        self._lens = self._lens_for(zoom)
        self.t += 1
        cond = self._cond(controls)
        cfg = self.dyn.cfg
        if cfg.residual:
            cond["prev"] = self.last_latent
        noise = torch.randn((1, cfg.latent_channels, cfg.latent_h, cfg.latent_w), generator=self.gen).to(self.device)
        noise = noise * self.temperature
        with torch.no_grad():
            with self._dyn_autocast():
                uncond = None
                if cfg.guidance_in:  # distilled: the scale is an input, one pass per step
                    cond["guidance"] = torch.tensor([float(self.guidance)], device=self.device)
                elif self.guidance > 1.0:
                    uncond = dict(cond, drop=cond["drop"].clone())
                    uncond["drop"][:, 2:] = True  # prompt and family absent
                z = self.sampler.sample(self.cache, cond, self.t, noise, self.guidance, uncond).float()
                if cfg.residual:  # the sampler made the (scaled) change from the last frame
                    z = self.last_latent + cfg.delta_scale * z
            if flow is not None:
                z = self.camera.warp(z, flow)
            if self.look is not None:
                z = self._with_look(z, cond["control"])
            if self.memory is not None:
                pull = self._pull()
                if self._pull_boost > 0:  # the memory's look is changing: the frame follows it closely, then eases
                    pull = max(pull, self.look_pull * min(1.0, self._pull_boost / max(1, self._boost_ease)))
                    self._pull_boost -= 1
                z = self.memory.apply(z, pull, -self._phase[0], -self._phase[1])
            t1 = time.perf_counter()
            zc = z
            if self.ctx_noise > 0:
                zc = (1 - self.ctx_noise) * z + self.ctx_noise * torch.randn(
                    z.shape, generator=self.gen).to(self.device)
        self._commit_newest(zc, cond, 1.0 - self.ctx_noise)
        if self._phase != (0, 0):  # the picture: the dynamics' frame moved on by the phase
            z = self._moved(z, self._cells_move(*self._phase, z.shape[-2:]),
                            None if self.memory is None else self.memory.target())
        t2 = time.perf_counter()
        self.last_cond = cond
        self._shown = z
        self.timings.update(sample_ms=(t1 - t0) * 1000, commit_ms=(t2 - t1) * 1000)
        return z

    def _family_weights(self) -> dict[str, float]:
        """The family (or, during a blend, the families with their weights) the picture shows now."""
        mix = self._blended()
        if mix is None:
            return {self.family: 1.0} if self.family else {}
        return {f: float(w) for f, w in zip(self.families, mix["family_w"]) if w > 0}

    def _with_look(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The knobs' instant change of look. The look head acts once the knobs have moved look_step since it last
        acted: with the memory on the memory's canvas (the frame follows by the pull); without, on the frame, its
        change gliding in over look_glide frames (with what is left of an earlier one)."""
        if self._look_due(c, self.t):
            self._look_t = self.t
            mem = self.memory
            if mem is not None and mem.controls is not None:
                # With the memory the look head changes the memory's canvas — from the canvas as made, in one pass,
                # gliding in over look_glide frames — and the frame follows by the pull, boosted meanwhile. Changing
                # the frame as well (the head's small steps added up, and the pull and the dynamics' own answer on
                # top) sent a quick daylight turn through black for ~6 frames.
                # The pass prepared on the decoder's thread is taken if it was made for this canvas and for knobs
                # less than look_step from these (knobs that move on, turned or modulated, have moved since it was
                # posted): its knobs become the ones the look was made under, and the next pass starts from them —
                # the look stays within look_step of the knobs, as it does between passes.
                glide = max(1, int(self.look_glide))
                self._lit_when_nearer(mem, c)
                mem.prefer(c, self._look_distance)
                done = self._side.take(lambda key: key[0] is mem.base and key[1] is mem.controls
                                       and float((key[2] - c).abs().max()) < self.look_step)
                c, (change, edge_change) = done if done is not None else (
                    c, self._canvas_look(mem.base, mem.controls, c, mem.edge_made))
                mem.relook(change, glide, edge_change)
                self._pull_boost, self._boost_ease = 2 * glide, glide
            else:
                with self._autocast():
                    change = self.look(z, self._look_ref, c).float()
                self._look_rest = change if self._look_rest is None else self._look_rest + change
                self._look_left = max(1, int(self.look_glide))
            self._look_ref = c
        if self._look_rest is None:
            return z
        part = self._look_rest / self._look_left
        self._look_rest, self._look_left = self._look_rest - part, self._look_left - 1
        if self._look_left == 0:
            self._look_rest = None
        return z + part

    def _look_due(self, c: torch.Tensor, t: int) -> bool:
        """Whether the look head acts at frame `t` with the knobs `c`: they moved look_step since it last acted, and
        it last acted look_every frames ago or more."""
        return t - self._look_t >= self.look_every and float((c - self._look_ref).abs().max()) >= self.look_step

    def _canvas_look(self, base: torch.Tensor, made_under: torch.Tensor, c: torch.Tensor,
                     edge: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The look head's change of the memory's canvas as made (`base`, under the knobs `made_under`) to `c`; and,
        given the edge cells' part as made, its change: the head's change of the picture's own latent (the window
        as made plus the edge part) less its change of the canvas there, in the edge cells — what the encoder's
        padding adds at a picture's edges depends on its look (a night picture's day-time edge part drew a light
        column at its side and a dark bar beside it). None without `edge` (or when look_edges is off)."""
        with torch.no_grad(), self._autocast():
            # the canvas is a ring: the picture's half goes on into the mirror image at both sides, so the head sees
            # it go on (mirrored columns, as far as the head reaches) — not the zero padding of a picture's edge,
            # where it draws a picture's edge change inside the ring
            r = min(self.look.reach(), base.shape[-1]) if self.look_ring else 0
            ring = torch.cat([base[..., :r].flip(-1), base, base[..., base.shape[-1] - r:].flip(-1)], -1)
            change = self.look(ring, made_under, c).float()[..., r:r + base.shape[-1]]
            if edge is None or not self.look_edges:
                return change, None
            pad = (base.shape[-2] - edge.shape[-2]) // 2
            inside = base[..., pad:pad + edge.shape[-2], :]
            own = self.look(inside + edge, made_under, c).float()
        return change, outer_cells(own - change[..., pad:pad + edge.shape[-2], :], self.edge_cells)

    def prepare(self, controls) -> None:
        """The knobs of the next frame, known before this frame's latent is handed on (a pipeline): where the look
        head will act on the memory then, its pass is posted for the decoder's thread, which runs it in
        `decode_timed` before decoding — off the model thread, whose frame is the pipeline's longer (measured: the
        look pass ~7 ms on one thread, the canvas as a ring and the edge cells, of ~16). The next `next_latent`
        takes the answer if the memory and its look are still the ones it was made for and the knobs within
        look_step of these (then the look is made under these knobs, as if they had been read a frame earlier), else
        makes it itself."""
        mem = self.memory
        if mem is None or mem.controls is None:
            return
        steered = self.steered(controls)  # as next_latent will see them (self.t is still this frame)
        zoom, spread = _zoom_of(steered), self._spread(steered)
        due = next((k for k in range(1, 2 * self.fly_ahead + 1)
                    if self._refocus_due(zoom, self._fly_scale * spread ** k)), None)
        if due is not None:
            # the world will be made again (next frame, or as the flight goes on, in `due` frames): its new view now
            # (the look pass comes with it), where the flight will be then — posted once (and kept, rather than a look
            # pass, while the flight is near it: a knob that jitters moves the moment): the decoder's thread, a frame
            # behind the model's, starts it in time where the flight is foreseen
            made = self._refocus_knobs(steered)[2]
            if self._side.holds(self._refocus_fits(made, camera=False)):
                return
            if due <= self.fly_ahead:
                at = self._flown(steered, due)
                self._side.post(("refocus", made, self.seed, self.family),
                                lambda: (made, at, self._refocus_view(made, at)))
                return
        if self.look is None or self._look_ref is None:
            return
        c = self._control_tensor(self._made_at(steered))
        if not self._look_due(c, self.t + 1):
            return
        # as they will be (the making nearest these knobs): a family switch may replace them meanwhile
        base, made_under, edge = mem.nearest(c, self._look_distance)
        self._side.post((base, made_under, c), lambda: (c, self._canvas_look(base, made_under, c, edge)))

    def decode_timed(self, z: torch.Tensor, view: np.ndarray | None = None) -> np.ndarray:
        """The decoder's share of a frame; may run on another thread than `next_latent` (a pipeline), and first
        does the side work `prepare` posted for the next frame. `view`: how to show it (`self.view` when z was
        made)."""
        self._side.run()
        t0 = time.perf_counter()
        frame = self.decode(z)
        if view is not None:
            frame = present(frame, view)
        self.timings["decode_ms"] = (time.perf_counter() - t0) * 1000
        return frame

    # --- steering ---
    def steered(self, controls) -> np.ndarray:
        """The knobs moved by the prompt's offset (glided in over the transition after a prompt changes)."""
        return steer(controls, self._offset_now())

    def _offset_now(self) -> np.ndarray:
        start, end, t0 = self._offset
        x = min(1.0, (self.t - t0) / max(1, self.transition_frames))
        return start + x * x * (3 - 2 * x) * (end - start)

    def _prompt_offset(self) -> np.ndarray:
        """The offset the prompt's words ask for, its hue for the family shown (the colour named is a palette's)."""
        out = np.zeros(NUM_CONTROLS, np.float32)
        if self.prompt is not None:
            out[:] = self.prompt.offset
            out[HUE] = hue_offset(self.prompt.colour, self.family)
        return out

    def _retarget_offset(self) -> None:
        target = self._prompt_offset()
        if not np.array_equal(target, self._offset[1]):
            self._offset = (self._offset_now(), target, self.t)

    def set_prompt(self, text: str | None) -> None:
        """Words the world turns towards: the dynamics' text token, and through the prompt head the family they
        name and the knob offsets they describe (vprod.world.prompt), all blended in over the transition."""
        from .text import embed_one

        new = np.array(embed_one(text)) if text else None
        if (new is None) == (self.text is None) and (new is None or np.array_equal(new, self.text)):
            return
        self._begin_blend()
        self.text = new
        head = self._prompt_head()
        self.prompt = head.read(new, text) if head is not None and new is not None else None
        self._switch_family(self._family_to_show())
        self._retarget_offset()

    def _prompt_head(self):
        if self.prompt_head is True:
            from .prompt import load_prompt_head

            self.prompt_head = load_prompt_head(PROMPT_WEIGHTS) if PROMPT_WEIGHTS.is_file() else None
        return self.prompt_head or None

    def set_family(self, family: str | None) -> None:
        """The family asked for (the family knob); a prompt that names one shows that one while it is set."""
        self.family_asked = family
        self._switch_family(self._family_to_show())

    def _family_to_show(self) -> str | None:
        """The prompt's family where it names one, else the one asked for."""
        return (self.prompt.family if self.prompt is not None else None) or self.family_asked

    def _switch_family(self, family: str | None) -> None:
        if family != self.family:
            self._begin_blend()
            if self.memory is not None and family is not None and self.last_cond is not None:
                # the new world's opening view (the renderer's, as at a reset) becomes the memory, faded in
                self.family = family
                # under the knobs the new world will have once the prompt's offset (for this family) is in
                knobs = self._knobs if self._knobs is not None else self.last_cond["control"][0].cpu().numpy()
                ctl = self._made_at(steer(knobs, self._prompt_offset()))
                first = self._opening_view(ctl)
                ctl_t = self._control_tensor(ctl)  # as the conditions will hold them
                mem, old = self.memory, None
                if self.look is not None and mem.controls is not None and not torch.equal(
                        ctl_t, self.last_cond["control"]):
                    # the old world fades out under the new knobs too (else its old look pulls the picture back)
                    old = mem.whole(self._canvas_look(mem.base, mem.controls, ctl_t)[0])
                base, mirror, edge = self.ring_latents(first)
                self.memory.replace(base, ctl_t, max(self.memory_fade_frames, self.transition_frames),
                                    old=old, mirror=mirror, edge=edge)
                self._add_lit(self.memory, ctl)
                self._made_by_renderer = True
        self.family = family
        self._retarget_offset()
