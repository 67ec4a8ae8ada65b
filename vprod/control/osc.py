"""OSC control (python-osc): UDP on 127.0.0.1:9000 by default; TouchOSC, TouchDesigner, QLab, Resolume speak it.

Addresses (values are normalized 0..1, as on the ZeroMQ control; nothing changes on a rejected message):

    /vprod/<layer>/<param> f          set a parameter: a number in 0..1 (ints and T/F too); a string for text
                                      and choice parameters; r g b (or '#rrggbb') for colours; a trigger fires
                                      with no argument or a truthy one (a button's release, 0, does nothing)
    /vprod/preset s [f]               switch preset (name or .toml path), optional crossfade in seconds
    /vprod/prompt s                   set every `prompt` parameter of the playing preset
    /vprod/params [addr]              → /vprod/params/json s i i   (the schema as JSON, part, parts)
    /vprod/get s [addr]               → /vprod/value s <value>     (the normalized value of a path)
    /vprod/midi/learn s               arm MIDI learn for a path (needs the MIDI surface)

Replies go to the packet's source address, or to `addr`: "host:port", a port (the sender's host), or host and
port as two arguments (only the sender's host or a configured target: no reflecting elsewhere).

Bundles keep their time tags: a future one waits in a heap served by a timer thread, never by sleeping in the
receive path; an immediate or past one applies at once. A bundle applies whole or not at all.

Feedback: every change that took effect (from any surface) is sent as `/vprod/<path> <norm>` to the targets
(`--osc-target HOST:PORT`, `[osc] targets`), so a layout follows what MIDI, OBS or ZeroMQ changed; an OSC change
is not echoed to the address it came from. Sends are non-blocking UDP from the listening socket.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import json
import logging
import math
import select
import socket
import threading
import time
from typing import Any, Callable

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from .. import presets
from ..engine.bus import Event
from ..engine.params import BoolParam, ChoiceParam, ColorParam, ParamError, TextParam, TriggerParam
from . import register_surface
from .badinput import BadInput

log = logging.getLogger("vprod.control.osc")

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 9000
PREFIX = "/vprod"
MAX_PACKET = 65536  # the largest UDP datagram
MAX_DEPTH = 8  # nested bundles
MAX_PENDING = 10_000  # bundles waiting for their time tag; more is a flood
MAX_AHEAD_S = 3600.0  # a time tag further ahead is a mistake (a wrong clock), not a plan
REPLY_CHUNK = 8000  # characters of schema JSON per /vprod/params/json message (well under a datagram)
KNOWN_TAGS = set("ihfdsbrmtTFN[]")  # what python-osc parses; anything else would shift every later argument
NUMBER = (int, float)


class Rejected(Exception):
    """One bad message or packet: `kind` counts it in status, the message says what and why."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


# --- packets ---
def parse_packet(data: bytes) -> list[tuple[float | None, OscMessage]]:
    """Every message in a datagram with its time tag (seconds since the epoch; None: now). Raises Rejected."""
    if len(data) < 4 or len(data) % 4:
        raise Rejected("malformed", f"{len(data)} bytes is not an OSC packet (a multiple of 4, at least 4)")
    out: list[tuple[float | None, OscMessage]] = []
    try:
        _walk(bytes(data), None, 0, out)
    except Rejected:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure is the packet's fault
        raise Rejected("malformed", f"cannot parse: {type(e).__name__}: {e}") from None
    return out


