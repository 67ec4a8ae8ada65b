"""The `style` plugin on real photographs (scikit-image's astronaut, cat and coffee) through the real plugin registry:
every look keeps the picture's structure and changes its look; .cube LUTs parse, fail clearly and apply exactly;
colour transfer matches the reference; the world-model style reconstructs at strength 0 and moves towards the
family's look while keeping the edges; presets/stream-style.toml streams restyled frames through a real daemon.

How the two measures and their thresholds were chosen (numbers measured on the three photographs at 1280×720):

- Edge agreement: correlation of Sobel gradient magnitudes (after a σ=1 px blur) at 640×360. Every look scores
  ≥ 0.65 (pencil 0.65–0.74, edge glow 0.66–0.89, cartoon 0.75–0.89, LUTs ≥ 0.99). Pictures whose structure is
  gone score below: pixels shuffled ≈ 0.00, the picture mirrored ≤ 0.19, shifted by 20 px ≤ 0.33, blurred with
  σ = 16 px ≤ 0.55. EDGE_KEPT = 0.6 lies between. (A σ = 8 px blur keeps a recognisable person and scores
  0.65–0.75: it is not a control for a destroyed structure.)
- Look change: distance of the Lab mean and spread (8-bit Lab) plus the total-variation distance of the gradient-
  magnitude histograms (×100). A JPEG at quality 85 scores ≤ 0.5 and added noise of σ = 3 levels ≤ 2.5; the looks
  score ≥ 9 (the teal-orange LUT, the subtlest). LOOK_CHANGED = 5.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vprod.engine import LAYER_PARAMS, ElementConfig, FrameContext, Layer, Params, Pipeline, Source
from vprod.plugins import PluginRegistry

REPO = Path(__file__).resolve().parent.parent
LUTS = REPO / "presets" / "luts"
W, H = 1280, 720
EDGE_KEPT = 0.6
LOOK_CHANGED = 5.0


# --- pictures and measures ---------------------------------------------------------------------------------------

def photo(name: str, w: int = W, h: int = H) -> np.ndarray:
    """A scikit-image photograph as a w×h frame: the 16:9 band from the top (faces and heads are there)."""
    from skimage import data

    img = getattr(data, name)()
    ih, iw = img.shape[:2]
    band = img[: min(ih, int(iw * h / w))]
    return np.ascontiguousarray(cv2.resize(band, (w, h), interpolation=cv2.INTER_AREA if iw > w else
                                           cv2.INTER_CUBIC))


PHOTOS = ("astronaut", "chelsea", "coffee")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {n: photo(n) for n in PHOTOS}


def _gradient_magnitude(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    g = cv2.cvtColor(cv2.resize(img, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = cv2.GaussianBlur(g, (0, 0), 1.0)
    return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def edge_agreement(a: np.ndarray, b: np.ndarray, size: tuple[int, int] = (640, 360)) -> float:
    """Correlation of the two pictures' gradient magnitudes: 1 the same edges, ~0 unrelated ones."""
    x, y = _gradient_magnitude(a, size).ravel(), _gradient_magnitude(b, size).ravel()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum() + 1e-12))


def lab(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)


def look_change(a: np.ndarray, b: np.ndarray, size: tuple[int, int] = (640, 360)) -> float:
    """How different two pictures look: colour statistics (Lab mean and spread) + texture (gradient histogram)."""
    a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
    b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    la, lb = lab(a), lab(b)
    colour = np.linalg.norm(la.mean(0) - lb.mean(0)) + np.linalg.norm(la.std(0) - lb.std(0))

    def hist(x):
        m = _gradient_magnitude(x, size)
        h, _ = np.histogram(np.minimum(m, 511), bins=32, range=(0, 512))
        return h / h.sum()

    texture = 50.0 * np.abs(hist(a) - hist(b)).sum()
    return float(colour + texture)


