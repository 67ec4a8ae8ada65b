"""The procedural world renderer (vprod.world.render) and the live `worlds` source built on it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from vprod.engine import ElementConfig, FrameContext
from vprod.plugins import PluginRegistry
from vprod.world import CONTROL_NAMES, NEUTRAL, NUM_CONTROLS
from vprod.world.render import FAMILIES, Renderer, RendererWorld, RenderState, caption

W, H = 128, 72
THREE_D = ("terrain", "city", "ocean", "tunnel", "starfield")  # families with a camera that flies


def ctl(**changes) -> np.ndarray:
    c = NEUTRAL.copy()
    for name, value in changes.items():
        c[CONTROL_NAMES.index(name)] = value
    return c


@pytest.fixture(scope="module")
def renderers() -> dict[str, Renderer]:
    """One renderer per family, built once (per-seed content is the slow part)."""
    out = {}
    for fam in FAMILIES:
        r = Renderer(W, H)
        r.reset(5, fam, NEUTRAL)
        out[fam] = r
    return out


def run(r: Renderer, fam: str, controls, steps: int, seed: int = 5) -> list[np.ndarray]:
    r.reset(seed, fam, controls)
    return [r.step(controls) for _ in range(steps)]


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- the frame itself --------------------------------------------------------------------------------------------


def test_there_are_at_least_six_named_families():
    assert len(FAMILIES) >= 6 and len(set(FAMILIES)) == len(FAMILIES)
    assert {"terrain", "city", "tunnel", "plasma", "starfield"} <= set(FAMILIES)


@pytest.mark.parametrize("fam", FAMILIES)
def test_every_family_draws_a_varied_rgb_frame_of_the_requested_size(renderers, fam):
    frame = run(renderers[fam], fam, NEUTRAL, 2)[-1]
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    assert frame.std() > 6, f"{fam} is flat"
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 200, f"{fam} has too few colours"


def test_other_sizes_and_aspect_ratios_work():
    r = Renderer(96, 96)
    for fam in FAMILIES:
        r.reset(1, fam, NEUTRAL)
        assert r.step(NEUTRAL).shape == (96, 96, 3)


def test_families_look_different_from_each_other(renderers):
    means = {fam: run(renderers[fam], fam, NEUTRAL, 1)[0].reshape(-1, 3).mean(0) for fam in FAMILIES}
    frames = {fam: run(renderers[fam], fam, NEUTRAL, 1)[0] for fam in FAMILIES}
    for i, a in enumerate(FAMILIES):
        for b in FAMILIES[i + 1:]:
            assert diff(frames[a], frames[b]) > 10 or np.abs(means[a] - means[b]).max() > 10, (a, b)


# --- determinism and state ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMILIES)
def test_same_seed_and_controls_give_identical_frames_and_seeds_differ(fam):
    rng = np.random.default_rng(0)
    seq = [np.clip(NEUTRAL + rng.normal(0, 0.2, NUM_CONTROLS), 0, 1) for _ in range(4)]
    a, b, c = Renderer(W, H), Renderer(W, H), Renderer(W, H)
    for r, seed in ((a, 11), (b, 11), (c, 12)):
        r.reset(seed, fam, seq[0])
    for controls in seq:
        fa, fb, fc = a.step(controls), b.step(controls), c.step(controls)
        assert np.array_equal(fa, fb)
    assert diff(fa, fc) > 1.0, "another seed should be another world"


def test_no_global_random_state_is_used():
    r = Renderer(W, H)
    r.reset(3, "starfield", NEUTRAL)
    first = r.step(NEUTRAL)
    np.random.seed(123)
    r.reset(3, "starfield", NEUTRAL)
    assert np.array_equal(r.step(NEUTRAL), first)


def test_state_is_a_small_dataclass_and_a_deepcopy_replays_the_same_frames():
    r = Renderer(W, H)
    r.reset(9, "terrain", NEUTRAL)
    turning = ctl(yaw=0.8, speed=0.6, pitch=0.3)
    for _ in range(5):
        r.step(turning)
    snap = copy.deepcopy(r.state)
    assert isinstance(snap, RenderState) and snap.family == "terrain" and snap.seed == 9 and snap.t > 0
    ahead = [r.step(turning) for _ in range(4)]
    r.step(ctl(yaw=0.0))  # wander off
    r.state = copy.deepcopy(snap)
    assert all(np.array_equal(r.step(turning), f) for f in ahead)
    other = Renderer(W, H)  # restoring into a fresh renderer rebuilds the world from the state's seed
    other.state = copy.deepcopy(snap)
    assert np.array_equal(other.step(turning), ahead[0])


def test_set_family_is_a_cut_that_keeps_time_camera_and_seed():
    r = Renderer(W, H)
    r.reset(4, "terrain", NEUTRAL)
    for _ in range(6):
        r.step(ctl(yaw=0.7))
    before = copy.deepcopy(r.state)
    last = r.step(NEUTRAL)
    t, yaw, x = r.state.t, r.state.yaw, r.state.x
    r.set_family("city")
    assert (r.state.family, r.state.seed, r.state.t, r.state.yaw, r.state.x) == ("city", 4, t, yaw, x)
    cut = r.step(NEUTRAL)
    assert diff(cut, last) > 10
    assert r.state.t > before.t
    with pytest.raises(ValueError, match="unknown family"):
        r.set_family("nowhere")


@pytest.mark.parametrize("fam", ["terrain", "city", "tunnel"])
def test_travel_flies_the_camera_where_steps_without_a_turn_take_it(fam):
    """The world model makes its views where its flight has taken the camera: travel() puts it where as many steps
    at the speed would (straight on, the animation clock with it), the altitude eased over the flight's last
    EASED_FRAMES steps as step eases it — the same picture; settled at once (frames=0) a terrain's camera sits lower
    than the stepped one, which sinks slowly."""
    from vprod.world.render import DT

    fast = ctl(speed=0.8, energy=0.7)
    opened = Renderer(W, H)
    opened.reset(2, fam, fast)
    for frames in (45, 400):
        stepped = Renderer(W, H)
        stepped.reset(2, fam, fast)
        for _ in range(frames):
            stepped.step(fast)
        there = stepped.render(fast)
        for eased in (frames, 0):
            flown = Renderer(W, H)
            flown.reset(2, fam, fast)
            flown.travel(fast, frames * DT * 0.8 ** 1.3, frames * DT * 0.8 * (1.5 + 2.5 * 0.7), frames=eased)
            a, b = stepped.state, flown.state
            assert (b.x, b.y, b.dist, b.anim, b.yaw) == pytest.approx((a.x, a.y, a.dist, a.anim, a.yaw))
            assert b.frame == 0  # no frame drawn
            if eased:
                assert b.z == pytest.approx(a.z, abs=0.05)
                assert diff(flown.render(fast), there) < 0.5 < 0.1 * diff(opened.render(fast), there)
    if fam == "terrain":
        assert b.z < a.z - 1.0  # (the 400 frames' flight settled at once)
    # turning as it flies: the way along and across the heading it had, the path's length and the turn
    from vprod.world.render import MAX_TURN

    right = ctl(speed=0.8, energy=0.7, yaw=0.7)
    stepped, flown = Renderer(W, H), Renderer(W, H)
    stepped.reset(2, fam, right)
    flown.reset(2, fam, right)
    along = across = turn = 0.0
    v = DT * 0.8 ** 1.3
    for _ in range(45):
        stepped.step(right)
        turn += 0.4 * MAX_TURN * DT
        along, across = along + v * np.cos(turn), across + v * np.sin(turn)
    flown.travel(right, along, 45 * DT * 0.8 * (1.5 + 2.5 * 0.7), frames=45, across=across, turn=turn, length=45 * v)
    a, b = stepped.state, flown.state
    assert (b.x, b.y, b.dist, b.anim, b.yaw) == pytest.approx((a.x, a.y, a.dist, a.anim, a.yaw))
    there = stepped.render(right)
    assert diff(flown.render(right), there) < 0.3 * diff(opened.render(right), there)  # (altitude: a straight chord)

def test_controls_are_clipped_and_checked():
    a, b = Renderer(W, H), Renderer(W, H)
    a.reset(2, "plasma", NEUTRAL)
    b.reset(2, "plasma", NEUTRAL)
    wild = NEUTRAL.copy()
    wild[CONTROL_NAMES.index("daylight")] = 7.0
    wild[CONTROL_NAMES.index("fog")] = -3.0
    assert np.array_equal(a.step(wild), b.step(np.clip(wild, 0, 1)))
    assert np.array_equal(a.step(list(NEUTRAL)), b.step(tuple(float(v) for v in NEUTRAL)))
    with pytest.raises(ValueError, match="controls"):
        a.step(NEUTRAL[:5])


# --- motion and each control ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMILIES)
def test_frames_move_at_default_speed(renderers, fam):
    frames = run(renderers[fam], fam, NEUTRAL, 4)
    assert diff(frames[-1], frames[-2]) > 0.3, f"{fam} does not move"
    assert diff(frames[-1], frames[0]) > 1.0


@pytest.mark.parametrize("fam", THREE_D + ("plasma",))
def test_speed_zero_holds_the_picture_still(renderers, fam):
    frames = run(renderers[fam], fam, ctl(speed=0.0), 12)  # the pitch has eased in by now
    assert diff(frames[-1], frames[-2]) < 0.3, fam


@pytest.mark.parametrize("fam", FAMILIES)
def test_daylight_brightens(renderers, fam):
    night = run(renderers[fam], fam, ctl(daylight=0.0), 1)[0].mean()
    noon = run(renderers[fam], fam, ctl(daylight=1.0), 1)[0].mean()
    assert noon > night + 15, (fam, night, noon)


@pytest.mark.parametrize("fam", FAMILIES)
def test_hue_changes_the_colours_not_the_shapes(renderers, fam):
    a = run(renderers[fam], fam, ctl(hue=0.5), 1)[0].reshape(-1, 3).astype(float)
    b = run(renderers[fam], fam, ctl(hue=0.85), 1)[0].reshape(-1, 3).astype(float)
    chroma_shift = np.abs((a - a.mean(1, keepdims=True)) - (b - b.mean(1, keepdims=True))).mean()
    assert chroma_shift > 4, (fam, chroma_shift)


@pytest.mark.parametrize("fam", FAMILIES)
def test_fog_lowers_contrast(renderers, fam):
    clear = run(renderers[fam], fam, ctl(fog=0.0), 1)[0].astype(float)
    thick = run(renderers[fam], fam, ctl(fog=1.0), 1)[0].astype(float)
    assert thick.mean(2).std() < 0.85 * clear.mean(2).std(), fam


@pytest.mark.parametrize("fam", FAMILIES)
def test_zoom_yaw_pitch_and_energy_each_change_the_picture(renderers, fam):
    r = renderers[fam]
    base = run(r, fam, NEUTRAL, 8)[-1]
    for name, value in (("zoom", 0.95), ("yaw", 1.0), ("pitch", 0.0), ("energy", 1.0)):
        other = run(r, fam, ctl(**{name: value}), 8)[-1]
        assert diff(base, other) > 2.0, (fam, name)


def test_yaw_turns_right_above_half_and_left_below():
    r = Renderer(W, H)
    r.reset(1, "terrain", NEUTRAL)
    y0 = r.state.yaw
    r.step(ctl(yaw=1.0))
    assert r.state.yaw > y0
    r.step(ctl(yaw=0.0))
    r.step(ctl(yaw=0.0))
    assert r.state.yaw < y0


def test_pitch_moves_the_horizon_down_when_looking_up():
    r = Renderer(W, H)

    def sky_rows(pitch):
        f = run(r, "ocean", ctl(pitch=pitch, speed=0.0), 15)[-1].astype(float)
        return f[:, :, 2].mean(1)  # bluish sky above, darker sea below

    up, down = sky_rows(1.0), sky_rows(0.0)
    assert up[H // 2:].mean() > down[H // 2:].mean() + 5


# --- the World contract and captions --------------------------------------------------------------------------------


def test_renderer_world_follows_the_world_contract():
    w = RendererWorld(W, H)
    assert w.name == "renderer"
    first = w.reset(7, NEUTRAL)
    assert first.shape == (H, W, 3) and w.state.family == FAMILIES[7 % len(FAMILIES)]
    again = RendererWorld(W, H)
    assert np.array_equal(again.reset(7, NEUTRAL), first)  # the family is chosen from the seed, deterministically
    nxt = w.step(NEUTRAL)
    assert nxt.shape == first.shape and w.state.frame == 1
    assert w.reset(7, NEUTRAL, family="city") is not None and w.state.family == "city"
    w.set_family("tunnel")
    assert w.step(NEUTRAL).shape == first.shape and w.state.family == "tunnel"
    fixed = RendererWorld(W, H, family="ocean")
    fixed.reset(3, NEUTRAL)
    assert fixed.state.family == "ocean"
    fixed.prepare()  # every family of this seed built ahead: a cut costs one frame
    with pytest.raises(ValueError, match="unknown family"):
        fixed.reset(3, NEUTRAL, family="moon")
    assert fixed.state.family == "ocean"


@pytest.mark.parametrize("fam,word", [("terrain", "mountains"), ("city", "city"), ("tunnel", "tunnel"),
                                      ("plasma", "plasma"), ("starfield", "star"), ("ocean", "ocean")])
def test_caption_names_the_family(fam, word):
    text = caption(fam, NEUTRAL)
    assert word in text and text == caption(fam, NEUTRAL.copy())


def test_caption_follows_the_extreme_knobs():
    assert "night" in caption("terrain", ctl(daylight=0.0))
    assert "dusk" in caption("terrain", ctl(daylight=0.5))
    assert "fog" in caption("terrain", ctl(fog=0.9))
    assert "fast" in caption("tunnel", ctl(speed=0.95))
    assert "slow" in caption("tunnel", ctl(speed=0.1))
    assert "left" in caption("city", ctl(yaw=0.0)) and "right" in caption("city", ctl(yaw=1.0))
    assert "wild" in caption("plasma", ctl(energy=1.0)) and "calm" in caption("plasma", ctl(energy=0.0))
    assert caption("tunnel", ctl(hue=0.5)) != caption("tunnel", ctl(hue=0.9))
    assert "green" in caption("terrain", NEUTRAL) and "red" not in caption("terrain", NEUTRAL)
    captions = {caption(f, c) for f in FAMILIES for c in (NEUTRAL, ctl(daylight=0.0, speed=0.9), ctl(fog=1.0))}
    assert len(captions) == 3 * len(FAMILIES)


# --- the live plugin ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worlds_cls():
    return PluginRegistry().load("worlds")


def test_worlds_plugin_declares_the_family_every_control_seed_and_reset(worlds_cls):
    p = worlds_cls.params
    assert worlds_cls.kind == "source"
    assert tuple(p["family"].choices) == FAMILIES
    for i, name in enumerate(CONTROL_NAMES):
        assert p[name].kind == "float" and (p[name].min, p[name].max) == (0.0, 1.0)
        assert p[name].default == pytest.approx(float(NEUTRAL[i]), abs=1e-4) and p[name].slew > 0
    assert p["seed"].kind == "int" and p["reset"].kind == "trigger"
    assert "render_scale" in worlds_cls.options


def test_worlds_plugin_renders_720p_and_its_params_are_live(worlds_cls):
    el = worlds_cls(ElementConfig(layer="bg", width=1280, height=720), {"family": "terrain", "seed": 3})
    el.open()
    ctx = FrameContext(width=1280, height=720)

    def frame():
        el.p.step(ctx.dt)
        out = el.process(ctx)
        el.p.clear_triggers()
        return out

    first = frame()
    assert first.shape == (720, 1280, 3) and first.dtype == np.uint8
    assert el._renderer.width <= 480 and el._renderer.height <= 270
    moved = frame()
    assert diff(moved, first) > 0.3
    el.p.states["daylight"].set(0.0)
    for _ in range(30):  # the slew glides the knob down
        dark = frame()
    assert dark.mean() < moved.mean() - 20
    assert el._renderer.state.family == "terrain"
    t = el._renderer.state.t
    el.p.states["family"].set("tunnel")
    cut = frame()
    assert el._renderer.state.family == "tunnel" and el._renderer.state.t > t  # a cut, time goes on
    assert diff(cut, dark) > 5
    el.p.states["reset"].set(1)
    frame()
    assert el._renderer.state.t == 0.0
    el.p.states["seed"].set(4)
    frame()
    assert el._renderer.state.seed == 4
    el.close()


def test_worlds_plugin_render_scale_option(worlds_cls):
    el = worlds_cls(ElementConfig(layer="bg", width=320, height=180, options={"render_scale": 0.5}), {})
    el.open()
    assert el.process(FrameContext(width=320, height=180)).shape == (180, 320, 3)
    assert (el._renderer.width, el._renderer.height) == (160, 90)
    bad = worlds_cls(ElementConfig(layer="bg", options={"render_scale": 3}), {})
    with pytest.raises(ValueError, match="render_scale"):
        bad.open()
