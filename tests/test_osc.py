"""The OSC control: addresses and types on a small fake daemon (unit), then a real `vprod run` driven by python-osc
over real UDP sockets, read back through the ZeroMQ frame stream and status (integration)."""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
from types import SimpleNamespace

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from daemon_helpers import SOLID_PRESET, SOLID_RGB, WAIT, Control, FrameStream, run_vprod
from vprod.control import osc
from vprod.engine import (BoolParam, ChoiceParam, ColorParam, Engine, FloatParam, IntParam, ParamState, TextParam,
                          TriggerParam)

SENDER = ("127.0.0.1", 40000)


# --- a small fake daemon: a real Engine over a hand-made parameter registry, no pipeline, no sockets ---
def _state(spec) -> ParamState:
    v = spec.coerce(spec.default) if not isinstance(spec, TriggerParam) else 0
    return ParamState(spec, v, v)


class FakeDaemon:
    def __init__(self):
        specs = {
            "/bg/r": FloatParam(0.1), "/bg/g": FloatParam(0.2),
            "/bg/hue": FloatParam(0.0, min=0.0, max=360.0, unit="deg"),
            "/bg/seed": IntParam(0, min=0, max=100),
            "/bg/blend": ChoiceParam("normal", choices=("normal", "add", "multiply")),
            "/bg/enabled": BoolParam(True),
            "/bg/prompt": TextParam("", max_len=20),
            "/fx/prompt": TextParam(""),
            "/bg/tint": ColorParam((0.0, 0.0, 0.0)),
            "/bg/reset": TriggerParam(),
        }
        self.engine = Engine(64, 36, 30)
        registry = {p: (_state(s), object()) for p, s in specs.items()}
        self.engine.pipeline = SimpleNamespace(name="fake", registry=registry)
        self.bus = self.engine.bus
        self.controls: list = []
        self.preset = SimpleNamespace(name="fake", data={})
        self.config = SimpleNamespace(extra={}, bind=None)
        self.switches: list[tuple] = []
        self.switched = threading.Event()

    def request_preset(self, name, fade=None, source=""):
        self.switches.append((name, fade, source))
        self.switched.set()
        return None if name != "broken" else "broken.toml: layers: needs at least one [[layers]] table"

    def apply(self) -> list:
        """What the frame loop does between frames: drain the bus and apply (feedback listeners run here)."""
        evs = self.bus.drain()
        for ev in evs:
            self.engine._apply(ev)
        return evs

    def value(self, path):
        return self.engine.resolve(path).target


def msg(address: str, *args, types: str | None = None) -> bytes:
    b = OscMessageBuilder(address)
    for i, a in enumerate(args):
        b.add_arg(a, types[i] if types else None)
    return b.build().dgram


def bundle(when, *dgrams: bytes) -> bytes:
    b = OscBundleBuilder(when)
    for d in dgrams:
        b.add_content(OscMessage(d))
    return b.build().dgram


@pytest.fixture
def fake():
    d = FakeDaemon()
    ctl = osc.OscControl(d)
    sent: list[tuple[tuple[str, int], str, list]] = []

    def capture(dgram, addr):
        m = OscMessage(dgram)
        sent.append((addr, m.address, m.params))
        return True

    ctl._sendto = capture
    ctl.sent = sent
    return d, ctl


def sets(events) -> list[tuple[str, object, str]]:
    return [(e.path, e.value, e.source) for e in events if e.kind == "set"]


