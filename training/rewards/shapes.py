"""Exact rewards for the shapes model (``models/shapes``): GenEval-like prompt-following checks
computed from pixels, exact because the generator (``training/datasets/shapes.py``) knows what
each prompt asks for, and a glyph classifier trained on the generator's own glyphs.

* ``shapes`` (:class:`ShapesReward`): the share of the prompt's checks an image passes, in
  [0, 1]: colour (each asked colour present / at the right ends of a gradient), shape (circle /
  square / triangle), position (left of / above), count, texture (orientation and period),
  softness of a glow, and the glyph (read by the classifier). The generator's own images pass
  every check.
* ``glyph`` (:class:`GlyphReward`): log-probability the glyph classifier gives the prompted
  glyph (0 for prompts without a glyph, so mixed prompt lists train).

:class:`ShapesChecks` gives the per-category results (``colour``, ``shape``, ``position``,
``count``, ``texture``, ``soft``, ``glyph``; NaN where a prompt has no such check) for
benchmarks. Images are ComfyUI IMAGE tensors ``[N, H, W, 3]`` in [0, 1] (area-resized to
32x32 when larger). Pure torch + numpy; no ComfyUI.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..datasets import shapes as data
from .base import prompts_per_image

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLASSIFIER = REPO / "models" / "shapes" / "shapes_glyph_classifier.safetensors"
CATEGORIES = ("colour", "shape", "position", "count", "texture", "soft", "glyph")
SCORES = ("checks", "glyph_logp", "colour_error", "texture_strength")
"""Graded scores of :class:`ShapesScores` (higher is better except ``colour_error``)."""


def to_input(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[N, H, W, C]`` in [0, 1] -> ``[N, 3, 32, 32]`` (area-resized if needed)."""
    if images.ndim != 4:
        raise ValueError(f"Shapes rewards need [N, H, W, C] images, got {tuple(images.shape)}.")
    x = images[..., :3].float().permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (data.CANVAS, data.CANVAS):
        x = F.adaptive_avg_pool2d(x, (data.CANVAS, data.CANVAS))
    return x.clamp(0, 1)


class GlyphNet(nn.Module):
    """A small CNN: 32x32 RGB -> one logit per glyph of :data:`data.GLYPHS` (~0.2M params)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 16, 128)
        self.fc2 = nn.Linear(128, len(data.GLYPHS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)   # 16x16
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)                          # 8x8
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)                          # 4x4
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class GlyphClassifier:
    """The trained glyph classifier (``scripts/shapes/train_glyph_classifier.py``)."""

    def __init__(self, net: GlyphNet, device: str = "cpu") -> None:
        self.net = net.eval().to(device)
        self.device = device

    @classmethod
    def load(cls, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu"
             ) -> GlyphClassifier:
        path = Path(path)
        if path.is_dir():
            path = path / DEFAULT_CLASSIFIER.name
        if not path.is_file():
            raise ValueError(f"No glyph classifier at {path}: run "
                             "scripts/shapes/train_glyph_classifier.py to make it.")
        net = GlyphNet()
        net.load_state_dict(load_file(str(path)))
        return cls(net, device)

    def save(self, path: Path = DEFAULT_CLASSIFIER) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path))

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(to_input(images).to(self.device)).float().cpu()

    def read(self, images: torch.Tensor) -> list[str]:
        """The glyph each image shows, by the classifier's argmax."""
        return [data.GLYPHS[int(i)] for i in self.logits(images).argmax(-1)]


def _specs(prompts: list[str] | str, n: int) -> list[data.Spec]:
    return [data.spec_of(p) for p in prompts_per_image(prompts, n)]


