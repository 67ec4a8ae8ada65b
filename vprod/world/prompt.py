"""The prompt head: words → the kind of world and the knobs they describe.

The dynamics sees a prompt as a text token, but in its training data the caption only ever said what the control
vector and the family already said, so it learned to follow those and not the words: measured, a prompt describing
a look (the renderer's caption of random daylight, hue and fog, knobs left neutral) moved the look read back from
the stream by nothing (daylight slope −0.03, the same as no prompt; docs/world-model, "Prompts").

So a prompt also goes through this head, a linear map from its sentence embedding (vprod.world.text) to
- the family its words name ("mountains", "a city", "an ocean", …), or none, and
- an offset for each knob its words describe ("night": daylight down, "foggy": fog up, "turning left": yaw, "red":
  hue, …), zero for the knobs they do not mention.
The world model then switches family as the family knob would (the memory dissolves into the new world) and adds the
offsets to the knobs, glided in over the transition: a prompt moves the knobs' centre, and the knobs still turn it
from there. Trained on the renderer's own captions, each built from its parts with random parts left out (so that
"night" alone is a prompt it has seen), in about a minute:

    vprod train prompt --out runs/prompt1       # → prompt.safetensors, with held-out figures in its metadata
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import CONTROL_NAMES, NEUTRAL, NUM_CONTROLS

HUE = CONTROL_NAMES.index("hue")
#: the knobs the head reads an offset for; the hue comes from a colour word (colour_of), which a linear map of the
#: sentence embedding read badly (31° median error on held-out captions, and near-constant on free prompts)
LINEAR = tuple(i for i in range(NUM_CONTROLS) if i != HUE)
#: words for colours beyond the renderer's own eight names (render._HUE_NAMES), as the renderer would name them
COLOUR_WORDS = {"purple": "violet", "pink": "magenta", "cyan": "teal", "turquoise": "teal", "gold": "yellow",
                "golden": "yellow", "crimson": "red", "scarlet": "red", "amber": "orange", "indigo": "blue"}


@dataclass
class PromptConfig:
    text_dim: int = 384
    families: tuple[str, ...] = ()
    family_threshold: float = 0.5  # a family score at least this names the family
    bank: int = 2048  # caption embeddings kept to tell a prompt about the world from one about something else …
    relevance: tuple[float, float] = (0.35, 0.55)  # … by its mean similarity to its 8 nearest: none below, all above

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PromptConfig:
        d = json.loads(text)
        d["families"] = tuple(d.get("families", ()))
        d["relevance"] = tuple(d.get("relevance", cls.relevance))
        return cls(**d)


@dataclass
class PromptReading:
    """What a prompt says: the family it names (or None) and the offset (NUM_CONTROLS,) for the knobs."""
    family: str | None
    offset: np.ndarray  # the hue's is 0: it depends on the family (hue_offset)
    family_score: float = 0.0
    relevance: float = 1.0  # 0: the words are about something else (nothing is steered), 1: about a world
    colour: str | None = None  # the first colour the words name (one of the renderer's names), or None


#: words of each family's noun in a caption (render.caption_parts)
FAMILY_NOUNS = {"terrain": ("mountains",), "city": ("city",), "tunnel": ("tunnel",), "plasma": ("plasma",),
                "starfield": ("starfield", "nebula"), "ocean": ("ocean",)}


def colour_of(text: str) -> str | None:
    """The first colour named in `text`, as one of the renderer's colour names (or None)."""
    import re

    from .render import _HUE_NAMES

    names = {n for _, n in _HUE_NAMES}
    for word in re.findall(r"[a-z]+", text.lower()):
        word = COLOUR_WORDS.get(word, word)
        if word in names:
            return word
    return None


def hue_offset(colour: str | None, family: str | None) -> float:
    """The hue knob's offset from NEUTRAL that makes `family`'s first palette colour `colour` (the middle of the
    renderer's range for that name): the caption's colour naming, inverted. 0 without a colour or family."""
    from .render import _HUE_NAMES, FAMILY_HUES

    if colour is None or family not in FAMILY_HUES:
        return 0.0
    lo = 0.0
    for top, name in _HUE_NAMES:
        if name == colour:
            centre = (lo + top) / 2.0
            break
        lo = top
    else:
        return 0.0
    d = (centre - FAMILY_HUES[family][0] + 180.0) % 360.0 - 180.0  # the shortest way round, degrees
    return d / 360.0