# --- unit: addresses and types ---
def test_float_int_choice_bool_text_colour_from_normalized_osc(fake):
    d, ctl = fake
    for data in (msg("/vprod/bg/r", 1.0), msg("/vprod/bg/hue", 0.25), msg("/vprod/bg/seed", 0.5),
                 msg("/vprod/bg/blend", "multiply"), msg("/vprod/bg/enabled", False), msg("/vprod/bg/prompt", "fog"),
                 msg("/vprod/bg/tint", 1.0, 0.5, 0.0)):
        ctl.handle_packet(data, SENDER)
    got = sets(d.apply())
    assert got == [("/bg/r", 1.0, "osc"), ("/bg/hue", 90.0, "osc"), ("/bg/seed", 50, "osc"),
                   ("/bg/blend", "multiply", "osc"), ("/bg/enabled", False, "osc"), ("/bg/prompt", "fog", "osc"),
                   ("/bg/tint", (1.0, 0.5, 0.0), "osc")]
    assert (d.value("/bg/r"), d.value("/bg/hue"), d.value("/bg/seed")) == (1.0, 90.0, 50)
    assert d.value("/bg/tint") == (1.0, 0.5, 0.0) and d.value("/bg/enabled") is False
    # Choices also take a 0..1 float, bools a float or an int, ints arrive as OSC int too.
    ctl.handle_packet(msg("/vprod/bg/blend", 0.5), SENDER)
    ctl.handle_packet(msg("/vprod/bg/enabled", 1), SENDER)
    ctl.handle_packet(msg("/vprod/bg/g", 1), SENDER)
    ctl.handle_packet(msg("/vprod/bg/tint", "#00ff00"), SENDER)
    d.apply()
    assert d.value("/bg/blend") == "add" and d.value("/bg/enabled") is True and d.value("/bg/g") == 1.0
    assert d.value("/bg/tint") == (0.0, 1.0, 0.0)
    assert ctl.bad.total == 0 and ctl.messages == 11 and ctl.packets == 11


def test_trigger_fires_on_no_argument_or_truthy_and_ignores_a_release(fake):
    d, ctl = fake
    ctl.handle_packet(msg("/vprod/bg/reset"), SENDER)
    ctl.handle_packet(msg("/vprod/bg/reset", 1.0), SENDER)
    ctl.handle_packet(msg("/vprod/bg/reset", True), SENDER)
    ctl.handle_packet(msg("/vprod/bg/reset", 0.0), SENDER)  # a button's release
    ctl.handle_packet(msg("/vprod/bg/reset", 0), SENDER)
    d.apply()
    assert d.engine.resolve("/bg/reset").fired == 3
    assert ctl.bad.total == 0


@pytest.mark.parametrize("data, kind", [
    (b"\x00\x01garbage!!!", "malformed"),
    (b"xyz", "malformed"),
    (b"/vprod/bg/r\x00,q\x00\x00" + b"\x00" * 4, "malformed"),  # unknown type tag
    (b"/vprod/bg/r\x00,f\x00\x00\x3f", "malformed"),  # truncated float
    (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 64) + b"/x\x00\x00", "malformed"),  # element runs past the end
    (msg("/other/thing", 0.5), "unknown-address"),
    (msg("/vprod/nolayer/r", 0.5), "unknown-address"),
    (msg("/vprod/bg/r", "high"), "wrong-type"),
    (msg("/vprod/bg/r", b"\x01\x02", types="b"), "wrong-type"),
    (msg("/vprod/bg/prompt", 0.5), "wrong-type"),
    (msg("/vprod/bg/r"), "wrong-arity"),
    (msg("/vprod/bg/r", 0.1, 0.2), "wrong-arity"),
    (msg("/vprod/bg/tint", 0.1, 0.2), "wrong-arity"),
    (msg("/vprod/bg/r", 1.5), "out-of-range"),
    (msg("/vprod/bg/r", -0.01), "out-of-range"),
    (msg("/vprod/bg/seed", 42), "out-of-range"),  # numbers are normalized: 42 is not in 0..1
    (msg("/vprod/bg/blend", "sideways"), "out-of-range"),
    (msg("/vprod/bg/prompt", "x" * 21), "out-of-range"),
    (msg("/vprod/bg/r", float("nan")), "not-finite"),
    (msg("/vprod/bg/r", float("inf"), types="d"), "not-finite"),
    (msg("/vprod/bg/reset", float("nan")), "not-finite"),
    (msg("/vprod/preset"), "wrong-type"),
    (msg("/vprod/preset", "solid", 99.0), "out-of-range"),
    (msg("/vprod/get", 3), "wrong-type"),
    (msg("/vprod/midi/learn", "/bg/r"), "no-midi"),
])
def test_bad_input_is_counted_by_kind_and_changes_nothing(fake, data, kind):
    d, ctl = fake
    before = {p: d.value(p) for p in ("/bg/r", "/bg/seed", "/bg/blend", "/bg/prompt", "/bg/tint")}
    ctl.handle_packet(data, SENDER)
    assert d.apply() == []
    assert ctl.bad.counts == {kind: 1}, ctl.bad.status()
    assert "127.0.0.1:40000" in ctl.bad.last[kind] or kind == "malformed" and "from 127.0.0.1" in ctl.bad.last[kind]
    assert {p: d.value(p) for p in before} == before
    assert d.engine.resolve("/bg/reset").fired == 0 and not d.switches


