"""The world model's parts: tokenizer, dynamics, cache, sampler, checkpoints, training (one process and DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vprod.world import NEUTRAL
from vprod.world.checkpoint import load_weights, read_metadata, save_weights
from vprod.world.dynamics import Dynamics, DynamicsConfig
from vprod.world.model import WorldModel
from vprod.world.tokenizer import Tokenizer, TokenizerConfig, frames_to_tensor, tensor_to_frames

TINY = dict(d_model=32, layers=2, heads=2, context=2, sinks=2)


def tiny_dynamics(**kw) -> Dynamics:
    torch.manual_seed(0)
    m = Dynamics(DynamicsConfig(**{**TINY, **kw})).eval()
    for name in ("patch_out", "prev_in", "guide_in", "control_all"):  # zero-initialised in training: give a signal
        if hasattr(m, name):
            for p in getattr(m, name).parameters():
                torch.nn.init.normal_(p, std=0.1)
    return m


# the plain model, and the shipped kind: residual flow (previous latent as input) with distilled guidance and control
# features on every token
VARIANTS = {"plain": {}, "residual+guidance": {"residual": True, "delta_scale": 0.6, "guidance_in": True,
                                               "control_film": True}}


def conds(b: int, t: int | None = None, variant: dict | None = None) -> dict:
    lead = (b,) if t is None else (b, t)
    c = {"control": torch.rand(*lead, 8), "audio": torch.zeros(*lead, 8), "text": torch.randn(*lead, 384),
         "family": torch.zeros(*lead, dtype=torch.long), "drop": torch.zeros(*lead, 4, dtype=torch.bool)}
    if variant and variant.get("residual"):
        c["prev"] = torch.randn(*lead, 8, 18, 32)
    if variant and variant.get("guidance_in"):
        c["guidance"] = 1.0 + 2.0 * torch.rand(*lead)
    if variant and variant.get("control_film"):
        c["prev_control"] = torch.rand(*lead, 8)
    return c


def test_tokenizer_shapes_and_value_range():
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    frames = np.random.default_rng(0).integers(0, 256, (2, 144, 256, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 144, 256) and float(x.min()) >= -1 and float(x.max()) <= 1
    with torch.no_grad():
        z = tok.encode(x)
        assert z.shape == (2, 8, 18, 32)
        out = tensor_to_frames(tok.decode(z))
    assert out.shape == frames.shape and out.dtype == np.uint8


def test_frames_round_trip_through_tensors():
    frames = np.random.default_rng(1).integers(0, 256, (3, 16, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(tensor_to_frames(frames_to_tensor(frames)), frames)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_future_frame_never_changes_a_past_one(variant):
    m = tiny_dynamics(**VARIANTS[variant])
    B, T = 1, 4
    z = torch.randn(B, T, 8, 18, 32)
    args = (torch.ones(B, T), torch.randn(B, T, 8, 18, 32), torch.rand(B, T), torch.zeros(B, T),
            conds(B, T, VARIANTS[variant]))
    with torch.no_grad():
        out = m.forward_train(z, *args)
        z2 = z.clone()
        z2[:, 2] += 5.0  # frame 2 (as context) changes
        out2 = m.forward_train(z2, *args)
    assert torch.equal(out[:, :3], out2[:, :3])  # frames 0..2 are predicted without it
    assert not torch.allclose(out[:, 3], out2[:, 3])  # frame 3 sees frame 2 as its past


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_incremental_generation_matches_the_training_pass(variant):
    """The KV-cache path at run time computes exactly what training computed for the same frames."""
    m = tiny_dynamics(**VARIANTS[variant])
    B, T = 1, 5
    zc, zn = torch.randn(B, T, 8, 18, 32), torch.randn(B, T, 8, 18, 32)
    tau, c = torch.rand(B, T), conds(B, T, VARIANTS[variant])
    with torch.no_grad():
        ref = m.forward_train(zc, torch.ones(B, T), zn, tau, torch.zeros(B, T), c)
        cache = m.new_cache()
        for t in range(T):
            ct = {k: v[:, t] for k, v in c.items()}
            v = m.step_velocity(cache, zn[:, t], tau[:, t], torch.zeros(B), ct, t)
            assert torch.allclose(v, ref[:, t], atol=1e-4), t
            m.commit(cache, zc[:, t], ct, t)


def test_a_frames_turn_folded_into_the_qkv_weights_turns_its_queries_and_keys():
    """turned_qkv: the qkv weights with a frame's rotary time folded in give the rotated queries and keys (as the
    training pass turns them), for any frame index, and follow the weights when a training step changes them."""
    from vprod.world.dynamics import rope_angles, rope_tables

    m = tiny_dynamics()
    x = torch.randn(1, m.cfg.frame_tokens, m.cfg.d_model)
    hd = m.cfg.d_model // m.cfg.heads

    def check(frame_index):
        angles = rope_angles(torch.full((1, x.shape[1]), frame_index), m.cfg.rope_time_dims)
        rope = rope_tables(angles, m.cfg.rope_time_dims, hd)
        turned = m.turned_qkv(frame_index)
        for blk, qkv in zip(m.blocks, turned):
            want, got = blk.qkv_heads(x, rope), blk.qkv_heads(x, None, qkv)
            for a, b in zip(want, got):
                assert torch.allclose(a, b, atol=1e-5), frame_index
        return turned

    with torch.no_grad():
        before = [w.clone() for w, _ in check(5)]
        check(6)
        check(5 + 1024 * 3)
        m.blocks[0].qkv.weight.mul_(0.5)  # as an optimizer step would: in place
        after = check(5)
        assert not torch.equal(before[0], after[0][0]) and torch.equal(before[1], after[1][0])


def test_the_cache_stays_bounded_forever():
    m = tiny_dynamics(context=3)
    cache = m.new_cache()
    sizes = []
    with torch.no_grad():
        for t in range(40):
            m.commit(cache, torch.randn(1, 8, 18, 32), conds(1), t)
            sizes.append(cache.nbytes())
    assert len(cache) == 3
    assert sizes[3] == sizes[-1]  # constant once full


def test_the_cache_joins_its_frames_anew_after_every_change():
    """with_new() joins the cached frames once (the new frame's keys and values go into the room behind them, each
    call); a push to a full cache writes the new frame where the oldest was, a pop or a clear joins them anew — each
    must show at once."""
    m = tiny_dynamics(context=2)
    cache = m.new_cache()
    h, hd = m.cfg.heads, m.cfg.d_model // m.cfg.heads
    F_ = m.cfg.frame_tokens

    def check():  # a new frame of F_ tokens, as the passes give: the same joined keys and values as theirs
        k, v = torch.randn(1, h, F_, hd), torch.randn(1, h, F_, hd)
        kj, vj = cache.with_new(0, k, v)
        ks, vs = m.sink_kv(1)[0]
        S, n = ks.shape[2], len(cache.frames)
        assert kj.shape[2] == S + (n + 1) * F_
        for joined, sink, new, i in ((kj, ks, k, 0), (vj, vs, v, 1)):
            assert torch.equal(joined[:, :, :S], sink) and torch.equal(joined[:, :, -F_:], new)
            places = [joined[:, :, S + j * F_:S + (j + 1) * F_] for j in range(n)]
            # every cached frame once (in any order: attention does not depend on the keys' order)
            found = [[j for j, p in enumerate(places) if torch.equal(p, f[0][i])] for f in cache.frames]
            assert sorted(j for f in found for j in f) == list(range(n)), found

    with torch.no_grad():
        for t in range(5):  # past full: the newest frame takes the oldest's place
            m.commit(cache, torch.randn(1, 8, 18, 32), conds(1), t)
            check()
            check()  # the room is written anew: a second frame's tokens replace the first's
        cache.pop()  # the newest frame out (observe replaces it)
        check()
        m.commit(cache, torch.randn(1, 8, 18, 32), conds(1), 2)
        check()
        m.commit(cache, torch.randn(1, 8, 18, 32), conds(1), 3)
        cache.pop(0)  # the oldest out
        assert len(cache) == 1
        check()
        cache.clear()
        check()


def watch_queries(wm) -> list:
    """The dtype of the first block's queries, each time it makes them."""
    seen, blk = [], wm.dyn.blocks[0]
    qkv_heads = blk.qkv_heads

    def watched(*a, **kw):
        out = qkv_heads(*a, **kw)
        seen.append(out[0].dtype)
        return out

    blk.qkv_heads = watched
    return seen


