"""`vprod bench …`: measurements printed as JSON, each against a baseline taken in the same run.

host: engine overhead per frame (0, 4, 16 pass-through effects) over a bare loop that does only the clock and the
copy; how long the loop spends handing a frame to a sink that is slow; ZeroMQ frames/s to a subscriber process.
The machine is shared and noisy, so runs are interleaved (bare, engine, bare, engine, …) and medians reported.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from .engine import (LAYER_PARAMS, Effect, ElementConfig, Engine, Layer, Mailbox, ManualTime, Params, Pipeline,
                     Sink, Source)
from .engine.clock import FrameClock


class _CopySource(Source):
    """A fresh frame each tick (what a real source costs at minimum: one copy)."""

    element_id = "bench-copy"
    plugin_name = "bench"

    def __init__(self, config, base):
        super().__init__(config)
        self.base = base

    def process(self, ctx):
        return self.base.copy()


class _PassThroughEffect(Effect):
    element_id = "bench-pass"
    plugin_name = "bench"

    def process(self, frame, ctx):
        return frame


class _NullSink(Sink):
    element_id = "bench-null"
    plugin_name = "bench"

    def send(self, frame, meta):
        pass


class _SlowSink(Sink):
    """Takes 100 ms per frame: three frame intervals at 30 fps."""

    element_id = "bench-slow"
    plugin_name = "bench"

    def send(self, frame, meta):
        time.sleep(0.1)


def _engine(w: int, h: int, effects: int, base: np.ndarray) -> Engine:
    eng = Engine(w, h, 30.0, time_source=ManualTime())
    cfg = ElementConfig(layer="bg", width=w, height=h)
    layer = Layer("bg", _CopySource(cfg, base), [(f"pass{i}", _PassThroughEffect(cfg)) for i in range(effects)],
                  Params.build(LAYER_PARAMS))
    eng.pipeline = Pipeline("bench", [layer], w, h, 30.0)
    return eng


def _bare_loop(frames: int, base: np.ndarray) -> list[float]:
    """Only the clock tick and the copy into a mailbox: the floor any frame loop pays."""
    clock = FrameClock(30.0, ManualTime())
    box = Mailbox()
    out = []
    for _ in range(frames):
        clock.wait()
        t0 = time.perf_counter()
        f = base.copy()
        box.put(f)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _engine_loop(eng: Engine, frames: int) -> list[float]:
    out = []
    for _ in range(frames):
        t0 = time.perf_counter()
        eng.step()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bench_overhead(w: int, h: int, frames: int, rounds: int = 5, progress=None) -> dict:
    base = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    res = {}
    bare_all: list[float] = []
    for n in (0, 4, 16):
        eng = _engine(w, h, n, base)
        eng.add_sink("null", _NullSink(ElementConfig()))
        _engine_loop(eng, 20)  # warm-up
        bare, full = [], []
        for _ in range(rounds):  # interleaved, so both see the same machine
            bare += _bare_loop(frames // rounds, base)
            full += _engine_loop(eng, frames // rounds)
            if progress:
                progress.update(1)
        eng.close()
        bare_all += bare
        b, f = statistics.median(bare), statistics.median(full)
        res[f"effects_{n}"] = {"engine_ms_p50": round(f, 4), "bare_ms_p50": round(b, 4),
                               "overhead_ms_p50": round(f - b, 4),
                               "engine_ms_p99": round(float(np.percentile(full, 99)), 4)}
    return res


def bench_slow_sink(w: int, h: int, seconds: float = 2.0) -> dict:
    """The real-time loop (30 fps) with a sink taking 100 ms per frame, against a null sink, same run."""
    base = np.zeros((h, w, 3), np.uint8)
    out = {}
    for name, cls in (("null_sink", _NullSink), ("slow_sink", _SlowSink)):
        eng = _engine(w, h, 4, base)
        eng.clock = FrameClock(30.0)
        runner = eng.add_sink(name, cls(ElementConfig()))
        stop = threading.Event()
        threading.Timer(seconds, stop.set).start()
        eng.run(stop)
        eng.close()
        out[name] = {"frames": eng.frames, "dropped_ticks": eng.clock.dropped_total,
                     "handoff_ms_max": round(max(eng.handoff_ms), 4),
                     "frame_ms_p99": round(float(np.percentile(list(eng.frame_ms), 99)), 4),
                     "sink_received": runner.sent, "sink_skipped": runner.mailbox.overwritten}
    return out


_SUBSCRIBER = r"""
import json, sys, time, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.SUB); s.setsockopt(zmq.RCVHWM, 4); s.setsockopt(zmq.SUBSCRIBE, b"frame")
s.setsockopt(zmq.RCVTIMEO, 3000); s.connect(sys.argv[1]); print("ready", flush=True)
n = 0; first = None; seqs = []
try:
    while True:
        t, h, p = s.recv_multipart()
        now = time.monotonic(); first = first or now; n += 1; seqs.append(json.loads(h)["seq"])
        if len(p) != int(sys.argv[2]): raise SystemExit("bad payload size")
