"""`vprod` commands. The only place that configures logging."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__


def size_arg(text: str, even: bool = True) -> tuple[int, int]:
    """argparse type for WIDTHxHEIGHT (every --size option of every command)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1280x720") from None
    if w < 16 or h < 16 or (even and (w % 2 or h % 2)):
        raise argparse.ArgumentTypeError(f"width and height must be {'even and ' if even else ''}at least 16")
    return w, h


def _port(text: str) -> int:
    p = int(text)
    if not 0 <= p <= 65535:
        raise argparse.ArgumentTypeError(f"{p} is not a port (0..65535)")
    return p


def _hostport(text: str) -> str:
    """argparse type for HOST:PORT (OSC feedback targets)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:9001")
    return text


def _obs_url(text: str) -> str:
    """argparse type for an obs-websocket address, ws://HOST:PORT."""
    from .control.obs import parse_url

    try:
        parse_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def cmd_run(args) -> int:
    from .daemon import Daemon, DaemonConfig, StopRequested, print_banner
    from .presets import PresetInvalid

    w, h = args.size if args.size else (None, None)
    cfg = DaemonConfig(preset=args.preset, width=w, height=h, fps=args.fps, bind=args.bind, zmq_port=args.zmq_port,
                       mjpeg_port=args.mjpeg_port, control_port=args.control_port,
                       outputs=args.outputs.split(",") if args.outputs else None, record=args.record,
                       watch=not args.no_watch, threads=args.threads)
    if args.osc_port is not None:
        cfg.extra["osc_port"] = args.osc_port
    if args.osc_target:
        cfg.extra["osc_targets"] = args.osc_target
    if args.no_osc:
        cfg.extra["osc_enabled"] = False
    if args.obs_url:
        cfg.extra["obs_url"] = args.obs_url
    if args.obs_password:
        cfg.extra["obs_password"] = args.obs_password
    if args.audio_device is not None:
        cfg.extra["audio_device"] = args.audio_device
    if args.audio_file:
        cfg.extra["audio_file"] = args.audio_file
    d = Daemon(cfg)
    d.install_signals()  # before start(): a signal while a model loads must still stop cleanly
    try:
        d.start()
        print_banner(d.banner())
        d.running = True  # from here a signal only sets the stop event; the loop sees it
    except StopRequested:
        d.shutdown()
        return 0
    except FileNotFoundError as e:
        d.shutdown()
        print(f"vprod: {e}", file=sys.stderr)
        return 2
    except PresetInvalid as e:
        d.shutdown()
        print("vprod: the preset has errors, nothing started:\n" + str(e), file=sys.stderr)
        return 2
    return d.run(max_frames=args.frames)


def cmd_plugins(args) -> int:
    from .plugins import PluginRegistry

    plugins = PluginRegistry().describe()
    if args.json:
        print(json.dumps(plugins, indent=2, default=str))
        return 0
    for p in plugins:
        status = f"  SET ASIDE: {p['error']}" if p["error"] else ""
        print(f"{p['name']} {p['version']} — {p['description']}{status}")
        for el in p["elements"]:
            print(f"  {el['kind']:<6} {el['id']}: {el['doc']}")
            for name, d in el["params"].items():
                print(f"      {name:<14} {_describe_param(d)}")
            for name, d in el["options"].items():
                print(f"      {name:<14} option, default {d['default']!r}: {d['doc']}")
    return 0


def _describe_param(d: dict) -> str:
    t = d["type"]
    if t in ("float", "int"):
        rng = f"{d['min']:g}..{d['max']:g}{(' ' + d['unit']) if d.get('unit') else ''}"
        return f"{t:<7} {rng:<18} default {d['default']:g}  {d['doc']}"
    if t == "choice":
        return f"{t:<7} {'|'.join(d['choices']):<18} default {d['default']}  {d['doc']}"
    return f"{t:<7} {'':<18} default {d['default']!r}  {d['doc']}"


def cmd_params(args) -> int:
    from .engine import Engine
    from .plugins import PluginRegistry
    from .presets import PresetInvalid, build, find_preset, load

    reg = PluginRegistry()
    try:
        preset = load(find_preset(args.preset), reg)
    except (FileNotFoundError, PresetInvalid) as e:
        print(f"vprod: {e}", file=sys.stderr)
        return 2
    eng = Engine(preset.width, preset.height, preset.fps)
    eng.pipeline = build(preset, reg, open_elements=False)
    schema = eng.schema()
    if args.json:
        print(json.dumps({"preset": preset.name, "params": schema}, indent=2, default=str))
        return 0
    for d in schema:
        print(f"{d['path']:<28} {_describe_param(d)}  [now {d['value']!r}]")
    return 0


