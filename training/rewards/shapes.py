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

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..datasets import shapes as data

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLASSIFIER = REPO / "models" / "shapes" / "shapes_glyph_classifier.safetensors"
CATEGORIES = ("colour", "shape", "position", "count", "texture", "soft", "glyph")


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
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 1 and n != 1:
        prompts = list(prompts) * n
    if len(prompts) != n:
        raise ValueError(f"Got {n} images but {len(prompts)} prompts.")
    return [data.spec_of(p) for p in prompts]


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
        specs = _specs(prompts, len(images))
        out = torch.zeros(len(specs))
        rows = [i for i, s in enumerate(specs) if s.glyph]
        if rows:
            logp = torch.log_softmax(self.classifier.logits(images[rows]), -1)
            target = torch.tensor([data.GLYPHS.index(specs[i].glyph) for i in rows])
            out[rows] = logp.gather(1, target[:, None])[:, 0]
        return out


def load_shapes_reward(kind: str, source: str | Path | None = None, device: str = "cpu",
                       **_: object) -> ShapesReward | GlyphReward:
    """``shapes`` or ``glyph`` from a classifier file (default: the shipped one)."""
    path = Path(source) if source else DEFAULT_CLASSIFIER
    if kind == "shapes":
        return ShapesReward(path, device)
    if kind == "glyph":
        return GlyphReward(path, device)
    raise ValueError(f"Unknown shapes reward {kind!r}; choose shapes or glyph.")