def test_a_bundle_with_one_bad_message_applies_nothing(fake):
    d, ctl = fake
    ctl.handle_packet(bundle(IMMEDIATELY, msg("/vprod/bg/r", 0.9), msg("/vprod/bg/g", float("nan"))), SENDER)
    assert d.apply() == [] and ctl.bad.counts == {"not-finite": 1}
    ctl.handle_packet(bundle(IMMEDIATELY, msg("/vprod/bg/r", 0.9), msg("/vprod/bg/g", 0.3)), SENDER)
    assert sets(d.apply()) == [("/bg/r", pytest.approx(0.9), "osc"), ("/bg/g", pytest.approx(0.3), "osc")]


def test_bundle_time_tags_queue_without_sleeping_in_the_receive_path(fake):
    d, ctl = fake
    t0 = time.monotonic()
    ctl.handle_packet(bundle(time.time() + 30.0, msg("/vprod/bg/r", 0.7)), SENDER)
    ctl.handle_packet(bundle(time.time() - 5.0, msg("/vprod/bg/g", 0.4)), SENDER)  # past: now
    ctl.handle_packet(bundle(IMMEDIATELY, msg("/vprod/bg/seed", 1.0)), SENDER)
    assert time.monotonic() - t0 < 5.0  # returned at once, not after 30 s
    assert [p for p, _, _ in sets(d.apply())] == ["/bg/g", "/bg/seed"]
    assert len(ctl.scheduler) == 1 and ctl.scheduled == 1
    assert ctl.scheduler.pop_due(time.monotonic() + 29.0) == []
    due = ctl.scheduler.pop_due(time.monotonic() + 31.0)
    assert len(due) == 1
    due[0]()
    assert sets(d.apply()) == [("/bg/r", pytest.approx(0.7), "osc")]
    # A time tag hours ahead is a wrong clock, not a plan.
    ctl.handle_packet(bundle(time.time() + 7200, msg("/vprod/bg/r", 0.2)), SENDER)
    assert ctl.bad.counts == {"too-far-ahead": 1} and len(ctl.scheduler) == 0


def test_nested_bundles_take_their_own_time_and_depth_is_bounded(fake):
    d, ctl = fake
    inner = bundle(IMMEDIATELY, msg("/vprod/bg/r", 0.5))
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(osc_bundle(inner))
    ctl.handle_packet(outer.build().dgram, SENDER)
    assert sets(d.apply()) == [("/bg/r", 0.5, "osc")]
    deep = msg("/vprod/bg/r", 0.5)
    for _ in range(osc.MAX_DEPTH + 1):
        deep = bundle_of(deep)
    ctl.handle_packet(deep, SENDER)
    assert ctl.bad.counts == {"malformed": 1} and "nested" in ctl.bad.last["malformed"]


def osc_bundle(dgram):
    from pythonosc.osc_bundle import OscBundle

    return OscBundle(dgram)


def bundle_of(content: bytes) -> bytes:
    return b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", len(content)) + content


