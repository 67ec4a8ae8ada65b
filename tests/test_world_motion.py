"""The camera head: the motion knobs' global flow, fitted on the renderer, warping latents at run time and in training."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.dynamics import Dynamics, DynamicsConfig
from vprod.world.model import WorldModel
from vprod.world.motion import (
    FEATURES,
    PARAMS,
    CameraHead,
    motion_clips,
    robust_fit,
    warp_affine,
)
from vprod.world.tokenizer import Tokenizer, TokenizerConfig

ZOOM = CONTROL_NAMES.index("zoom")


def shift_head(px: float, family: str = "plasma", down: float = 0.0) -> CameraHead:
    """A head whose only motion is `px` pixels a frame to the right per unit of turn (yaw 1 = turn 1), and `down`
    pixels a frame down at any turn."""
    m = np.zeros((len(FEATURES), len(PARAMS)))
    m[FEATURES.index("turn"), PARAMS.index("a0")] = px
    m[FEATURES.index("1"), PARAMS.index("b0")] = down
    return CameraHead({family: m})


def test_the_picture_shifts_for_the_turn_and_the_pitch_alone():
    """The fitted maps also shift the picture for speed, zoom and at rest (the ground streaming down as the camera
    flies, clouds drifting); added up by whole-cell moves over a long stretch of held knobs, those walked the view off
    the world. The head keeps the shift of the turn and of the pitch's step only (and their products with zoom)."""
    m = np.zeros((len(FEATURES), len(PARAMS)))
    for f in FEATURES:  # every feature shifts the picture both ways
        m[FEATURES.index(f), PARAMS.index("a0")] = 1.0
        m[FEATURES.index(f), PARAMS.index("b0")] = 2.0
    head = CameraHead({"terrain": m})
    fast = NEUTRAL.copy()
    fast[2], fast[3] = 0.97, 0.8  # flying fast, zoomed, no turn, the pitch where it is
    head.reset(fast)
    assert np.allclose(head.flow(fast, "terrain")[[0, 3]], 0.0)
    head.rotation_only = False
    assert np.all(np.abs(head.flow(fast, "terrain")[[0, 3]]) > 1.0)  # (the map as fitted)
    head.rotation_only = True
    turn = fast.copy()
    turn[0] = 1.0  # turn 1, zoom 0.8: a0 = turn + turn·zoom = 1.3; no pitch step: b0 = 0
    assert np.allclose(head.flow(turn, "terrain")[[0, 3]], [1.3, 0.0])
    up = fast.copy()
    up[1] = 0.9  # a pitch step: b0 = 2 (step + step·zoom); a0 = 0
    f = head.flow(up, "terrain")
    assert f[0] == 0.0 and f[3] > 0.0


def still_dynamics(drift: float = 0.0) -> Dynamics:
    """Tiny dynamics that predict no change (plus `drift` a frame, through the output's bias)."""
    torch.manual_seed(0)
    dyn = Dynamics(DynamicsConfig(d_model=32, layers=2, heads=2, context=2, sinks=2, residual=True, delta_scale=0.6,
                                  guidance_in=True, control_film=True)).eval()
    for p in dyn.patch_out.parameters():
        torch.nn.init.zeros_(p)
    if drift:
        torch.nn.init.constant_(dyn.patch_out.bias, drift)
    return dyn


def test_the_warp_moves_each_latent_by_its_own_flow():
    z = torch.zeros(2, 1, 18, 32)
    z[:, 0, 9, 10] = 1.0
    # 8 px at 256 wide is one latent cell: to the right for the first, down for the second (16 px at 144 high = 2)
    out = warp_affine(z, torch.tensor([[8.0, 0, 0, 0, 0, 0], [0, 0, 0, 16.0, 0, 0]]))
    assert out[0, 0, 9, 11] == pytest.approx(1.0) and out[0, 0, 9, 10] == pytest.approx(0.0)
    assert out[1, 0, 11, 10] == pytest.approx(1.0)
    assert torch.allclose(warp_affine(z, torch.zeros(2, 6)), z)
    # divergence (a1 = b2 > 0): the picture streams outwards from the centre, which stays
    img = torch.arange(18 * 32, dtype=torch.float32).view(1, 1, 18, 32)
    grown = warp_affine(img, torch.tensor([[0, 16.0, 0, 0, 0, 9.0]]))
    assert abs(float(grown[0, 0, 9, 16] - img[0, 0, 9, 16])) < 40  # near the centre: little moved
    assert float(grown[0, 0, 9, 31]) < float(img[0, 0, 9, 31])  # the right edge now shows what was further in