except zmq.Again:
    pass
dur = (now - first) if n > 1 else 0.0
print(json.dumps({"received": n, "seconds": dur, "first_seq": seqs[0] if seqs else None,
                  "last_seq": seqs[-1] if seqs else None}), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_zmq(w: int, h: int, seconds: float, fps: float | None) -> dict:
    """Frames/s a subscriber process receives: paced at `fps`, or as fast as the loop goes (None)."""
    from .plugins import PluginRegistry

    port = _free_port()
    cls = PluginRegistry().load("zmq")
    eng = _engine(w, h, 0, np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))
    if fps:
        eng.clock = FrameClock(fps)  # real time
    runner = eng.add_sink("zmq", cls(ElementConfig(name="zmq", width=w, height=h, options={"port": port})))
    sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, f"tcp://127.0.0.1:{port}", str(w * h * 3)],
                           stdout=subprocess.PIPE, text=True)
    sub.stdout.readline()  # "ready"
    time.sleep(0.3)  # let the subscription reach the publisher
    stop = threading.Event()
    t0 = time.monotonic()
    threading.Timer(seconds, stop.set).start()
    eng.run(stop)
    produced = eng.frames
    dur = time.monotonic() - t0
    eng.close()
    out, _ = sub.communicate(timeout=10)
    r = json.loads(out.strip().splitlines()[-1])
    rate = r["received"] / r["seconds"] if r["seconds"] else 0.0
    return {"paced_fps": fps, "produced": produced, "produced_fps": round(produced / dur, 1),
            "received": r["received"], "received_fps": round(rate, 1),
            "lost": produced - r["received"], "sink_sent": runner.sent}


def run_host(frames: int = 300, size: tuple[int, int] = (1280, 720), quiet: bool = False) -> dict:
    w, h = size
    t0 = time.monotonic()
    with tqdm(total=15, desc="bench host", disable=quiet, file=sys.stderr) as bar:
        overhead = bench_overhead(w, h, frames, progress=bar)
        slow = bench_slow_sink(w, h)
        zmq_paced = bench_zmq(w, h, 3.0, 30.0)
        zmq_max = bench_zmq(w, h, 3.0, None)
    ok_overhead = overhead["effects_4"]["overhead_ms_p50"] <= 1.0
    return {
        "bench": "host",
        "size": f"{w}x{h}",
        "frames_per_case": frames,
        "overhead": overhead,
        "sinks": slow,
        "zmq": {"paced_30fps": zmq_paced, "unpaced": zmq_max},
        "goals": {"overhead_4_effects_le_1ms": ok_overhead,
                  "no_frame_waits_on_sink": slow["slow_sink"]["dropped_ticks"] == 0
                  and slow["slow_sink"]["handoff_ms_max"] < 1.0},
        "seconds": round(time.monotonic() - t0, 1),
    }


def main(args) -> int:
    if args.what == "control":
        from .bench_control import main as control_main

        return control_main(args)
    if args.what == "effects":
        from .bench_effects import run as run_effects

        res = run_effects(args.frames, tuple(args.size), args.seconds, pipeline=args.seconds > 0,
                          only=[c for c in args.cases.split(",") if c] or None, quiet=args.json)
    elif args.what == "host":
        res = run_host(args.frames, tuple(args.size), quiet=args.json)
    else:
        res = run_world(frames=min(args.frames, 120), memory_frames=args.memory_frames, device=args.device,
                        dtype=args.dtype, threads=tuple(int(t) for t in args.threads.split(",")),
                        out_size=tuple(args.size), quiet=args.json, engine_seconds=args.seconds)
    print(json.dumps(res, indent=None if args.json else 2))
    return 0