def shuffled(img: np.ndarray) -> np.ndarray:
    flat = img.reshape(-1, 3)
    return flat[np.random.default_rng(0).permutation(len(flat))].reshape(img.shape)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


# --- elements ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry()


def make(registry, element_id, preset_dir: str = ".", **values):
    el = registry.load(element_id)(ElementConfig(layer="cam", width=W, height=H, preset_dir=preset_dir), values)
    el.open()
    return el


def ctx() -> FrameContext:
    return FrameContext(width=W, height=H)


class _StillSource(Source):
    """An in-memory camera showing one picture (unit tests of the pipeline's handling only)."""

    element_id, plugin_name = "still", "test"

    def __init__(self, frame):
        super().__init__(ElementConfig(layer="cam", width=W, height=H))
        self.frame = frame

    def process(self, ctx):
        return self.frame


def run_in_pipeline(effect, frame: np.ndarray, frames: int = 3) -> tuple[np.ndarray, list[dict]]:
    """The effect on a camera layer in a real Pipeline (its fault isolation included): last output, faults."""
    layer = Layer("cam", _StillSource(frame), [(effect.element_id, effect)], Params.build(LAYER_PARAMS))
    p = Pipeline("t", [layer], W, H, 30.0)
    out = None
    for i in range(frames):
        out = p.render(FrameContext(index=i, width=W, height=H))
    return out, p.faults()


# --- the measures themselves -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PHOTOS)
def test_edge_agreement_rejects_pictures_whose_structure_is_gone(photos, name):
    img = photos[name]
    assert edge_agreement(img, img) > 0.999
    for what, other in (("shuffled", shuffled(img)), ("mirrored", np.ascontiguousarray(img[:, ::-1])),
                        ("shifted 20 px", np.roll(img, 20, axis=1)),
                        ("blurred 16 px", cv2.GaussianBlur(img, (0, 0), 16))):
        assert edge_agreement(img, other) < EDGE_KEPT, what


@pytest.mark.parametrize("name", PHOTOS)
def test_look_change_ignores_what_does_not_change_the_look(photos, name):
    img = photos[name]
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    assert look_change(img, cv2.imdecode(jpg, cv2.IMREAD_COLOR)) < LOOK_CHANGED / 2
    assert look_change(img, noisy) < LOOK_CHANGED / 2


# --- every classic look keeps structure and changes the look ----------------------------------------------------

LOOKS = [
    ("cartoon", {}),
    ("cartoon", {"levels": 3, "smoothing": 1.0, "edges": 1.0}),
    ("pencil", {}),
    ("pencil", {"color": 0.7, "radius": 20.0}),
    ("edge_glow", {}),
    ("edge_glow", {"own_colors": True, "glow": 20.0}),
    ("lut", {"file": str(LUTS / "teal-orange.cube")}),
    ("lut", {"file": str(LUTS / "mono.cube")}),
    ("color_transfer", {"reference": str(REPO / "docs" / "samples" / "plasma.png")}),
]


@pytest.mark.parametrize("eid,values", LOOKS, ids=[f"{e}-{i}" for i, (e, _) in enumerate(LOOKS)])
def test_look_keeps_the_structure_and_changes_the_look(registry, photos, eid, values):
    el = make(registry, eid, **values)
    for name, img in photos.items():
        out = el.process(img, ctx())
        assert out.shape == img.shape and out.dtype == np.uint8
        assert edge_agreement(img, out) > EDGE_KEPT, f"{name}: edges lost"
        assert look_change(img, out) > LOOK_CHANGED, f"{name}: looks the same"
        assert out is not img


def test_looks_leave_their_input_untouched(registry, photos):
    img = photos["astronaut"]
    ref = img.copy()
    img.flags.writeable = False  # frames are shared and read-only in the engine
    try:
        for eid, values in LOOKS:
            make(registry, eid, **values).process(img, ctx())
    finally:
        img.flags.writeable = True
    assert np.array_equal(img, ref)