class ShapesChecks:
    """Per-image, per-category results of the exact checks (1 pass, 0 fail, NaN: no such
    check for that prompt); glyph checks read by the classifier."""

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu") -> None:
        self.classifier = GlyphClassifier.load(path, device)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict[str, np.ndarray]:
        specs = _specs(prompts, len(images))
        imgs = to_input(images).permute(0, 2, 3, 1).numpy()
        has_glyph = [bool(s.glyph) for s in specs]
        read = self.classifier.read(images[torch.tensor(has_glyph)]) if any(has_glyph) else []
        it = iter(read)
        out = {c: np.full(len(specs), np.nan) for c in CATEGORIES}
        for i, (img, spec) in enumerate(zip(imgs, specs, strict=True)):
            res = data.checks(img, spec, next(it) if spec.glyph else None)
            for k, v in res.items():
                out[k][i] = float(v)
        return out

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """``[N]``: the share of each image's checks passed."""
        res = np.stack(list(self(images, prompts).values()))
        return torch.from_numpy(np.nanmean(res, 0)).float()


def glyph_logp(classifier: GlyphClassifier, images: torch.Tensor, specs: list[data.Spec],
               missing: float = 0.0) -> torch.Tensor:
    """``[N]``: log-probability the classifier gives each image's prompted glyph (``missing``
    for prompts without a glyph)."""
    out = torch.full((len(specs),), missing)
    rows = [i for i, s in enumerate(specs) if s.glyph]
    if rows:
        logp = torch.log_softmax(classifier.logits(images[rows]), -1)
        target = torch.tensor([data.GLYPHS.index(specs[i].glyph) for i in rows])
        out[rows] = logp.gather(1, target[:, None])[:, 0]
    return out