# --- world model ---
def _matmul_gflops(threads: int, dtype, seconds: float = 1.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(1024, 1024, dtype=dtype)
    b = torch.randn(1024, 1024, dtype=dtype)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0) / 1e9


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _pipeline(wm, frames: int, out_size, rng, pipelined: bool) -> list[float]:
    """Make `frames` output frames (world model → 1280×720); returns the time each one was finished.

    Sequential: model, decoder and upscale (with the camera's rest under a latent cell) on one thread. Pipelined:
    the model thread samples and commits latents while a second thread decodes and upscales the newest one (and
    first runs the look head's pass for the next frame, `WorldModel.prepare`), as the worldmodel source does."""
    import queue

    from .world import NEUTRAL
    from .world.motion import present

    def controls():
        return np.clip(NEUTRAL + rng.normal(0, 0.05, NEUTRAL.shape), 0, 1)

    done: list[float] = []
    warm = 5
    if not pipelined:
        for i in range(frames + warm):
            z = wm.next_latent(controls())
            present(wm.decode_timed(z), wm.view, out_size)
            if i >= warm:
                done.append(time.perf_counter())
        return done
    q: queue.Queue = queue.Queue(maxsize=1)

    def decoder():
        n = 0
        while n < frames + warm:
            z, view = q.get()
            present(wm.decode_timed(z), view, out_size)
            n += 1
            if n > warm:
                done.append(time.perf_counter())

    t = threading.Thread(target=decoder, daemon=True)
    t.start()
    c = controls()
    for _ in range(frames + warm):
        z = wm.next_latent(c)
        c = controls()
        wm.prepare(c)  # the next frame's look pass goes to the decoder's thread, as in the worldmodel source
        q.put((z, wm.view))  # blocks only when the decoder is a whole frame behind
    t.join()
    return done


# (steps, output fps, knobs): `make run` as shipped, and the 1-step goal's rate
ENGINE_CASES = tuple((steps, fps, knobs) for steps, fps in ((2, 30), (1, 60))
                     for knobs in ("held", "moving", "zooming"))


def run_world_engine(seconds: float, size: tuple[int, int] = (1280, 720), quiet: bool = False) -> list[dict]:
    """The world model where it streams: presets/default.toml's worldmodel source in the daemon's frame loop (the
    engine's thread upscales each output frame to `size` and hands it to a null output), `seconds` a case. Knobs
    held (the preset's, the camera moving), moving: daylight and hue swung at 0.5 and 0.2 Hz each frame, as a
    VJ's LFOs or hands would, or zooming: the zoom knob stepped between 0.5 and 0.85 every second (the world is made
    again at each: WorldModel.lens_refocus). The source makes at most one picture per output frame: it keeps up
    when its new pictures a second reach the output's frame rate (`new_picture_share` 1; below, output frames
    repeat one)."""
    import math

    from .bench_effects import REPO, engine_run
    from .plugins import PluginRegistry
    from .threads import configure_threads, configure_torch

    configure_threads(1)  # as the daemon does: one thread per stage
    configure_torch(1)
    registry = PluginRegistry()

    def source(p):
        return next(layer for layer in p.layers if layer.id == "bg").source

    def moving(p, ctx):
        states = source(p).p.states
        states["daylight"].set(0.75 + 0.2 * math.sin(2 * math.pi * 0.5 * ctx.pts))
        states["hue"].set(0.5 + 0.25 * math.sin(2 * math.pi * 0.2 * ctx.pts))

    def zooming(p, ctx):
        source(p).p.states["zoom"].set(0.85 if int(ctx.pts) % 2 else 0.5)

    modulate = {"held": None, "moving": moving, "zooming": zooming}

    out = []
    for steps, fps, knobs in tqdm(ENGINE_CASES, desc="world in the engine", disable=quiet, file=sys.stderr):
        r = engine_run(REPO / "presets" / "default.toml", registry, seconds, size,
                       lambda p: getattr(source(p), "_frames", 0),
                       lambda p, steps=steps: source(p).p.states["steps"].set(str(steps)),
                       fps=fps, modulate=modulate[knobs])
        stats = source(r.pop("pipeline")).stats() or {}
        pictures = r.pop("produced_per_s")
        out.append({"steps": steps, "fps": fps, "knobs": knobs,
                    "new_pictures_per_s": pictures, "new_picture_share": round(pictures / fps, 3), **r,
                    **{k: v for k, v in stats.items() if k.endswith("_ms")}})
    return out