def cmd_presets(args) -> int:
    from .plugins import PluginRegistry
    from .presets import preset_dirs, validate_files

    if args.action == "list":
        from pathlib import Path

        for d in preset_dirs():
            for p in sorted(Path(d).glob("*.toml")):
                print(p)
        return 0
    if not args.files:
        print("vprod presets validate: name at least one preset file", file=sys.stderr)
        return 2
    errors = validate_files(args.files, PluginRegistry())
    for e in errors:
        print(e)
    bad = {e.file for e in errors}
    for f in args.files:
        if f not in bad:
            print(f"{f}: ok")
    return 1 if errors else 0


def cmd_doctor(args) -> int:
    from .doctor import run_doctor

    ports = {"zmq": args.zmq_port, "control": args.control_port, "mjpeg": args.mjpeg_port, "osc": args.osc_port}
    return run_doctor(ports=ports, obs_url=args.obs_url, obs_password=args.obs_password, as_json=args.json)


def cmd_obs(args) -> int:
    from .control.obs import setup_command

    return setup_command(args)


def cmd_midi(args) -> int:
    from .control import midi

    return midi.ports_command(args) if args.action == "ports" else midi.learn_command(args)


def cmd_bench(args) -> int:
    from . import bench

    return bench.main(args)


def cmd_train(args) -> int:
    import shlex

    from .threads import configure_threads

    configure_threads(args.threads)
    command = "vprod " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.what not in ("look", "motion", "prompt") and not args.data:
        print(f"vprod train {args.what}: --data DIR is required", file=sys.stderr)
        return 2
    if args.what == "prompt":
        from .world.prompt import train_prompt

        res = train_prompt(args.out, samples=args.clips or 20000, seed=args.seed, progress=not args.quiet,
                           command=command)
    elif args.what == "motion":
        from .world.motion import fit

        res = fit(args.out, clips=args.clips or 24, seed=args.seed, progress=not args.quiet)
    elif args.what == "look":
        from .world.look import LookConfig, LookTrain, train_look

        t = LookTrain(steps=args.steps or LookTrain.steps, batch=args.batch or LookTrain.batch,
                      lr=args.lr or LookTrain.lr, seed=args.seed, states=args.states or LookTrain.states,
                      pad=args.look_pad)
        res = train_look(args.out, args.tokenizer, t, progress=not args.quiet, command=command,
                         width=args.width or LookConfig.width, pooled=args.pooled,
                         dilations=tuple(int(d) for d in args.dilations.split(",")) if args.dilations else ())
    elif args.what == "tokenizer":
        from .world.tokenizer import TokenizerConfig
        from .world.train import TokenizerTrain, train_tokenizer

        t = TokenizerTrain(steps=args.steps or TokenizerTrain.steps, batch=args.batch or TokenizerTrain.batch,
                           lr=args.lr or TokenizerTrain.lr, seed=args.seed)
        res = train_tokenizer(args.data, args.out, t, TokenizerConfig(), device=args.device,
                              progress=not args.quiet, command=command)
    else:
        from .world.train import WorldTrain, train_world

        t = WorldTrain(steps=args.steps or WorldTrain.steps, batch=args.batch or WorldTrain.batch,
                       lr=args.lr or WorldTrain.lr, seed=args.seed, minutes=args.minutes or 0.0,
                       max_clips=args.clips or 0, window=args.window or WorldTrain.window,
                       rollout_frac=WorldTrain.rollout_frac if args.rollout is None else args.rollout,
                       shortcut_frac=WorldTrain.shortcut_frac if args.shortcut is None else args.shortcut,
                       guide_frac=WorldTrain.guide_frac if args.guide is None else args.guide,
                       residual=not args.no_residual, control_film=not args.no_control_film,
                       rollout_depth=WorldTrain.rollout_depth if args.rollout_depth is None else args.rollout_depth,
                       rollout_temp=WorldTrain.rollout_temp if args.rollout_temp is None else args.rollout_temp,
                       rollout_steps=args.rollout_steps or WorldTrain.rollout_steps,
                       rollout_noise=args.rollout_noise, stats_weight=args.stats or 0.0, camera=args.camera or "",
                       rollout_start=WorldTrain.rollout_start if args.rollout_start is None else args.rollout_start)
        res = train_world(args.data, args.out, args.tokenizer, t, device=args.device, progress=not args.quiet,
                          command=command, tiny=args.tiny, init=args.init)
    if res:
        print(json.dumps(res, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vprod", description="Real-time generative video for live production.")
    ap.add_argument("--version", action="version", version=f"vprod {__version__}")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the daemon on a preset")
    r.add_argument("preset", nargs="?", default="presets/default.toml", help="preset file or name")
    r.add_argument("--fps", type=float, help="frames per second (overrides the preset)")
    r.add_argument("--size", type=size_arg, help="output size WIDTHxHEIGHT (overrides the preset)")
    r.add_argument("--bind", help="address every server binds (default 127.0.0.1)")
    r.add_argument("--zmq-port", type=_port, help="ZeroMQ frame stream port (default 5555)")
    r.add_argument("--mjpeg-port", type=_port, help="MJPEG/HTTP port (default 8080)")
    r.add_argument("--control-port", type=_port, help="ZeroMQ control port (default 5556)")
    r.add_argument("--osc-port", type=_port, help="OSC control UDP port (default 9000)")
    r.add_argument("--osc-target", action="append", type=_hostport, metavar="HOST:PORT",
                   help="send OSC feedback (every value change) there; repeatable")
    r.add_argument("--no-osc", action="store_true", help="no OSC control")
    r.add_argument("--obs-url", type=_obs_url, metavar="ws://HOST:PORT",
                   help="follow OBS scenes at this obs-websocket address (overrides [obs].url)")
    r.add_argument("--obs-password", metavar="PASSWORD", help="obs-websocket password (or VPROD_OBS_PASSWORD)")
    r.add_argument("--audio-device", metavar="NAME",
                   help="analyse this audio input (sounddevice name, index or 'default'; overrides [audio])")
    r.add_argument("--audio-file", metavar="FILE", help="analyse this WAV/FLAC file in real time, looping "
                   "(overrides [audio])")
    r.add_argument("--outputs", help="only these outputs, comma-separated (e.g. zmq,mjpeg)")
    r.add_argument("--record", metavar="FILE", help="also record the output to FILE")
    r.add_argument("--threads", type=int, help="threads per stage (default 1, or VPROD_THREADS)")
    r.add_argument("--frames", type=int, help="stop after this many frames")
    r.add_argument("--no-watch", action="store_true", help="do not reload the preset when its file changes")
    r.set_defaults(fn=cmd_run)

    p = sub.add_parser("plugins", help="list plugins, their elements and parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_plugins)

    p = sub.add_parser("params", help="the parameter schema of a preset (the paths every control surface uses)")
    p.add_argument("preset", nargs="?", default="presets/default.toml")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_params)

    p = sub.add_parser("presets", help="list or validate presets")
    p.add_argument("action", choices=["validate", "list"])
    p.add_argument("files", nargs="*")
    p.set_defaults(fn=cmd_presets)

    p = sub.add_parser("doctor", help="check what this set-up lacks, and how to fix it")
    p.add_argument("--json", action="store_true")
    p.add_argument("--zmq-port", type=_port, default=5555)
    p.add_argument("--control-port", type=_port, default=5556)
    p.add_argument("--mjpeg-port", type=_port, default=8080)
    p.add_argument("--osc-port", type=_port, default=9000)
    p.add_argument("--obs-url", default="ws://127.0.0.1:4455")
    p.add_argument("--obs-password", default=None)
    p.set_defaults(fn=cmd_doctor)

    p = sub.add_parser("obs", help="OBS helpers: `setup` adds vprod's stream to an OBS scene as a Media Source")
    p.add_argument("action", choices=["setup"])
    p.add_argument("--url", type=_obs_url, default="ws://127.0.0.1:4455", help="obs-websocket address")
    p.add_argument("--password", help="obs-websocket password (default: VPROD_OBS_PASSWORD)")
    p.add_argument("--scene", help="the OBS scene (default: the current program scene)")
    p.add_argument("--stream", default="http://127.0.0.1:8080/stream.mjpg", help="vprod's MJPEG stream URL")
    p.add_argument("--name", default="vprod", help="the Media Source's name in OBS")
    p.set_defaults(fn=cmd_obs)

    p = sub.add_parser("midi", help="MIDI helpers: list ports, learn a mapping on a running daemon")
    msub = p.add_subparsers(dest="action", required=True)
    m = msub.add_parser("ports", help="the MIDI ports vprod can open ([midi] input / output take a part of a name)")
    m.add_argument("--backend", help="mido backend, e.g. mido.backends.rtmidi/UNIX_JACK (default: $MIDO_BACKEND)")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("learn", help="arm MIDI learn for a parameter, then move a control: the mapping is saved")
    m.add_argument("path", help="parameter path, e.g. /bg/r (`vprod params`)")
    m.add_argument("--control-port", type=_port, default=5556, help="the daemon's ZeroMQ control port")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a control to move (0: do not)")
    p.set_defaults(fn=cmd_midi)

    p = sub.add_parser("bench", help="benchmarks printing JSON")
    p.add_argument("what", choices=["host", "world", "control", "effects"])
    p.add_argument("--json", action="store_true", help="JSON only")
    p.add_argument("--surfaces", default="osc,midi,obs",
                   help="control: surfaces to measure, comma-separated (zmq, the baseline, always runs)")
    p.add_argument("--trials", type=int, default=60, help="control: changes per surface")
    p.add_argument("--fps", type=float, default=30.0, help="control: the daemon's frame rate")
    p.add_argument("--frames", type=int, default=300, help="frames per measurement")
    p.add_argument("--size", type=size_arg, default=(1280, 720), help="output size")
    p.add_argument("--memory-frames", type=int, default=10000, help="world: frames for the memory (RSS) run")
    p.add_argument("--threads", default="1,2", help="world: thread counts to measure, comma-separated")
    p.add_argument("--device", default="cpu", help="world: cpu or cuda")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32", "fp16"],
                   help="world: dtype of the convolutions (tokenizer, look head); on a CPU the dynamics run in fp32, "
                        "on a GPU in this dtype too")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="effects: seconds per run of the engine with presets/call-background.toml; world: per case "
                        "of the world model in the engine with presets/default.toml (0: skip them)")
    p.add_argument("--cases", default="", help="effects: only these cases or groups, comma-separated")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("train", help="train the tokenizer or the world model (torchrun for several processes)")
    p.add_argument("what", choices=["tokenizer", "world", "look", "motion", "prompt"],
                   help="look: the head that applies a knob's instant change of the picture (renders its own pairs); "
                        "motion: the camera head, how the motion knobs move the picture (fitted on rendered clips); "
                        "prompt: the head that reads the family and the knobs a prompt's words describe (fitted on "
                        "the renderer's captions)")
    p.add_argument("--data",
                   help="dataset folder (vprod data render / footage); world: several, comma-separated, are "
                        "trained on together")
    p.add_argument("--states", type=int, help="look: rendered moments (4 control pairs each)")
    p.add_argument("--width", type=int, help="look: conv channels (its cost per knob change grows with the square)")
    p.add_argument("--pooled", action="store_true",
                   help="look: each layer also sees the picture's mean features (a fog's colour is the whole sky's)")
    p.add_argument("--dilations", help="look: the conditioned layers' dilations, e.g. 1,2,4 (their number sets the "
                                       "layers; default 3 layers of 1)")
    p.add_argument("--look-pad", type=int, default=0,
                   help="look: half the batches get this many rows mirrored above and below, as the memory's canvas "
                        "has them (the world model's memory_pad, 9)")
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, loss plot, weights")
    p.add_argument("--tokenizer", help="world, look: the tokenizer weights (.safetensors)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch", type=int, help="batch per process")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--init", help="world: start from these weights (.safetensors), e.g. to fine-tune")
    p.add_argument("--clips", type=int, help="world: use only the first N clips of the dataset; motion: clips rendered "
                   "per family (24); prompt: captions (20000)")
    p.add_argument("--minutes", type=float, help="world: stop after this much training time (the LR follows it)")
    p.add_argument("--window", type=int, help="world: frames per training window")
    p.add_argument("--rollout", type=float, help="world: fraction of windows trained on their own predictions "
                   "(after the first 30%% of training)")
    p.add_argument("--rollout-start", type=float, help="world: the fraction of training after which rollouts begin")
    p.add_argument("--rollout-depth", type=int, help="world: rollout passes (context frames predicted from "
                   "predicted frames this deep; at most window - 1 matter)")
    p.add_argument("--rollout-temp", type=float, help="world: noise scale of the rollouts' sampler (the runtime's "
                   "temperature is 0.75)")
    p.add_argument("--rollout-steps", type=int, help="world: flow steps of rollout frames (2: one or two at random)")
    p.add_argument("--rollout-noise", action="store_true", help="world: rollout frames enter the context noised, "
                   "as at run time")
    p.add_argument("--stats", type=float, help="world: weight of the latent-statistics term (colour, spread, "
                   "layout of frames sampled from rollout context against the true frames')")
    p.add_argument("--camera", help="world: a camera head (motion.json, `vprod train motion`): context frames are moved "
                   "by its flow, the model draws the rest (what enters at the edges, parallax, animation)")
    p.add_argument("--shortcut", type=float, help="world: fraction of windows on the shortcut target")
    p.add_argument("--guide", type=float, help="world: fraction of windows trained on guided targets (distilled "
                   "guidance; 0: none)")
    p.add_argument("--no-residual", action="store_true",
                   help="world: a plain flow model (the sampler makes the latent, not its change)")
    p.add_argument("--no-control-film", action="store_true",
                   help="world: controls only as their token (no control features on every token of the frame)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--tiny", action="store_true", help="a tiny model (tests, smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    from .world import data as world_data
    from .world import eval as world_eval

    world_data.add_commands(sub)
    world_eval.add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