class PromptHead(nn.Module):
    """Sentence embedding → (offsets of the linear knobs, the hue offset as a vector, family scores)."""

    def __init__(self, cfg: PromptConfig):
        super().__init__()
        self.cfg = cfg
        # per knob: its offset and whether the words speak of it at all (which gates the offset); family scores
        self.linear = nn.Linear(cfg.text_dim, 2 * len(LINEAR) + len(cfg.families))
        self.register_buffer("bank", torch.zeros(cfg.bank, cfg.text_dim, dtype=torch.float16))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear(emb)

    @torch.no_grad()
    def relevance(self, emb: torch.Tensor) -> torch.Tensor:
        """(B,) 0..1: how like the captions the prompts are (mean cosine to the 8 nearest of the bank, smoothstep
        between cfg.relevance) — a linear map reads knobs into any words, and 'a cat' must not turn the camera."""
        sim = emb.float() @ self.bank.float().T
        top = sim.topk(min(8, sim.shape[-1]), dim=-1).values.mean(-1)
        lo, hi = self.cfg.relevance
        x = ((top - lo) / (hi - lo)).clamp(0, 1)
        return x * x * (3 - 2 * x)

    @torch.no_grad()
    def read(self, emb: np.ndarray, text: str = "") -> PromptReading:
        e = torch.as_tensor(np.array(emb, np.float32)).view(1, -1)
        out = self(e)[0].numpy().astype(np.float64)
        rel = float(self.relevance(e)[0])
        offset = np.zeros(NUM_CONTROLS, np.float32)
        nl = len(LINEAR)
        said = np.clip((out[nl:2 * nl] - 0.2) / 0.5, 0.0, 1.0)  # a linear map also reads offsets into words that
        said = said * said * (3 - 2 * said)  # do not name the knob ("red mountains": yaw 0.3); these gate them
        offset[list(LINEAR)] = np.clip(out[:nl], -1.0, 1.0) * said * rel
        scores = out[2 * nl:] * rel
        family = None
        best = int(np.argmax(scores)) if len(scores) else -1
        if best >= 0 and scores[best] >= self.cfg.family_threshold:
            family = self.cfg.families[best]
        return PromptReading(family, offset, float(scores[best]) if best >= 0 else 0.0, rel,
                             colour_of(text) if rel > 0 else None)


