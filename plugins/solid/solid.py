from vprod.engine import FloatParam, FrameContext, Source, solid_frame


class SolidSource(Source):
    """A single colour filling the frame."""

    params = {
        "r": FloatParam(0.0, 0.0, 1.0, doc="Red"),
        "g": FloatParam(0.0, 0.0, 1.0, doc="Green"),
        "b": FloatParam(0.0, 0.0, 1.0, doc="Blue"),
    }

    def open(self) -> None:
        self._key = None
        self._frame = None

    def process(self, ctx: FrameContext):
        key = (self.p.r, self.p.g, self.p.b, ctx.width, ctx.height)
        if key != self._key:  # the same read-only frame until the colour changes: no work per frame
            self._frame = solid_frame(ctx.width, ctx.height, key[:3])
            self._key = key
        return self._frame