def test_preset_prompt_and_midi_learn(fake):
    d, ctl = fake
    ctl.handle_packet(msg("/vprod/preset", "other", 1.5), SENDER)
    assert d.switched.wait(WAIT)
    assert d.switches == [("other", 1.5, "osc")]
    d.switched.clear()
    ctl.handle_packet(msg("/vprod/preset", "broken"), SENDER)
    assert d.switched.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while not ctl.bad.counts.get("preset") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ctl.bad.counts == {"preset": 1} and "broken" in ctl.bad.last["preset"]

    ctl.handle_packet(msg("/vprod/prompt", "a foggy harbour"), SENDER)
    assert sorted(sets(d.apply())) == [("/bg/prompt", "a foggy harbour", "osc"),
                                       ("/fx/prompt", "a foggy harbour", "osc")]
    ctl.handle_packet(msg("/vprod/prompt", "far too long for the bg prompt"), SENDER)  # one target refuses: none change
    assert d.apply() == [] and ctl.bad.counts["out-of-range"] == 1

    armed = []

    def arm(path):  # the MIDI surface's contract: None when armed, else why not
        armed.append(path)
        return None if path != "/bg/prompt" else "/bg/prompt is a text parameter"

    d.controls.append(SimpleNamespace(name="midi", arm=arm))
    ctl.handle_packet(msg("/vprod/midi/learn", "/bg/hue"), SENDER)
    ctl.handle_packet(msg("/vprod/midi/learn", "bg/r"), SENDER)
    ctl.handle_packet(msg("/vprod/midi/learn", "/no/such"), SENDER)
    ctl.handle_packet(msg("/vprod/midi/learn", "/bg/prompt"), SENDER)
    assert armed == ["/bg/hue", "/bg/r", "/bg/prompt"] and ctl.bad.counts["unknown-address"] == 1
    assert ctl.bad.counts["midi-learn"] == 1 and "text parameter" in ctl.bad.last["midi-learn"]


def test_prompt_without_a_prompt_parameter_is_bad_input(fake):
    d, ctl = fake
    del d.engine.pipeline.registry["/bg/prompt"], d.engine.pipeline.registry["/fx/prompt"]
    ctl.handle_packet(msg("/vprod/prompt", "hello"), SENDER)
    assert d.apply() == [] and ctl.bad.counts == {"unknown-address": 1} and "prompt" in ctl.bad.last["unknown-address"]


def test_params_and_get_answer_the_sender_after_earlier_changes(fake):
    d, ctl = fake
    ctl.handle_packet(msg("/vprod/bg/r", 1.0), SENDER)
    ctl.handle_packet(msg("/vprod/get", "/bg/r"), SENDER)
    ctl.handle_packet(msg("/vprod/params"), SENDER)
    assert ctl.sent == []  # answered on the loop, after the set above took effect
    d.apply()
    (a1, addr1, args1), *rest = ctl.sent
    assert (a1, addr1, args1) == (SENDER, "/vprod/value", ["/bg/r", 1.0])
    assert all(a == SENDER and m == "/vprod/params/json" for a, m, _ in rest)
    text = "".join(args[0] for _, _, args in sorted(rest, key=lambda s: s[2][1]))
    assert {args[2] for _, _, args in rest} == {len(rest)}
    schema = json.loads(text)
    assert schema["preset"] == "fake"
    assert {p["path"] for p in schema["params"]} == set(d.engine.pipeline.registry)
    assert next(p for p in schema["params"] if p["path"] == "/bg/r")["value"] == 1.0

    ctl.sent.clear()
    ctl.handle_packet(msg("/vprod/params", "127.0.0.1:9123"), SENDER)
    ctl.handle_packet(msg("/vprod/get", "bg/hue", 9124), SENDER)
    ctl.handle_packet(msg("/vprod/get", "/bg/hue", "127.0.0.1", 9125), SENDER)
    ctl.handle_packet(msg("/vprod/params", "192.0.2.7:9000"), SENDER)  # somebody else's host: no reflecting
    d.apply()
    assert {a for a, _, _ in ctl.sent} == {("127.0.0.1", 9123), ("127.0.0.1", 9124), ("127.0.0.1", 9125)}
    assert ctl.bad.counts == {"reply-address": 1}