def _walk(dgram: bytes, when: float | None, depth: int, out: list) -> None:
    if dgram.startswith(b"#bundle\x00"):
        if depth >= MAX_DEPTH:
            raise Rejected("malformed", f"bundles nested deeper than {MAX_DEPTH}")
        if len(dgram) < 16:
            raise Rejected("malformed", "bundle shorter than its header")
        tag, i = osc_types.get_date(dgram, 8)
        if tag != osc_types.IMMEDIATELY:
            when = tag  # an immediate inner bundle keeps its parent's time
        while i < len(dgram):
            size, i = osc_types.get_int(dgram, i)
            if size <= 0 or size % 4 or i + size > len(dgram):
                raise Rejected("malformed", f"bundle element of {size} bytes does not fit the packet")
            _walk(dgram[i:i + size], when, depth + 1, out)
            i += size
    elif dgram.startswith(b"/"):
        address, i = osc_types.get_string(dgram, 0)
        if i < len(dgram):
            tags, _ = osc_types.get_string(dgram, i)
            bad = set(tags[1:]) - KNOWN_TAGS if tags.startswith(",") else {"no comma"}
            if bad:
                raise Rejected("malformed", f"{address}: type tags {tags!r} ({', '.join(sorted(bad))} unknown)")
        out.append((when, OscMessage(dgram)))
    else:
        raise Rejected("malformed", f"neither a message (/…) nor a bundle (#bundle), starts {dgram[:8]!r}")


def build_message(address: str, *args: Any) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


# --- values ---
def _finite_number(a: Any, what: str) -> float:
    if isinstance(a, bool):
        return 1.0 if a else 0.0
    if not isinstance(a, NUMBER):
        raise Rejected("wrong-type", f"{what} needs a number, got {_typename(a)}")
    f = float(a)
    if not math.isfinite(f):
        raise Rejected("not-finite", f"{what}: {a!r} is not a finite number")
    return f


def _norm(a: Any, what: str) -> float:
    f = _finite_number(a, what)
    if not 0.0 <= f <= 1.0:
        raise Rejected("out-of-range", f"{what}: {f:g} is outside 0..1 (OSC values are normalized)")
    return f


def _typename(a: Any) -> str:
    if isinstance(a, bytes):
        return "a blob"
    if isinstance(a, tuple):
        return "a MIDI message or time tag"
    if isinstance(a, list):
        return "an array"
    if a is None:
        return "nil"
    return type(a).__name__


def value_from_args(path: str, spec, args: list) -> Any:
    """The real value a `/vprod<path>` message asks for, by the parameter's type; raises Rejected.

    Returns `IGNORED` for a trigger's release (a falsy argument)."""
    if isinstance(spec, TriggerParam):
        if len(args) > 1:
            raise Rejected("wrong-arity", f"{path} is a trigger: no argument or one, got {len(args)}")
        if args:
            a = args[0]
            if isinstance(a, float) and not math.isfinite(a):
                raise Rejected("not-finite", f"{path}: {a!r} is not a finite number")
            if not a:
                return IGNORED
        return spec.from_norm(1)
    if isinstance(spec, ColorParam):
        if len(args) == 1 and isinstance(args[0], str):
            return _param(path, spec, spec.coerce, args[0], "out-of-range")
        if len(args) != 3:
            raise Rejected("wrong-arity", f"{path} is a colour: r g b in 0..1 or one '#rrggbb', got {len(args)} "
                                          "arguments")
        return tuple(_norm(a, f"{path} {c}") for a, c in zip(args, "rgb"))
    if len(args) != 1:
        raise Rejected("wrong-arity", f"{path} takes one value, got {len(args)}")
    a = args[0]
    if isinstance(spec, TextParam):
        if not isinstance(a, str):
            raise Rejected("wrong-type", f"{path} is text, got {_typename(a)}")
        return _param(path, spec, spec.coerce, a, "out-of-range")
    if isinstance(a, str):
        if isinstance(spec, (ChoiceParam, BoolParam)):
            return _param(path, spec, spec.coerce, a, "out-of-range")
        raise Rejected("wrong-type", f"{path} needs a number in 0..1, got a string")
    if isinstance(spec, BoolParam) and isinstance(a, bool):
        return a
    x = _norm(a, path)
    return _param(path, spec, spec.from_norm, x, "out-of-range")


def _param(path: str, spec, fn: Callable, value: Any, kind: str) -> Any:
    try:
        return fn(value)
    except ParamError as e:
        raise Rejected(kind, f"{path}: {e} (allowed: {spec.allowed()})") from None


IGNORED = object()


def norm_args(spec, real: Any) -> list | None:
    """OSC arguments for feedback: the normalized value (floats, text as a string); None for triggers."""
    if isinstance(spec, TriggerParam):
        return None
    n = spec.to_norm(real)
    if isinstance(n, (list, tuple)):
        return [float(v) for v in n]
    if isinstance(n, str):
        return [n]
    if isinstance(n, bool) or isinstance(n, NUMBER):
        return [float(n)]
    return [str(n)]


