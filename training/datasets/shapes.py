"""The shapes data set: 32x32 RGB images drawn in code from prompts whose images differ in
structure, each with its ground truth (colours, positions, counts, glyph, texture phase).

Five prompt groups (:data:`GROUPS`), 56 training prompts (:data:`PROMPTS`):

* ``smooth``: linear colour gradients ("a smooth gradient from red to blue, left to right")
  and Gaussian glows ("a soft green glow"); random ramp ends / centre and width.
* ``shapes``: one, two or three filled circles / squares / triangles in six colours on black,
  alone ("a red circle"), in a relation ("a red circle left of a blue square", "... above ...")
  or counted ("three blue squares"); random sizes and positions inside the relation.
* ``glyphs``: a white digit or capital letter in DejaVu Sans (the font matplotlib ships),
  random size (20-24 px) and offset (+-2 px): "the digit 7", "the letter K".
* ``textures``: white-on-black vertical / horizontal stripes 3, 5 or 8 pixels wide and
  checkerboards with 3-, 5- or 8-pixel squares, pixel-exact, random phase (periods that divide
  the VAE's 8-pixel cell cannot be represented: see :data:`TEXTURE_WIDTHS`).
* ``compositions``: a shape on stripes or a checkerboard, a glyph on a dark colour gradient.

Everything is seeded: :func:`render` draws one image from ``numpy.random.default_rng``
seeded with ``(seed, index)``, so ``sample(prompt, seeds)`` is a pure function of its
arguments. Shapes and glyphs are drawn at 4x and area-averaged (anti-aliased); textures are
pixel-exact. :func:`spec_of` parses any prompt the templates can make (not only the training
list) into a :class:`Spec`; :func:`checks` tests an image against it from its pixels alone
(colour names, shape classes, positions, counts, texture orientation and period), which is
what the exact rewards in ``training/rewards/shapes.py`` score.

Pure numpy + Pillow (+ scipy for connected components); imports no torch or ComfyUI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

CANVAS = 32
SUPER = 4  # supersampling factor for anti-aliased shapes and glyphs
GROUPS = ("smooth", "shapes", "glyphs", "textures", "compositions")
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10), "green": (0.12, 0.80, 0.18), "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.12), "magenta": (0.90, 0.15, 0.85), "cyan": (0.10, 0.85, 0.90)}
"""Colours shapes, glows and gradients use; textures and glyphs are white."""
SHAPES = ("circle", "square", "triangle")
GLYPHS = tuple("0123456789") + tuple("AEKRSX")
"""The glyph classes (the glyph classifier's outputs, in this order)."""
RELATIONS = ("left of", "above")
COUNT_WORDS = {2: "two", 3: "three"}
DARK = 0.45  # gradients behind glyphs are this dark, so white glyphs stand out
TEXTURE_WIDTHS = (3, 5, 8)
"""Stripe widths / checker squares (px). Periods (2 x width) that divide 8 are left out on
purpose: an image periodic with the VAE's 8-pixel latent cell has a constant latent, and a
TAESD-style decoder (convolutions and nearest upsampling) turns a constant latent into a
constant image, so such textures cannot be represented at all."""
TEXTURE_IN_COMPOSITION = {"stripes": 3, "checker": 5}


@dataclass(frozen=True)
class Spec:
    """What a prompt asks for. ``kind`` is one of gradient, glow, shape, relation, count, glyph,
    stripes, checker, shape_on_texture, glyph_on_gradient; ``width`` is the stripe width or
    checker square size in pixels; ``direction`` the gradient's or the stripes' direction
    (``horizontal``: varies left to right / vertical stripes ... see :func:`_texture`)."""

    group: str
    kind: str
    colours: tuple[str, ...] = ()
    shapes: tuple[str, ...] = ()
    relation: str = ""
    count: int = 0
    glyph: str = ""
    direction: str = ""
    texture: str = ""  # stripes / checker, for the texture kinds
    width: int = 0
    prompt: str = field(default="", compare=False)


# ---------------------------------------------------------------- prompts
def _gradient_words(c1: str, c2: str, direction: str) -> str:
    return f"a smooth gradient from {c1} to {c2}, " + (
        "left to right" if direction == "horizontal" else "top to bottom")


def _texture_words(texture: str, direction: str, width: int) -> str:
    if texture == "checker":
        return f"a checkerboard with {width}-pixel squares"
    return f"{direction} stripes {width} pixel{'s' if width > 1 else ''} wide"


def _glyph_words(glyph: str) -> str:
    return f"the {'digit' if glyph.isdigit() else 'letter'} {glyph}"


def prompt_of(spec: Spec) -> str:
    """The prompt text of a spec (inverse of :func:`spec_of`)."""
    k, c, s = spec.kind, spec.colours, spec.shapes
    if k == "gradient":
        return _gradient_words(c[0], c[1], spec.direction)
    if k == "glow":
        return f"a soft {c[0]} glow"
    if k == "shape":
        return f"a {c[0]} {s[0]}"
    if k == "relation":
        return f"a {c[0]} {s[0]} {spec.relation} a {c[1]} {s[1]}"
    if k == "count":
        return f"{COUNT_WORDS[spec.count]} {c[0]} {s[0]}s"
    if k == "glyph":
        return _glyph_words(spec.glyph)
    if k in ("stripes", "checker"):
        return _texture_words(k, spec.direction, spec.width)
    if k == "shape_on_texture":
        where = "a checkerboard" if spec.texture == "checker" else f"{spec.direction} stripes"
        return f"a {c[0]} {s[0]} on {where}"
    if k == "glyph_on_gradient":
        return f"{_glyph_words(spec.glyph)} on a {c[0]} to {c[1]} gradient"
    raise ValueError(f"Unknown spec kind {k!r}.")


def _make(group: str, kind: str, **kw) -> Spec:
    spec = Spec(group, kind, **kw)
    return Spec(**{**spec.__dict__, "prompt": prompt_of(spec)})


def _training_specs() -> list[Spec]:
    h, v = "horizontal", "vertical"
    out = [_make("smooth", "gradient", colours=("red", "blue"), direction=h),
           _make("smooth", "gradient", colours=("yellow", "green"), direction=v),
           _make("smooth", "gradient", colours=("cyan", "magenta"), direction=h),
           _make("smooth", "gradient", colours=("blue", "yellow"), direction=v)]
    out += [_make("smooth", "glow", colours=(c,)) for c in ("red", "green", "blue", "yellow")]
    for c, s in (("red", "circle"), ("green", "square"), ("blue", "triangle"),
                 ("yellow", "circle"), ("magenta", "square"), ("cyan", "triangle")):
        out.append(_make("shapes", "shape", colours=(c,), shapes=(s,)))
    for c1, s1, rel, c2, s2 in (("red", "circle", "left of", "blue", "square"),
                                ("green", "triangle", "left of", "yellow", "circle"),
                                ("cyan", "square", "left of", "green", "circle"),
                                ("blue", "square", "above", "red", "triangle"),
                                ("yellow", "circle", "above", "magenta", "square"),
                                ("magenta", "triangle", "above", "cyan", "circle")):
        out.append(_make("shapes", "relation", colours=(c1, c2), shapes=(s1, s2), relation=rel))
    for n, c, s in ((2, "red", "circle"), (3, "blue", "square"), (2, "yellow", "triangle"),
                    (3, "green", "circle")):
        out.append(_make("shapes", "count", colours=(c,), shapes=(s,), count=n))
    out += [_make("glyphs", "glyph", glyph=g) for g in GLYPHS]
    for tex, d, w in (("stripes", v, 3), ("stripes", v, 5), ("stripes", v, 8),
                      ("stripes", h, 3), ("stripes", h, 5),
                      ("checker", "", 3), ("checker", "", 5), ("checker", "", 8)):
        out.append(_make("textures", tex, texture=tex, direction=d, width=w))
    for c, s, tex, d in (("red", "circle", "stripes", v), ("blue", "square", "stripes", h),
                         ("yellow", "triangle", "checker", ""), ("green", "circle", "checker", "")):
        out.append(_make("compositions", "shape_on_texture", colours=(c,), shapes=(s,),
                         texture=tex, direction=d, width=TEXTURE_IN_COMPOSITION[tex]))
    for g, c1, c2 in (("3", "blue", "green"), ("A", "red", "yellow"), ("8", "magenta", "cyan"),
                      ("K", "green", "blue")):
        out.append(_make("compositions", "glyph_on_gradient", glyph=g, colours=(c1, c2),
                         direction=h))
    return out


TRAINING_SPECS: tuple[Spec, ...] = tuple(_training_specs())
PROMPTS: tuple[str, ...] = tuple(s.prompt for s in TRAINING_SPECS)
"""The 56 training prompts, grouped (smooth 8, shapes 16, glyphs 16, textures 8,
compositions 8)."""

_C = "|".join(PALETTE)
_S = "|".join(SHAPES)
_G = r"(?:digit|letter) ([0-9a-z])"
_PATTERNS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (k, re.compile(p + r"$")) for k, p in (
        ("gradient", rf"a smooth gradient from ({_C}) to ({_C}), (left to right|top to bottom)"),
        ("glow", rf"a soft ({_C}) glow"),
        ("shape", rf"a ({_C}) ({_S})"),
        ("relation", rf"a ({_C}) ({_S}) (left of|above) a ({_C}) ({_S})"),
        ("count", rf"(two|three) ({_C}) ({_S})s"),
        ("glyph", rf"the {_G}"),
        ("stripes", r"(vertical|horizontal) stripes ([358]) pixels? wide"),
        ("checker", r"a checkerboard with ([358])-pixel squares"),
        ("shape_on_texture",
         rf"a ({_C}) ({_S}) on (a checkerboard|vertical stripes|horizontal stripes)"),
        ("glyph_on_gradient", rf"the {_G} on a ({_C}) to ({_C}) gradient")))