def test_cartoon_has_few_colours_and_dark_outlines(registry, photos):
    img = photos["astronaut"]
    out = make(registry, "cartoon", levels=4, edges=1.0).process(img, ctx())
    colours = len(np.unique(out.reshape(-1, 3)[::7], axis=0))
    assert colours < len(np.unique(img.reshape(-1, 3)[::7], axis=0)) / 5
    lines = make(registry, "cartoon", levels=4, edges=1.0).process(img, ctx())
    no_lines = make(registry, "cartoon", levels=4, edges=0.0).process(img, ctx())
    assert (lines.max(axis=2) < 10).mean() > (no_lines.max(axis=2) < 10).mean() + 0.01


def test_pencil_is_grey_on_white_paper_unless_coloured(registry, photos):
    img = photos["coffee"]
    grey = make(registry, "pencil").process(img, ctx())
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert np.median(grey) > 200  # mostly paper
    coloured = make(registry, "pencil", color=1.0).process(img, ctx())
    assert lab(coloured)[:, 1:].std() > 3 * lab(grey)[:, 1:].std() + 1


def test_edge_glow_lights_the_edges_in_the_colour_asked_for(registry, photos):
    img = photos["astronaut"]
    out = make(registry, "edge_glow", color=(1.0, 0.0, 0.0), darken=0.8, intensity=2.0).process(img, ctx())
    edges = _gradient_magnitude(img, (W, H))
    strong, flat = edges > np.percentile(edges, 97), edges < np.percentile(edges, 40)
    gain = out.astype(np.float32) - (img.astype(np.float32) * 0.2)
    assert gain[strong][:, 0].mean() > 60  # red light on the edges
    assert gain[strong][:, 0].mean() > 4 * max(gain[strong][:, 1].mean(), gain[strong][:, 2].mean(), 1)
    assert np.abs(gain[flat]).mean() < 15  # away from edges: the darkened picture


# --- LUTs -----------------------------------------------------------------------------------------------------------

def _lut_module(registry):
    registry.load("lut")  # imports the plugin package
    import importlib

    return importlib.import_module("vprod_plugins.style.lut")