# --- addresses ---
def parse_hostport(text: str) -> tuple[str, int]:
    """"host:port" → (host, port); ValueError naming the problem."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: {port!r} is not a port") from None
    if not host or not 0 < p <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT with a port in 1..65535")
    return host, p


def _resolve(host: str, port: int) -> tuple[str, int]:
    info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    return info[0][4][0], port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- the time-tag queue ---
class Scheduler:
    """Actions due at a monotonic time, run by one timer thread (never by the receive thread)."""

    def __init__(self, limit: int = MAX_PENDING):
        self.limit = limit
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def add(self, due: float, fn: Callable[[], None]) -> bool:
        with self._cond:
            if len(self._heap) >= self.limit:
                return False
            heapq.heappush(self._heap, (due, next(self._seq), fn))
            self._cond.notify()
            return True

    def pop_due(self, now: float) -> list[Callable[[], None]]:
        with self._cond:
            out = []
            while self._heap and self._heap[0][0] <= now:
                out.append(heapq.heappop(self._heap)[2])
            return out

    def wait(self, stop: threading.Event, clock=time.monotonic) -> None:
        """Until the earliest action is due (or 0.2 s, to see `stop`)."""
        with self._cond:
            if stop.is_set():
                return
            timeout = 0.2 if not self._heap else min(0.2, self._heap[0][0] - clock())
            if timeout > 0:
                self._cond.wait(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)


# --- the control ---
class OscControl:
    name = "osc"

    def __init__(self, daemon, bind: str = DEFAULT_BIND, port: int = DEFAULT_PORT, targets: list[str] | None = None,
                 preset_targets: list[str] | None = None):
        self.daemon = daemon
        self.bind, self.port = bind, port
        self.cli_targets = list(targets or [])
        self.targets: tuple[tuple[str, tuple[str, int]], ...] = ()  # (as written, resolved address)
        self.bad = BadInput("osc", log)
        self.scheduler = Scheduler()
        self.state = "not started"
        self.packets = self.messages = self.scheduled = 0
        self.feedback_sent = self.feedback_errors = self.internal_errors = 0
        self._origin: dict[str, tuple[str, int]] = {}  # path → sender of its last OSC change (echo suppression)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warned_targets: set[str] = set()
        self._set_targets(self.cli_targets + list(preset_targets or []))

    # lifecycle
    def describe(self) -> str:
        if self.state != "running":
            return f"osc            off: {self.state}"
        fb = f", feedback to {', '.join(t for t, _ in self.targets)}" if self.targets else ""
        return f"osc            udp://{self.bind}:{self.port} (/vprod/<layer>/<param> 0..1{fb})"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.bind, self.port))
        except OSError as e:
            sock.close()
            why = e.strerror or str(e)
            self.state = f"cannot bind UDP {self.bind}:{self.port}: {why}"
            hint = " (choose another with --osc-port, or [osc] port in the preset)"
            raise RuntimeError(f"OSC control is off: cannot bind UDP {self.bind}:{self.port}: {why}{hint}") from None
        sock.setblocking(False)  # feedback is sent from the frame loop: it must never wait
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._set_targets([t for t, _ in self.targets])  # drops a target that is this very socket
        self.state = "running"
        self.daemon.bus.listeners.append(self.feedback)
        for target, name in ((self._receive, "osc-receive"), (self._timer, "osc-timer")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.targets:
            self.daemon.bus.post(Event("call", source="osc", fn=self.send_all))  # initial state, on the loop

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.wake()
        for t in self._threads:
            t.join(1.0)
        try:
            self.daemon.bus.listeners.remove(self.feedback)
        except ValueError:
            pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.state == "running":
            self.state = "stopped"

    def on_preset(self, preset) -> None:
        """Targets follow the preset (the CLI's stay); every value of the new preset goes out once it plays."""
        section = preset.data.get("osc", {}) if isinstance(preset.data.get("osc"), dict) else {}
        self._set_targets(self.cli_targets + list(section.get("targets", [])))
        if self.targets:
            self.daemon.bus.post(Event("call", source="osc", fn=self.send_all))  # runs after the switch

    def status(self) -> dict:
        return {"address": f"udp://{self.bind}:{self.port}", "state": self.state, "packets": self.packets,
                "messages": self.messages, "scheduled": self.scheduled, "pending": len(self.scheduler),
                "targets": [t for t, _ in self.targets], "feedback_sent": self.feedback_sent,
                "feedback_errors": self.feedback_errors, "internal_errors": self.internal_errors,
                **self.bad.status()}

    def _set_targets(self, texts: list[str]) -> None:
        out = []
        own = (self.bind, self.port) if self._sock is not None else None
        for text in dict.fromkeys(texts):  # in order, once each
            try:
                host, port = parse_hostport(text)
                addr = _resolve(host, port)
            except (ValueError, OSError) as e:
                self._warn_target(text, f"OSC feedback target {text!r} skipped: {e}", logging.ERROR)
                continue
            if own is not None and (addr == own or (addr[1] == own[1] and own[0] == "0.0.0.0")):
                self._warn_target(text, f"OSC feedback target {text} skipped: it is vprod's own OSC port",
                                  logging.ERROR)
                continue
            if _is_loopback(self.bind) and not _is_loopback(addr[0]):
                self._warn_target(text, f"OSC feedback target {text} is not on this machine but OSC listens on "
                                        f"{self.bind}: set [osc] bind = \"0.0.0.0\" (or --bind) to reach it",
                                  logging.WARNING)
            out.append((text, addr))
        self.targets = tuple(out)

    def _warn_target(self, text: str, msg: str, level: int) -> None:
        if text not in self._warned_targets:
            self._warned_targets.add(text)
            log.log(level, "%s", msg)

    # threads
    def _receive(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.2)
                if not ready:
                    continue
                data, sender = sock.recvfrom(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                continue
            except (OSError, ValueError) as e:  # an ICMP error from an earlier send: the socket is still good
                if self._stop.is_set() or sock.fileno() < 0:
                    return
                log.debug("osc receive: %s", e)
                continue
            self.handle_packet(data, sender, time.monotonic())

    def _timer(self) -> None:
        while not self._stop.is_set():
            self.scheduler.wait(self._stop)
            for fn in self.scheduler.pop_due(time.monotonic()):
                self._run(fn)

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Rejected as e:
            self.bad.report(e.kind, str(e))
        except Exception:  # noqa: BLE001 - a bug here must not kill the thread
            self._internal()

    def _internal(self) -> None:
        self.internal_errors += 1
        if self.internal_errors == 1:
            log.exception("osc: internal error (further ones are counted in status)")
        else:
            log.debug("osc: internal error", exc_info=True)

    # the receive path: parse, check, then apply now or queue by time tag
    def handle_packet(self, data: bytes, sender: tuple[str, int], arrival: float | None = None) -> None:
        """One datagram from `sender`. Never raises: bad input is reported and changes nothing."""
        self.packets += 1
        arrival = time.monotonic() if arrival is None else arrival
        where = f"from {sender[0]}:{sender[1]}"
        try:
            msgs = parse_packet(data)
            self.messages += len(msgs)
            now_wall = time.time()
            groups: dict[float | None, list[Callable[[float], None]]] = {}
            for when, msg in msgs:
                try:
                    action = self.action(msg.address, list(msg.params), sender)
                except Rejected as e:
                    raise Rejected(e.kind, f"{msg.address} {where}: {e}") from None
                if when is not None and when - now_wall > MAX_AHEAD_S:
                    raise Rejected("too-far-ahead", f"{msg.address} {where}: time tag {when - now_wall:.0f} s "
                                                    f"ahead (more than {MAX_AHEAD_S:.0f} s; is the clock right?)")
                due = None if when is None or when <= now_wall else when
                if action is not None:
                    groups.setdefault(due, []).append(action)
        except Rejected as e:
            msg = str(e) if e.kind != "malformed" else f"packet of {len(data)} bytes {where}: {e}"
            self.bad.report(e.kind, msg)
            return
        except Exception:  # noqa: BLE001
            self._internal()
            return
        for due, actions in sorted(groups.items(), key=lambda kv: -1.0 if kv[0] is None else kv[0]):
            if due is None:
                self._apply(actions, arrival)
            else:
                at = time.monotonic() + (due - time.time())
                if self.scheduler.add(at, lambda a=actions: self._apply(a, None)):
                    self.scheduled += len(actions)
                else:
                    self.bad.report("flood", f"{len(actions)} message(s) {where} dropped: {MAX_PENDING} bundles "
                                             "already wait for their time tag")

    def _apply(self, actions: list[Callable[[float], None]], stamp: float | None) -> None:
        stamp = time.monotonic() if stamp is None else stamp
        for a in actions:
            self._run(lambda a=a: a(stamp))

    def action(self, address: str, args: list, sender: tuple[str, int]) -> Callable[[float], None] | None:
        """What a message asks for, checked now and run later (at once, or when its bundle is due).

        Raises Rejected; returns None when the message is fine but asks for nothing (a trigger's release)."""
        if address != PREFIX and not address.startswith(PREFIX + "/"):
            raise Rejected("unknown-address", f"not a vprod address (they start {PREFIX}/)")
        sub = address[len(PREFIX):]
        if sub == "/preset":
            return self._preset_action(args)
        if sub == "/prompt":
            return self._prompt_action(args)
        if sub == "/params":
            to = self._reply_to(args, sender)
            return self._on_loop(lambda: self.send_params(to))
        if sub == "/get":
            if not args or not isinstance(args[0], str):
                raise Rejected("wrong-type", "needs a parameter path (a string), then optionally a reply address")
            path = _as_path(args[0])
            self._state(path)
            to = self._reply_to(args[1:], sender)
            return self._on_loop(lambda: self.send_value(to, path))
        if sub == "/midi/learn":
            return self._learn_action(args)
        return self._set_action(sub, args, sender)

    def _set_action(self, path: str, args: list, sender) -> Callable[[float], None] | None:
        st = self._state(path)
        real = value_from_args(path, st.spec, args)
        if real is IGNORED:
            return None

        def post(stamp: float) -> None:
            self._origin[path] = sender
            self.daemon.bus.post(Event("set", path, real, "osc", stamp=stamp))

        return post

    def _preset_action(self, args: list) -> Callable[[float], None]:
        if not args or not isinstance(args[0], str) or not args[0]:
            raise Rejected("wrong-type", "needs a preset name or path (a string), then optionally a crossfade")
        if len(args) > 2:
            raise Rejected("wrong-arity", f"takes a name and an optional crossfade, got {len(args)} arguments")
        fade = None
        if len(args) == 2:
            fade = _finite_number(args[1], "crossfade")
            if not 0 <= fade <= 60:
                raise Rejected("out-of-range", f"crossfade {fade:g} s is outside 0..60")
        name = args[0]

        def switch(_stamp: float) -> None:
            # Loading a preset can take seconds (models): never on the receive or timer thread.
            def run():
                err = self.daemon.request_preset(name, fade, "osc")
                if err:
                    self.bad.report("preset", f"/vprod/preset {name!r} not loaded: {err.splitlines()[0]}")

            threading.Thread(target=self._guard(run), name="osc-preset", daemon=True).start()

        return switch

    def _on_loop(self, fn: Callable[[], None]) -> Callable[[float], None]:
        """Answer on the loop thread, after the changes posted before it took effect (a get sees a set)."""
        return lambda _stamp: self.daemon.bus.post(Event("call", source="osc", fn=self._guard(fn)))

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        return lambda: self._run(fn)

    def _prompt_action(self, args: list) -> Callable[[float], None]:
        if len(args) != 1 or not isinstance(args[0], str):
            raise Rejected("wrong-type", "needs one string, the prompt")
        paths = [d["path"] for d in self.daemon.engine.schema()
                 if d["path"].rsplit("/", 1)[-1] == "prompt" and d.get("type") == "text"]
        if not paths:
            raise Rejected("unknown-address", f"the preset {self._preset_name()!r} has no prompt parameter")
        reals = [(p, value_from_args(p, self._state(p).spec, args)) for p in paths]

        def post(stamp: float) -> None:
            for p, real in reals:
                self.daemon.bus.post(Event("set", p, real, "osc", stamp=stamp))

        return post

    def _learn_action(self, args: list) -> Callable[[float], None]:
        if len(args) != 1 or not isinstance(args[0], str):
            raise Rejected("wrong-type", "needs one parameter path (a string)")
        path = _as_path(args[0])
        self._state(path)
        midi = next((c for c in self.daemon.controls if getattr(c, "name", "") == "midi"), None)
        arm = getattr(midi, "arm", None)
        if not callable(arm):
            raise Rejected("no-midi", "no MIDI surface is running (nothing to learn with)")

        def learn(_stamp: float) -> None:
            err = arm(path)  # None when armed, else why not
            if err:
                raise Rejected("midi-learn", f"/vprod/midi/learn {path}: {err}")

        return learn

    def _state(self, path: str):
        try:
            return self.daemon.engine.resolve(path)
        except KeyError:
            raise Rejected("unknown-address", f"no parameter {path!r} in preset {self._preset_name()!r} "
                                              "(see `vprod params` or /vprod/params)") from None

    def _preset_name(self) -> str:
        p = getattr(self.daemon, "preset", None)
        return getattr(p, "name", "?")

    def _reply_to(self, args: list, sender: tuple[str, int]) -> tuple[str, int]:
        """The packet's source, or the address the arguments give (on the sender's host or a target)."""
        try:
            if not args:
                return sender
            if len(args) == 1 and isinstance(args[0], str):
                addr = _resolve(*parse_hostport(args[0]))
            elif len(args) == 1 and isinstance(args[0], int) and not isinstance(args[0], bool):
                addr = (sender[0], args[0])
            elif len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], int):
                addr = _resolve(args[0], args[1])
            else:
                raise ValueError("a reply address is \"host:port\", a port, or host and port")
            if not 0 < addr[1] <= 65535:
                raise ValueError(f"{addr[1]} is not a port")
        except (ValueError, OSError) as e:
            raise Rejected("wrong-type", str(e)) from None
        if addr[0] != sender[0] and addr not in {a for _, a in self.targets}:
            raise Rejected("reply-address", f"replies go to the sender's host {sender[0]} or a feedback target, "
                                            f"not {addr[0]}:{addr[1]}")
        return addr

    # sending (non-blocking; an error is counted, never raised into the frame loop)
    def _sendto(self, dgram: bytes, addr: tuple[str, int]) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendto(dgram, addr)
            return True
        except OSError as e:
            self.feedback_errors += 1
            if self.feedback_errors == 1:
                log.warning("osc: cannot send to %s:%s: %s (further ones are counted in status)", *addr, e)
            return False

    def _reply(self, addr: tuple[str, int], address: str, *args: Any) -> None:
        self._sendto(build_message(address, *args), addr)

    def send_params(self, addr: tuple[str, int]) -> None:
        """The schema as JSON at /vprod/params/json (text, part, parts): long schemas come in parts."""
        text = json.dumps({"preset": self._preset_name(), "params": self.daemon.engine.schema()}, default=str)
        parts = [text[i:i + REPLY_CHUNK] for i in range(0, len(text), REPLY_CHUNK)] or [""]
        for i, part in enumerate(parts):
            self._reply(addr, PREFIX + "/params/json", part, i, len(parts))

    def send_value(self, addr: tuple[str, int], path: str) -> None:
        """/vprod/value path <norm> (a preset switch may have removed the path since the request: then nothing)."""
        try:
            st = self.daemon.engine.resolve(path)
        except KeyError:
            raise Rejected("unknown-address", f"/vprod/get: no parameter {path!r} any more") from None
        self._reply(addr, PREFIX + "/value", path, *(norm_args(st.spec, _current(st)) or [0.0]))

    def feedback(self, path: str, value: Any, source: str) -> None:
        """Bus listener, on the loop thread after a change took effect: the new value to every target."""
        targets = self.targets
        if not targets:
            return
        try:
            st = self.daemon.engine.resolve(path)
        except KeyError:
            return
        args = norm_args(st.spec, _current(st))
        if args is None:
            return
        origin = self._origin.get(path) if source == "osc" else None
        dgram = build_message(PREFIX + path, *args)
        for _, addr in targets:
            if addr != origin and self._sendto(dgram, addr):
                self.feedback_sent += 1

    def send_all(self) -> None:
        """Every parameter's value to every target (at start and after a preset switch; on the loop thread)."""
        for d in self.daemon.engine.schema():
            try:
                st = self.daemon.engine.resolve(d["path"])
            except KeyError:
                continue
            args = norm_args(st.spec, _current(st))
            if args is None:
                continue
            dgram = build_message(PREFIX + d["path"], *args)
            for _, addr in self.targets:
                if self._sendto(dgram, addr):
                    self.feedback_sent += 1


