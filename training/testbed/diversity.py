"""Fidelity and diversity of final samples on the testbed (reward hacking, measured).

For final samples ``x [N, d]`` of held-out contexts (their classes known):

* ``tv``: total variation distance between the frequencies of the mixture components the
  samples reach (each sample's most likely component) and the true component weights, averaged
  over classes (0: every component in its true proportion; collapse onto fewer modes raises it;
  a finite sample of the true distribution has a small positive value);
* ``spread``: root-mean-square distance of the samples to their component's mean over the
  component std (1 for true samples; below 1: samples pile up on the modes);
* ``fd``: Fréchet distance between the samples and true samples of the same classes (Gaussian
  fit per class, averaged), the testbed's FID: lower is better;
* ``loglik``: mean log-density under the class mixture (the ``likelihood`` reward, floored),
  which a collapsed sampler can push *above* that of true samples.
"""

from __future__ import annotations

import torch

from .mixture import DTYPE, Contexts, Testbed


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two sample sets ``[N, d]``."""
    a, b = a.to(DTYPE), b.to(DTYPE)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    root = _sqrtm_psd(ca)
    cross = _sqrtm_psd(root @ cb @ root)
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(ca + cb - 2 * cross))


def _tv_fd(testbed: Testbed, x: torch.Tensor, truth: torch.Tensor, classes: torch.Tensor,
           comp: torch.Tensor) -> tuple[float, float]:
    """``tv`` and ``fd`` of samples ``x`` (components ``comp``) against ``truth``, averaged
    over the classes with at least two samples."""
    tvs, fds = [], []
    for c in range(testbed.num_classes):
        mask = classes == c
        if int(mask.sum()) < 2:
            continue
        freq = torch.bincount(comp[mask], minlength=testbed.means.shape[1]).to(DTYPE)
        tvs.append(0.5 * (freq / freq.sum() - testbed.log_weights[c].exp()).abs().sum())
        fds.append(frechet_distance(x[mask], truth[mask]))
    return float(torch.stack(tvs).mean()), float(sum(fds) / len(fds))


@torch.no_grad()
def mixture_measures(testbed: Testbed, contexts: Contexts, x: torch.Tensor,
                     seed: int = 1) -> dict[str, float]:
    """``tv``, ``spread``, ``fd`` and ``loglik`` of final samples ``x`` (module docstring);
    ``seed``: the true samples ``fd`` compares with."""
    x = x.to(DTYPE)
    classes = contexts.classes
    comp = testbed.components(x, classes)
    truth, _ = testbed.sample_data(classes, torch.Generator().manual_seed(seed))
    tv, fd = _tv_fd(testbed, x, truth, classes, comp)
    resid = x - testbed.means[classes, comp]
    return {"tv": tv, "spread": float(resid.pow(2).mean().sqrt() / testbed.std), "fd": fd,
            "loglik": float(testbed.log_density(x, classes)
                            .clamp_min(testbed.likelihood_floor).mean())}


@torch.no_grad()
def mixture_set_measures(testbed: Testbed, contexts: Contexts, finals: dict[str, torch.Tensor],
                         resamples: int = 100, seed: int = 0, truth_seed: int = 1
                         ) -> dict[str, dict[str, tuple[float, torch.Tensor]]]:
    """``fd`` and ``tv`` of each sampler's final samples (name -> ``[N, d]`` for the same
    ``contexts``) with ``resamples`` bootstrap replicates over the contexts, the same index
    draws for every sampler (so differences get paired errors): name -> metric -> (value,
    replicates). The true samples (one per context, ``truth_seed``) are resampled with them."""
    classes = contexts.classes
    truth, _ = testbed.sample_data(classes, torch.Generator().manual_seed(truth_seed))
    g = torch.Generator().manual_seed(seed)
    n = len(classes)
    boots = [torch.randint(n, (n,), generator=g) for _ in range(resamples)]
    out = {}
    for name, x in finals.items():
        x = x.to(DTYPE)
        comp = testbed.components(x, classes)
        tv, fd = _tv_fd(testbed, x, truth, classes, comp)
        reps = torch.tensor([_tv_fd(testbed, x[i], truth[i], classes[i], comp[i])
                             for i in boots], dtype=DTYPE).reshape(-1, 2)
        out[name] = {"fd": (fd, reps[:, 1]), "tv": (tv, reps[:, 0])}
    return out


__all__ = ["mixture_measures", "mixture_set_measures", "frechet_distance"]