def all_levels() -> np.ndarray:
    """A 256×256 frame holding every level of every channel many times, in many combinations."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    img[:, :, 0] = np.arange(256, dtype=np.uint8)[None, :]
    return img


def identity_cube(size: int) -> str:
    g = np.linspace(0, 1, size)
    lines = [f"LUT_3D_SIZE {size}"]
    lines += [f"{r:.6f} {gg:.6f} {b:.6f}" for b in g for gg in g for r in g]  # red fastest
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("size", [2, 17, 33])
def test_identity_3d_lut_gives_back_every_pixel_within_one_level(registry, size):
    m = _lut_module(registry)
    lut = m.parse_cube(identity_cube(size), "identity.cube")
    assert (lut.kind, lut.size, lut.table.shape) == ("3d", size, (size, size, size, 3))
    for img in (all_levels(), photo("astronaut", 320, 180)):
        out = m.apply_lut(lut, img)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - img.astype(int)).max() <= 1


def test_identity_1d_lut_and_a_1d_curve(registry):
    m = _lut_module(registry)
    img = all_levels()
    ident = m.parse_cube("TITLE \"id\"\nLUT_1D_SIZE 5\n" + "".join(f"{v} {v} {v}\n" for v in np.linspace(0, 1, 5)),
                         "id1d.cube")
    assert (ident.kind, ident.title) == ("1d", "id")
    assert np.abs(m.apply_lut(ident, img).astype(int) - img.astype(int)).max() <= 1
    # invert red, halve green, keep blue — on a 2-point curve
    curve = m.parse_cube("LUT_1D_SIZE 2\n1 0 0\n0 0.5 1\n", "curve.cube")
    out = m.apply_lut(curve, img).astype(int)
    assert np.abs(out[..., 0] - (255 - img[..., 0].astype(int))).max() <= 1
    assert np.abs(out[..., 1] - img[..., 1].astype(int) / 2).max() <= 1
    assert np.abs(out[..., 2] - img[..., 2].astype(int)).max() <= 1


def test_3d_lut_interpolates_trilinearly_and_honours_the_domain(registry):
    m = _lut_module(registry)
    # out = (g, b, r): a channel swap is linear, so trilinear interpolation on a 2-point grid is exact
    g = [0.0, 1.0]
    swap = "LUT_3D_SIZE 2\n" + "".join(f"{gg} {b} {r}\n" for b in g for gg in g for r in g)
    img = all_levels()
    out = m.apply_lut(m.parse_cube(swap, "swap.cube"), img)
    assert np.abs(out.astype(int) - img[..., [1, 2, 0]].astype(int)).max() <= 1
    # DOMAIN_MAX 2: input 1.0 lies half-way along the grid
    half = m.parse_cube("DOMAIN_MIN 0 0 0\nDOMAIN_MAX 2 2 2\n" + identity_cube(3), "d.cube")
    out = m.apply_lut(half, img)
    assert np.abs(out.astype(int) - img.astype(int) / 2).max() <= 1


@pytest.mark.parametrize("text,line,words", [
    ("LUT_3D_SIZE 2\n0 0 0\n1 0\n", 3, ["needs 3 numbers, got 2"]),
    ("LUT_3D_SIZE 2\n0 0 0\n1 0 zero\n", 3, ["not 3 numbers"]),
    ("# comment\nLUT_3D_SIZE 2\nLUT_SIZE_4D 3\n", 3, ["unknown keyword", "LUT_SIZE_4D"]),
    ("0 0 0\n", 1, ["before LUT_1D_SIZE or LUT_3D_SIZE"]),
    ("LUT_3D_SIZE 1\n", 1, ["2..256"]),
    ("LUT_3D_SIZE 2.5\n", 1, ["whole number"]),
    ("LUT_1D_SIZE 2\nLUT_3D_SIZE 2\n", 2, ["one table per file"]),
    ("LUT_1D_SIZE 2\n0 0 0\nDOMAIN_MIN 0 0 0\n1 1 1\n", 3, ["after the table data started"]),
    ("LUT_1D_SIZE 2\nDOMAIN_MAX 1 1\n", 2, ["DOMAIN_MAX needs 3 numbers"]),
])
def test_malformed_cube_names_the_file_and_the_line(registry, text, line, words):
    m = _lut_module(registry)
    with pytest.raises(m.LutError) as e:
        m.parse_cube(text, "looks/bad.cube")
    assert f"looks/bad.cube:{line}:" in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_cube_with_too_few_table_lines_says_how_many(registry):
    m = _lut_module(registry)
    with pytest.raises(m.LutError, match=r"bad.cube: 3D LUT of size 2 needs 8 table lines, found 3 \(the table "
                                         r"starts at line 2\)"):
        m.parse_cube("LUT_3D_SIZE 2\n0 0 0\n0 0 0\n1 1 1\n", "bad.cube")


def test_shipped_luts_parse_and_do_what_their_names_say(registry, photos):
    m = _lut_module(registry)
    img = photos["astronaut"]
    mono = m.apply_lut(m.load_cube(LUTS / "mono.cube"), img)
    assert np.abs(lab(mono)[:, 1:] - 128).max() <= 2  # no colour left
    to = m.apply_lut(m.load_cube(LUTS / "teal-orange.cube"), img)
    shadows = lab(img)[:, 0] < 60
    highlights = lab(img)[:, 0] > 170
    # shadows towards teal (lower a*: green-cyan, lower b*: blue), highlights towards orange (higher b*)
    assert lab(to)[shadows, 2].mean() < lab(img)[shadows, 2].mean() - 2
    assert lab(to)[highlights, 2].mean() > lab(img)[highlights, 2].mean() + 2


def test_lut_effect_missing_or_malformed_file_one_clear_error_and_the_picture_passes(registry, photos, tmp_path):
    img = photos["astronaut"]
    el = make(registry, "lut", preset_dir=str(tmp_path), file="luts/nothere.cube")
    out, faults = run_in_pipeline(el, img)
    assert np.array_equal(out, img)
    assert len(faults) == 1 and "LUT file not found: luts/nothere.cube" in faults[0]["error"]
    bad = tmp_path / "bad.cube"
    bad.write_text("LUT_3D_SIZE 2\n0 0 0\n0 0\n", encoding="utf-8")
    el = make(registry, "lut", preset_dir=str(tmp_path), file="bad.cube")
    out, faults = run_in_pipeline(el, img)
    assert np.array_equal(out, img)
    assert len(faults) == 1 and f"{bad}:3:" in faults[0]["error"]


def test_lut_effect_switches_file_live_without_stopping(registry, photos, tmp_path):
    shutil.copy(LUTS / "mono.cube", tmp_path / "mono.cube")
    img = photos["astronaut"]
    el = make(registry, "lut", preset_dir=str(tmp_path), file=str(LUTS / "teal-orange.cube"))
    first = el.process(img, ctx())
    el.p.states["file"].set("mono.cube")
    seen_mono = False
    for _ in range(400):  # the new table is built on a thread; the old one applies meanwhile
        out = el.process(img, ctx())
        assert np.array_equal(out, first) or np.abs(lab(out)[:, 1:] - 128).max() <= 2
        if np.abs(lab(out)[:, 1:] - 128).max() <= 2:
            seen_mono = True
            break
        el._loading.join(0.01)
    assert seen_mono
    half = make(registry, "lut", file=str(LUTS / "mono.cube"), amount=0.5).process(img, ctx())
    assert 0 < np.abs(lab(half)[:, 1:] - 128).mean() < np.abs(lab(img)[:, 1:] - 128).mean()


# --- colour transfer -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A reference picture with colours unlike the photographs: the coffee cup, hue-rotated, saved as PNG."""
    img = photo("coffee", 640, 360)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 90) % 180
    path = tmp_path_factory.mktemp("ref") / "reference.png"
    cv2.imwrite(str(path), cv2.cvtColor(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_color_transfer_moves_mean_and_spread_to_the_reference(registry, photos, reference, name):
    img = photos[name]
    ref = cv2.cvtColor(cv2.imread(str(reference)), cv2.COLOR_BGR2RGB)
    el = make(registry, "color_transfer", preset_dir=str(reference.parent), reference=reference.name)
    out = el.process(img, ctx())
    lo, lr, li = lab(out), lab(ref), lab(img)
    # before: far from the reference; after: its mean within 3 levels and its spread within 30 % on every channel
    # (not exact: colours the transfer sends outside the RGB gamut are clipped — measured 0.05–0.26 off)
    assert np.abs(li.mean(0) - lr.mean(0)).max() > 10
    assert np.abs(lo.mean(0) - lr.mean(0)).max() < 3.0
    assert np.all(np.abs(lo.std(0) / lr.std(0) - 1) < 0.3)
    assert np.abs(lo.std(0) - lr.std(0)).sum() < 0.6 * np.abs(li.std(0) - lr.std(0)).sum()
    none = make(registry, "color_transfer", reference=str(reference), amount=0.0).process(img, ctx())
    assert np.abs(lab(none).mean(0) - li.mean(0)).max() < 1.0


def test_color_transfer_missing_reference_one_clear_error_and_the_picture_passes(registry, photos, tmp_path):
    img = photos["astronaut"]
    el = make(registry, "color_transfer", preset_dir=str(tmp_path), reference="refs/sunset.jpg")
    out, faults = run_in_pipeline(el, img, frames=5)
    assert np.array_equal(out, img)
    assert len(faults) == 1 and "reference picture not found: refs/sunset.jpg" in faults[0]["error"]
    assert str(tmp_path / "refs" / "sunset.jpg") in faults[0]["error"]


# --- the world-model style -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    import torch

    from vprod.world.model import WorldModel

    torch.set_num_threads(1)
    return WorldModel()  # the shipped tokenizer and dynamics


@pytest.fixture(scope="module")
def styler_cls(registry):
    registry.load("worldstyle")
    import importlib

    return importlib.import_module("vprod_plugins.style.worldstyle").WorldStyler


def family_palette(family: str) -> tuple[np.ndarray, np.ndarray]:
    """Lab mean and spread of the family's own frames (the renderer, neutral knobs, four seeds)."""
    from vprod.world import NEUTRAL
    from vprod.world.render import RendererWorld

    frames = []
    for seed in range(4):
        rw = RendererWorld(256, 144)
        frames.append(rw.reset(seed, NEUTRAL, family))
        frames += [rw.step(NEUTRAL) for _ in range(12)][5::6]
    px = np.concatenate([lab(f) for f in frames])
    return px.mean(0), px.std(0)


def palette_distance(img: np.ndarray, palette) -> float:
    px = lab(img)
    return float(np.linalg.norm(px.mean(0) - palette[0]) + np.linalg.norm(px.std(0) - palette[1]))


def stylise(styler_cls, world, img, family, strength, frames=3, steps=2):
    st = styler_cls(world)
    st.set_family(family)
    st.strength, st.steps = strength, steps
    out = None
    for _ in range(frames):
        out = st.style(img)
    return out


def test_world_style_at_strength_0_is_the_tokenizer_reconstruction(styler_cls, world):
    img = photo("astronaut", 256, 144)
    out = stylise(styler_cls, world, img, "plasma", 0.0)
    recon = world.decode(world.encode(img))
    tokenizer_psnr = psnr(recon, img)
    assert tokenizer_psnr > 22.0  # the shipped tokenizer on a photograph it never saw (measured 23.9 dB)
    assert abs(psnr(out, img) - tokenizer_psnr) < 0.3
    assert psnr(out, recon) > 35.0


FAMILIES_TESTED = ("terrain", "city", "tunnel", "plasma", "starfield", "ocean")


def test_world_style_moves_towards_each_familys_look_and_keeps_the_edges(styler_cls, world):
    img = photo("astronaut", 256, 144)
    ratios: dict[float, list[float]] = {0.3: [], 0.6: [], 0.9: []}
    for family in FAMILIES_TESTED:
        pal = family_palette(family)
        weak = stylise(styler_cls, world, img, family, 0.3)
        out = stylise(styler_cls, world, img, family, 0.6)
        strong = stylise(styler_cls, world, img, family, 0.9)
        # the person's edges survive (measured at the model's size), less so the stronger the style
        assert edge_agreement(img, out, (256, 144)) > EDGE_KEPT, family
        assert edge_agreement(img, strong, (256, 144)) < edge_agreement(img, weak, (256, 144)), family
        base = palette_distance(img, pal)
        if base < 40:
            # terrain: the photograph's colour statistics are already nearly the family's (distance 30, against
            # 41–152 for the others), so mean and spread cannot show a move; its look is where the colours are
            continue
        d_weak, d, d_strong = (palette_distance(x, pal) for x in (weak, out, strong))
        for k, v in ((0.3, d_weak), (0.6, d), (0.9, d_strong)):
            ratios[k].append(v / base)
        # towards the family's palette, further than at a weak strength
        assert d < 0.6 * base, family
        assert d < d_weak, family
    assert len(ratios[0.6]) == 5
    # measured at 0.6: mean 0.38 (shipped weights), 0.42 (the residual weights in training); city overshoots a little
    # at 0.9, so the ordering is asserted on the mean
    assert np.mean(ratios[0.6]) < 0.5, ratios
    assert np.mean(ratios[0.9]) < np.mean(ratios[0.6]) < np.mean(ratios[0.3]), ratios
    # the controls that destroy the structure at this size fail the same threshold (σ = 6 px here: the face a
    # smudge; measured 0.54, σ = 3.2 still 0.75)
    assert edge_agreement(img, cv2.GaussianBlur(img, (0, 0), 6.0), (256, 144)) < EDGE_KEPT
    assert edge_agreement(img, shuffled(img), (256, 144)) < EDGE_KEPT


def test_world_style_families_look_different_from_each_other(styler_cls, world):
    img = photo("astronaut", 256, 144)
    outs = {f: stylise(styler_cls, world, img, f, 0.8) for f in ("plasma", "ocean", "terrain")}
    for a in outs:
        for b in outs:
            if a < b:
                assert look_change(outs[a], outs[b], (256, 144)) > LOOK_CHANGED, (a, b)
    # the knobs steer the look: night is darker than noon
    st = styler_cls(world)
    st.set_family("terrain")
    st.strength = 0.8
    st.controls = st.controls.copy()
    st.controls[4] = 0.0  # daylight
    for _ in range(3):
        night = st.style(img)
    assert lab(night)[:, 0].mean() < lab(outs["terrain"])[:, 0].mean() - 20


def test_world_style_effect_runs_on_its_thread_and_restyles_at_output_size(registry, photos):
    img = photos["astronaut"]
    el = make(registry, "worldstyle", family="plasma", strength=0.7)
    try:
        first = el.process(img, ctx())
        assert first is img  # nothing stylised yet: the camera as it is, the loop does not wait
        import time

        deadline = time.monotonic() + 60
        while el.frames < 3 and time.monotonic() < deadline:
            el.process(img, ctx())
            time.sleep(0.02)
        assert el.frames >= 3
        out = el.process(img, ctx())
        assert out.shape == img.shape
        assert edge_agreement(img, out) > EDGE_KEPT
        assert look_change(img, out) > LOOK_CHANGED
        pal = family_palette("plasma")
        assert palette_distance(out, pal) < 0.85 * palette_distance(img, pal)
        # detail 0: only the enlarged model picture; less of the camera's fine edges
        el.p.states["detail"].set(0.0)
        bare = el.process(img, ctx())
        assert edge_agreement(img, bare) < edge_agreement(img, out)
    finally:
        el.close()


def test_world_style_weights_missing_one_clear_error_and_the_camera_passes(registry, photos, tmp_path):
    img = photos["astronaut"]
    cls = registry.load("worldstyle")
    el = cls(ElementConfig(layer="cam", width=W, height=H, preset_dir=str(tmp_path),
                           options={"weights": "models/none.safetensors"}), {})
    with pytest.raises(RuntimeError, match="world model weights not found: .*models/none.safetensors"):
        el.open()
    layer = Layer("cam", _StillSource(img), [("worldstyle", el)], Params.build(LAYER_PARAMS))
    p = Pipeline("t", [layer], W, H, 30.0)
    p.open_all()
    out = p.render(FrameContext(width=W, height=H))
    assert np.array_equal(out, img)
    faults = p.faults()
    assert len(faults) == 1 and not faults[0]["running"] and "none.safetensors" in faults[0]["error"]


# --- end to end: presets/stream-style.toml in a real daemon --------------------------------------------------------

def clip_frames() -> list[np.ndarray]:
    """The raw camera: every frame of presets/media/person.mp4 fitted to the output as the webcam fallback does."""
    from daemon_helpers import fallback_clip_frames

    out = fallback_clip_frames(W, H)
    assert out, "presets/media/person.mp4 has no frames"
    return out


def nearest_raw(frame: np.ndarray, raw: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """The raw camera frame whose edges agree best with `frame` (the stream does not say which it was)."""
    scores = [edge_agreement(r, frame, (320, 180)) for r in raw]
    i = int(np.argmax(scores))
    return raw[i], edge_agreement(raw[i], frame)


@pytest.mark.integration
def test_stream_style_preset_streams_restyled_camera_frames(daemons, tmp_path):
    from daemon_helpers import Control, FrameStream

    # the preset as it ships, beside its clip (relative paths resolve next to the preset)
    (tmp_path / "media").mkdir()
    shutil.copy(REPO / "presets" / "media" / "person.mp4", tmp_path / "media" / "person.mp4")
    shutil.copy(REPO / "presets" / "stream-style.toml", tmp_path / "stream-style.toml")
    raw = clip_frames()
    d = daemons(tmp_path / "stream-style.toml")
    ocean, plasma = family_palette("ocean"), family_palette("plasma")
    with FrameStream(d.zmq_port) as frames, Control(d.control_port) as ctl:
        d.wait_log(r"playing .*person.mp4 in its place")  # no camera here: the clip plays as the camera
        d.wait_log(r"worldstyle.*styling; first picture", timeout=90)  # the camera passes until then
        _, img = frames.first_frame_at_or_after(frames.last_seq + 15)
        assert img.shape == (H, W, 3)
        cam, agree = nearest_raw(img, raw)
        assert agree > EDGE_KEPT, "the person's structure is lost"
        assert look_change(cam, img) > LOOK_CHANGED, "the frame looks like the raw camera"
        assert palette_distance(img, ocean) < 0.9 * palette_distance(cam, ocean), "not towards the ocean's look"
        before = palette_distance(img, plasma)
        # live: another family, through the control socket
        assert ctl.req("set", path="/cam/worldstyle/family", value="plasma", raw=True)["ok"]
        assert ctl.req("set", path="/cam/worldstyle/strength", value=0.9, raw=True)["ok"]
        frames.first_frame_at_or_after(frames.last_seq + 60)
        _, img2 = frames.next_frame()
        assert palette_distance(img2, plasma) < 0.8 * before, "the family change did not reach the picture"
        assert nearest_raw(img2, raw)[1] > EDGE_KEPT
        status = ctl.req("status")["status"]
    assert status["faults"] == [], status["faults"]
    assert not frames.errors


@pytest.mark.integration
def test_classic_look_in_a_daemon_is_the_lut_applied_to_the_camera(daemons, tmp_path, registry):
    from daemon_helpers import FrameStream

    (tmp_path / "media").mkdir()
    shutil.copy(REPO / "presets" / "media" / "person.mp4", tmp_path / "media" / "person.mp4")
    (tmp_path / "luts").mkdir()
    shutil.copy(LUTS / "mono.cube", tmp_path / "luts" / "mono.cube")
    # the shipped preset with the world style swapped for a LUT (the way its comments say)
    text = (REPO / "presets" / "stream-style.toml").read_text(encoding="utf-8")
    start, end = text.index("  [[layers.effects]]"), text.index("[outputs.zmq]")
    text = text[:start] + '  [[layers.effects]]\n  type = "lut"\n  params = { file = "luts/mono.cube" }\n\n' + text[end:]
    (tmp_path / "mono.toml").write_text(text, encoding="utf-8")
    m = _lut_module(registry)
    mono = m.load_cube(LUTS / "mono.cube")
    raw = clip_frames()
    expected = [m.apply_lut(mono, r) for r in raw]
    d = daemons(tmp_path / "mono.toml")
    with FrameStream(d.zmq_port) as frames:
        frames.next_frame(timeout=60)
        for _ in range(3):
            _, img = frames.first_frame_at_or_after(frames.last_seq + 10)
            # exactly the LUT applied to one of the camera's frames (the stream does not say which)
            diffs = [float(np.abs(e.astype(np.int16) - img).mean()) for e in expected]
            i = int(np.argmin(diffs))
            assert diffs[i] < 0.5, f"no camera frame graded by the LUT matches (closest: {diffs[i]:.2f})"
            assert look_change(raw[i], img) > LOOK_CHANGED  # and that is not the raw camera
            assert np.abs(lab(img)[:, 1:] - 128).max() <= 2
    assert not frames.errors
    assert d.errors() == []