def _current(st) -> Any:
    return st.value if isinstance(st.spec, TriggerParam) else st.target  # what was last set, even mid-slew


def _as_path(text: str) -> str:
    text = text.strip()
    if text.startswith(PREFIX + "/"):
        text = text[len(PREFIX):]
    return text if text.startswith("/") else "/" + text


# --- preset section and factory ---
OSC_KEYS = {"enabled": "true/false (default true)", "port": "UDP port (default 9000)",
            "bind": "address to listen on (default 127.0.0.1)", "targets": "feedback targets [\"host:port\", …]"}


def validate_section(section: Any, name: str) -> list[tuple[str, str]]:
    if not isinstance(section, dict):
        return [(name, "must be a table: [osc]")]
    errors = []
    for k, v in section.items():
        key = f"{name}.{k}"
        if k not in OSC_KEYS:
            errors.append((key, f"unknown key (allowed: {', '.join(sorted(OSC_KEYS))})"))
        elif k == "enabled" and not isinstance(v, bool):
            errors.append((key, "must be true or false"))
        elif k == "port" and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 65535):
            errors.append((key, f"{v!r} is not a port (0..65535)"))
        elif k == "bind" and (not isinstance(v, str) or not v):
            errors.append((key, "must be an address like \"127.0.0.1\" or \"0.0.0.0\""))
        elif k == "targets":
            if not isinstance(v, list):
                errors.append((key, "must be a list of \"host:port\" strings"))
                continue
            for i, t in enumerate(v):
                try:
                    parse_hostport(t)
                except ValueError as e:
                    errors.append((f"{key}[{i}]", str(e)))
    return errors


