"""The world model as a live source.

A two-stage pipeline: the model thread samples each next latent and commits it to the context (one core); the
decode thread turns the newest latent into a picture (the other core); `process()` only takes the newest picture
and upscales it, so the frame loop never waits for the model. A prompt or family change is a new condition token,
blended in over `transition` seconds: the running world turns towards it with no cut; a prompt's words also name a
family and move the knobs they describe (vprod.world.prompt). `reset` restarts from the renderer's opening frame of
the current family.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from vprod.engine import (
    BoolParam,
    ChoiceParam,
    FloatParam,
    FrameContext,
    IntParam,
    Mailbox,
    Source,
    TextParam,
    TriggerParam,
    resolve_path,
)
from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.motion import present
from vprod.world.render import FAMILIES

log = logging.getLogger("vprod.worldmodel")

CONTROL_DOCS = {
    "yaw": "Camera turn rate: 0 left, 0.5 straight, 1 right",
    "pitch": "Camera pitch: 0 down, 0.5 level, 1 up",
    "speed": "Forward speed / animation rate",
    "zoom": "Field of view: 0 wide, 1 zoomed in",
    "daylight": "Time of day: 0 night, 0.5 dusk, 1 noon",
    "hue": "Palette shift around the colour wheel",
    "energy": "Motion intensity (audio drives this)",
    "fog": "Fog / weather density",
}


class WorldModelSource(Source):
    """An endless generated world (vprod's world model), steered live."""

    params = {
        **{name: FloatParam(float(NEUTRAL[i]), 0.0, 1.0, slew=0.2, doc=CONTROL_DOCS[name])
           for i, name in enumerate(CONTROL_NAMES)},
        "prompt": TextParam("", max_len=300, doc="Words the world turns towards, e.g. 'a city at night', 'red "
                            "mountains', 'foggy, turning left': the kind of world they name and the knobs they "
                            "describe, added to the knobs (empty: none)"),
        "family": ChoiceParam("terrain", FAMILIES, doc="Kind of world; a change steers there without a cut (while "
                              "the prompt names a kind of world, that one is shown)"),
        "steps": ChoiceParam("2", ("1", "2", "4"), doc="Flow steps per frame: 1 fastest, 4 finest"),
        "guidance": FloatParam(1.0, 1.0, 4.0, doc="Prompt/family strength (distilled into the shipped weights: one "
                                                  "pass per step at any strength)"),
        "variety": FloatParam(0.75, 0.0, 1.5, doc="Noise scale of the sampler: lower is steadier, higher livelier"),
        "transition": FloatParam(0.4, 0.0, 5.0, doc="Seconds a prompt or family change takes to blend in"),
        "glide": FloatParam(0.1, 0.0, 2.0, doc="Seconds a knob's instant change of look (the look head's) takes to "
                                               "glide in — into the world's memory, which the picture follows, or "
                                               "with the memory off into the picture — after the knob's own slew"),
        "camera": FloatParam(1.0, 0.0, 2.0, doc="How far the camera head turns the world with yaw and pitch: 1 as "
                             "far as the renderer's camera; 0 off, the dynamics alone (they barely move it)"),
        "memory": FloatParam(0.5, 0.0, 1.0, doc="How strongly each frame is pulled towards the world's memory (the "
                             "latent panorama around the camera, from the opening view): 0 the dynamics alone (they "
                             "wash out within a second), higher steadier; up to 0.8 while the world flies or "
                             "holds still"),
        "seed": IntParam(0, 0, 1_000_000, doc="World seed, used by reset"),
        "reset": TriggerParam(doc="Start again from the family's opening view"),
        "paused": BoolParam(False, doc="Hold the current frame"),
    }
    options = {
        "weights": ("", "world model weights (.safetensors); empty: the shipped ones"),
        "tokenizer": ("", "tokenizer weights (.safetensors); empty: the shipped ones"),
        "threads": (1, "torch threads for the model thread"),
        "device": ("cpu", "cpu or cuda"),
        "audio": (False, "feed the audio analysis ([audio] / --audio-*) to the model as its audio token; the "
                         "shipped weights were trained without audio, so off by default"),
    }

    def open(self) -> None:
        from vprod.threads import configure_torch
        from vprod.world.model import (
            WEIGHTS_DIR,
            WorldModel,
            load_dynamics,
            load_tokenizer,
        )

        configure_torch(int(self.opts["threads"]))
        wpath = resolve_path(self.opts["weights"], self.config.preset_dir)[0] if self.opts["weights"] else \
            WEIGHTS_DIR / "world.safetensors"
        tpath = resolve_path(self.opts["tokenizer"], self.config.preset_dir)[0] if self.opts["tokenizer"] else \
            WEIGHTS_DIR / "tokenizer.safetensors"
        for p in (wpath, tpath):
            if not p.is_file():
                raise RuntimeError(f"world model weights not found: {p} (train them: see README, 'World model')")
        dyn, meta = load_dynamics(wpath)
        self.world = WorldModel(load_tokenizer(tpath), dyn, steps=int(self.p.steps), device=self.opts["device"],
                                families=tuple(meta["trained"].get("families", FAMILIES)))
        self.world.memory_pull = float(self.p.memory)
        if self.world.camera is not None:
            self.world.camera.gain = float(self.p.camera)
        self._lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._view: np.ndarray | None = None  # how the latest frame is shown (the camera's sub-cell rest)
        self._latents = Mailbox()  # newest latent waiting for the decoder (latest wins)
        self._frames = 0
        self._made: deque[float] = deque(maxlen=256)  # when the decoder finished its latest pictures (stats)
        self._error: str = ""
        self._stop = threading.Event()
        self._reset_requested = True
        self._prompt = None
        self._embedding = ""  # the prompt whose embedding is being made on its own thread (the first loads the model)
        self._embedded: set[str] = set()
        # one latent per output frame: the world moves at the frame rate, and no core is spent on frames nobody sees
        self._credit = 2
        self._demand = threading.Condition()
        self._knobs_before: np.ndarray | None = None  # the knobs the model thread read for the frame before
        self._threads = [threading.Thread(target=self._run_model, name="worldmodel", daemon=True),
                         threading.Thread(target=self._run_decoder, name="worldmodel-decode", daemon=True)]
        for t in self._threads:
            t.start()

    # --- the model thread ---
    def _controls(self) -> np.ndarray:
        return np.array([self.p.get(n) for n in CONTROL_NAMES], np.float32)

    def _run_model(self) -> None:
        w = self.world
        while not self._stop.is_set():
            try:
                if self._reset_requested:
                    self._reset_requested = False
                    frame = w.reset(int(self.p.seed), self._controls(), self.p.family)
                    with self._lock:
                        self._latest, self._view = frame, None
                    continue
                if self.p.paused:
                    time.sleep(0.02)
                    continue
                with self._demand:
                    if self._credit <= 0 and not self._demand.wait_for(lambda: self._credit > 0, 0.2):
                        continue
                    self._credit -= 1
                w.transition_frames = int(round(float(self.p.transition) * self.config.fps))
                w.look_glide = max(1, int(round(float(self.p.glide) * self.config.fps)))
                if self.p.prompt != self._prompt and self._prompt_ready(self.p.prompt):
                    self._prompt = self.p.prompt
                    w.set_prompt(self._prompt or None)
                w.set_family(self.p.family)
                w.steps = int(self.p.steps)
                w.guidance = float(self.p.guidance)
                w.temperature = float(self.p.variety)
                if w.camera is not None:
                    w.camera.gain = float(self.p.camera)
                w.memory_pull = float(self.p.memory)
                if w.memory_pull <= 0:  # turned off: the look head acts on the picture again, nothing pulls it
                    w.memory = None
                elif w.memory is None and w.last_latent is not None:  # turned on: from what is in view now
                    w.memory_from_view()
                knobs = self._controls()
                z = w.next_latent(knobs)
                # the next frame's look pass, for the decoder's thread while it waits: for the knobs then, guessed
                # from how they move now (turned or modulated knobs glide; held ones stay)
                w.prepare(knobs if self._knobs_before is None else 2 * knobs - self._knobs_before)
                self._knobs_before = knobs
                self._latents.put((z, w.view))
            except Exception as e:  # noqa: BLE001 - reported through process(), the thread carries on
                self._error = f"{type(e).__name__}: {e}"
                time.sleep(0.5)

    def _prompt_ready(self, text: str) -> bool:
        """Whether `text`'s embedding is ready; if not, it is made on its own thread — the first prompt loads the
        sentence model (seconds), and the world keeps moving meanwhile."""
        if not text or text in self._embedded:
            return True
        if self._embedding != text:
            self._embedding = text
            threading.Thread(target=self._embed, args=(text,), name="worldmodel-prompt", daemon=True).start()
        return False

    def _embed(self, text: str) -> None:
        from vprod.world.text import embed_one

        try:
            embed_one(text)  # cached: set_prompt finds it
            self._embedded.add(text)
        except Exception as e:  # noqa: BLE001 - reported through process()
            self._error = f"prompt {text!r}: {type(e).__name__}: {e}"

    # --- the decode thread ---
    def _run_decoder(self) -> None:
        while not self._stop.is_set():
            item = self._latents.take(0.2)
            if item is None:
                continue
            z, view = item
            try:
                frame = self.world.decode_timed(z)
            except Exception as e:  # noqa: BLE001
                self._error = f"{type(e).__name__}: {e}"
                continue
            with self._lock:
                self._latest, self._view = frame, view
                self._frames += 1
                self._made.append(time.monotonic())

    # --- the frame loop's side ---
    def process(self, ctx: FrameContext) -> np.ndarray:
        if self.p.fired("reset"):
            self._reset_requested = True
        with self._demand:
            self._credit = min(self._credit + 1, 2)
            self._demand.notify()
        if self.opts["audio"] is True:  # the newest features, else absent (the model thread reads the attribute)
            vec = ctx.signals.get("audio_vec")
            self.world.audio = np.asarray(vec, np.float32) if vec is not None else None
        if self._error:
            err, self._error = self._error, ""
            raise RuntimeError(f"world model: {err}")
        self._check_rate(ctx)
        with self._lock:
            frame, view = self._latest, self._view
        if frame is None:
            return np.zeros((ctx.height, ctx.width, 3), np.uint8)  # the first frame is still being made
        # upscaled to the output, moved by the camera's rest under a latent cell (one resample either way)
        return present(frame, view, (ctx.width, ctx.height))

    # a world that makes fewer than SLOW_SHARE of the output's frames, at SLOW_CHECKS checks in a row RATE_CHECK_S
    # apart, is said in the log (once a minute at most) with what to do about it
    RATE_CHECK_S, SLOW_CHECKS, SLOW_SHARE = 2.0, 3, 0.85
    _rate_checked: float | None = None  # when the last check was (None: the first frame starts the clock)
    _slow_checks = 0  # slow checks in a row
    _slow_warned = -1e9  # when the log last said so

    def _rate(self) -> tuple[int, float]:
        """Pictures made, and how many a second over the last two seconds."""
        now = time.monotonic()
        with self._lock:
            made, recent = self._frames, [t for t in self._made if now - t <= 2.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return made, rate

    def _check_rate(self, ctx: FrameContext) -> None:
        """Warn when the world does not keep up with the output (output frames then repeat a picture)."""
        now = time.monotonic()
        if self._rate_checked is None:
            self._rate_checked = now
        if now - self._rate_checked < self.RATE_CHECK_S:
            return
        self._rate_checked = now
        made, rate = self._rate()
        slow = not self.p.paused and made > 2 * ctx.fps and rate < self.SLOW_SHARE * ctx.fps
        self._slow_checks = self._slow_checks + 1 if slow else 0
        if self._slow_checks >= self.SLOW_CHECKS and now - self._slow_warned >= 60.0:
            self._slow_warned = now
            steps, layer = int(self.p.steps), self.config.layer
            advice = f"/{layer}/steps 1, " if steps > 1 else ""
            log.warning("world model /%s: %.0f new pictures a second at %g fps output (%d steps): output frames "
                        "repeat one; try %sa lower frame rate (--fps), or fewer other effects on this machine",
                        layer, rate, ctx.fps, steps, advice)

    def stats(self) -> dict | None:
        """The pictures the world has made, how many a second over the last two seconds (one per output frame while
        it keeps up), and the model's share of the newest (ms)."""
        if getattr(self, "world", None) is None:
            return None
        made, rate = self._rate()
        timings = dict(self.world.timings)  # one copy (the model and decoder threads write it as they go)
        return {"pictures": made, "pictures_per_s": round(rate, 1), "steps": int(self.p.steps),
                **{k: round(v, 2) for k, v in timings.items()}}

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            with self._demand:
                self._demand.notify_all()
            self._latents.close()
            for t in self._threads:
                t.join(2.0)