def test_feedback_sends_norm_values_to_targets_but_not_back_to_the_sender(fake):
    d, ctl = fake
    ctl._set_targets(["127.0.0.1:9301", "localhost:9302"])
    d.bus.listeners.append(ctl.feedback)
    d.bus.set("/bg/hue", 180.0, "zmq")  # another surface: every target hears it, normalized
    d.bus.set("/bg/reset", 0, "midi")  # a trigger has no value to show
    d.bus.set("/bg/blend", "multiply", "obs")
    d.apply()
    assert ctl.sent == [(("127.0.0.1", 9301), "/vprod/bg/hue", [0.5]), (("127.0.0.1", 9302), "/vprod/bg/hue", [0.5]),
                        (("127.0.0.1", 9301), "/vprod/bg/blend", [1.0]),
                        (("127.0.0.1", 9302), "/vprod/bg/blend", [1.0])]
    ctl.sent.clear()
    ctl.handle_packet(msg("/vprod/bg/r", 0.25), ("127.0.0.1", 9301))  # from a target: not echoed to it
    d.apply()
    assert ctl.sent == [(("127.0.0.1", 9302), "/vprod/bg/r", [0.25])]


def test_targets_are_checked(fake, caplog):
    d, ctl = fake
    ctl._set_targets(["127.0.0.1:9301", "nonsense", "127.0.0.1:0", "127.0.0.1:9301"])
    assert [t for t, _ in ctl.targets] == ["127.0.0.1:9301"]
    assert sum("nonsense" in r.getMessage() for r in caplog.records) == 1


def test_preset_section_is_validated():
    assert osc.validate_section({"port": 9001, "bind": "0.0.0.0", "targets": ["10.0.0.2:9000"], "enabled": True},
                                "osc") == []
    errs = dict(osc.validate_section({"port": 70000, "targets": ["nohost", 5], "enabled": "yes", "colour": 1}, "osc"))
    assert set(errs) == {"osc.port", "osc.targets[0]", "osc.targets[1]", "osc.enabled", "osc.colour"}
    assert osc.validate_section([1], "osc") == [("osc", "must be a table: [osc]")]


def test_factory_reads_cli_then_preset():
    d = FakeDaemon()
    d.preset.data = {"osc": {"port": 9100, "targets": ["127.0.0.1:9200"]}}
    c = osc.factory(d, d.preset)
    assert (c.bind, c.port, [t for t, _ in c.targets]) == ("127.0.0.1", 9100, ["127.0.0.1:9200"])
    d.config.extra = {"osc_port": 9300, "osc_targets": ["127.0.0.1:9400"]}
    d.config.bind = "0.0.0.0"
    c = osc.factory(d, d.preset)
    assert (c.bind, c.port, [t for t, _ in c.targets]) == ("0.0.0.0", 9300, ["127.0.0.1:9400", "127.0.0.1:9200"])
    d.config.extra = {"osc_enabled": False}
    assert osc.factory(d, d.preset) is None
    d.config.extra = {}
    d.preset.data = {"osc": {"enabled": False}}
    assert osc.factory(d, d.preset) is None


def test_receiver_survives_a_real_socket_flood_of_garbage(fake):
    """The thread keeps serving after garbage on a real UDP socket (no daemon: the fake behind it)."""
    d, ctl = fake
    del ctl._sendto  # real sends from here on
    ctl.port = 0
    ctl.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(200):
                s.sendto(bytes([i % 256]) * (1 + i % 50), ("127.0.0.1", ctl.port))
            s.sendto(msg("/vprod/bg/r", 0.6), ("127.0.0.1", ctl.port))
            deadline = time.monotonic() + WAIT
            got = []
            while not got and time.monotonic() < deadline:
                got = sets(d.apply())
                time.sleep(0.01)
        assert got == [("/bg/r", pytest.approx(0.6), "osc")]
        assert ctl.packets == 201 and ctl.bad.counts == {"malformed": 200} and ctl.internal_errors == 0
    finally:
        ctl.stop()