def test_on_a_cpu_the_dynamics_run_in_fp32_and_the_convolutions_in_the_chosen_dtype():
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    wm = WorldModel(tok, tiny_dynamics(), look=None)
    assert (wm.dtype, wm.dynamics_dtype) == (torch.bfloat16, torch.float32)
    seen = watch_queries(wm)
    wm.reset(1, NEUTRAL, "plasma")
    seen.clear()  # (the sinks' keys are made once, outside any autocast)
    wm.step(NEUTRAL)
    assert seen and set(seen) == {torch.float32}
    wm = WorldModel(tok, tiny_dynamics(), look=None, dynamics_dtype=torch.bfloat16)
    seen = watch_queries(wm)
    wm.reset(1, NEUTRAL, "plasma")
    seen.clear()
    wm.step(NEUTRAL)
    assert seen and set(seen) == {torch.bfloat16}


def test_rotary_time_is_exact_modulo_1024():
    from vprod.world.dynamics import rope_angles

    a = rope_angles(torch.tensor([5]), 8)
    b = rope_angles(torch.tensor([5 + 1024 * 1000]), 8)
    assert torch.allclose(torch.cos(a), torch.cos(b), atol=1e-6)


def test_weights_round_trip_with_config_and_provenance(tmp_path):
    m = tiny_dynamics()
    save_weights(tmp_path / "w.safetensors", m, "world", m.cfg.to_json(), {"steps": 3, "data": "x"})
    meta = read_metadata(tmp_path / "w.safetensors")
    assert meta["kind"] == "world" and meta["trained"]["steps"] == 3
    m2, _ = load_weights(tmp_path / "w.safetensors", lambda c: Dynamics(DynamicsConfig.from_json(c)), "world")
    assert m2.cfg == m.cfg
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="not tokenizer"):
        load_weights(tmp_path / "w.safetensors", lambda c: None, "tokenizer")


