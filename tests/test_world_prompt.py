"""The prompt head: a prompt's words → the family they name and the knob offsets they describe; the world model
turns towards them (the family as the family knob would, the offsets glided in) and back when the prompt goes."""

from __future__ import annotations

import numpy as np
import pytest

from vprod.world import CONTROL_NAMES, NEUTRAL
from vprod.world.prompt import (
    FREE_PROMPTS,
    HUE,
    LINEAR,
    UNRELATED_PROMPTS,
    colour_of,
    hue_offset,
    load_prompt_head,
    prompt_samples,
    steer,
)
from vprod.world.render import FAMILIES, caption, caption_parts, join_caption

DAYLIGHT = CONTROL_NAMES.index("daylight")


def test_a_caption_is_its_parts_and_each_part_says_which_knob_it_tells():
    rng = np.random.default_rng(0)
    for _ in range(200):
        fam, c = FAMILIES[rng.integers(len(FAMILIES))], rng.uniform(0, 1, 8).astype(np.float32)
        assert join_caption(caption_parts(fam, c)) == caption(fam, c)
    night = NEUTRAL.copy()
    night[DAYLIGHT] = 0.0
    parts = dict(caption_parts("terrain", night))
    assert parts["daylight"] == "night" and "mountains" in parts["family"]
    assert join_caption([("daylight", "night"), ("speed", "slow")]) == "a night, slow"


def test_training_texts_leave_parts_out_and_their_targets_say_only_what_the_words_say():
    texts, y, drawn = prompt_samples(300, seed=1)
    nl = len(LINEAR)
    assert len(texts) == len(y) == len(drawn) == 300 and y.shape[1] == 2 * nl + len(FAMILIES)
    assert len({len(t.split()) for t in texts}) > 5  # whole captions and pieces of them
    for text, row, (fam, c) in zip(texts, y, drawn):
        said = {what for what, words in caption_parts(fam, c) if words in text}
        for j, k in enumerate(LINEAR):
            if row[nl + j]:
                assert CONTROL_NAMES[k] in said and row[j] == pytest.approx(c[k] - NEUTRAL[k])
            else:
                assert row[j] == 0
        assert row[2 * nl:].sum() == ("family" in said)


def test_colour_words_become_the_hue_that_makes_the_family_show_that_colour():
    assert colour_of("Red mountains at dusk") == "red" and colour_of("a purple ocean") == "violet"
    assert colour_of("a city at night") is None
    # terrain's palette anchor is 100° (green) at hue 0.5: red (0–12°, centre 6°) is 94° back
    assert hue_offset("red", "terrain") == pytest.approx(-94 / 360)
    assert hue_offset("green", "terrain") == pytest.approx(7.5 / 360)  # green: 65–150°, centre 107.5°
    assert hue_offset(None, "terrain") == 0.0 and hue_offset("red", None) == 0.0
    c = steer(np.array([0.5, 0.5, 0.4, 0.5, 0.9, 0.95, 0.3, 0.2], np.float32), np.array([0, 0, 0, 0, 0.5, 0.1, 0, 0]))
    assert c[DAYLIGHT] == 1.0 and c[HUE] == pytest.approx(0.05)  # clipped; the hue goes round


@pytest.fixture(scope="module")
def head_and_embed():
    from vprod.world.model import PROMPT_WEIGHTS
    from vprod.world.text import embed

    return load_prompt_head(PROMPT_WEIGHTS), embed


def test_the_shipped_head_reads_prompts_nobody_generated_as_their_words_say(head_and_embed):
    head, embed = head_and_embed
    for (text, fam, signs), e in zip(FREE_PROMPTS, embed([t for t, _, _ in FREE_PROMPTS])):
        r = head.read(e, text)
        assert r.family == fam, text
        off = r.offset.copy()
        off[HUE] = hue_offset(r.colour, r.family)
        for name, sign in signs.items():
            assert off[CONTROL_NAMES.index(name)] * sign > 0.05, (text, name, off)
        others = [k for k in LINEAR if CONTROL_NAMES[k] not in signs]
        assert np.abs(off[others]).max() < 0.2, (text, off)  # what the words do not name stays (nearly) put
    for text, e in zip(UNRELATED_PROMPTS, embed(list(UNRELATED_PROMPTS))):
        r = head.read(e, text)
        assert r.family is None and not np.any(r.offset) and r.relevance == 0.0, text


def test_the_head_trains_from_captions_and_reports_held_out_figures(tmp_path):
    from vprod.world.checkpoint import read_metadata
    from vprod.world.prompt import train_prompt

    res = train_prompt(str(tmp_path), samples=800, progress=False)
    held = read_metadata(tmp_path / "prompt.safetensors")["trained"]["held_out"]
    assert held == res["held_out"] and held["family_accuracy_where_named"] > 0.9
    assert held["knob_r2_where_said"]["daylight"] > 0.3
    head = load_prompt_head(tmp_path / "prompt.safetensors")
    assert head.bank.shape == (head.cfg.bank, 384) and head.cfg.families == tuple(FAMILIES)


def test_a_prompt_turns_the_world_to_its_family_and_glides_its_knobs_in_and_out():
    from vprod.world.model import WorldModel

    wm = WorldModel(steps=1)
    wm.transition_frames = 6
    wm.reset(3, NEUTRAL, "terrain")
    for _ in range(4):
        wm.step(NEUTRAL)
    bright = np.mean([wm.step(NEUTRAL).mean() for _ in range(4)])
    wm.set_prompt("a city at night")
    assert wm.family == "city" and wm.family_asked == "terrain"
    days = []
    for _ in range(8):
        wm.step(NEUTRAL)
        days.append(float(wm.last_cond["control"][0, DAYLIGHT]))
    assert days == sorted(days, reverse=True) and days[0] > 0.5 and days[-1] < 0.2  # glided down, not cut
    dark = np.mean([wm.step(NEUTRAL).mean() for _ in range(20)][-4:])
    assert dark < bright - 25, (bright, dark)  # night: the picture went dark with the knobs left where they were
    wm.set_family("ocean")  # the family knob moves while the prompt names a city: the city stays …
    assert wm.family == "city" and wm.family_asked == "ocean"
    wm.set_prompt(None)  # … until the prompt goes
    assert wm.family == "ocean"
    for _ in range(8):
        wm.step(NEUTRAL)
    assert float(wm.last_cond["control"][0, DAYLIGHT]) == pytest.approx(NEUTRAL[DAYLIGHT])
    wm.set_prompt("red mountains")  # a colour: the hue for this family's palette
    wm.reset(3, NEUTRAL, "ocean")  # a reset opens in the prompt's family with its look in full
    assert wm.family == "terrain"
    assert float(wm.last_cond["control"][0, HUE]) == pytest.approx(0.5 + hue_offset("red", "terrain"), abs=1e-5)
