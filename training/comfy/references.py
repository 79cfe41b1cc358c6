"""References on a ComfyUI model: what the policy's samples are compared with.

* the ``reference`` reward: PSNR (dB) of a few-step image to the model's own
  ``reference_steps``-step image of the same (prompt, seed) (:func:`psnr`,
  :meth:`References.images`);
* AdaGen's adversarial reward: latents its discriminator learns to tell the policy's from,
  from a declared source (:data:`REFERENCE_SOURCES`, the ``adagen.reference`` option):
  ``default``, the model's own many-step latents (no data set needed), or ``digits``, real
  digits of the prompted class for the digits model.

Many-step samples are computed once per (prompt, seed) (:class:`.memo.SampleMemo`).
"""

from __future__ import annotations

from typing import Any

import torch

from .contexts import PromptContexts
from .memo import SampleMemo, context_keys

REFERENCE_SOURCES: dict[str, str] = {
    "default": "the model's many-step samples",
    "digits": "real digits of the prompted class, for the digits model",
}
"""Reference sources of :meth:`References.samples`: name -> what it is."""


def psnr(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) ``[N]`` of images in [0, 1] to their references (the ``reference`` reward)."""
    mse = (images - references).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


class References:
    """A back-end's references: many-step samples (remembered per context) and real digits.
    ``backend``: the :class:`.backend.ComfyBackend` they belong to (its public methods)."""

    def __init__(self, backend: Any, steps: int, scheduler: str = "simple"):
        self.backend = backend
        self.steps, self.scheduler = steps, scheduler
        self._latents = SampleMemo()
        self._images = SampleMemo()
        self._digits: tuple[torch.Tensor, torch.Tensor] | None = None

    def _many_step_sigmas(self) -> torch.Tensor:
        return self.backend.default_sigmas(self.steps, self.scheduler)

    def images(self, contexts: PromptContexts) -> torch.Tensor:
        """The ``steps``-step image of every context (computed once each; decoded from
        :meth:`model_latents`, so AdaGen's adversarial reward and the ``reference`` reward
        share one many-step sample per context)."""
        return self._images.get(context_keys(contexts), lambda rows: self.backend.decode(
            self.model_latents(contexts.select(rows))))

    def samples(self, contexts: PromptContexts, source: str = "default") -> torch.Tensor:
        """One reference latent per context from ``source`` (:data:`REFERENCE_SOURCES`);
        ``ValueError`` for another source."""
        sources = {"default": self.model_latents, "digits": self.real_digit_latents}
        if source not in sources:
            known = " and ".join(f"{name!r} ({what})" for name, what in REFERENCE_SOURCES.items())
            raise ValueError(f"Unknown reference source {source!r}; the ComfyUI back-end has "
                             f"{known}.")
        return sources[source](contexts)

    def model_latents(self, contexts: PromptContexts) -> torch.Tensor:
        """The model's own ``steps``-step latents of every context (same prompt and seed;
        computed once each)."""
        return self._latents.get(context_keys(contexts), lambda rows: self.backend.sample_latents(
            contexts.select(rows), self._many_step_sigmas()))

    def real_digit_latents(self, contexts: PromptContexts) -> torch.Tensor:
        """One VAE-encoded real digit of each context's prompted class, from the training
        split the digits model learnt from (the 500 held-out digits stay for the Fréchet
        distance), drawn from torch's global stream (which checkpoints save)."""
        from ..rewards.digits import prompt_digit

        lat, y = self._digit_bank()
        if tuple(lat.shape[1:]) != tuple(self.backend.latent_shape):
            raise ValueError(f"Real digits encode to latents {tuple(lat.shape[1:])}, the model "
                             f"samples {tuple(self.backend.latent_shape)}: is this the digits "
                             "model?")
        out = []
        for prompt in self.backend.prompt_texts(contexts):
            pool = torch.nonzero(y == prompt_digit(prompt))[:, 0]
            out.append(lat[pool[torch.randint(len(pool), (1,))][0]])
        return torch.stack(out)

    def _digit_bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents, labels) of the digits' training split, encoded once."""
        if self._digits is None:
            from ..rewards.digits import load_digits_split, to_canvas

            x, y, _, _ = load_digits_split()
            width, height = self.backend.width, self.backend.height
            canvas = to_canvas(x, width)
            if width != height:
                raise ValueError("Real-digit references need a square canvas.")
            with torch.inference_mode():
                lat = self.backend.vae.encode(canvas[..., None].expand(-1, -1, -1, 3))
                lat = lat.float().cpu()
            self._digits = (lat.clone(), y)
        return self._digits


__all__ = ["REFERENCE_SOURCES", "References", "psnr"]