# --- integration: a real daemon, real UDP, pixels through ZeroMQ ---
class OscListener:
    """A python-osc server on a real UDP port, recording every message it gets (the role of TouchOSC)."""

    def __init__(self):
        self.got: list[tuple[float, str, list]] = []
        self.cond = threading.Condition()
        disp = Dispatcher()
        disp.set_default_handler(self._on, needs_reply_address=False)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def _on(self, address, *args):
        with self.cond:
            self.got.append((time.monotonic(), address, list(args)))
            self.cond.notify_all()

    def wait(self, pred, timeout: float = WAIT, what: str = "a message"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.got:
                    if pred(m[1], m[2]):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"never got {what}; got {self.got[-10:]}")
                self.cond.wait(left)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start(daemons, tmp_path, *extra):
    """solid.toml streaming over ZeroMQ, OSC on a free UDP port (the helper's `osc_port`)."""
    d = daemons(SOLID_PRESET, outputs="zmq", args=["--no-watch", *extra])
    d.wait_log(r"^  control osc ")
    return d, d.osc_port


def osc_status(d) -> dict:
    with Control(d.control_port) as ctl:
        return ctl.req("status")["status"]["controls"]["osc"]


@pytest.mark.integration
def test_python_osc_client_changes_the_pixels(daemons, tmp_path):
    d, port = start(daemons, tmp_path)
    client = SimpleUDPClient("127.0.0.1", port)
    with FrameStream(d.zmq_port) as frames:
        frames.wait_colour(SOLID_RGB)
        client.send_message("/vprod/bg/r", 1.0)
        frames.wait_colour((255, SOLID_RGB[1], SOLID_RGB[2]))
        client.send_message("/vprod/bg/g", [0.5])
        client.send_message("/vprod/bg/r", 0)  # an int 0 is 0.0
        frames.wait_colour((0, 128, SOLID_RGB[2]))
    st = osc_status(d)
    assert st["state"] == "running" and st["packets"] == 3 and st["bad_input"] == 0, st
    assert f"udp://127.0.0.1:{port}" in d.log()


@pytest.mark.integration
def test_a_bundle_half_a_second_ahead_applies_then_and_not_before(daemons, tmp_path):
    d, port = start(daemons, tmp_path)
    client = SimpleUDPClient("127.0.0.1", port)
    red = (255, SOLID_RGB[1], SOLID_RGB[2])
    with FrameStream(d.zmq_port) as frames:
        frames.wait_colour(SOLID_RGB)
        b = OscBundleBuilder(time.time() + 0.5)
        b.add_content(OscMessage(msg("/vprod/bg/r", 1.0)))
        last = frames.last_seq
        t0 = time.monotonic()
        client.send(b.build())
        frames.wait_colour(red, after=last)
        seen = frames.seen_since(last)  # every frame's centre, even those the test thread was too slow to look at
    first = next(i for i, (_, _, rgb) in enumerate(seen) if rgb == red)
    arrived = seen[first][1]
    before = [(seq, round(t - t0, 3), rgb) for seq, t, rgb in seen[:first]]
    assert arrived - t0 >= 0.45, f"applied {arrived - t0:.3f} s after sending, before its time tag; before: {before}"
    assert arrived - t0 < 0.5 + WAIT
    assert any(t >= 0.3 for _, t, _ in before), f"no frame in the 0.5 s wait kept the old colour: {before}"
    assert all(rgb == SOLID_RGB for _, _, rgb in before), before
    st = osc_status(d)
    assert st["scheduled"] == 1 and st["pending"] == 0 and st["bad_input"] == 0, st


