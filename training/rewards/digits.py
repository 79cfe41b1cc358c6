"""Measures for the digits model (scikit-learn's ``load_digits``): a small CNN classifier and the
rewards / evaluation numbers built on it. Pure torch (no ComfyUI); scikit-learn only to load the
data set (the classifier file carries the real-data feature statistics the rewards need).

* :class:`DigitClassifier`: 8x8 grey digits -> 10 logits; its 64-d penultimate layer is the
  feature space of the realism reward and the Fréchet distance.
* ``digit`` reward (:class:`DigitReward`): log-probability of the prompted digit. Easy to hack:
  a degenerate schedule can raise it while the images get worse (kept on purpose).
* ``realism`` reward (:class:`RealismReward`): how *typical* the image's features are for real
  digits of the prompted class: ``-0.5 * ((M2 - m) / s) ** 2`` with ``M2`` the Mahalanobis
  distance to the class mean and ``m, s`` its mean and spread over real held-out digits. Both
  off-manifold images (large ``M2``) and collapsed / averaged ones (``M2`` far below real
  digits) score low, so collapsing to a class mean does not pay.
* :func:`frechet_distance` and :func:`class_coverage` for evaluation.

Images come in ComfyUI's IMAGE layout ``[N, H, W, C]`` in [0, 1]; they are turned grey and
area-resized to 8x8 (the data's own resolution), so any canvas size works.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .base import prompts_per_image

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLASSIFIER = REPO / "models" / "digits" / "digits_classifier.safetensors"
N_HELD_OUT = 500
SPLIT_SEED = 0
_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digits_split(seed: int = SPLIT_SEED, n_held_out: int = N_HELD_OUT
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as ``[N, 8, 8]`` floats in [0, 1] plus labels, split into
    ``(train_x, train_y, held_out_x, held_out_y)`` by a fixed permutation (1,297 / 500)."""
    images, target = _read_digits()
    x = torch.tensor(images, dtype=torch.float32) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    test, train = perm[:n_held_out], perm[n_held_out:]
    return x[train], y[train], x[test], y[test]


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The data file scikit-learn ships (read directly: importing ``sklearn.datasets`` pulls in
    joblib and friends for nothing); the same arrays ``load_digits()`` returns."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("The digits data set comes with scikit-learn: pip install scikit-learn.")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def to_canvas(digits8: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``[N, 8, 8]`` digits -> ``[N, size, size]`` (bilinear): the model's training images."""
    return F.interpolate(digits8[:, None], size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0].clamp(0, 1)


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[N, H, W, C]`` (or grey ``[N, H, W]``) in [0, 1] -> ``[N, 1, 8, 8]``."""
    if images.ndim == 4:
        images = images[..., :3].float().mean(-1)
    x = images.float()[:, None]
    if x.shape[-2:] != (8, 8):
        x = F.adaptive_avg_pool2d(x, (8, 8))
    return x


def prompt_digit(prompt: str) -> int:
    """The digit a prompt asks for: the last single digit or digit word in it."""
    found = re.findall(r"(?<!\d)(\d)(?!\d)|\b(" + "|".join(_WORDS) + r")\b", prompt.lower())
    if not found:
        raise ValueError(f"The prompt {prompt!r} names no digit (0-9 or zero..nine).")
    num, word = found[-1]
    return int(num) if num else _WORDS.index(word)


class DigitClassifier(nn.Module):
    """A small CNN on 8x8 grey digits (~0.1M parameters); ``features`` is 64-d."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 16, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 8, 8]`` -> ``[N, 64]`` penultimate activations."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def feature_stats(features: torch.Tensor, labels: torch.Tensor,
                  shrink: float = 0.1) -> dict[str, torch.Tensor]:
    """Class means, the pooled (shrunk) within-class covariance and its inverse."""
    feats = features.double()
    means = torch.stack([feats[labels == c].mean(0) for c in range(10)])
    centred = feats - means[labels]
    cov = centred.T @ centred / max(len(feats) - 10, 1)
    cov = (1 - shrink) * cov + shrink * cov.diagonal().mean() * torch.eye(cov.shape[0],
                                                                         dtype=cov.dtype)
    return {"class_means": means.float(), "cov": cov.float(),
            "cov_inv": torch.linalg.inv(cov).float()}


def mahalanobis2(features: torch.Tensor, classes: torch.Tensor,
                 stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Squared Mahalanobis distance of each feature row to its class mean."""
    d = features.float() - stats["class_means"][classes]
    return ((d @ stats["cov_inv"]) * d).sum(-1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [N, D]`` and ``b [M, D]``."""
    a, b = a.detach().double(), b.detach().double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    ev, evec = torch.linalg.eigh(ca)
    sqrt_a = evec @ torch.diag(ev.clamp_min(0).sqrt()) @ evec.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cb @ sqrt_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross)


