"""vprod.world.data: the clip format, live-show control schedules, rendering datasets, footage pseudo-actions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vprod.world import CONTROL_NAMES, NEUTRAL, NUM_CONTROLS
from vprod.world import data

YAW, PITCH, ZOOM = (CONTROL_NAMES.index(n) for n in ("yaw", "pitch", "zoom"))


@pytest.fixture(scope="module")
def render_module():
    from vprod.world import render

    return render


def _check_events_match_vectors(controls: np.ndarray, family: np.ndarray, events: np.ndarray) -> None:
    """Jump rows are exactly the frames where a knob leaps; switch rows exactly where the family changes."""
    step = np.abs(np.diff(controls, axis=0)).max(1)
    leaps = set((np.flatnonzero(step > 0.19) + 1).tolist())  # glides move < 0.19 per frame, jumps >= MIN_JUMP
    assert leaps == set(events[events[:, 1] == data.JUMP, 0].tolist())
    assert min((step[t - 1] for t in leaps), default=1.0) >= data.MIN_JUMP - 1e-6
    switches = set((np.flatnonzero(np.diff(family) != 0) + 1).tolist())
    assert switches == set(events[events[:, 1] == data.SWITCH, 0].tolist())
    for t in events[events[:, 1] == data.GLIDE, 0]:
        assert t == 0 or step[t - 1] > 0  # a glide row is a frame that moved (or the first frame)


def test_clip_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    t, h, w = 5, 12, 20
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    controls = rng.random((t, NUM_CONTROLS)).astype(np.float32)
    captions = [f"frame {i} ünïcode" for i in range(t)]
    events = [(2, data.JUMP), (3, data.SWITCH)]
    path = data.write_clip(tmp_path, 7, frames, controls, [0, 0, 1, 1, 2], captions, 123456789012, events)
    assert path == tmp_path / "clips" / "000007.npz"
    assert not list((tmp_path / "clips").glob("*.tmp"))

    ds = data.ClipDataset(tmp_path)
    assert len(ds) == 1
    clip = ds[0]
    assert clip["frames"].dtype == np.uint8 and np.array_equal(clip["frames"], frames)
    assert clip["controls"].dtype == np.float32 and np.array_equal(clip["controls"], controls)
    assert clip["family"].dtype == np.int16 and clip["family"].tolist() == [0, 0, 1, 1, 2]
    assert clip["captions"].tolist() == captions
    assert clip["seed"] == 123456789012
    assert clip["events"].dtype == np.int32 and clip["events"].tolist() == [[2, 1], [3, 2]]
    with np.load(path, allow_pickle=False) as z:  # plain npz, no pickles
        assert set(z.files) == {"frames", "controls", "family", "captions", "seed", "events"}
    assert set(ds.load(0, ["controls"])) == {"controls"}

    wins = list(ds.iter_windows(3, stride=2))
    assert [w["start"] for w in wins] == [0, 2]
    assert np.array_equal(wins[1]["frames"], frames[2:5])
    assert wins[1]["captions"].tolist() == captions[2:5]
    assert wins[1]["events"].tolist() == [[0, 1], [1, 2]]  # relative to the window
    assert len(list(ds.iter_windows(6))) == 0

    with pytest.raises(ValueError):
        data.write_clip(tmp_path, 8, frames, controls[:3], 0, "x", 0)


def test_schedules_have_glides_jumps_and_switches_that_match_the_vectors():
    kinds = np.zeros(3, int)
    for seed in range(30):
        s = data.make_schedule(seed, 96, 4, first_family=seed % 4)
        assert s.controls.shape == (96, NUM_CONTROLS) and s.controls.dtype == np.float32
        assert s.controls.min() >= 0 and s.controls.max() <= 1
        assert s.family[0] == seed % 4
        assert np.abs(s.controls[0] - NEUTRAL).max() <= data.START_SPREAD + 1e-6
        _check_events_match_vectors(s.controls, s.family, s.events)
        kinds += np.bincount(s.events[:, 1], minlength=3)
        again = data.make_schedule(seed, 96, 4, first_family=seed % 4)
        assert np.array_equal(again.controls, s.controls) and np.array_equal(again.events, s.events)
    assert kinds.min() >= 5, kinds  # glides, jumps and family switches all occur


def test_the_knobs_schedule_changes_the_controls_far_more_often():
    """--schedule knobs: the same kinds of segment, dense in control changes (clips that teach control following)."""
    changed = {"show": 0, "knobs": 0}
    kinds = np.zeros(3, int)
    for seed in range(40):
        for style in changed:
            s = data.make_schedule(seed, 64, 6, first_family=1, style=style)
            assert s.controls.min() >= 0 and s.controls.max() <= 1 and s.family[0] == 1
            _check_events_match_vectors(s.controls, s.family, s.events)
            changed[style] += int((np.abs(np.diff(s.controls, axis=0)).max(1) > 0.01).sum())
            if style == "knobs":
                kinds += np.bincount(s.events[:, 1], minlength=3)
                again = data.make_schedule(seed, 64, 6, first_family=1, style=style)
                assert np.array_equal(again.controls, s.controls)
    assert changed["knobs"] >= 4 * changed["show"], changed
    assert kinds[data.JUMP] >= 40 and kinds[data.GLIDE] >= 40 and kinds[data.SWITCH] >= 2, kinds


def test_render_dataset_writes_meta_and_clips_covering_all_families(tmp_path, render_module):
    families = tuple(render_module.FAMILIES)
    clips = max(6, len(families))
    out = tmp_path / "ds"
    summary = data.render_dataset(out, clips, frames_per_clip=16, width=64, height=36, seed=3, progress=False)
    assert summary["clips"] == clips and summary["frames"] == clips * 16 and summary["frames_per_s"] > 0

    meta = json.loads((out / "meta.json").read_text())
    assert meta["version"] == 1 and meta["fps"] == 30 and meta["source"] == "renderer" and meta["complete"]
    assert (meta["width"], meta["height"]) == (64, 36)
    assert meta["control_names"] == list(CONTROL_NAMES) and meta["families"] == list(families)
    assert meta["clips"] == clips and meta["frames"] == clips * 16 and meta["args"]["seed"] == 3

    ds = data.ClipDataset(out)
    assert len(ds) == clips
    starts = set()
    for i in range(clips):
        c = ds[i]
        assert c["frames"].shape == (16, 36, 64, 3) and c["frames"].dtype == np.uint8
        assert c["controls"].shape == (16, NUM_CONTROLS) and c["family"].shape == (16,)
        assert len(c["captions"]) == 16 and all(isinstance(s, str) and s for s in c["captions"].tolist())
        assert c["seed"] == data.clip_seed(3, i)
        _check_events_match_vectors(c["controls"], c["family"], c["events"])
        starts.add(int(c["family"][0]))
    assert starts == set(range(len(families)))  # balanced starts cover every family

    wins = list(ds.iter_windows(8, stride=4, shuffle=True))
    assert len(wins) == clips * 3 and wins[0]["frames"].shape == (8, 36, 64, 3)

    with pytest.raises(FileExistsError):
        data.render_dataset(out, 1, frames_per_clip=4, width=64, height=36, progress=False)


def test_render_dataset_is_deterministic_per_seed_and_across_workers(tmp_path, render_module):
    kw = dict(frames_per_clip=12, width=64, height=36, progress=False)
    a = data.render_dataset(tmp_path / "a", 3, seed=5, workers=1, **kw)
    data.render_dataset(tmp_path / "b", 3, seed=5, workers=2, **kw)
    data.render_dataset(tmp_path / "c", 3, seed=6, workers=1, **kw)
    assert a["workers"] == 1
    da, db, dc = (data.ClipDataset(tmp_path / n) for n in "abc")
    for i in range(3):
        ca, cb, cc = da[i], db[i], dc[i]
        for k in ("frames", "controls", "family", "captions", "events"):
            assert np.array_equal(ca[k], cb[k]), k
        assert ca["seed"] == cb["seed"] != cc["seed"]
        assert not np.array_equal(ca["controls"], cc["controls"])


# ------------------------------------------------------------------------------------------------- footage


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A textured scene: blurred noise under random coloured blobs (plenty of trackable detail)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
    for _ in range(400):
        cv2.circle(img, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(3, 25)),
                   tuple(int(v) for v in rng.integers(0, 256, 3)), -1, cv2.LINE_AA)
    return img


def _write_video(path, frames_bgr, fps=30.0):
    h, w = frames_bgr[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames_bgr:
        vw.write(f)
    vw.release()


def _camera_video(path, n: int, move):
    """n frames of 320x180, each a crop window (x, y, scale) of a larger texture; move(i) -> (x, y, scale)."""
    tex = _texture(600, 900)
    out = []
    for i in range(n):
        x, y, s = move(i)
        cw, ch = 320 * s, 180 * s
        x0, y0 = x - cw / 2, y - ch / 2
        m = np.array([[cw / 320, 0, x0], [0, ch / 180, y0]], np.float32)  # output pixel -> texture pixel
        out.append(cv2.warpAffine(tex, m, (320, 180), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    _write_video(path, out)
    return path


def _footage_controls(tmp_path, name, move, n=40):
    video = _camera_video(tmp_path / f"{name}.mp4", n, move)
    out = tmp_path / f"{name}_ds"
    summary = data.footage_to_dataset([video], out, frames_per_clip=20, width=128, height=72, progress=False)
    ds = data.ClipDataset(out)
    assert summary["clips"] == len(ds) == 2 and summary["frames"] == n
    clips = [ds[i] for i in range(len(ds))]
    for c in clips:
        assert c["frames"].shape == (20, 72, 128, 3) and c["family"].tolist() == [-1] * 20
        assert set(c["captions"].tolist()) == {f"user footage: {name}.mp4"} and c["seed"] == -1
        assert len(c["events"]) == 0  # no cuts in one continuous shot
        others = [k for k, nm in enumerate(CONTROL_NAMES) if nm not in ("yaw", "pitch", "zoom", "speed", "energy")]
        assert np.allclose(c["controls"][:, others], NEUTRAL[others])
    return clips, np.concatenate([c["controls"] for c in clips])


def test_footage_pan_right_and_left_map_to_yaw(tmp_path):
    _, right = _footage_controls(tmp_path, "right", lambda i: (300 + 4 * i, 300, 1.0))  # camera pans right
    _, left = _footage_controls(tmp_path, "left", lambda i: (600 - 4 * i, 300, 1.0))
    assert (right[:, YAW] > 0.55).mean() >= 0.95, right[:, YAW]
    assert (left[:, YAW] < 0.45).mean() >= 0.95, left[:, YAW]
    assert abs(right[:, PITCH] - 0.5).max() < 0.05 and abs(right[:, ZOOM] - 0.5).max() < 0.05


def test_footage_tilt_up_raises_pitch_and_tilt_down_lowers_it(tmp_path):
    clips, up = _footage_controls(tmp_path, "up", lambda i: (450, 380 - 3 * i, 1.0))  # window moves up
    for c in clips:
        p = c["controls"][:, PITCH]
        assert p[-1] > p[0] + 0.05 and (p > 0.5).all(), p
    _, down = _footage_controls(tmp_path, "down", lambda i: (450, 220 + 3 * i, 1.0))
    assert (down[:, PITCH] < 0.5).all(), down[:, PITCH]
    assert abs(up[:, YAW] - 0.5).max() < 0.05


def test_footage_zoom_in_raises_zoom(tmp_path):
    clips, z = _footage_controls(tmp_path, "zoom", lambda i: (450, 300, 0.985 ** i))  # window shrinks
    assert (z[:, ZOOM] > 0.5).all(), z[:, ZOOM]
    for c in clips:
        assert c["controls"][-1, ZOOM] > c["controls"][0, ZOOM] + 0.05
    assert abs(z[:, YAW] - 0.5).max() < 0.05


def test_footage_cut_is_an_event(tmp_path):
    a, b = _texture(180, 320, seed=1), _texture(180, 320, seed=2)[:, :, ::-1] // 3
    video = tmp_path / "cut.mp4"
    _write_video(video, [np.roll(a, -2 * i, 1) for i in range(15)] + [np.roll(b, 2 * i, 1) for i in range(15)])
    data.footage_to_dataset([video], tmp_path / "cut_ds", frames_per_clip=30, width=64, height=36, progress=False)
    c = data.ClipDataset(tmp_path / "cut_ds")[0]
    assert c["events"].tolist() == [[15, data.CUT]]
    assert (c["controls"][2:13, YAW] > 0.5).all() and (c["controls"][17:28, YAW] < 0.5).all()


@pytest.mark.parametrize("family", ["terrain", "starfield"])
def test_motion_estimate_reads_back_the_renderers_knobs(render_module, family):
    """The footage estimator on the renderer's own frames recovers yaw, and the direction of pitch and zoom."""
    def frames(n, fn, warm=6):
        r = render_module.Renderer(128, 72)
        r.reset(3, family, fn(0))
        for _ in range(warm):
            r.step(fn(0))
        return [r.step(fn(i)) for i in range(n)]

    def knobs(**kw):
        c = NEUTRAL.copy()
        c[[CONTROL_NAMES.index(k) for k in kw]] = list(kw.values())
        return c

    for yaw in (0.25, 0.75):
        est, cuts = data.estimate_controls(frames(16, lambda i: knobs(yaw=yaw, speed=0.0)))
        assert not cuts.any() and abs(np.median(est[:, YAW]) - yaw) < 0.08, est[:, YAW]
    est, _ = data.estimate_controls(frames(20, lambda i: knobs(pitch=0.5 + 0.3 * i / 19, speed=0.0), warm=0))
    assert est[-1, PITCH] > 0.6, est[:, PITCH]
    est, _ = data.estimate_controls(frames(20, lambda i: knobs(zoom=0.5 + 0.3 * i / 19, speed=0.0), warm=0))
    assert est[-1, ZOOM] > 0.65, est[:, ZOOM]


def test_auto_workers_is_one_per_idle_core_within_bounds():
    import os

    assert data.auto_workers(1) == 1
    assert 1 <= data.auto_workers(100) <= (os.cpu_count() or 1)


def test_cli_commands_parse_and_print_json(tmp_path, capsys, render_module):
    import argparse

    ap = argparse.ArgumentParser()
    data.add_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["data", "render", "--out", str(tmp_path / "r"), "--clips", "2", "--frames", "4",
                          "--size", "64x36", "--workers", "1", "--quiet"])
    assert args.fn(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["clips"] == 2 and summary["frames"] == 8 and "frames_per_s" in summary and "seconds" in summary
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["command"].startswith("vprod data render --out ")
    assert "--clips 2 --frames 4 --size 64x36" in meta["command"]
    assert args.fn(args) == 2  # refuses to overwrite without --overwrite
    args = ap.parse_args(["data", "footage", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "f")])
    assert args.fn(args) == 2