presets.register_section("osc", "OSC control: [osc] enabled, port, bind, targets", validate_section)


def factory(daemon, preset) -> OscControl | None:
    section = preset.data.get("osc", {}) or {}
    extra = daemon.config.extra
    if extra.get("osc_enabled") is False or (section.get("enabled", True) is False and not extra.get("osc_port")):
        return None
    port = extra.get("osc_port")
    port = section.get("port", DEFAULT_PORT) if port is None else port
    bind = daemon.config.bind or section.get("bind", DEFAULT_BIND)
    return OscControl(daemon, bind, int(port), targets=extra.get("osc_targets") or [],
                      preset_targets=section.get("targets", []))


register_surface("osc", factory)


# --- `vprod bench control --surfaces osc` ---
class BenchSender:
    """Sends `/vprod/bg/r level` to the bench daemon's OSC port, as a show-control rig would."""

    def __init__(self, ctx):
        from ..bench_control import free_port

        self.ctx = ctx
        self.port = free_port(socket.SOCK_DGRAM)

    def daemon_args(self) -> list[str]:
        return ["--osc-port", str(self.port)]

    def preset_extra(self) -> str:
        return ""

    def start(self) -> None:
        from pythonosc.udp_client import SimpleUDPClient

        self.client = SimpleUDPClient("127.0.0.1", self.port)

    def send(self, level: float) -> None:
        self.client.send_message("/vprod/bg/r", float(level))

    def stop(self) -> None:
        self.client._sock.close()  # SimpleUDPClient.close() is newer than the python-osc we require