def test_the_camera_head_fitted_on_the_renderer_turns_and_flies_the_right_way():
    rng = np.random.default_rng(0)
    x, y, tex = motion_clips("terrain", 5, rng, frames=16)
    m = robust_fit(x, y, tex)
    # turning right (turn > 0) moves the picture left by several pixels a frame at full turn
    assert m[FEATURES.index("turn"), PARAMS.index("a0")] < -3.0
    x, y, tex = motion_clips("tunnel", 5, rng, frames=16)
    m = robust_fit(x, y, tex)
    # flying forward streams the tunnel outwards: horizontal divergence grows with the speed
    assert m[FEATURES.index("speed"), PARAMS.index("a1")] > 2.0
    # and the fit explains the flow better than no motion at all on pairs it did not see
    xh, yh, _ = motion_clips("tunnel", 3, rng, frames=16, seed0=9000)
    assert np.median(np.abs(yh - xh @ m)[:, 1]) < 0.6 * np.median(np.abs(yh)[:, 1])


def test_a_camera_head_round_trips_blends_families_and_eases_the_pitch(tmp_path):
    head = shift_head(6.0, "terrain")
    head.maps["city"] = 2.0 * head.maps["terrain"]
    head.save(tmp_path / "motion.json")
    back = CameraHead.load(tmp_path / "motion.json")
    assert back.maps.keys() == head.maps.keys() and np.allclose(back.maps["city"], head.maps["city"])
    c = NEUTRAL.copy()
    c[0] = 1.0  # full turn right
    assert back.flow(c, "terrain")[0] == pytest.approx(6.0)
    assert back.flow(c, {"terrain": 0.5, "city": 0.5})[0] == pytest.approx(9.0)
    assert not back.flow(c, "ocean").any() and not back.flow(c, None).any()  # unknown or absent: no motion
    # pitch eases towards its knob as the renderer's camera does: the step shrinks frame by frame
    pitch = np.zeros((len(FEATURES), len(PARAMS)))
    pitch[FEATURES.index("pitch_step"), PARAMS.index("b0")] = 60.0
    ph = CameraHead({"terrain": pitch})
    ph.reset(NEUTRAL)
    up = NEUTRAL.copy()
    up[1] = 1.0
    steps = [ph.flow(up, "terrain")[3] for _ in range(5)]
    assert steps[0] > 0 and all(a > b > 0 for a, b in itertools.pairwise(steps))
    doc = json.loads((tmp_path / "motion.json").read_text())
    doc["features"] = ["turn"]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="bad.json"):
        CameraHead.load(tmp_path / "bad.json")


def _tiny_camera_dynamics() -> Dynamics:
    torch.manual_seed(0)
    return Dynamics(DynamicsConfig(d_model=32, layers=2, heads=2, context=2, sinks=2, residual=True, delta_scale=0.6,
                                   guidance_in=True, control_film=True, camera_context=True)).eval()


def test_a_camera_context_model_draws_from_its_context_moved_by_the_knobs():
    """A model that predicts no change, with the camera head: the next latent is the last one moved by the flow."""
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    dyn = _tiny_camera_dynamics()
    for p in dyn.patch_out.parameters():
        torch.nn.init.zeros_(p)
    head = shift_head(8.0)
    wm = WorldModel(tok, dyn, steps=2, dtype=torch.float32, look=None, camera=head)
    assert wm.camera.where == "context"
    wm.temperature, wm.ctx_noise, wm.memory_pull = 0.0, 0.0, 0.0
    wm.reset(1, NEUTRAL, "plasma")
    before = wm.last_latent.clone()
    assert torch.allclose(wm.next_latent(NEUTRAL), before)  # straight on: nothing moves
    right = NEUTRAL.copy()
    right[0] = 1.0
    z = wm.next_latent(right)
    assert torch.allclose(z, warp_affine(before, torch.tensor([[8.0, 0, 0, 0, 0, 0]])), atol=1e-5)
    assert torch.allclose(z[..., 1:], before[..., :-1], atol=1e-5)  # one latent cell to the right
    with pytest.raises(FileNotFoundError, match="vprod train motion"):
        WorldModel(tok, dyn, look=None, camera="/nonexistent/motion.json")