def spec_of(prompt: str) -> Spec:
    """Parse a prompt the templates make into its :class:`Spec` (ValueError otherwise)."""
    text = " ".join(prompt.strip().lower().split())
    for kind, pat in _PATTERNS:
        m = pat.match(text)
        if m is None:
            continue
        g = m.groups()
        if kind == "gradient":
            return _make("smooth", kind, colours=(g[0], g[1]),
                         direction="horizontal" if g[2] == "left to right" else "vertical")
        if kind == "glow":
            return _make("smooth", kind, colours=(g[0],))
        if kind == "shape":
            return _make("shapes", kind, colours=(g[0],), shapes=(g[1],))
        if kind == "relation":
            return _make("shapes", kind, colours=(g[0], g[3]), shapes=(g[1], g[4]),
                         relation=g[2])
        if kind == "count":
            return _make("shapes", kind, colours=(g[1],), shapes=(g[2],),
                         count=2 if g[0] == "two" else 3)
        if kind == "glyph":
            return _make("glyphs", kind, glyph=_check_glyph(g[0].upper(), prompt))
        if kind in ("stripes", "checker"):
            d, w = (g[0], int(g[1])) if kind == "stripes" else ("", int(g[0]))
            return _make("textures", kind, texture=kind, direction=d, width=w)
        if kind == "shape_on_texture":
            tex = "checker" if g[2] == "a checkerboard" else "stripes"
            return _make("compositions", kind, colours=(g[0],), shapes=(g[1],), texture=tex,
                         direction="" if tex == "checker" else g[2].split()[0],
                         width=TEXTURE_IN_COMPOSITION[tex])
        return _make("compositions", kind, glyph=_check_glyph(g[0].upper(), prompt),
                     colours=(g[1], g[2]), direction="horizontal")
    raise ValueError(f"The prompt {prompt!r} is not one the shapes data set can draw; see "
                     "training/datasets/shapes.py for its templates.")