@pytest.mark.parametrize("variant,camera", [(v, False) for v in VARIANTS] + [("residual+guidance", True)])
def test_one_training_step_lowers_the_loss(variant, camera):
    from vprod.world.train import WorldTrain, world_loss

    torch.manual_seed(0)
    m = Dynamics(DynamicsConfig(**TINY, **VARIANTS[variant], camera_context=camera))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    z = torch.randn(4, 3, 8, 18, 32)
    c = conds(4, 3)
    if camera:  # context frames moved by the camera head's flow (vprod.world.motion)
        c["ctx_flow"] = torch.randn(4, 3, 6) * 4
    # every objective at once for the residual model: flow matching, shortcut, self-rollout, guided targets
    tc = WorldTrain(shortcut_frac=0.25 if variant != "plain" else 0.0, guide_frac=0.5)
    ro = 0.25 if variant != "plain" else 0.0
    if variant != "plain":  # rollouts made as at run time, and the statistics term through the sampler
        tc.rollout_temp, tc.rollout_steps, tc.rollout_noise, tc.stats_weight = 0.75, 2, True, 1.0

    def loss():
        return world_loss(m, m, z, c, tc, torch.Generator().manual_seed(1), ro)[0]

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert float(after.detach()) < float(before.detach())


def test_the_statistics_term_sees_colour_spread_and_layout_and_nothing_else():
    from vprod.world.train import stats_loss

    torch.manual_seed(0)
    z = torch.randn(2, 3, 8, 18, 32)
    assert float(stats_loss(z, z).max()) == 0.0
    # the content moved inside each of the 3×4 regions (mirrored there): the same statistics
    moved = z.view(2, 3, 8, 3, 6, 4, 8).flip(-1).flip(-3).reshape(z.shape)
    assert float(stats_loss(moved, z).max()) < 1e-10
    for other in (z + 0.3, z * 0.5, torch.cat([z[..., :9, :] + 1, z[..., 9:, :] - 1], dim=-2)):
        assert float(stats_loss(other, z).min()) > 0.01  # colour, spread, layout


