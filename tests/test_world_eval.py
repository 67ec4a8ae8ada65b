"""vprod.world.metrics and vprod.world.eval: metrics with known answers, the rollout harness on a toy world, and
the sanity of the whole evaluation through the real procedural renderer (small sizes)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vprod.world import NEUTRAL, NUM_CONTROLS
from vprod.world import eval as E
from vprod.world import metrics as M

# ---------------------------------------------------------------------------------------------------------------
# PSNR / SSIM


def _checker(h, w):
    return (np.indices((h, w)).sum(0) % 2).astype(bool)


def test_psnr_of_known_noise():
    a = np.full((36, 64, 3), 128, np.uint8)
    b = a.copy()
    b[_checker(36, 64)] += 10  # ±10 on alternate pixels: MSE exactly 100
    b[~_checker(36, 64)] -= 10
    assert M.mse(a, b) == pytest.approx(100.0)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100.0))  # 28.13 dB
    one_off = a.copy()
    one_off[0, 0, 0] += 1  # MSE 1 / (36·64·3)
    assert M.psnr(a, one_off) == pytest.approx(10 * math.log10(255**2 * 36 * 64 * 3))


def test_psnr_of_identical_frames_is_inf_and_capped_for_reports():
    a = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert M.psnr(a, a) == math.inf
    assert M.psnr_capped(a, a) == M.PSNR_CAP_DB == 100.0
    assert M.cap_db(42.0) == 42.0
    assert json.dumps(E._jsonable({"x": math.inf, "y": float("nan")})) == '{"x": null, "y": null}'


def test_ssim_identical_is_one_and_constant_images_follow_the_luminance_term():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert M.ssim(a, a, channels="rgb") == pytest.approx(1.0, abs=1e-12)
    # Flat images: variances and covariance are 0, so SSIM = (2·μx·μy + C1) / (μx² + μy² + C1).
    c1 = (0.01 * 255) ** 2
    x = np.full((20, 20), 100, np.uint8)
    y = np.full((20, 20), 130, np.uint8)
    assert M.ssim(x, y) == pytest.approx((2 * 100 * 130 + c1) / (100**2 + 130**2 + c1), rel=1e-9)
    # a constant shift keeps the structure: higher than the same energy of noise
    shifted = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)
    noisy = np.clip(a.astype(int) + rng.choice([-20, 20], a.shape), 0, 255).astype(np.uint8)
    assert M.ssim(a, shifted) > M.ssim(a, noisy)
    assert M.ssim(a, noisy) < M.ssim(a, np.clip(a.astype(int) + rng.choice([-5, 5], a.shape), 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Drift statistics and the band


def test_frame_stats_known_values():
    f = np.zeros((10, 10, 3), np.uint8)
    f[..., 0] = 200  # pure-ish red: saturation 1
    f[:, :5, 1] = 100  # half the pixels have G = 100: S = (200-0)/200 = 1 still
    prev = f.copy()
    prev[..., 2] = 30  # every pixel differs by 30 in one channel: mean abs change 10
    s = M.frame_stats(f, prev)
    st = dict(zip(M.STAT_NAMES, s))
    assert st["mean_r"] == pytest.approx(200.0) and st["mean_g"] == pytest.approx(50.0)
    assert st["std_r"] == pytest.approx(0.0) and st["std_g"] == pytest.approx(50.0)
    assert st["saturation"] == pytest.approx(1.0)
    assert st["change"] == pytest.approx(10.0)
    assert math.isnan(M.frame_stats(f)[-1])
    assert M.sharpness(np.full((8, 8, 3), 77, np.uint8)) == 0.0
    assert M.saturation(np.full((4, 4, 3), 90, np.uint8)) == 0.0


def test_window_stats_band_and_fraction_inside():
    per_frame = np.arange(10, dtype=float)[:, None] * np.ones((1, 2))
    per_frame[0, 1] = np.nan  # ignored
    w = M.window_stats(per_frame, 5)
    assert w[:, 0].tolist() == [2.0, 7.0]
    assert w[0, 1] == pytest.approx(2.5)
    assert len(M.window_stats(per_frame, 4, stride=2)) == 4
    ref = np.linspace(0, 100, 101)[:, None]  # windows 0, 1, …, 100: p1 = 1, p99 = 99
    lo, hi = M.band(ref)
    assert lo[0] == pytest.approx(1.0) and hi[0] == pytest.approx(99.0)
    frac = M.fraction_inside(np.array([[0.5], [50.0], [99.5], [98.0]]), lo, hi)
    assert frac.tolist() == [0.5]
    lo, hi = M.band(ref, margin=0.1)  # edges ×/÷ 1.1: a lower edge above 0 stays above 0
    assert lo[0] == pytest.approx(1.0 / 1.1) and hi[0] == pytest.approx(99.0 * 1.1)
    assert M.fraction_inside(np.array([[0.0], [0.95], [108.0], [109.0]]), lo, hi).tolist() == [0.5]


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_on_known_gaussians():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 5)) @ rng.normal(size=(5, 5))
    d = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert M.frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance_features(x, x + d) == pytest.approx(float(d @ d), rel=1e-6)  # |d|² = 14.25
    # analytic: diagonal covariances give |μ1 − μ2|² + Σ (σ1 − σ2)²
    assert M.frechet_distance(np.zeros(2), np.diag([4.0, 1.0]), np.ones(2), np.diag([1.0, 9.0])) == pytest.approx(
        2 + (2 - 1) ** 2 + (1 - 3) ** 2)
    # non-commuting covariances: Tr (C1 C2)^½ is the sum of square roots of C1·C2's eigenvalues
    c1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    c2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    tr = np.sqrt(np.linalg.eigvals(c1 @ c2).real).sum()
    assert M.frechet_distance(np.zeros(2), c1, np.zeros(2), c2) == pytest.approx(np.trace(c1 + c2) - 2 * tr)
    # two samples of one Gaussian are close; a different Gaussian is far
    y = rng.normal(size=(4000, 5)) @ rng.normal(size=(5, 5))
    same = M.frechet_distance_features(x[:2000], x[2000:])
    assert same < 0.2 * M.frechet_distance_features(x, y)


def test_pixel_features_shape_and_histogram():
    frames = np.random.default_rng(3).integers(0, 256, (4, 36, 64, 3), dtype=np.uint8)
    f = M.pixel_features(frames)
    assert f.shape == (4, 57) and np.isfinite(f).all()
    assert f[:, 30:54].reshape(4, 3, 8).sum(-1) == pytest.approx(np.ones((4, 3)))  # histograms sum to 1
    assert M.pixel_features(frames[0]).shape == (1, 57)
    flat = np.full((2, 36, 64, 3), 60, np.uint8)
    assert M.pixel_features(flat)[:, -3:] == pytest.approx(0.0)  # no gradients


# ---------------------------------------------------------------------------------------------------------------
# Switch jump ratio, R²


def test_switch_jump_ratio_on_a_stream_with_a_known_spike():
    changes = np.ones(200)
    changes[0] = np.nan
    changes[101] = 10.0  # the spike, one frame after the switch at 100
    r = M.switch_jump_ratio(changes, [100, 150], window=4)
    assert r[0] == pytest.approx((10 + 1e-3) / (1 + 1e-3))
    assert r[1] == pytest.approx(1.0)  # a smooth switch
    assert M.switch_jump_ratio(np.zeros(50), [25]) == [1.0]  # a frozen stream does not jump


def test_the_local_jump_ratio_measures_a_switch_against_the_motion_ahead_of_it():
    changes = np.ones(300)
    changes[150:200] = 6.0  # a fast turn …
    changes[199] = 9.0  # … whose fastest frame falls just before a smooth switch at 201
    g = M.switch_jump_ratio(changes, [201], window=4)
    loc = M.switch_jump_ratio(changes, [201], window=4, before=30)
    assert g[0] == pytest.approx((9 + 1e-3) / (1 + 1e-3))  # the whole stream's calm: looks like a jump
    assert loc[0] == pytest.approx((9 + 1e-3) / (6 + 1e-3))  # against the turn it interrupts: 1.5
    changes[203] = 40.0  # a real cut stands out against the turn too
    assert M.switch_jump_ratio(changes, [201], window=4, before=30)[0] > 6
    assert M.switch_jump_ratio(changes, [5], window=4, before=30) == M.switch_jump_ratio(changes, [5], window=4)


def test_r2_scores():
    y = np.random.default_rng(4).random((50, 3))
    assert M.r2_scores(y, y) == pytest.approx(np.ones(3))
    assert M.r2_scores(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(np.zeros(3))
    assert np.isnan(M.r2_scores(np.ones(5), np.zeros(5))[0])


def test_circular_r2_wraps_around():
    t = np.array([0.02, 0.3, 0.5, 0.7, 0.98])
    assert M.circular_r2(t, t) == pytest.approx(1.0)
    assert M.circular_r2(t, np.mod(t + 1.0, 1.0)) == pytest.approx(1.0)  # 0 and 1 are one hue
    wrapped = M.circular_r2(np.array([0.01, 0.99, 0.5]), np.array([0.99, 0.01, 0.5]))  # errors of 0.02, not 0.98
    assert wrapped > 0.99
    assert M.r2_scores(np.array([0.01, 0.99, 0.5]), np.array([0.99, 0.01, 0.5]))[0] < -1


# ---------------------------------------------------------------------------------------------------------------
# Baselines, schedules and the rollout harness


def test_baselines_need_observed_frames():
    f0 = np.full((4, 6, 3), 100, np.uint8)
    f1 = np.full((4, 6, 3), 130, np.uint8)
    cl = E.CopyLastWorld(6, 4)
    assert cl.reset(0, NEUTRAL).shape == (4, 6, 3)
    cl.observe(f1)
    assert (cl.step(NEUTRAL) == 130).all() and (cl.step(NEUTRAL) == 130).all()
    lin = E.LinearExtrapolationWorld(6, 4)
    lin.reset(0, NEUTRAL)
    lin.observe(f0)
    assert (lin.step(NEUTRAL) == 100).all()  # one known frame: repeat it
    lin.observe(f1)  # the truth of that tick
    assert (lin.step(NEUTRAL) == 160).all()  # 2·130 − 100
    assert (lin.step(NEUTRAL) == 190).all()  # it extrapolates its own predictions …
    assert (lin.step(NEUTRAL) == 220).all()
    assert (lin.step(NEUTRAL) == 250).all()
    assert (lin.step(NEUTRAL) == 255).all()  # … and clips


def test_control_walk_and_family_schedule():
    rng = np.random.default_rng(5)
    c = E.control_walk(rng, 500, jump_prob=0.01)
    assert c.shape == (500, NUM_CONTROLS) and c.dtype == np.float32
    assert c.min() >= 0.0 and c.max() <= 1.0
    fams, switches = E.family_schedule(rng, 1000, ("a", "b", "c"), every=100, not_before=10)
    assert len(fams) == 1000 and 5 <= len(switches) <= 20 and switches[0] >= 10
    assert all(fams[s] != fams[s - 1] for s in switches)
    assert sum(fams[t] != fams[t - 1] for t in range(1, 1000)) == len(switches)


def test_rollout_plan_shuffles_only_the_horizon():
    p = E.plan_rollouts(("a", "b"), starts=3, horizon=10, context=2, seed=1)
    assert p.controls.shape == (3, 12, NUM_CONTROLS)
    assert (p.shuffled[:, :2] == p.controls[:, :2]).all()
    def flat(a):
        return sorted(map(tuple, a[:, 2:].reshape(-1, NUM_CONTROLS).tolist()))

    assert flat(p.shuffled) == flat(p.controls)  # the same vectors, permuted
    assert not (p.shuffled[:, 2:] == p.controls[:, 2:]).all()


class _ToyTruth:
    """A flat grey frame whose level depends on the seed; it never changes."""

    def reset(self, seed, controls, family=None):
        self.level = 60 + seed % 50
        return np.full((12, 16, 3), self.level, np.uint8)

    def step(self, controls):
        return np.full((12, 16, 3), self.level, np.uint8)


class _ToyDrifter:
    """Knows the observed frame and drifts from it by one grey level per step: error = horizon."""

    def reset(self, seed, controls, family=None):
        self.frame, self.n = np.zeros((12, 16, 3), np.uint8), 0
        return self.frame

    def observe(self, frame):
        self.frame, self.n = frame.copy(), 0

    def step(self, controls):
        self.n += 1
        return (self.frame.astype(int) + self.n).astype(np.uint8)


def test_rollout_harness_on_a_toy_world_whose_error_grows_linearly():
    plan = E.plan_rollouts(("a",), starts=3, horizon=8, context=2, seed=0)
    res, truth_samples = E.rollout_scores({"toy": _ToyDrifter(), "copy": E.CopyLastWorld(16, 12)}, _ToyTruth(), plan,
                                          sample_horizons=(1, 4))
    toy = res["toy"].summary(at=(1, 4))
    expected = [20 * math.log10(255 / h) for h in range(1, 9)]  # MSE = h²
    assert toy["psnr"] == pytest.approx(expected)
    assert toy["delta_tpsnr"] == pytest.approx(0.0)  # the toy ignores its controls
    copy = res["copy"].summary(at=(1, 4))
    assert copy["psnr"] == [100.0] * 8 and copy["ssim"] == pytest.approx([1.0] * 8)  # the toy truth never moves
    assert sorted(truth_samples) == [0, 1, 4] and sorted(res["toy"].samples) == [1, 4]
    assert (res["toy"].samples[4] == truth_samples[4] + 4).all()


# ---------------------------------------------------------------------------------------------------------------
# The whole evaluation through the real renderer (small sizes)


# Drift statistics need a few hundred frames to settle: at 480 frames and 4 reference streams the renderer's own
# stream kept >= 90 % of its windows in the band for seeds 0-7 (both baselines 0 % for their worst statistic);
# at 240 frames some seeds fell to 60 %. This small run asks 0.8 instead of the default 0.9, for headroom.
SMALL = {"width": 64, "height": 36, "starts": 3, "horizon": 16, "context": 2, "drift_frames": 480, "window": 24,
         "switch_every": 160, "reference_repeats": 4, "pass_fraction": 0.8, "readback_seeds": 3,
         "readback_segments": 20, "readback_probe_segments": 10, "feature_frames": 480}


@pytest.fixture(scope="module")
def small_eval(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    res = E.run_eval("renderer,copy-last,linear", out, progress=False, readback_dir=str(out / "readback"), **SMALL)
    return out, res


def test_eval_writes_strict_json_and_plots(small_eval):
    out, res = small_eval
    text = (out / "results.json").read_text()

    def no_constants(name):
        raise AssertionError(f"{name} in results.json")

    loaded = json.loads(text, parse_constant=no_constants)
    assert set(loaded["worlds"]) == {"renderer", "copy-last", "linear"}
    for name in ("rollout", "drift", "strip", "stream", "readback"):
        assert (out / res["plots"][name].split("/")[-1]).stat().st_size > 1000
    assert (out / "readback" / "readback.json").exists()
    assert "vprod eval --train-readback" in loaded["readback"]["train_command"]
    summary = E.summarize(res)
    assert summary["worlds"]["copy-last"]["delta_tpsnr"] == 0.0


def test_renderer_against_itself_scores_perfectly(small_eval):
    r = small_eval[1]["worlds"]["renderer"]
    assert all(v == M.PSNR_CAP_DB for v in r["rollout"]["psnr"])
    assert all(v == pytest.approx(1.0) for v in r["rollout"]["ssim"])
    assert r["delta_tpsnr"] > 0  # shuffled controls make the renderer diverge from itself


def test_baselines_degrade_with_horizon_and_ignore_controls(small_eval):
    for name in ("copy-last", "linear"):
        ro = small_eval[1]["worlds"][name]["rollout"]
        assert ro["psnr_at"]["16"] < ro["psnr_at"]["1"] < M.PSNR_CAP_DB
        assert ro["ssim_at"]["16"] < ro["ssim_at"]["1"] < 1.0
    assert small_eval[1]["worlds"]["copy-last"]["delta_tpsnr"] == 0.0  # it never looks at its controls
    assert small_eval[1]["worlds"]["linear"]["delta_tpsnr"] == 0.0


def test_renderer_drift_stays_in_its_own_band_and_baselines_leave_it(small_eval):
    worlds = small_eval[1]["worlds"]
    assert worlds["renderer"]["drift"]["pass"], worlds["renderer"]["drift"]["failed"]
    assert "change" in worlds["copy-last"]["drift"]["failed"]  # a frozen picture does not move
    assert {"std_r", "std_g", "std_b", "change"} <= set(worlds["linear"]["drift"]["failed"])  # it saturates flat
    fd = {n: worlds[n]["frechet"]["pixel"] for n in worlds}
    assert fd["renderer"] < fd["copy-last"] and fd["renderer"] < fd["linear"]


def test_switch_jump_ratio_and_timing_are_reported(small_eval):
    res = small_eval[1]
    ref = res["reference"]["switch_jump_ratio"]
    assert ref["switches"] >= 1 and ref["median"] > 1.0  # the renderer cuts on a family switch
    assert res["worlds"]["renderer"]["switch_jump_ratio"]["median"] > 1.0
    assert res["worlds"]["copy-last"]["switch_jump_ratio"]["median"] == pytest.approx(1.0)  # frozen: no jump
    assert res["reference"]["switch_jump_ratio_local"]["median"] > 1.0
    assert res["worlds"]["copy-last"]["switch_jump_ratio_local"]["median"] == pytest.approx(1.0)
    assert res["worlds"]["renderer"]["timing"]["step_ms_p50"] > 0


def test_control_read_back(small_eval):
    res = small_eval[1]
    held = res["readback"]["r2_heldout"]
    assert held["daylight"] > 0.5  # the renderer's brightness follows daylight
    worlds = res["worlds"]
    assert worlds["renderer"]["readback_r2"]["daylight"] > 0.5  # the same protocol on a renderer world
    assert worlds["renderer"]["readback_r2_mean"] > worlds["copy-last"]["readback_r2_mean"] + 0.1
    assert worlds["copy-last"]["readback_r2"]["yaw"] < 0.2  # a frozen picture does not turn


def test_cli_eval_prints_the_summary(tmp_path, capsys):
    import argparse

    ap = argparse.ArgumentParser(prog="vprod")
    E.add_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["eval", "--world", "copy-last,linear", "--out", str(tmp_path), "--size", "64x36",
                          "--starts", "1", "--horizon", "4", "--drift-frames", "60", "--window", "20",
                          "--switch-every", "30", "--no-readback", "--no-plots", "--no-ssim", "--quiet"])
    assert args.fn(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["worlds"]) == {"copy-last", "linear"}
    assert summary["worlds"]["copy-last"]["delta_tpsnr"] == 0.0
    assert (tmp_path / "results.json").exists()
    bad = ap.parse_args(["eval", "--world", "nope", "--out", str(tmp_path)])
    assert bad.fn(bad) == 2


def test_the_evaluated_world_model_takes_its_look_head_from_the_environment(monkeypatch):
    """VPROD_LOOK_WEIGHTS: unset → the shipped look head, "none" → none, a file → that one."""
    from vprod.world.eval import _model_world
    from vprod.world.model import LOOK_WEIGHTS

    monkeypatch.delenv("VPROD_LOOK_WEIGHTS", raising=False)
    assert _model_world(256, 144).look is not None
    monkeypatch.setenv("VPROD_LOOK_WEIGHTS", "none")
    assert _model_world(256, 144).look is None
    monkeypatch.setenv("VPROD_LOOK_WEIGHTS", str(LOOK_WEIGHTS))
    assert _model_world(256, 144).look is not None