def test_camera_context_training_moves_each_context_frame_by_its_flow():
    """(One training step on such context lowering the loss: tests/test_world_model.py.)"""
    from vprod.world.train import to_context

    torch.manual_seed(0)
    z = torch.randn(4, 3, 8, 18, 32)
    flow = torch.randn(4, 3, 6) * 4
    moved = to_context(z, {"ctx_flow": flow})
    for b, t in ((2, 1), (0, 2)):
        assert torch.allclose(moved[b, t], warp_affine(z[b, t][None], flow[b, t][None])[0])
    assert torch.equal(to_context(z, {}), z)


def test_fitting_the_camera_head_from_the_command_line(tmp_path):
    out = tmp_path / "motion"
    r = subprocess.run([sys.executable, "-m", "vprod", "train", "motion", "--out", str(out), "--clips", "2",
                        "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    head = CameraHead.load(out / "motion.json")
    assert set(head.maps) == {"terrain", "city", "tunnel", "plasma", "starfield", "ocean"}
    assert head.meta["how"].startswith("vprod train motion --clips 2")
    held = json.loads((out / "heldout.json").read_text())
    assert held["terrain"]["pairs"] > 0 and held["terrain"]["heldout_pairs"] > 0


def test_held_knobs_cost_one_commit_a_frame_and_a_moved_knob_one_more():
    """The newest frame enters the context already moved by the flow the held knobs give; only a change of flow
    beyond the tolerance commits it again (moved by the new flow, from the unmoved latent)."""
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    dyn = _tiny_camera_dynamics()
    commits = []
    orig = dyn.commit
    dyn.commit = lambda *a, **k: (commits.append(a[1].clone()), orig(*a, **k))[1]
    wm = WorldModel(tok, dyn, steps=1, dtype=torch.float32, look=None, camera=shift_head(6.0))
    right = NEUTRAL.copy()
    right[0] = 0.9
    wm.reset(1, right, "plasma")
    for _ in range(4):
        wm.next_latent(right)
    assert len(commits) == 5  # the opening frame and one per frame
    raw = wm._ctx_raw.clone()
    harder = right.copy()
    harder[0] = 1.0
    wm.next_latent(harder)
    assert len(commits) == 7  # the newest frame once more (moved 6 px instead of 4.8), then the new one
    assert torch.allclose(commits[5], warp_affine(raw, torch.tensor([[6.0, 0, 0, 0, 0, 0]])), atol=1e-6)


def test_in_output_mode_the_camera_head_moves_each_new_frame_and_gain_zero_turns_it_off():
    """The head's bilinear mode (measured and not the default: cells mode is, tests/test_world_memory.py) moves the
    sampled latent itself."""
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    dyn = still_dynamics()
    assert WorldModel(tok, dyn, look=None, camera=False).camera is None
    shipped = WorldModel(tok, dyn, look=None).camera  # the shipped head, in cells mode
    assert shipped is not None and shipped.where == "cells" and "terrain" in shipped.maps
    wm = WorldModel(tok, dyn, steps=1, dtype=torch.float32, look=None, camera=shift_head(8.0))
    wm.camera.where = "output"
    wm.temperature, wm.ctx_noise, wm.memory_pull = 0.0, 0.0, 0.0
    right = NEUTRAL.copy()
    right[0] = 1.0
    wm.reset(1, right, "plasma")
    before = wm.last_latent.clone()
    z = wm.next_latent(right)
    assert torch.allclose(z[..., 1:], before[..., :-1], atol=1e-5)
    wm.camera.gain = 0.0
    assert torch.allclose(wm.next_latent(right), z, atol=1e-5)


def _zoomed(family: str, zoom: float, seed: int = 3):
    """The renderer's frame of one moment at NEUTRAL and at `zoom`, and the camera's pitch then."""
    from vprod.world.render import Renderer

    r = Renderer(256, 144)
    r.reset(seed, family, NEUTRAL)
    for _ in range(5):
        r.step(NEUTRAL)
    c = NEUTRAL.copy()
    c[ZOOM] = zoom
    return r.render(NEUTRAL), r.render(c), r.state.pitch


@pytest.mark.parametrize("family", ["terrain", "starfield"])
def test_the_lens_is_the_renderers_zoom_about_the_optical_centre(family):
    """A pinhole camera's zoom magnifies its picture about the optical centre: the middle of a starfield, the
    horizon row of a terrain (its pitch shears the picture). The neutral frame seen through the lens is the zoomed
    frame, nearly; about the middle row a terrain's is not."""
    from vprod.world.metrics import psnr
    from vprod.world.motion import lens, present
    from vprod.world.render import optical_row

    assert np.array_equal(lens(0.3, 0.3, 0.4), np.eye(3))
    plain, zoomed, pitch = _zoomed(family, 0.8)
    row = optical_row(family, pitch)
    assert (row == 0.5) == (family == "starfield")
    m = lens(0.5, 0.8, row)
    assert m[0, 0] == pytest.approx(np.tan(np.radians(33.5)) / np.tan(np.radians(50 - 33 * 0.8)))
    centre = np.array([0.0, (row - 0.5) * 144, 1.0])
    assert np.allclose(m @ centre, centre)  # the optical centre stays
    seen = psnr(present(plain, m), zoomed)
    assert seen > 26.0 and seen > psnr(plain, zoomed) + 8.0
    if family == "terrain":
        assert seen > psnr(present(plain, lens(0.5, 0.8, 0.5)), zoomed) + 6.0


def test_the_world_is_made_at_its_zoom_and_shown_through_the_lens():
    """The zoom knob moves no knob of the world itself (the dynamics', the look head's, the camera head's): the
    picture is the world's shown through the lens, at once, and nearer the renderer's zoomed frame than the look
    head's answer to the zoom (a haze). A world is made at the zoom it opens at; one observed in true frames, at
    theirs."""
    from vprod.world.look import load_look
    from vprod.world.metrics import psnr
    from vprod.world.model import LOOK_WEIGHTS, load_tokenizer
    from vprod.world.motion import lens
    from vprod.world.render import optical_row

    plain, zoomed, pitch = _zoomed("city", 0.8)
    wm = WorldModel(load_tokenizer(), still_dynamics(), steps=1, look=load_look(LOOK_WEIGHTS), camera=None)
    wm.memory_pull, wm.look_glide, wm.look_every = 0.2, 1, 1
    wm.lens_refocus = None  # the lens alone (the next test: the world made again)
    c = NEUTRAL.copy()
    c[ZOOM] = 0.8
    shown = {}
    for on in (False, True):
        wm.lens = on
        wm.reset(3, NEUTRAL, "city", first_frame=plain)
        looked = wm._look_t
        frame = wm.step(c)
        assert (wm.last_cond["control"][0, ZOOM].item() == pytest.approx(0.5)) == on
        assert (wm._look_t == looked) == on  # the look head did not act for the zoom
        shown[on] = psnr(frame, zoomed)
    assert np.allclose(wm.view, lens(0.5, 0.8, optical_row("city", (NEUTRAL[1] - 0.5) * 2)))
    assert shown[True] > shown[False] + 3.0, shown
    wm.step(NEUTRAL)  # back: the world as it was, no lens
    assert wm.view is None
    wide, narrow = NEUTRAL.copy(), NEUTRAL.copy()
    wide[ZOOM], narrow[ZOOM] = 0.2, 0.9
    for knobs in (narrow, wide):
        first = wm.reset(3, knobs, "city")  # made as it opens, shown as made
        assert wm._zoom_made == pytest.approx(knobs[ZOOM]) and wm.view is None
        assert np.array_equal(first, wm._opening_view(knobs))
    wm.step(narrow)
    assert wm._zoom_made == pytest.approx(0.2) and wm.view is not None
    wm.observe(zoomed)  # a true frame: taken at the knobs' zoom
    assert wm._zoom_made == pytest.approx(0.9) and wm.view is None


def test_a_world_the_renderer_made_is_made_again_at_the_zoom_once_the_lens_magnifies_it_far():
    """The lens adds no detail: zoomed in far, a starfield's stars blur away. Once it magnifies by lens_refocus, a
    world the model made from the renderer is made again at the knob's zoom, dissolving in from the picture as shown
    (the first frame is the lens's picture; a dozen frames on, the stars are back). A world seen in true frames is
    not the renderer's to make again: the lens alone."""
    from vprod.world.metrics import laplacian, psnr
    from vprod.world.model import load_tokenizer
    from vprod.world.motion import lens, present

    wm = WorldModel(load_tokenizer(), still_dynamics(), steps=1, look=None, camera=None)
    near, far = NEUTRAL.copy(), NEUTRAL.copy()
    near[ZOOM], far[ZOOM] = 0.6, 0.85
    from vprod.world.render import RendererWorld

    zoomed = RendererWorld(256, 144).reset(3, far, "starfield")  # the world's opening view, zoomed
    frames = {}
    for refocus in (None, 1.25):
        wm.lens_refocus = refocus
        wm.reset(3, NEUTRAL, "starfield")
        wm.step(near)  # magnified 1.14×: the lens alone
        assert wm._zoom_made == pytest.approx(0.5) and wm.view is not None
        before = wm.decode(wm._shown)
        through_lens = present(before, lens(0.5, 0.85, 0.5))
        first = wm.step(far)
        assert (wm._zoom_made == pytest.approx(0.85)) == (refocus is not None)
        assert (wm.view is None) == (refocus is not None)
        assert wm.memory.fading == (refocus is not None)  # dissolving from the picture as shown …
        if refocus is not None:  # … from the optical centre out, each cell over refocus_local of the frames
            fade = wm.memory._fade
            h, w = wm._shown.shape[-2:]
            centre = (int(wm._optical_row() * h), w // 2)
            assert fade.local == wm.refocus_local < 1.0 and fade.order.shape == (h, w)
            assert float(fade.order[centre]) < 0.1 and float(fade.order.max()) == 1.0
            assert float(fade.order[0, 0]) > 0.9 and float(fade.order[centre[0], 0]) > float(fade.order[centre])
        # either way the first frame is the lens's picture (the last one through it, a step of the dynamics on)
        assert psnr(first, through_lens) > max(25.0, psnr(first, before) + 5.0)
        for _ in range(wm.refocus_frames + 4):
            frames[refocus] = wm.step(far)
    lum = [laplacian(f.astype(np.float64).mean(-1)).var() for f in (frames[None], frames[1.25])]
    assert lum[1] > 1.5 * lum[0], lum  # the stars are back
    assert psnr(frames[1.25], zoomed) > psnr(frames[None], zoomed)
    wm.reset(3, NEUTRAL, "starfield")
    wm.observe(RendererWorld(256, 144).reset(3, NEUTRAL, "starfield"))  # a true frame: the lens alone, however far
    for _ in range(3):
        wm.step(far)
    assert wm._zoom_made == pytest.approx(0.5) and wm.view is not None and not wm.memory.fading


def test_a_refocus_makes_the_world_again_under_the_knobs_it_was_made_under():
    """Made again under the knobs of the moment, a world refocused in fog kept the fog (no look clears it again).
    A refocus makes the memory again under the knobs it was made under, at the new zoom, with the look for the knobs
    now on it; the world's daylight making (of a world opened at night) is still to be made, at the new zoom too."""
    from vprod.world.look import load_look
    from vprod.world.model import LOOK_WEIGHTS, load_tokenizer

    wm = WorldModel(load_tokenizer(), still_dynamics(), steps=1, look=load_look(LOOK_WEIGHTS), camera=None)
    day, fog = CONTROL_NAMES.index("daylight"), CONTROL_NAMES.index("fog")
    night = NEUTRAL.copy()
    night[day] = 0.1
    wm.reset(3, night, "city")
    assert wm.memory.to_make is not None  # the daylight making, once the knobs come nearer to it
    later = night.copy()
    later[fog], later[ZOOM] = 0.7, 0.85
    wm.step(later)  # the lens magnifies 1.67×: made again
    made = wm.memory.controls[0].numpy()
    assert made[ZOOM] == pytest.approx(0.85) and made[day] == pytest.approx(0.1)
    assert made[fog] == pytest.approx(NEUTRAL[fog])  # not the fog of the moment: the look makes that
    assert wm._look_ref[0, fog].item() == pytest.approx(0.7)
    lit = wm.memory.to_make[0][0].numpy()
    assert lit[ZOOM] == pytest.approx(0.85) and lit[day] == pytest.approx(NEUTRAL[day])


def test_a_refocus_takes_its_new_view_made_ahead_on_the_decoders_thread():
    """The new view (a render and its ring's encoding) is most of a refocus's cost: prepare() posts it for the
    decoder's thread when the next frame's knobs will call for a refocus, and the refocus takes it — for a zoom up
    to refocus_slack off, the lens showing the rest; further off, it is made anew."""
    import threading

    from vprod.world.model import load_tokenizer
    from vprod.world.motion import lens

    wm = WorldModel(load_tokenizer(), still_dynamics(), steps=1, look=None, camera=None)
    made_on: list[str] = []
    view = wm._refocus_view
    wm._refocus_view = lambda made, at: made_on.append(threading.current_thread().name) or view(made, at)
    for asked, taken in ((0.85, True), (0.88, True), (0.95, False)):
        made_on.clear()
        wm.reset(3, NEUTRAL, "city")
        z = wm.next_latent(NEUTRAL)
        ahead = NEUTRAL.copy()
        ahead[ZOOM] = 0.85
        wm.prepare(ahead)  # the knobs guessed for the next frame
        decoder = threading.Thread(target=wm.decode_timed, args=(z,), name="decoder")
        decoder.start()
        decoder.join()
        assert made_on == ["decoder"]
        knobs = NEUTRAL.copy()
        knobs[ZOOM] = asked
        wm.next_latent(knobs)
        assert made_on == (["decoder"] if taken else ["decoder", threading.current_thread().name])
        assert wm._zoom_made == pytest.approx(0.85 if taken else asked)
        rest = None if wm._zoom_made == pytest.approx(asked) else lens(0.85, asked, 0.42)
        assert (wm.view is None) if rest is None else np.allclose(wm.view, rest)


def _flown_off_and_on(wm, knobs, family: str, check, frames: int = 60) -> dict:
    """PSNR of `wm`'s frame `frames` against the renderer's from the same opening under `knobs`, with the flight off
    and on ({False: …, True: …}); check(wm, t, fly) after each step."""
    from vprod.world.metrics import psnr
    from vprod.world.render import RendererWorld

    scores = {}
    for fly in (False, True):
        wm.fly = fly
        truth = RendererWorld(256, 144)
        truth.reset(3, knobs, family)
        wm.reset(3, knobs, family)
        for t in range(frames):
            g, f = truth.step(knobs), wm.step(knobs)
            check(wm, t, fly)
        scores[fly] = psnr(f, g)
    return scores


def test_speed_flies_a_world_the_renderer_made_and_no_other():
    """Speed did not fly the world: the camera head moves the picture for the turn and the pitch alone. Now the
    picture is magnified as the head's fitted flow spreads it at the speed asked for (about the optical centre, as the
    lens), and once it is lens_refocus larger the world is made again from the renderer's view where the flight has
    taken the camera: a city flown at speed 0.9 is nearer the renderer's flight than one that stays where it opened.
    Held at speed 0, seen in true frames (not the renderer's to make again) or with its memory off, the world does
    not fly."""
    from vprod.world.render import RendererWorld

    wm = WorldModel()  # the shipped one: its camera head says how much a step spreads the picture
    fast = NEUTRAL.copy()
    fast[CONTROL_NAMES.index("speed")] = 0.9

    def check(wm, t, fly):
        if t == 2:  # magnified by the flight so far, not yet made again
            assert (wm._fly_scale > 1.02) == fly and wm._fly_made.steps == 0
            assert (np.eye(3) if wm.view is None else wm.view)[0, 0] == pytest.approx(wm._fly_scale)
        if t == 59:
            assert (wm._fly_made.steps > 30) == fly  # made again along the way

    scores = _flown_off_and_on(wm, fast, "city", check)
    assert scores[True] > scores[False] + 2.0, scores
    still = fast.copy()
    still[CONTROL_NAMES.index("speed")] = 0.0
    wm.reset(3, still, "city")
    for _ in range(20):
        wm.step(still)
    assert wm._fly_scale == 1.0 and wm._fly_made.steps == 0
    for true_frame in (True, False):
        wm.reset(3, fast, "city")
        for _ in range(3):
            wm.step(fast)
        assert wm._fly_scale > 1.0
        if true_frame:
            wm.observe(RendererWorld(256, 144).reset(3, fast, "city"))
        else:
            wm.memory = None  # the memory turned off (the worldmodel source's /bg/memory 0)
        for _ in range(20):
            wm.step(fast)
        assert wm._fly_scale == 1.0 and wm._fly_made.steps == 0
        assert np.allclose(np.eye(3) if wm.view is None else wm.view, np.eye(3))


def test_a_flying_worlds_new_views_are_made_ahead_on_the_decoders_thread_under_jittering_knobs():
    """The flight's magnification grows smoothly, so prepare() posts the next new view up to fly_ahead frames before
    it is needed, and keeps it posted (rather than a look pass) while the flight nears it: the decoder's thread, a
    frame behind the model's, has it made in time. The view is made at the camera's eased pitch, and serves a zoom
    the lens shows the rest of: knobs that jitter a little every frame still find it fitting."""
    import threading

    from vprod.world.model import SideWork

    wm = WorldModel()
    made_on: list[str] = []
    view = wm._refocus_view
    wm._refocus_view = lambda made, at: made_on.append(threading.current_thread().name) or view(made, at)
    rng = np.random.default_rng(0)
    fast = NEUTRAL.copy()
    fast[CONTROL_NAMES.index("speed")] = 0.9

    def knobs():
        k = fast.copy()
        k[[CONTROL_NAMES.index("pitch"), ZOOM]] += rng.normal(0.0, 0.02, 2)
        return np.clip(k, 0.0, 1.0)

    wm.reset(3, fast, "city")
    k = knobs()
    for _ in range(45):
        z = wm.next_latent(k)
        k = knobs()
        wm.prepare(k)
        decoder = threading.Thread(target=wm.decode_timed, args=(z,), name="decoder")
        decoder.start()
        decoder.join()
    assert len(made_on) >= 2 and set(made_on) == {"decoder"}, made_on

    # a look pass that finds other work posted leaves it for whoever it fits
    side = SideWork()
    side.post(("refocus", 1), lambda: "view")
    side.run()
    assert side.take(lambda key: key[0] != "refocus") is None
    assert side.take(lambda key: key[0] == "refocus") == "view"
    assert side.take(lambda key: True) is None  # taken: cleared


def test_the_flight_goes_where_the_camera_looks():
    """Turning as it flies, the renderer's camera flies where it looks. The flight's path turns as the camera head
    turns the picture, and each new view is made there, looking where the camera looks, in the middle of the
    memory's ring (the world itself there, where the old ring's window may have shown its mirror image): a terrain
    flown at speed 0.9 while turning right stays nearer the renderer's flight than one that does not fly."""
    from vprod.world.render import MAX_TURN

    wm = WorldModel()
    turning = NEUTRAL.copy()
    turning[CONTROL_NAMES.index("speed")], turning[CONTROL_NAMES.index("yaw")] = 0.9, 0.7
    seen = []

    def check(wm, t, fly):
        made = wm._fly_made
        if fly and made.steps and made not in seen:  # made again: looking where the camera looks, in the middle
            seen.append(made)
            assert made.yaw == pytest.approx(made.steps * 0.4 * MAX_TURN / 30.0)
            assert made.across > 0.0 and wm.memory.ox == 0

    scores = _flown_off_and_on(wm, turning, "terrain", check)
    assert len(seen) >= 2 and wm._fly_made.steps > 30
    assert scores[True] > scores[False] + 2.0, scores