def _check_glyph(glyph: str, prompt: str) -> str:
    if glyph not in GLYPHS:
        raise ValueError(f"The prompt {prompt!r} asks for the glyph {glyph!r}; the shapes data "
                         f"set draws {''.join(GLYPHS)}.")
    return glyph


# ---------------------------------------------------------------- drawing
def _grid(scale: int = SUPER) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (canvas units) of a ``scale``-times supersampled canvas."""
    c = (np.arange(CANVAS * scale) + 0.5) / scale
    return np.meshgrid(c, c, indexing="xy")


def _down(a: np.ndarray, scale: int = SUPER) -> np.ndarray:
    return a.reshape(CANVAS, scale, CANVAS, scale).mean((1, 3))


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased coverage ``[32, 32]`` in [0, 1] of a circle (radius r), square (half side
    0.9 r) or upward triangle (apex r above the centre, base 0.8 r below, base width 2.2 r)."""
    x, y = _grid()
    if shape == "circle":
        m = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    elif shape == "square":
        m = np.maximum(abs(x - cx), abs(y - cy)) <= 0.9 * r
    elif shape == "triangle":
        top, height = cy - r, 1.8 * r
        t = (y - top) / height
        m = (t >= 0) & (t <= 1) & (abs(x - cx) <= 1.1 * r * t)
    else:
        raise ValueError(f"Unknown shape {shape!r}.")
    return _down(m.astype(np.float32))