def class_coverage(real: torch.Tensor, real_y: torch.Tensor, gen: torch.Tensor,
                   gen_y: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Per-class coverage (Naeem et al. 2020) in feature space: the share of real digits of
    class c whose k-nearest-real-neighbour ball holds a generated digit prompted as c
    (``[10]``; NaN for a class with no generated digit)."""
    out = torch.full((10,), float("nan"))
    for c in range(10):
        r, g = real[real_y == c].double(), gen[gen_y == c].double()
        if len(g) == 0 or len(r) <= k:
            continue
        radius = torch.cdist(r, r).kthvalue(k + 1, dim=1).values  # +1: itself at 0
        out[c] = (torch.cdist(r, g).min(1).values <= radius).double().mean().float()
    return out


class DigitMeasures:
    """The trained classifier plus the real-data statistics stored with it."""

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"No digits classifier at {path}: run "
                             "scripts/digits/train_classifier.py to make it.")
        sd = load_file(str(path))
        self.model = DigitClassifier()
        self.model.load_state_dict({k[len("net."):]: v for k, v in sd.items()
                                    if k.startswith("net.")})
        self.model.eval().to(device)
        self.stats = {k[len("stats."):]: v for k, v in sd.items() if k.startswith("stats.")}
        self.device = device

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(to_classifier_input(images).to(self.device)).cpu()

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(to_classifier_input(images).to(self.device)).cpu()

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            return float((self.logits(images).argmax(-1) == labels).float().mean())

    def typicality(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The realism score of feature rows: ``-0.5 * z**2`` of their Mahalanobis distance."""
        m2 = mahalanobis2(features, classes, self.stats)
        z = (m2 - self.stats["m2_mean"][classes]) / self.stats["m2_std"][classes]
        return -0.5 * z.pow(2)

    def held_out_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of the 500 held-out real digits (the Fréchet reference)."""
        return self.stats["held_out_features"], self.stats["held_out_labels"].long()


class DigitSetMeasures:
    """Set-level measures of generated digits, each with bootstrap replicates over the set:
    ``fd`` (Fréchet distance of classifier features to the 500 held-out real digits),
    ``coverage`` (mean per-class coverage, :func:`class_coverage`) and ``accuracy`` (share
    classified as the prompted digit). Every image set of one call is resampled with the same
    ``resamples`` index draws (seeded), so differences between sets have paired errors."""

    names = ("fd", "coverage", "accuracy")

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, resamples: int = 200,
                 seed: int = 0, k: int = 5) -> None:
        self.measures = DigitMeasures(path)
        self.resamples, self.seed, self.k = resamples, seed, k
        self.real, self.real_y = self.measures.held_out_features()
        self._radius = {c: torch.cdist(r, r).kthvalue(k + 1, dim=1).values
                        for c in range(10)
                        if len(r := self.real[self.real_y == c].double()) > k}

    def __call__(self, images: dict[str, torch.Tensor], prompts: list[str]
                 ) -> dict[str, dict[str, tuple[float, torch.Tensor]]]:
        """name -> images ``[N, H, W, C]`` of the same N prompts -> name -> metric ->
        (value, bootstrap replicates ``[resamples]``)."""
        labels = _classes(prompts, len(prompts))
        n = len(labels)
        g = torch.Generator().manual_seed(self.seed)
        boots = [torch.arange(n)] + [torch.randint(n, (n,), generator=g)
                                     for _ in range(self.resamples)]
        out = {}
        for name, imgs in images.items():
            if len(imgs) != n:
                raise ValueError(f"{name}: {len(imgs)} images for {n} prompts.")
            feats = self.measures.features(imgs).double()
            correct = (self.measures.model.fc2(feats.float()).argmax(-1) == labels).double()
            covered = self._covered(feats, labels)
            fd = torch.tensor([frechet_distance(feats[i], self.real) for i in boots])
            cov = torch.stack([self._coverage(covered, labels, i) for i in boots])
            acc = torch.stack([correct[i].mean() for i in boots])
            out[name] = {"fd": (float(fd[0]), fd[1:]), "coverage": (float(cov[0]), cov[1:]),
                         "accuracy": (float(acc[0]), acc[1:])}
        return out

    def _covered(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[int, torch.Tensor]:
        """Per class: ``[real_c, N]`` whether generated digit j (prompted c) lies in real
        digit i's k-NN ball (False for other prompts)."""
        out = {}
        for c, radius in self._radius.items():
            d = torch.cdist(self.real[self.real_y == c].double(), feats)
            out[c] = (d <= radius[:, None]) & (labels == c)[None]
        return out

    def _coverage(self, covered: dict[int, torch.Tensor], labels: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
        per_class = [covered[c][:, index].any(1).double().mean() for c in covered
                     if bool((labels[index] == c).any())]
        return torch.stack(per_class).mean() if per_class else torch.tensor(float("nan"))


class DigitReward:
    """``digit``: log-probability the classifier gives the prompted digit (hackable)."""

    name = "digit"

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu") -> None:
        self.measures = DigitMeasures(path, device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        classes = _classes(prompts, len(images))
        logp = torch.log_softmax(self.measures.logits(images), -1)
        return logp.gather(1, classes[:, None])[:, 0].float()


class RealismReward:
    """``realism``: typicality of the image's classifier features for real digits of the
    prompted class (see the module docstring); collapsing to a class mean scores low."""

    name = "realism"

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu") -> None:
        self.measures = DigitMeasures(path, device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        classes = _classes(prompts, len(images))
        return self.measures.typicality(self.measures.features(images), classes).float()


def _classes(prompts: list[str] | str, n: int) -> torch.Tensor:
    return torch.tensor([prompt_digit(p) for p in prompts_per_image(prompts, n)])


def save_classifier(model: DigitClassifier, stats: dict[str, torch.Tensor], path: Path) -> None:
    """Weights (``net.*``) and real-data statistics (``stats.*``) in one safetensors file."""
    sd = {f"net.{k}": v.contiguous() for k, v in model.state_dict().items()}
    sd.update({f"stats.{k}": v.contiguous() for k, v in stats.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))


def load_digits_reward(kind: str, source: str | Path | None = None, device: str = "cpu",
                       **_: object) -> DigitReward | RealismReward:
    """``digit`` or ``realism`` from a classifier file (default: the shipped one), for the
    reward registry."""
    path = Path(source) if source else DEFAULT_CLASSIFIER
    if path.is_dir():
        path = path / DEFAULT_CLASSIFIER.name
    if kind == "digit":
        return DigitReward(path, device)
    if kind == "realism":
        return RealismReward(path, device)
    raise ValueError(f"Unknown digits reward {kind!r}; choose digit or realism.")
