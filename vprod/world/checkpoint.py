"""Weights as safetensors, with the config, the version and how they were trained in the metadata.

Never pickle from outside: shipped weights load with `safetensors` alone. Resumable training state (optimizer
moments, step, RNG) is our own file and loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

FORMAT = "vprod-weights-1"


def save_weights(path: str | Path, model: torch.nn.Module, kind: str, config_json: str, trained: dict) -> None:
    from .. import __version__

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "kind": kind, "config": config_json, "vprod_version": __version__,
            "trained": json.dumps(trained)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not vprod weights (format {meta.get('format')!r})")
    meta["trained"] = json.loads(meta.get("trained", "{}"))
    return meta


def load_weights(path: str | Path, build, kind: str):
    """`build(config_json) -> module`; returns (module with weights loaded, metadata)."""
    meta = read_metadata(path)
    if meta["kind"] != kind:
        raise ValueError(f"{path}: holds {meta['kind']} weights, not {kind}")
    model = build(meta["config"])
    model.load_state_dict(load_file(str(path)))
    return model, meta


def save_state(path: str | Path, **state) -> None:
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: str | Path) -> dict | None:
    p = Path(path)
    if not p.exists():
        return None
    return torch.load(p, weights_only=True, map_location="cpu")