def test_runtime_rollouts_enter_the_context_noised_with_their_level():
    from vprod.world.train import WorldTrain, self_rollout

    m = tiny_dynamics(**VARIANTS["residual+guidance"])
    z = torch.randn(2, 4, 8, 18, 32)
    c = conds(2, 4)
    ones = torch.ones(2, 4)
    tc = WorldTrain(rollout_temp=0.75, rollout_steps=2, rollout_noise=True, ctx_noise=0.15)
    rz, rt = self_rollout(m, z, ones, c, 0.6, torch.Generator().manual_seed(0), 3, tc)
    assert torch.equal(rz[:, 0], z[:, 0]) and torch.equal(rt[:, 0], ones[:, 0])  # frame 0 is the given one
    assert not torch.allclose(rz[:, 1:], z[:, 1:])
    assert float(rt[:, 1:].max()) < 1.0 and float(rt[:, 1:].min()) >= 0.85
    rz2, rt2 = self_rollout(m, z, ones, c, 0.6, torch.Generator().manual_seed(0), 3, WorldTrain())
    assert torch.equal(rt2, ones)  # the default: predictions count as clean context


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_world_model_streams_with_a_bounded_cache(variant):
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    wm = WorldModel(tok, tiny_dynamics(**VARIANTS[variant]), steps=2, dtype=torch.float32)
    wm.guidance = 2.0  # runtime CFG (a second pass) for the plain model, one pass with the scale as input otherwise
    first = wm.reset(3, NEUTRAL, "plasma")
    assert first.shape == (144, 256, 3)
    for steps in (1, 2, 4):
        wm.steps = steps
        f = wm.step(NEUTRAL)
        assert f.shape == (144, 256, 3) and f.dtype == np.uint8
    for _ in range(6):
        wm.step(NEUTRAL)
    assert len(wm.cache) == wm.dyn.cfg.context
    wm.observe(first)  # the harness may replace our frame with the truth
    assert len(wm.cache) == wm.dyn.cfg.context


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from vprod.world.data import render_dataset

    out = tmp_path_factory.mktemp("data") / "ds"
    render_dataset(out, clips=6, frames_per_clip=8, width=64, height=48, seed=3, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_knobs_dataset(tmp_path_factory):
    from vprod.world.data import render_dataset

    out = tmp_path_factory.mktemp("data") / "knobs"
    render_dataset(out, clips=4, frames_per_clip=8, width=64, height=48, seed=4, workers=1, progress=False,
                   schedule="knobs")
    return out


def _run(cmd, cwd, timeout=240):
    env = {**os.environ, "VPROD_THREADS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


@pytest.mark.integration
def test_training_runs_resumes_and_ships_weights(tiny_dataset, tiny_knobs_dataset, tmp_path):
    tok_cmd = [sys.executable, "-m", "vprod", "train", "tokenizer", "--data", str(tiny_dataset), "--out",
               str(tmp_path / "tok"), "--steps", "4", "--batch", "2", "--quiet"]
    _run(tok_cmd, tmp_path)
    tok = tmp_path / "tok" / "tokenizer.safetensors"
    assert read_metadata(tok)["trained"]["steps"] == 4
    data = f"{tiny_dataset},{tiny_knobs_dataset}"  # two datasets trained on together
    world = [sys.executable, "-m", "vprod", "train", "world", "--data", data, "--out",
             str(tmp_path / "world"), "--tokenizer", str(tok), "--batch", "2", "--tiny", "--quiet"]
    _run(world + ["--steps", "3"], tmp_path)
    _run(world + ["--steps", "5"], tmp_path)  # resumes from the checkpoint at step 3
    rows = [json.loads(x) for x in (tmp_path / "world" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert (tmp_path / "world" / "loss.png").stat().st_size > 1000
    trained = read_metadata(tmp_path / "world" / "world.safetensors")["trained"]
    assert trained["steps"] == 5 and trained["clips"] == 10 and trained["data"] == data
    assert (tmp_path / "world" / "latents-2" / "latents.npy").exists()
    # stage 6 from the command line: a fine-tune with runtime-like rollouts and the statistics term
    stage6 = [sys.executable, "-m", "vprod", "train", "world", "--data", data, "--out", str(tmp_path / "world6"),
              "--tokenizer", str(tok), "--batch", "2", "--quiet", "--steps", "2", "--window", "3",
              "--init", str(tmp_path / "world" / "world.safetensors"), "--rollout", "0.5", "--rollout-start", "0",
              "--rollout-depth", "2", "--rollout-temp", "0.75", "--rollout-steps", "2", "--rollout-noise",
              "--stats", "2"]
    _run(stage6, tmp_path)
    t6 = read_metadata(tmp_path / "world6" / "world.safetensors")["trained"]["train"]
    assert (t6["rollout_temp"], t6["rollout_steps"], t6["rollout_noise"], t6["stats_weight"]) == (0.75, 2, True, 2.0)
    rows = [json.loads(x) for x in (tmp_path / "world6" / "log.jsonl").read_text().splitlines()]
    assert all(r["loss_stats"] > 0 for r in rows)


@pytest.mark.integration
def test_two_process_ddp_training(tiny_dataset, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "vprod", "train", "tokenizer",
           "--data", str(tiny_dataset), "--out", str(tmp_path / "tok"), "--steps", "3", "--batch", "2", "--quiet"]
    _run(cmd, tmp_path)
    meta = read_metadata(tmp_path / "tok" / "tokenizer.safetensors")
    assert meta["trained"]["processes"] == 2 and meta["trained"]["steps"] == 3


def test_the_guidance_scale_is_an_input_of_the_noisy_frame_only():
    """Distilled guidance: the scale changes the predicted velocity, never the context (the cache)."""
    m = tiny_dynamics(**VARIANTS["residual+guidance"])
    c = conds(1, None, VARIANTS["residual+guidance"])
    z = torch.randn(1, 8, 18, 32)
    with torch.no_grad():
        cache1, cache2 = m.new_cache(), m.new_cache()
        m.commit(cache1, z, dict(c, guidance=torch.tensor([1.0])), 0)
        m.commit(cache2, z, dict(c, guidance=torch.tensor([3.0])), 0)
        assert torch.equal(cache1.frames[0][0][0], cache2.frames[0][0][0])
        v1 = m.step_velocity(cache1, z, torch.zeros(1), torch.zeros(1), dict(c, guidance=torch.tensor([1.0])), 1)
        v3 = m.step_velocity(cache1, z, torch.zeros(1), torch.zeros(1), dict(c, guidance=torch.tensor([3.0])), 1)
    assert not torch.allclose(v1, v3)


def test_a_residual_model_that_predicts_no_change_copies_the_last_frame():
    """Residual flow: velocity = −noise (no change predicted) at temperature 0 gives the last latent back."""
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    dyn = tiny_dynamics(**VARIANTS["residual+guidance"])
    for p in dyn.patch_out.parameters():
        torch.nn.init.zeros_(p)  # velocity 0 everywhere: from noise 0 the change stays 0
    wm = WorldModel(tok, dyn, steps=2, dtype=torch.float32)
    wm.temperature, wm.ctx_noise = 0.0, 0.0
    wm.reset(1, NEUTRAL, "plasma")
    before = wm.last_latent.clone()
    z = wm.next_latent(NEUTRAL)
    assert torch.allclose(z, before)


def test_a_latent_set_runs_over_several_datasets_and_holds_out_from_each(tmp_path):
    from vprod.world.train import LatentSet

    parts = []
    for i, clips in enumerate((5, 3)):
        p = tmp_path / f"lat{i}"
        p.mkdir()
        z = np.full((clips, 4, 2, 3, 3), i, np.float16) + np.arange(clips, dtype=np.float16)[:, None, None, None, None]
        np.save(p / "latents.npy", z)
        np.save(p / "controls.npy", np.zeros((clips, 4, 8), np.float32))
        np.save(p / "family.npy", np.zeros((clips, 4), np.int16))
        np.save(p / "caption_id.npy", np.full((clips, 4), i, np.int32))
        np.save(p / "text.npy", np.full((2, 384), i, np.float32))
        parts.append(p)
    ls = LatentSet(parts)
    assert len(ls) == 8 and ls.shape == (8, 4, 2, 3, 3)
    assert float(ls.latents(6, 1, 3)[0, 0, 0, 0]) == 1 + 1  # clip 1 of the second part
    assert ls.text[ls.caption_id[6, 0]][0] == 1  # caption ids point into that part's own texts
    train, held = ls.split(0.2)
    assert held == [4, 7] and sorted(train + held) == list(range(8))
    np.save(parts[1] / "latents.npy", np.zeros((3, 5, 2, 3, 3), np.float16))
    with pytest.raises(ValueError, match="clip length"):
        LatentSet(parts)


def test_soft_conditions_match_the_hard_ones_at_their_ends():
    """A one-hot family blend equals the family id; a 0/1 float drop equals the boolean drop."""
    m = tiny_dynamics()
    c = conds(2)
    c["family"] = torch.tensor([1, 3])
    c["drop"][1, 2] = True
    z, tau, d = torch.randn(2, 8, 18, 32), torch.rand(2), torch.zeros(2)
    soft = dict(c, family_w=torch.nn.functional.one_hot(c["family"], 7).float(), drop=c["drop"].float())
    with torch.no_grad():
        assert torch.allclose(m.frame_tokens(z, tau, d, c), m.frame_tokens(z, tau, d, soft), atol=1e-6)
        half = dict(soft, family_w=torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0]] * 2))
        tok = m.frame_tokens(z, tau, d, half)[:, 3]
        ends = [m.frame_tokens(z, tau, d, dict(c, family=torch.tensor([f, f])))[:, 3] for f in (0, 1)]
    assert torch.allclose(tok, (ends[0] + ends[1]) / 2, atol=1e-5)  # the family token halfway between


def test_a_family_or_prompt_change_blends_over_the_transition_frames():
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    wm = WorldModel(tok, tiny_dynamics(**VARIANTS["residual+guidance"]), steps=1, dtype=torch.float32,
                    families=("terrain", "city", "tunnel", "plasma", "starfield", "ocean"))
    wm.transition_frames = 4
    wm.reset(1, NEUTRAL, "terrain")
    wm.step(NEUTRAL)
    assert "family_w" not in wm._cond(NEUTRAL)  # no change: the exact (hard) path
    wm.set_family("city")
    weights = []
    for _ in range(5):
        weights.append(wm._cond(NEUTRAL)["family_w"][0, :2].tolist() if wm._blended() else None)
        wm.step(NEUTRAL)
    assert weights[0] == [1.0, 0.0]  # nothing moved before the first new frame
    assert [w[1] for w in weights[1:4]] == sorted(w[1] for w in weights[1:4]) and 0 < weights[2][1] < 1
    assert weights[4] is None and int(wm._cond(NEUTRAL)["family"]) == 1  # done: city, exactly
    wm.text = np.ones(384, np.float32)  # a prompt appears (set_prompt without loading the sentence model)
    wm._begin_blend()
    wm.text = None
    wm.step(NEUTRAL)
    drop = wm._cond(NEUTRAL)["drop"]
    assert drop.dtype == torch.float32 and 0 < float(drop[0, 2]) < 1  # the prompt fades out
    wm.transition_frames = 0
    wm.set_family("ocean")
    assert int(wm._cond(NEUTRAL)["family"]) == 5 and "family_w" not in wm._cond(NEUTRAL)


def test_control_features_reach_every_token_and_leave_with_a_dropped_control():
    m = tiny_dynamics(**VARIANTS["residual+guidance"])
    c = conds(1, None, VARIANTS["residual+guidance"])
    z, tau, d = torch.randn(1, 8, 18, 32), torch.rand(1), torch.zeros(1)
    moved = dict(c, prev_control=c["prev_control"] + 0.3)  # the same knobs, reached by a different change
    with torch.no_grad():
        a, b = m.frame_tokens(z, tau, d, c), m.frame_tokens(z, tau, d, moved)
        assert (a - b).abs().amax(dim=-1).min() > 0  # every token of the frame feels the change
        off = dict(c, drop=torch.tensor([[True, False, False, False]]))
        assert torch.equal(m.frame_tokens(z, tau, d, off), m.frame_tokens(z, tau, d, dict(moved, drop=off["drop"])))


def test_the_look_head_changes_nothing_when_no_knob_moved_and_learns_a_change():
    from vprod.world.look import LookConfig, LookNet
    from vprod.world.train import optimizer_step

    torch.manual_seed(0)
    net = LookNet(LookConfig(width=16, layers=2))
    torch.nn.init.normal_(net.out.weight, std=0.1)
    z, c = torch.randn(4, 8, 18, 32), torch.rand(4, 8)
    assert torch.equal(net(z, c, c), torch.zeros_like(z))  # a still knob: exactly no change
    c1 = c.clone()
    c1[:, 4] = 1 - c1[:, 4]
    target = 0.5 * z.mean(dim=1, keepdim=True).expand_as(z) * (c1 - c)[:, 4, None, None, None]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(torch.nn.functional.mse_loss(net(z, c, c1), target))
    for _ in range(30):
        optimizer_step(opt, torch.nn.functional.mse_loss(net(z, c, c1), target), net)
    with torch.no_grad():
        assert float(torch.nn.functional.mse_loss(net(z, c, c1), target)) < 0.5 * first


def test_the_pooled_look_head_sees_the_whole_picture_and_the_plain_one_its_neighbourhood():
    """A fog's or a dusk's colour is the whole sky's: with `pooled` a cell's change depends on cells far away (through
    the picture's mean features); without, only on the cells its stack of 3×3 layers reaches. Both stay exactly still
    when no knob moved, on the frame and on the memory's canvas (rows mirrored above and below)."""
    from vprod.world.look import LookConfig, LookNet
    from vprod.world.memory import mirror_rows

    torch.manual_seed(0)
    c0 = torch.rand(1, 8)
    c1 = c0.clone()
    c1[:, 7] = 1 - c1[:, 7]
    z = torch.randn(1, 8, 18, 32)
    far = z.clone()
    far[..., 17, 31] += 5.0  # one cell in the far corner
    for pooled, dil, reaches in ((False, (), False), (True, (1, 2, 4), True)):
        net = LookNet(LookConfig(width=16, layers=3, pooled=pooled, dilations=dil))
        torch.nn.init.normal_(net.out.weight, std=0.1)
        with torch.no_grad():
            for zz in (z, mirror_rows(z, 9)):
                assert torch.equal(net(zz, c0, c0), torch.zeros_like(zz))
            moved = (net(far, c0, c1) - net(z, c0, c1))[..., 0, 0].abs().max()
        assert (float(moved) > 1e-6) == reaches
    assert LookConfig.from_json(net.cfg.to_json()) == net.cfg


def test_look_pairs_are_one_moment_under_two_control_vectors():
    from vprod.world.look import render_pairs

    p = render_pairs(3, per_state=8, width=64, height=48, seed=1, progress=False)
    assert p["before"].shape == p["after"].shape == (24, 48, 64, 3) and p["c0"].shape == (24, 8)
    same = np.abs(p["c1"] - p["c0"]).max(1) == 0
    assert same.any() and (~same).any()
    assert all(np.array_equal(a, b) for a, b in zip(p["before"][same], p["after"][same]))  # same controls, same frame
    assert np.abs(p["before"][~same].astype(int) - p["after"][~same]).mean() > 1  # the knobs changed the picture
    assert all(np.array_equal(p["before"][i], p["before"][i - i % 8]) for i in range(24))  # one moment per 8 pairs


@pytest.mark.integration
def test_training_the_look_head_from_the_command_line(tmp_path):
    _run([sys.executable, "-m", "vprod", "train", "look", "--out", str(tmp_path / "look"), "--states", "6",
          "--steps", "4", "--batch", "4", "--pooled", "--dilations", "1,2", "--look-pad", "9", "--quiet"], tmp_path)
    meta = read_metadata(tmp_path / "look" / "look.safetensors")
    assert meta["kind"] == "look" and meta["trained"]["steps"] == 4 and meta["trained"]["pairs"] == 24
    held = meta["trained"]["held_out"]
    assert held["psnr_tokenizer_ceiling_db"] > held["psnr_unchanged_db"]
    from vprod.world.look import load_look

    cfg = load_look(tmp_path / "look" / "look.safetensors").cfg
    assert cfg.latent_channels == 8 and cfg.pooled and cfg.dilations == (1, 2) and cfg.layers == 2
    assert meta["trained"]["train"]["pad"] == 9


def test_the_world_model_applies_the_look_head_once_the_knobs_moved_far_enough():
    from vprod.world.look import LookConfig, LookNet

    torch.manual_seed(0)
    look = LookNet(LookConfig(width=16, layers=1))
    torch.nn.init.normal_(look.out.weight, std=0.1)
    calls = []
    look.register_forward_hook(lambda mod, inp, out: calls.append((inp[1].clone(), inp[2].clone())))
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    wm = WorldModel(tok, tiny_dynamics(**VARIANTS["residual+guidance"]), steps=1, dtype=torch.float32, look=look)
    wm.look_step, wm.memory_pull = 0.1, 0.0  # (the memory's own look: tests/test_world_memory.py)
    c = NEUTRAL.copy()
    wm.reset(1, c, "plasma")
    for _ in range(3):  # 0.04 per frame: acts at the third frame (0.12 from where it last acted), from there
        c = c.copy()
        c[4] += 0.04
        wm.step(c)
    assert len(calls) == 1
    assert np.allclose(calls[0][0].numpy(), NEUTRAL) and np.allclose(calls[0][1].numpy(), c)
    wm.step(c)  # still knobs: nothing
    assert len(calls) == 1
    assert WorldModel(tok, tiny_dynamics(), look=None).look is None


def test_the_look_heads_change_glides_in_over_look_glide_frames():
    """One knob jump: the look head acts once and its change enters in equal parts over look_glide frames."""
    from vprod.world.look import LookConfig, LookNet

    torch.manual_seed(0)
    look = LookNet(LookConfig(width=16, layers=1))
    torch.nn.init.normal_(look.out.weight, std=0.1)
    changes = []
    look.register_forward_hook(lambda mod, inp, out: changes.append(out.detach().float().clone()))
    tok = Tokenizer(TokenizerConfig(widths=(16, 16, 16))).eval()
    dyn = tiny_dynamics(**VARIANTS["residual+guidance"])
    for p in dyn.patch_out.parameters():
        torch.nn.init.zeros_(p)  # the dynamics keep the last latent (temperature 0): only the look head changes it
    wm = WorldModel(tok, dyn, steps=1, dtype=torch.float32, look=look)
    wm.temperature, wm.ctx_noise, wm.look_glide, wm.memory_pull = 0.0, 0.0, 3, 0.0
    wm.reset(1, NEUTRAL, "plasma")
    c = NEUTRAL.copy()
    c[4] = 0.9
    zs = [wm.last_latent.clone()] + [wm.next_latent(c).clone() for _ in range(5)]
    assert len(changes) == 1 and changes[0].abs().max() > 0
    steps = [zs[i + 1] - zs[i] for i in range(5)]
    for s in steps[:3]:
        assert torch.allclose(s, changes[0] / 3, atol=1e-5)
    assert all(float(s.abs().max()) < 1e-6 for s in steps[3:])
    assert torch.allclose(zs[3] - zs[0], changes[0], atol=1e-5)