@pytest.mark.integration
def test_feedback_reaches_an_osc_target_when_zmq_changes_a_value(daemons, tmp_path):
    listener = OscListener()
    try:
        d, port = start(daemons, tmp_path, "--osc-target", f"127.0.0.1:{listener.port}")
        # At start the target hears every value of the preset (its layout shows the truth at once).
        listener.wait(lambda a, args: a == "/vprod/bg/b" and args == [pytest.approx(0.6)], what="/vprod/bg/b 0.6")
        with Control(d.control_port) as ctl:
            assert ctl.req("set", path="/bg/g", value=0.75)["ok"]
        _, address, args = listener.wait(lambda a, args: a == "/vprod/bg/g" and args and abs(args[0] - 0.75) < 1e-6,
                                         what="/vprod/bg/g 0.75")
        assert args == [pytest.approx(0.75)]
        with Control(d.control_port) as ctl:
            assert ctl.req("set", path="/bg/blend", value="screen", raw=True)["ok"]
        listener.wait(lambda a, args: a == "/vprod/bg/blend" and args == [pytest.approx(3 / 7)], what="blend 3/7")
        st = osc_status(d)
        assert st["targets"] == [f"127.0.0.1:{listener.port}"] and st["feedback_sent"] >= 2, st
    finally:
        listener.close()


@pytest.mark.integration
def test_bad_input_is_counted_and_the_stream_goes_on_unchanged(daemons, tmp_path):
    d, port = start(daemons, tmp_path)
    client = SimpleUDPClient("127.0.0.1", port)
    with FrameStream(d.zmq_port) as frames, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        frames.wait_colour(SOLID_RGB)
        raw.sendto(b"\xff\xfe garbage bytes", ("127.0.0.1", port))
        raw.sendto(b"/vprod/bg/r\x00,f\x00\x00\x3f", ("127.0.0.1", port))  # truncated
        client.send_message("/vprod/nowhere/r", 1.0)
        client.send_message("/vprod/bg/r", float("nan"))
        client.send_message("/vprod/bg/r", "loud")
        client.send_message("/vprod/bg/g", 3.0)
        # ...then a good one, to know the bad ones were all handled before it.
        client.send_message("/vprod/bg/b", 0.2)
        last = frames.last_seq
        hdr, _ = frames.wait_colour((SOLID_RGB[0], SOLID_RGB[1], 51))
        n = hdr["seq"]
        frames.next_frame(n + 10)  # and it keeps streaming
        assert all(rgb[:2] == SOLID_RGB[:2] for _, _, rgb in frames.seen_since(last)), frames.seen_since(last)
    st = osc_status(d)
    assert st["bad_input_by_kind"] == {"malformed": 2, "unknown-address": 1, "not-finite": 1, "wrong-type": 1,
                                       "out-of-range": 1}, st
    assert st["packets"] == 7 and st["bad_input"] == 6 and st["internal_errors"] == 0, st
    with Control(d.control_port) as ctl:
        assert ctl.req("get", path="/bg/r")["norm"] == pytest.approx(0.1)
        assert ctl.req("get", path="/bg/g")["norm"] == pytest.approx(0.2)
    warnings = [m for lvl, name, m in d.records("WARNING") if name == "vprod.control.osc"]
    assert len(warnings) == 5, warnings  # one line per kind; the second malformed one only counted
    assert d.proc.poll() is None, d.describe()