@lru_cache(maxsize=16)
def _font(size_px: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path()), size_px * SUPER)


def font_path() -> Path:
    """DejaVu Sans, as matplotlib ships it (mpl-data/fonts/ttf)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def glyph_mask(glyph: str, cx: float, cy: float, size: int) -> np.ndarray:
    """Anti-aliased coverage ``[32, 32]`` of a glyph of ``size`` px centred at (cx, cy)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (CANVAS * SUPER, CANVAS * SUPER), 0)
    ImageDraw.Draw(img).text((cx * SUPER, cy * SUPER), glyph, fill=255, font=_font(size),
                             anchor="mm")
    return _down(np.asarray(img, dtype=np.float32) / 255.0)


def _gradient(c1: str, c2: str, direction: str, rng: np.random.Generator,
              gain: float = 1.0) -> tuple[np.ndarray, dict]:
    a, b = rng.uniform(0, 6), rng.uniform(26, 32)  # where the ramp starts and ends
    pos = (np.arange(CANVAS) + 0.5)
    t = np.clip((pos - a) / (b - a), 0, 1)
    t = t[None, :] if direction == "horizontal" else t[:, None]
    t = np.broadcast_to(t, (CANVAS, CANVAS))[..., None]
    img = gain * ((1 - t) * np.array(PALETTE[c1]) + t * np.array(PALETTE[c2]))
    return img.astype(np.float32), {"ramp": (float(a), float(b))}