def steer(controls: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """The knobs moved by a prompt's offset: clipped to 0..1, the hue going round."""
    c = np.asarray(controls, np.float32)
    if offset is None or not np.any(offset):
        return c
    out = c + offset
    out[HUE] = np.mod(out[HUE], 1.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Training data: the renderer's captions, with parts left out


def prompt_samples(n: int, seed: int = 0, keep: float = 0.6, full: float = 0.3):
    """`n` texts, their targets and the (family, controls) each was drawn from. Each draws a family and uniform controls; a `full` share keep the whole caption,
    the rest keep each of its parts with probability `keep` (at least one). The target: for each knob whose words
    were kept its offset from NEUTRAL,
    else 0, and whether they were kept (1/0); the family one-hot when the noun was kept, else zeros (the hue is
    read from colour words instead)."""
    from .render import FAMILIES, caption_parts, join_caption

    rng = np.random.default_rng(seed)
    nl = len(LINEAR)
    texts, targets, drawn = [], np.zeros((n, 2 * nl + len(FAMILIES)), np.float32), []
    for i in range(n):
        f = int(rng.integers(len(FAMILIES)))
        c = rng.uniform(0, 1, NUM_CONTROLS).astype(np.float32)
        parts = caption_parts(FAMILIES[f], c)
        if rng.random() >= full:
            kept = [p for p in parts if rng.random() < keep]
            parts = kept or [parts[int(rng.integers(len(parts)))]]
        texts.append(join_caption(parts))
        drawn.append((FAMILIES[f], c))
        said = {what for what, _ in parts}
        for j, k in enumerate(LINEAR):
            if CONTROL_NAMES[k] in said:
                targets[i, j] = c[k] - NEUTRAL[k]
                targets[i, nl + j] = 1.0
        if "family" in said:
            targets[i, 2 * nl + f] = 1.0
    return texts, targets, drawn


def unrelated_sentences(limit_files: int = 400) -> list[str]:
    """Short sentences that say nothing about a world — the docstrings of the Python standard library's modules,
    read from their source (nothing is imported, nothing stored) and split up: the head learns to read no knobs and
    no family from such words."""
    import ast
    import re
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    out: set[str] = set()
    for path in sorted(root.glob("*.py"))[:limit_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, OSError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node) or ""
            for sent in re.split(r"[.\n]\s*\n|\.\s", doc):
                words = sent.split()
                if 2 <= len(words) <= 12 and all(re.fullmatch(r"[A-Za-z,'-]+", w) for w in words):
                    out.add(" ".join(words).lower())
    return sorted(out)


#: Prompts nobody generated, with what their words say: (text, family or None, {knob: sign of its offset}).
FREE_PROMPTS = (
    ("a city at night", "city", {"daylight": -1}),
    ("sunny mountains", "terrain", {"daylight": +1}),
    ("a foggy ocean", "ocean", {"fog": +1}),
    ("a wild plasma", "plasma", {"energy": +1}),
    ("a calm sea", "ocean", {"energy": -1}),
    ("flying fast through a tunnel", "tunnel", {"speed": +1}),
    ("stars and a nebula", "starfield", {}),
    ("night", None, {"daylight": -1}),
    ("turning left", None, {"yaw": -1}),
    ("looking down", None, {"pitch": -1}),
    ("red mountains", "terrain", {"hue": -1}),
    ("a purple ocean at dusk", "ocean", {"hue": +1, "daylight": -1}),
)

#: Prompts about something else: nothing should be steered.
UNRELATED_PROMPTS = ("hello world", "a cat", "jazz music", "my favourite song", "a portrait of a woman", "coffee",
                     "open the file")


def free_prompt_agreement(head: PromptHead, embed_fn) -> dict:
    """How many of FREE_PROMPTS the head reads as their words say (family named, each knob's offset's sign)."""
    emb = embed_fn([t for t, _, _ in FREE_PROMPTS])
    rows, ok_f, ok_k, n_k = [], 0, 0, 0
    for (text, fam, signs), e in zip(FREE_PROMPTS, emb):
        r = head.read(e, text)
        ok_f += r.family == fam
        off = r.offset.copy()
        off[HUE] = hue_offset(r.colour, r.family)
        for name, sgn in signs.items():
            n_k += 1
            ok_k += float(off[CONTROL_NAMES.index(name)]) * sgn > 0.05
        rows.append({"prompt": text, "family": r.family, "colour": r.colour,
                     "offset": {n: round(float(v), 2) for n, v in zip(CONTROL_NAMES, off) if abs(v) >= 0.05}})
    return {"family": f"{ok_f}/{len(FREE_PROMPTS)}", "knobs": f"{ok_k}/{n_k}", "readings": rows}


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, ym - xm @ w


def train_prompt(out: str, samples: int = 20000, seed: int = 0, alpha: float = 1.0, holdout: float = 0.1,
                 negatives: int = 4000, progress: bool = True, command: str = "") -> dict:
    """Fit the prompt head on `samples` captions (a share held out for the figures) and about `negatives` unrelated
    sentences (repeated; zero targets), keep a bank of caption embeddings for the relevance gate, and save
    prompt.safetensors."""
    from tqdm import tqdm

    from .checkpoint import save_weights
    from .render import FAMILIES
    from .text import embed

    t0 = time.monotonic()
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    texts, y, drawn = prompt_samples(samples, seed)
    neg = unrelated_sentences()
    uniq = sorted(set(texts) | set(neg))
    index = {t: i for i, t in enumerate(uniq)}
    chunk = 512
    emb = np.concatenate([embed(uniq[i:i + chunk]) for i in tqdm(range(0, len(uniq), chunk), desc="embed captions",
                                                                  unit="×512", disable=not progress,
                                                                  file=sys.stderr)])
    x = emb[[index[t] for t in texts]].astype(np.float64)
    n_held = max(1, round(samples * holdout))
    tr, he = slice(0, samples - n_held), slice(samples - n_held, samples)
    xn = emb[[index[t] for t in neg]].astype(np.float64)
    reps = max(1, negatives // max(1, len(neg)))
    w, b = _ridge(np.concatenate([x[tr]] + [xn] * reps),
                  np.concatenate([y[tr]] + [np.zeros((len(neg) * reps, y.shape[1]), np.float32)]).astype(np.float64),
                  alpha)
    rng = np.random.default_rng(seed + 1)
    cap = sorted(set(texts[:samples - n_held]))
    pick = rng.choice(len(cap), min(PromptConfig.bank, len(cap)), replace=False)
    head = PromptHead(PromptConfig(x.shape[1], tuple(FAMILIES), bank=len(pick)))
    with torch.no_grad():
        head.linear.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        head.linear.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        head.bank.copy_(torch.from_numpy(emb[[index[cap[i]] for i in pick]]).half())
    # held-out figures, read as at run time (gates included)
    nl = len(LINEAR)
    truth = y[he]
    reads = [head.read(x[i].astype(np.float32), texts[i]) for i in range(samples - n_held, samples)]
    off = np.stack([r.offset for r in reads])
    r2, spurious = {}, {}
    for j, k in enumerate(LINEAR):
        said = truth[:, nl + j] > 0
        ss = ((truth[said, j] - truth[said, j].mean()) ** 2).sum()
        r2[CONTROL_NAMES[k]] = round(float(1 - ((off[said, k] - truth[said, j]) ** 2).sum() / ss), 3)
        spurious[CONTROL_NAMES[k]] = round(float(np.abs(off[~said, k]).mean()), 3)
    # the hue from the colour words, where the family and a colour were said
    ang_err = []
    for t, (f, c) in zip(texts[he], drawn[he]):
        col = colour_of(t)
        if col is not None and any(w in t for w in FAMILY_NOUNS[f]):
            ang_err.append((hue_offset(col, f) - (c[HUE] - NEUTRAL[HUE]) + 0.5) % 1.0 - 0.5)
    fam_said = truth[:, 2 * nl:].max(1) > 0
    fam_true = truth[:, 2 * nl:].argmax(1)
    named = np.array([r.family is not None for r in reads])
    acc = float(np.mean([reads[i].family == FAMILIES[fam_true[i]] for i in np.flatnonzero(fam_said)]))
    free = free_prompt_agreement(head, embed)
    unrelated = [head.read(e, t) for e, t in zip(embed(list(UNRELATED_PROMPTS)), UNRELATED_PROMPTS)]
    held = {"knob_r2_where_said": r2, "knob_offset_where_not_said": spurious,
            "hue_error_deg_median": round(float(np.median(np.abs(ang_err)) * 360), 1),
            "family_accuracy_where_named": round(acc, 4),
            "family_named_when_not_said": round(float(named[~fam_said].mean()), 4),
            "family_missed_when_said": round(float((~named[fam_said]).mean()), 4),
            "free_prompts": free,
            "unrelated_prompts": {"largest_offset": round(float(max(np.abs(r.offset).max() for r in unrelated)), 3),
                                  "families_named": sum(r.family is not None for r in unrelated)}}
    trained = {"data": f"{samples} renderer captions (parts left out at random), seed {seed}; last {n_held} held "
                       f"out; {len(neg)} unrelated sentences from the Python standard library's docstrings ×{reps}; "
                       f"a bank of {len(pick)} caption embeddings",
               "fit": f"ridge, alpha {alpha}", "seconds": round(time.monotonic() - t0, 1),
               "command": command or f"vprod train prompt --out {out}", "held_out": held}
    save_weights(outp / "prompt.safetensors", head, "prompt", head.cfg.to_json(), trained)
    (outp / "held_out.json").write_text(json.dumps(held, indent=1) + "\n")
    return {"out": str(outp / "prompt.safetensors"), **trained}


def load_prompt_head(path: str | Path) -> PromptHead:
    from .checkpoint import load_weights

    model, _ = load_weights(path, lambda cfg: PromptHead(PromptConfig.from_json(cfg)), "prompt")
    return model.eval()