def run_world(frames: int = 60, memory_frames: int = 10000, device: str = "cpu", dtype: str = "bf16",
              threads: tuple[int, ...] = (1, 2), out_size: tuple[int, int] = (1280, 720), quiet: bool = False,
              engine_seconds: float = 0.0) -> dict:
    import torch

    from .world import NEUTRAL
    from .world.dynamics import Dynamics, DynamicsConfig
    from .world.model import WEIGHTS_DIR, WorldModel, load_dynamics, load_tokenizer
    from .world.tokenizer import Tokenizer, TokenizerConfig

    tdt = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype]
    shipped = (WEIGHTS_DIR / "world.safetensors").is_file() and (WEIGHTS_DIR / "tokenizer.safetensors").is_file()
    if shipped:
        tok = load_tokenizer()
        dyn, _ = load_dynamics()
    else:  # speed does not depend on the weights' values
        tok, dyn = Tokenizer(TokenizerConfig()).eval(), Dynamics(DynamicsConfig()).eval()
    wm = WorldModel(tok, dyn, device=device, dtype=tdt)
    rng = np.random.default_rng(0)
    res: dict = {"bench": "world", "device": device, "dtype": dtype,
                 "dynamics_dtype": str(wm.dynamics_dtype).removeprefix("torch."),
                 "weights": "shipped" if shipped else "random-init",
                 "model": {"d_model": dyn.cfg.d_model, "layers": dyn.cfg.layers, "context": dyn.cfg.context,
                           "params": sum(p.numel() for p in dyn.parameters()),
                           "tokenizer_params": sum(p.numel() for p in tok.parameters())},
                 "native": f"{dyn.cfg.latent_w * tok.cfg.downsample}x{dyn.cfg.latent_h * tok.cfg.downsample}",
                 "output": f"{out_size[0]}x{out_size[1]}", "runs": []}
    cases = [(th, st) for th in threads for st in (1, 2, 4)]
    with tqdm(total=len(cases), desc="bench world", disable=quiet, file=sys.stderr) as bar:
        for th, steps in cases:
            gf = None
            if device == "cpu":
                gf = _matmul_gflops(th, torch.bfloat16 if dtype == "bf16" else torch.float32)
                torch.set_num_threads(1)  # one thread per stage: 2 threads = model and decoder side by side
            wm.steps = steps
            wm.reset(1, NEUTRAL, "terrain")
            times = _pipeline(wm, frames, out_size, rng, pipelined=th > 1)
            ms_a = np.diff(np.array(times)) * 1000  # interval between finished 1280x720 frames
            res["runs"].append({
                "threads": th, "steps": steps, "mode": "model ‖ decoder" if th > 1 else "sequential",
                "fps_p50": round(1000 / float(np.percentile(ms_a, 50)), 1),
                "fps_p99": round(1000 / float(np.percentile(ms_a, 99)), 1),  # the slow tail, as a rate
                "fps_mean": round(len(ms_a) / (times[-1] - times[0]), 1),
                "frame_interval_ms_p50": round(float(np.percentile(ms_a, 50)), 2),
                **{k: round(v, 2) for k, v in wm.timings.items()},
                "matmul_gflops": round(gf, 1) if gf else None,
            })
            bar.update(1)
    if memory_frames:
        torch.set_num_threads(threads[0])
        wm.steps = 1
        wm.reset(2, NEUTRAL, "city")
        samples = []
        for i in tqdm(range(memory_frames), desc="memory", disable=quiet, file=sys.stderr):
            wm.step(np.clip(NEUTRAL + rng.normal(0, 0.05, NEUTRAL.shape), 0, 1))
            if i % max(1, memory_frames // 20) == 0:
                samples.append((i, round(_rss_mb(), 1), wm.cache.nbytes()))
        first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
        res["memory"] = {"frames": memory_frames, "rss_mb": [s[1] for s in samples],
                         "rss_growth_mb": round(last[1] - first[1], 1), "cache_bytes": last[2],
                         "cache_frames": len(wm.cache)}
    if engine_seconds > 0 and device == "cpu":
        del wm, tok, dyn  # their memory back before the engine's source loads its own
        res["engine"] = run_world_engine(engine_seconds, out_size, quiet)
    return res