@pytest.mark.integration
def test_params_request_answers_with_the_schema(daemons, tmp_path):
    d, port = start(daemons, tmp_path)
    listener = OscListener()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(WAIT)
            s.sendto(msg("/vprod/params"), ("127.0.0.1", port))
            data, src = s.recvfrom(65536)
        reply = OscMessage(data)
        assert src == ("127.0.0.1", port) and reply.address == "/vprod/params/json"
        text, part, parts = reply.params
        assert (part, parts) == (0, 1)
        schema = json.loads(text)
        with Control(d.control_port) as ctl:
            zmq_schema = ctl.req("params")["params"]
        assert schema["preset"] == "solid" and schema["params"] == zmq_schema
        assert {"/bg/r", "/bg/g", "/bg/b"} <= {p["path"] for p in schema["params"]}
        # Or to an address given as the argument, and /vprod/get → /vprod/value.
        client = SimpleUDPClient("127.0.0.1", port)
        client.send_message("/vprod/params", f"127.0.0.1:{listener.port}")
        client.send_message("/vprod/get", ["/bg/b", listener.port])
        listener.wait(lambda a, args: a == "/vprod/params/json" and json.loads(args[0])["params"] == zmq_schema)
        listener.wait(lambda a, args: a == "/vprod/value" and args == ["/bg/b", pytest.approx(0.6)])
    finally:
        listener.close()


@pytest.mark.integration
def test_preset_switch_over_osc(daemons, tmp_path):
    other = tmp_path / "green.toml"
    other.write_text(SOLID_PRESET.read_text().replace("r = 0.1, g = 0.2, b = 0.6", "r = 0.0, g = 1.0, b = 0.0")
                     .replace('name = "solid"', 'name = "green"'))
    d, port = start(daemons, tmp_path)
    client = SimpleUDPClient("127.0.0.1", port)
    with FrameStream(d.zmq_port) as frames:
        frames.wait_colour(SOLID_RGB)
        client.send_message("/vprod/preset", [str(other), 0.0])
        hdr, _ = frames.wait_colour((0, 255, 0))
        assert hdr["preset"] == "green"
        client.send_message("/vprod/preset", "no-such-preset")
        client.send_message("/vprod/prompt", "harbour at dusk")  # solid has no prompt
        deadline = time.monotonic() + WAIT
        while osc_status(d)["bad_input"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        frames.wait_colour((0, 255, 0))
    st = osc_status(d)
    assert st["bad_input_by_kind"] == {"preset": 1, "unknown-address": 1}, st


@pytest.mark.integration
def test_osc_port_in_use_is_one_clear_error_and_the_stream_runs(daemons, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        d = daemons(SOLID_PRESET, outputs="zmq", args=["--osc-port", str(port), "--no-watch"])
        d.wait_log(rf"ERROR .*127\.0\.0\.1:{port}")
        d.wait_banner()
        with FrameStream(d.zmq_port) as frames:
            frames.wait_colour(SOLID_RGB)
            frames.next_frame(frames.last_seq + 15)
        lines = [e for e in d.errors() if f"127.0.0.1:{port}" in e]
        assert len(lines) == 1, d.log()
        assert "\n" not in lines[0] and "--osc-port" in lines[0] and "in use" in lines[0], lines[0]
        st = osc_status(d)
        assert st["state"].startswith("cannot bind") and d.proc.poll() is None


@pytest.mark.integration
def test_vprod_params_json_prints_the_schema(tmp_path):
    r = run_vprod(["params", str(SOLID_PRESET), "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["preset"] == "solid"
    r_param = next(p for p in out["params"] if p["path"] == "/bg/r")
    assert (r_param["type"], r_param["min"], r_param["max"], r_param["value"]) == ("float", 0.0, 1.0, 0.1)
    assert math.isclose(r_param["norm"], 0.1)


def test_a_preset_with_a_bad_osc_section_is_refused_with_the_key():
    from vprod.plugins import PluginRegistry
    from vprod.presets import parse

    data = {"layers": [{"id": "bg", "source": "solid"}], "osc": {"port": "nine thousand", "targets": ["x"]}}
    _, errors = parse(data, "bad.toml", PluginRegistry())
    assert {e.key for e in errors} == {"osc.port", "osc.targets[0]"}, [str(e) for e in errors]
    data["osc"] = {"port": 9001, "targets": ["127.0.0.1:9002"]}
    assert parse(data, "good.toml", PluginRegistry())[1] == []