def _texture(kind: str, direction: str, width: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, dict]:
    """White-on-black stripes (``vertical``: the colour changes along x) or a checkerboard,
    ``width``-pixel bands / squares, random integer phase."""
    period = 2 * width
    px, py = int(rng.integers(period)), int(rng.integers(period))
    i = np.arange(CANVAS)
    bx = ((i + px) // width) % 2
    by = ((i + py) // width) % 2
    if kind == "checker":
        on = bx[None, :] ^ by[:, None]
    elif direction == "vertical":
        on = np.broadcast_to(bx[None, :], (CANVAS, CANVAS))
    else:
        on = np.broadcast_to(by[:, None], (CANVAS, CANVAS))
    img = np.repeat(on[..., None].astype(np.float32), 3, -1)
    return img, {"phase": (px, py) if kind == "checker" else (px if direction == "vertical"
                                                              else py)}


def _paint(img: np.ndarray, mask: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    m = mask[..., None]
    return img * (1 - m) + m * np.asarray(colour, dtype=np.float32)


def _place_apart(rng: np.random.Generator, n: int, r: float, gap: float
                 ) -> list[tuple[float, float]]:
    """``n`` centres inside the canvas at least ``gap`` apart (rejection sampling)."""
    while True:
        pts = rng.uniform(r + 1, CANVAS - r - 1, size=(n, 2))
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(n) * 1e9
        if d.min() >= gap:
            return [(float(x), float(y)) for x, y in pts]


def render(spec: Spec, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One image ``[32, 32, 3]`` float32 in [0, 1] for ``spec`` and its ground truth
    (``objects``: colour, shape, centre, radius; ``glyph``: centre and size; texture phase;
    gradient ramp)."""
    k = spec.kind
    img = np.zeros((CANVAS, CANVAS, 3), np.float32)
    truth: dict = {"kind": k, "objects": []}
    if k == "gradient":
        img, t = _gradient(spec.colours[0], spec.colours[1], spec.direction, rng)
        truth.update(t)
    elif k == "glow":
        cx, cy = rng.uniform(10, 22, size=2)
        sigma = rng.uniform(4, 7)
        x, y = _grid(1)
        g = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))
        img = (g[..., None] * np.array(PALETTE[spec.colours[0]])).astype(np.float32)
        truth["objects"].append({"colour": spec.colours[0], "centre": (cx, cy), "sigma": sigma})
    elif k == "shape":
        r = rng.uniform(5, 8)
        cx, cy = rng.uniform(r + 1, CANVAS - r - 1, size=2)
        truth["objects"].append(_draw_object(img, spec.colours[0], spec.shapes[0], cx, cy, r))
    elif k == "relation":
        r1, r2 = rng.uniform(4.5, 6, size=2)
        near, far = rng.uniform(6.5, 10), rng.uniform(22, 25.5)
        o1, o2 = rng.uniform(8, 24, size=2)
        (x1, y1), (x2, y2) = ((near, o1), (far, o2)) if spec.relation == "left of" else (
            (o1, near), (o2, far))
        for c, s, x, y, r in ((spec.colours[0], spec.shapes[0], x1, y1, r1),
                              (spec.colours[1], spec.shapes[1], x2, y2, r2)):
            truth["objects"].append(_draw_object(img, c, s, x, y, r))
    elif k == "count":
        r = rng.uniform(4.5, 5.5)
        for x, y in _place_apart(rng, spec.count, 5.5, 14.5):
            truth["objects"].append(_draw_object(img, spec.colours[0], spec.shapes[0], x, y, r))
    elif k == "glyph":
        truth["glyph"] = _draw_glyph(img, spec.glyph, rng)
    elif k in ("stripes", "checker"):
        img, t = _texture(k, spec.direction, spec.width, rng)
        truth.update(t)
    elif k == "shape_on_texture":
        img, t = _texture(spec.texture, spec.direction, spec.width, rng)
        img = img.copy()
        truth.update(t)
        r = rng.uniform(6, 8)
        cx, cy = rng.uniform(10, 22, size=2)
        truth["objects"].append(_draw_object(img, spec.colours[0], spec.shapes[0], cx, cy, r))
    elif k == "glyph_on_gradient":
        img, t = _gradient(spec.colours[0], spec.colours[1], "horizontal", rng, gain=DARK)
        img = img.copy()
        truth.update(t)
        truth["glyph"] = _draw_glyph(img, spec.glyph, rng)
    else:
        raise ValueError(f"Unknown spec kind {k!r}.")
    return np.clip(img, 0, 1), truth


def _draw_object(img: np.ndarray, colour: str, shape: str, cx: float, cy: float, r: float
                 ) -> dict:
    img[:] = _paint(img, shape_mask(shape, cx, cy, r), PALETTE[colour])
    return {"colour": colour, "shape": shape, "centre": (float(cx), float(cy)), "radius": float(r)}


def _draw_glyph(img: np.ndarray, glyph: str, rng: np.random.Generator) -> dict:
    size = int(rng.integers(20, 25))
    cx, cy = 16 + rng.uniform(-2, 2), 16 + rng.uniform(-2, 2)
    img[:] = _paint(img, glyph_mask(glyph, cx, cy, size), (1.0, 1.0, 1.0))
    return {"glyph": glyph, "centre": (float(cx), float(cy)), "size": size}


def sample(prompt: str | Spec, seeds: list[int] | range) -> tuple[np.ndarray, list[dict]]:
    """Images ``[N, 32, 32, 3]`` and ground truths for one prompt, one per seed (each image is
    a pure function of (prompt, seed))."""
    spec = prompt if isinstance(prompt, Spec) else spec_of(prompt)
    imgs, truths = [], []
    for s in seeds:
        img, t = render(spec, np.random.default_rng([int(s), _prompt_key(spec.prompt)]))
        imgs.append(img)
        truths.append(t)
    return np.stack(imgs), truths


def _prompt_key(prompt: str) -> int:
    import zlib

    return zlib.crc32(prompt.encode())


def dataset(per_prompt: int, seed0: int = 0, prompts: tuple[str, ...] = PROMPTS
            ) -> tuple[np.ndarray, np.ndarray]:
    """``per_prompt`` images of every prompt (seeds ``seed0 ...``): images ``[P*n, 32, 32, 3]``
    and prompt indices ``[P*n]``."""
    imgs = [sample(p, range(seed0, seed0 + per_prompt))[0] for p in prompts]
    return np.concatenate(imgs), np.repeat(np.arange(len(prompts)), per_prompt)


# ---------------------------------------------------------------- checks from pixels
_NAMES = tuple(PALETTE) + ("white",)
_HUES = np.array([np.asarray(PALETTE[c]) / max(PALETTE[c]) for c in PALETTE] + [(1.0, 1.0, 1.0)])


def colour_name(rgb: np.ndarray, dark: float = 0.15) -> str:
    """The palette colour (or white / black) nearest to an RGB mean, brightness-normalised so
    darker shades of a colour keep its name."""
    rgb = np.asarray(rgb, dtype=np.float64)
    peak = rgb.max()
    if peak < dark:
        return "black"
    d = np.linalg.norm(_HUES - rgb / peak, axis=1)
    return _NAMES[int(d.argmin())]


def colour_map(img: np.ndarray, dark: float = 0.3) -> np.ndarray:
    """Per pixel: the index into ``list(PALETTE) + ['white']`` of its colour, -1 for black."""
    peak = img.max(-1, keepdims=True)
    d = np.linalg.norm(_HUES[None, None] - img[..., None, :] / np.maximum(peak, 1e-6)[..., None],
                       axis=-1)
    out = d.argmin(-1)
    out[peak[..., 0] < dark] = -1
    return out


def components(mask: np.ndarray, min_area: float) -> list[np.ndarray]:
    """Connected regions (8-connected) of a boolean mask with at least ``min_area`` pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    return [lab == i for i in range(1, n + 1) if (lab == i).sum() >= min_area]


def shape_class(region: np.ndarray) -> str:
    """circle / square / triangle of a region: a triangle's mass sits low in its bounding box
    (centroid ~h/6 below the box centre; circles and squares are symmetric); a square fills
    its box (share ~1; a circle ~pi/4) and its corners (the pixels beyond the box's inscribed
    diamond scaled by 1.3), a circle leaves them empty: square when the two shares add to
    more than 1.5."""
    from scipy import ndimage

    # close one-pixel gaps (anti-aliased edges blended with a texture lose their colour name)
    region = region | ndimage.binary_closing(np.pad(region, 2), np.ones((3, 3)))[2:-2, 2:-2]
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    h, w = y1 - y0 + 1, x1 - x0 + 1
    if (ys.mean() - (y0 + y1) / 2) / h > 0.08:
        return "triangle"
    v, u = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    corner = (abs(u - (x0 + x1) / 2) / (w / 2) + abs(v - (y0 + y1) / 2) / (h / 2)) > 1.3
    box = region[y0:y1 + 1, x0:x1 + 1]
    filled = box[corner].mean() if corner.any() else 0.0
    return "square" if box.mean() + filled > 1.5 else "circle"


def dominant_frequency(img: np.ndarray) -> tuple[int, int]:
    """``(|ky|, |kx|)`` of the strongest non-constant Fourier component of the grey image
    (cycles per canvas: vertical stripes w px wide -> (0, ~16 / w))."""
    grey = img.mean(-1)
    f = np.abs(np.fft.fft2(grey - grey.mean()))
    f[0, 0] = 0
    ky, kx = np.unravel_index(int(f.argmax()), f.shape)
    return min(ky, CANVAS - ky), min(kx, CANVAS - kx)


def expected_frequency(spec: Spec) -> tuple[int, int]:
    """The Fourier bin nearest to the texture's fundamental frequency."""
    f = int(round(CANVAS / (2 * spec.width)))
    if spec.texture == "checker":
        return f, f
    return (0, f) if spec.direction == "vertical" else (f, 0)


def _expected_area(shape: str, r: float) -> float:
    return {"circle": np.pi, "square": 3.24, "triangle": 1.98}[shape] * r * r


def checks(img: np.ndarray, spec: Spec, glyph: str | None = None) -> dict[str, bool]:
    """Exact prompt-following checks of one image ``[32, 32, 3]`` in [0, 1] against its
    spec, from pixels: ``colour`` (every asked colour present / at the right ends), ``shape``
    (the region of each asked colour has the asked shape), ``position`` (the relation holds),
    ``count`` (number of regions), ``texture`` (dominant frequency = orientation and period),
    ``soft`` (a glow has no sharp edges), ``glyph`` (``glyph`` is what a classifier read: the
    check is omitted when None). Names are GenEval's categories where they exist."""
    img = np.asarray(img, dtype=np.float32)
    k = spec.kind
    out: dict[str, bool] = {}
    if k in ("gradient", "glyph_on_gradient"):
        horiz = spec.direction == "horizontal"
        start = img[:, :3] if horiz else img[:3]
        end = img[:, -3:] if horiz else img[-3:]
        dark = 0.15 * (DARK if k == "glyph_on_gradient" else 1)
        out["colour"] = (colour_name(start.reshape(-1, 3).mean(0), dark) == spec.colours[0]
                         and colour_name(end.reshape(-1, 3).mean(0), dark) == spec.colours[1])
    if k == "glow":
        bright = img.max(-1) >= 0.5 * img.max()
        out["colour"] = colour_name(img[bright].mean(0)) == spec.colours[0]
        diff = max(np.abs(np.diff(img, axis=0)).max(), np.abs(np.diff(img, axis=1)).max())
        out["soft"] = bool(diff < 0.3)
    if k in ("shape", "relation", "count", "shape_on_texture"):
        cmap = colour_map(img)
        regions = {}
        for c in dict.fromkeys(spec.colours):
            size = 4.0
            regions[c] = components(cmap == _NAMES.index(c),
                                    0.35 * _expected_area(spec.shapes[0], size))
        out["colour"] = all(len(r) > 0 for r in regions.values())
        if k == "count":
            out["count"] = len(regions[spec.colours[0]]) == spec.count
        else:
            out["count"] = all(len(r) == 1 for r in regions.values())
        out["shape"] = out["colour"] and all(
            shape_class(reg) == s for c, s in zip(spec.colours, spec.shapes, strict=True)
            for reg in regions[c])
        if k == "relation":
            axis = 1 if spec.relation == "left of" else 0
            if out["colour"]:
                a = np.nonzero(max(regions[spec.colours[0]], key=np.sum))[axis].mean()
                b = np.nonzero(max(regions[spec.colours[1]], key=np.sum))[axis].mean()
                out["position"] = bool(b - a >= 4)
            else:
                out["position"] = False
    if k in ("stripes", "checker", "shape_on_texture"):
        out["texture"] = dominant_frequency(img) == expected_frequency(spec)
    if glyph is not None and k in ("glyph", "glyph_on_gradient"):
        out["glyph"] = glyph == spec.glyph
    return {n: bool(v) for n, v in out.items()}
