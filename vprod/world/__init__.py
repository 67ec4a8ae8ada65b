"""Worlds: anything that makes an endless stream of frames from a seed and a control vector.

The contract every world honours (the renderer, the baselines, the world model):

    world.reset(seed, controls, family) -> frame      # the first frame
    world.step(controls) -> frame                     # the next frame, one tick later

Frames are (H, W, 3) uint8 RGB. `controls` is a float32 vector of CONTROL_NAMES, each normalized 0..1 —
the same knobs on every family, so a MIDI controller or an audio feature drives any world.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: The shared control vector, in order. Each value is 0..1; NEUTRAL is a calm middle setting.
CONTROL_NAMES = (
    "yaw",  # camera yaw rate: 0 turn left fast, 0.5 straight, 1 turn right fast
    "pitch",  # camera pitch: 0 look down, 0.5 level, 1 look up
    "speed",  # forward speed / animation rate: 0 still, 1 fast
    "zoom",  # field of view / scale: 0 wide, 1 narrow (zoomed in)
    "daylight",  # time of day / brightness: 0 night, 0.5 dusk, 1 noon
    "hue",  # palette / hue shift around the colour wheel
    "energy",  # motion intensity (what audio will drive): 0 calm, 1 wild
    "fog",  # weather / fog density: 0 clear, 1 thick
)
NUM_CONTROLS = len(CONTROL_NAMES)
NEUTRAL = np.array([0.5, 0.5, 0.4, 0.5, 0.7, 0.5, 0.3, 0.2], np.float32)


class World(Protocol):
    name: str

    def reset(self, seed: int, controls: np.ndarray, family: str | None = None) -> np.ndarray: ...

    def step(self, controls: np.ndarray) -> np.ndarray: ...