def _interior(region: np.ndarray) -> np.ndarray:
    """The pixels of a region whose four neighbours are in it too (the region itself when
    none are: anti-aliased edges carry blended colours)."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(region, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))
    return inner if inner.any() else region


def colour_error(img: np.ndarray, spec: data.Spec) -> float:
    """How far the asked colours are from the generator's, in [0, 1] (RGB distance / sqrt 3),
    NaN for prompts without a colour. Gradients: the outermost column (row) at each end, where
    the generator's ramp is at its end colours (within 2%); a glow: its four brightest pixels
    (the generator's peak is the colour itself); objects: the interior of each asked colour's
    largest region (an asked colour with no region counts 1, the largest error)."""
    k = spec.kind
    if not spec.colours or k == "glyph":
        return float("nan")
    img = np.asarray(img, dtype=np.float64)
    pairs: list[tuple[np.ndarray, tuple[float, ...]]] = []
    if k in ("gradient", "glyph_on_gradient"):
        gain = data.DARK if k == "glyph_on_gradient" else 1.0
        horiz = spec.direction == "horizontal" or k == "glyph_on_gradient"
        first, last = (img[:, 0], img[:, -1]) if horiz else (img[0], img[-1])
        pairs = [(first.mean(0), tuple(gain * v for v in data.PALETTE[spec.colours[0]])),
                 (last.mean(0), tuple(gain * v for v in data.PALETTE[spec.colours[1]]))]
    elif k == "glow":
        flat = img.reshape(-1, 3)
        top = flat[np.argsort(flat.sum(-1))[-4:]]
        pairs = [(top.mean(0), data.PALETTE[spec.colours[0]])]
    else:
        cmap = data.colour_map(img.astype(np.float32))
        errors = []
        for c in dict.fromkeys(spec.colours):
            regions = data.components(cmap == data._NAMES.index(c), 2)
            if not regions:
                errors.append(1.0)
                continue
            inner = _interior(max(regions, key=np.sum))
            errors.append(float(np.linalg.norm(img[inner].mean(0) - np.asarray(
                data.PALETTE[c])) / np.sqrt(3)))
        return float(np.mean(errors))
    return float(np.mean([np.linalg.norm(m - np.asarray(t)) / np.sqrt(3) for m, t in pairs]))


def texture_strength(img: np.ndarray, spec: data.Spec) -> float:
    """The Fourier amplitude of the grey image at the texture's fundamental, as a share of
    the generator's at phase 0 (its own images score 0.75-1.06: widths that do not divide the
    canvas and a shape drawn over the texture move the amplitude a little), NaN for prompts
    without a texture."""
    if spec.kind not in ("stripes", "checker", "shape_on_texture"):
        return float("nan")
    ky, kx = data.expected_frequency(spec)
    ideal = _texture_amplitude(spec.texture or spec.kind, spec.direction, spec.width)
    grey = np.asarray(img, dtype=np.float64).mean(-1)
    return float(np.abs(np.fft.fft2(grey - grey.mean())[ky, kx]) / ideal)


def _texture_amplitude(kind: str, direction: str, width: int) -> float:
    """The generator's Fourier amplitude at a texture's fundamental (phase 0)."""
    tex, _ = data._texture(kind, direction, width, np.random.default_rng(0))
    spec = data.Spec(group="textures", kind=kind, direction=direction, texture=kind, width=width)
    ky, kx = data.expected_frequency(spec)
    grey = tex.astype(np.float64).mean(-1)
    return float(np.abs(np.fft.fft2(grey - grey.mean())[ky, kx]))



class ShapesScores:
    """Graded exact prompt-following scores per image (:data:`SCORES`; NaN where a prompt has
    no such part): ``checks`` (share of :class:`ShapesChecks` passed), ``glyph_logp``
    (log-probability the glyph classifier gives the prompted glyph), :func:`colour_error`,
    :func:`texture_strength`. The binary checks rarely change between schedules that all get
    the picture roughly right; the graded ones measure how well they get it."""

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu") -> None:
        self.checks = ShapesChecks(path, device)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict[str, np.ndarray]:
        prompts = prompts_per_image(prompts, len(images))
        specs = _specs(prompts, len(images))
        out = {"checks": self.checks.score(images, prompts).double().numpy()}
        out["glyph_logp"] = glyph_logp(self.checks.classifier, images, specs,
                                       missing=float("nan")).double().numpy()
        imgs = to_input(images).permute(0, 2, 3, 1).numpy()
        out["colour_error"] = np.array([colour_error(m, s) for m, s in zip(imgs, specs,
                                                                         strict=True)])
        out["texture_strength"] = np.array([texture_strength(m, s)
                                            for m, s in zip(imgs, specs, strict=True)])
        return out


class ShapesSetMeasures:
    """``set_metrics: shapes`` for eval: the mean of each :data:`SCORES` entry over the images
    that have it, with bootstrap replicates drawn with the same indices for every schedule of
    one call (paired errors)."""

    names = SCORES

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, resamples: int = 200,
                 seed: int = 0) -> None:
        self.scores = ShapesScores(path)
        self.resamples, self.seed = resamples, seed

    def __call__(self, images: dict[str, torch.Tensor], prompts: list[str]
                 ) -> dict[str, dict[str, tuple[float, torch.Tensor]]]:
        """name -> images ``[N, H, W, C]`` of the same N prompts -> name -> score ->
        (value, bootstrap replicates ``[resamples]``)."""
        n = len(prompts)
        rng = np.random.default_rng(self.seed)
        boots = rng.integers(n, size=(self.resamples, n))
        out = {}
        for name, imgs in images.items():
            if len(imgs) != n:
                raise ValueError(f"{name}: {len(imgs)} images for {n} prompts.")
            out[name] = {}
            for score, v in self.scores(imgs, prompts).items():
                with warnings.catch_warnings():  # a resample without such images: NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    reps = np.nanmean(v[boots], axis=1)
                    value = float(np.nanmean(v))
                out[name][score] = (value, torch.from_numpy(reps))
        return out


class ShapesReward:
    """``shapes``: the share of the prompt's exact checks the image passes (in [0, 1])."""

    name = "shapes"

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu") -> None:
        self.checks = ShapesChecks(path, device)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.checks.score(images, prompts)


class GlyphReward:
    """``glyph``: log-probability of the prompted glyph (0 for prompts without one)."""

    name = "glyph"

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu") -> None:
        self.classifier = GlyphClassifier.load(path, device)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return glyph_logp(self.classifier, images, _specs(prompts, len(images)))


def load_shapes_reward(kind: str, source: str | Path | None = None, device: str = "cpu",
                       **_: object) -> ShapesReward | GlyphReward:
    """``shapes`` or ``glyph`` from a classifier file (default: the shipped one)."""
    path = Path(source) if source else DEFAULT_CLASSIFIER
    if kind == "shapes":
        return ShapesReward(path, device)
    if kind == "glyph":
        return GlyphReward(path, device)
    raise ValueError(f"Unknown shapes reward {kind!r}; choose shapes or glyph.")
