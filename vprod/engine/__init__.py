"""The vprod engine: parameters, elements, clock, control bus, compositor and the frame loop.

Plugins import what they need from here::

    from vprod.engine import Source, FloatParam, FrameContext
"""

from .bus import ControlBus, Event
from .clock import FrameClock, ManualTime, RealTime, Tick
from .compositor import BLEND_MODES, FIT_MODES, blend, crossfade, fit, fit_frame, luma_mask
from .element import (Effect, Element, ElementConfig, FrameContext, Sink, Source, existing_file, resolve_path,
                      solid_frame)
from .loop import Engine
from .mailbox import Mailbox, SinkRunner
from .params import (BoolParam, ChoiceParam, ColorParam, FloatParam, IntParam, Param, ParamError, Params,
                     ParamState, TextParam, TriggerParam)
from .pipeline import LAYER_PARAMS, Layer, Pipeline

__all__ = [
    "BLEND_MODES", "FIT_MODES", "BoolParam", "ChoiceParam", "ColorParam", "ControlBus", "Effect", "Element", "ElementConfig",
    "Engine", "Event", "FloatParam", "FrameClock", "FrameContext", "IntParam", "LAYER_PARAMS", "Layer", "Mailbox",
    "ManualTime", "Param", "ParamError", "ParamState", "Params", "Pipeline", "RealTime", "Sink", "SinkRunner",
    "Source", "TextParam", "Tick", "TriggerParam", "blend", "crossfade", "existing_file", "fit", "fit_frame",
    "luma_mask", "resolve_path", "solid_frame",
]
