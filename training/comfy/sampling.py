"""Batched rollouts with per-rollout schedules through ComfyUI's own multi-stage samplers.

The ComfyUI back-end samples ``euler``, ``heun`` and ``dpmpp_2m`` with the step-wise sampler
of :mod:`comfy_bridge.sampler` (one batched model call per step, per-item sigmas); this module
is the path for every other ComfyUI sampler.

A ComfyUI sampler takes ONE sigma schedule for the whole batch, but every RL rollout has its
own. :class:`LockstepSampler` is a ComfyUI ``Sampler`` (the object ``CFGGuider.sample`` drives)
that runs ComfyUI's sampler function once per rollout, each with its own sigmas, in lockstep
threads: every denoiser call a rollout makes is queued, and when every running rollout waits,
the queued calls run as ONE batched model call (per-sample sigmas; ComfyUI's models accept a
sigma per batch item). So any fixed-step ComfyUI sampler runs its exact update rule per
rollout while the network sees the whole batch. Samplers whose calls cannot be batched this
way (CFG++ variants read the batch's unconditional prediction through model options; adaptive
solvers take different step counts) run one rollout at a time instead.

ComfyUI is imported lazily; this module belongs to the ComfyUI back-end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

log = logging.getLogger("learned_schedules.training")

#: Samplers whose per-rollout runs are batched in lockstep (same number of model calls, no
#: batch-level model-option hooks). Others run sequentially, still with ComfyUI's code.
LOCKSTEP_SAMPLERS = frozenset({
    "euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms",
    "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_heun",
    "dpmpp_3m_sde", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_ancestral", "uni_pc", "uni_pc_bh2",
})


def draws_noise(name: str) -> bool:
    """Whether a sampler draws fresh noise while sampling (then a batched run with one seed
    differs from single runs with each rollout's seed)."""
    return "ancestral" in name or "sde" in name or name in ("ddpm", "lcm", "er_sde")


def sampler_names() -> list[str]:
    """Every sampler name ComfyUI knows (``KSamplerSelect``'s list)."""
    import comfy.samplers

    return list(comfy.samplers.SAMPLER_NAMES)


def check_sampler_name(name: str) -> None:
    names = sampler_names()
    if name not in names:
        raise ValueError(f"Unknown sampler {name!r}; ComfyUI's samplers are: "
                         f"{', '.join(names)}.")


class _Lockstep:
    """Gathers one model call per live rollout thread and runs them as one batch."""

    def __init__(self, n: int, model_call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.n = n
        self.model_call = model_call
        self.cond = threading.Condition()
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.last: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.results: dict[int, torch.Tensor] = {}
        self.done: set[int] = set()
        self.error: BaseException | None = None

    def submit(self, i: int, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with self.cond:
            if self.error is not None:
                raise RuntimeError("another rollout failed") from self.error
            self.pending[i] = (x, sigma.reshape(-1)[:1].expand(x.shape[0]))
            self.cond.notify_all()
            while i not in self.results and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise RuntimeError("the batched model call failed") from self.error
            return self.results.pop(i)

    def finish(self, i: int, error: BaseException | None = None) -> None:
        with self.cond:
            self.done.add(i)
            if error is not None and self.error is None:
                self.error = error
            self.cond.notify_all()

    def serve(self) -> None:
        """Run batched model calls until every rollout has finished (caller's thread)."""
        while True:
            with self.cond:
                while (self.error is None and len(self.done) < self.n
                       and len(self.pending) + len(self.done) < self.n):
                    self.cond.wait()
                if self.error is not None:
                    raise self.error
                if len(self.done) == self.n:
                    return
                batch = dict(self.pending)
                self.pending.clear()
            # finished rollouts keep their slot with their last input (output discarded), so
            # the batch always matches the conditioning's batch size
            rows = []
            for i in range(self.n):
                if i in batch:
                    self.last[i] = batch[i]
                rows.append(self.last[i])
            try:
                out = self.model_call(torch.cat([r[0] for r in rows]),
                                      torch.cat([r[1] for r in rows]))
            except BaseException as exc:  # hand the failure to every waiting rollout
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()
                raise
            with self.cond:
                for i in batch:
                    self.results[i] = out[i:i + 1]
                self.cond.notify_all()


class _RolloutModel:
    """What one rollout's sampler sees as ``model_wrap``: ComfyUI's guider, one row of it."""

    def __init__(self, guider: Any, lockstep: _Lockstep, index: int):
        self.inner_model = guider.inner_model
        self._lockstep = lockstep
        self._index = index

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, model_options: Any = None,
                 seed: Any = None) -> torch.Tensor:
        return self._lockstep.submit(self._index, x, timestep)


def _make_comfy_sampler_class():
    import comfy.samplers

    class LockstepSampler(comfy.samplers.Sampler):
        """A ComfyUI ``Sampler`` that runs a named sampler per rollout with its own sigmas.

        ``sigmas [N, L+1]`` (model sigma space) and ``seeds [N]`` (used by ancestral / SDE
        samplers' noise, exactly as a single-image run with that seed). The ``sigmas``
        argument ``CFGGuider.sample`` passes in is ignored except for its length.
        """

        def __init__(self, name: str, sigmas: torch.Tensor, seeds: Sequence[int]):
            self.name = name
            self.inner = comfy.samplers.sampler_object(name)
            self.sigmas = sigmas
            self.seeds = [int(s) for s in seeds]

        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
                   denoise_mask=None, disable_pbar=False):
            n = noise.shape[0]
            if self.sigmas.shape[0] != n:
                raise ValueError(f"{self.sigmas.shape[0]} schedules for {n} rollouts.")
            grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

            def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return model_wrap(x, t, **extra_args)

            lock = _Lockstep(n, call)
            outputs: list[torch.Tensor | None] = [None] * n
            device = noise.device

            def run(i: int) -> None:
                err = None
                try:
                    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                        args = {**extra_args, "seed": self.seeds[i]}
                        outputs[i] = self.inner.sample(
                            _RolloutModel(model_wrap, lock, i), self.sigmas[i].to(device), args,
                            None, noise[i:i + 1],
                            None if latent_image is None else latent_image[i:i + 1],
                            None if denoise_mask is None else denoise_mask[i:i + 1], True)
                except BaseException as exc:
                    err = exc
                finally:
                    lock.finish(i, err)

            threads = [threading.Thread(target=run, args=(i,), daemon=True,
                                        name=f"rollout-{i}") for i in range(n)]
            for t in threads:
                t.start()
            try:
                lock.serve()
            finally:
                for t in threads:
                    t.join()
            return torch.cat([o for o in outputs if o is not None])

    return LockstepSampler


_SAMPLER_CLASS: list[type] = []


def lockstep_sampler(name: str, sigmas: torch.Tensor, seeds: Sequence[int]):
    """A :class:`LockstepSampler` instance (the class is built once ComfyUI is importable)."""
    if not _SAMPLER_CLASS:
        _SAMPLER_CLASS.append(_make_comfy_sampler_class())
    return _SAMPLER_CLASS[0](name, sigmas, seeds)


def make_guider(model: Any, positive: list, negative: list | None, cfg: float) -> Any:
    """ComfyUI's ``CFGGuider`` for these conditionings (no negative: ``cfg`` must be 1)."""
    import comfy.samplers

    g = comfy.samplers.CFGGuider(model)
    g.set_conds(positive, negative if negative is not None else [])
    g.set_cfg(cfg)
    return g


def sample_rollouts(model: Any, positive: list, negative: list | None, noise: torch.Tensor,
                    sigmas: torch.Tensor, seeds: Sequence[int], sampler_name: str = "euler",
                    cfg: float = 1.0, latent_image: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``N`` rollouts, each with its own sigmas ``[N, L+1]``; returns latents ``[N, ...]``.

    ``positive`` / ``negative`` are ComfyUI CONDITIONING lists whose tensors have batch ``N``
    (or 1, broadcast). ``noise [N, C, H, W]`` is x_T per rollout. With ``cfg == 1`` the
    negative is not evaluated (as in ComfyUI). Runs under the caller's grad mode (callers use
    ``torch.inference_mode()``; REINFORCE needs no gradient through the model).
    """
    import comfy.samplers

    n = noise.shape[0]
    if sigmas.ndim != 2 or sigmas.shape[0] != n:
        raise ValueError(f"Expected sigmas [N={n}, L+1], got {tuple(sigmas.shape)}.")
    latent = torch.zeros_like(noise) if latent_image is None else latent_image

    def guider(pos: list, neg: list | None):
        return make_guider(model, pos, neg, cfg)

    same = bool((sigmas == sigmas[:1]).all())
    if n == 1 or (same and not draws_noise(sampler_name)):
        # one schedule for the whole batch: ComfyUI's plain batched sampling
        return guider(positive, negative).sample(
            noise, latent, comfy.samplers.sampler_object(sampler_name), sigmas[0],
            disable_pbar=True, seed=int(seeds[0]))
    if sampler_name in LOCKSTEP_SAMPLERS:
        return guider(positive, negative).sample(
            noise, latent, lockstep_sampler(sampler_name, sigmas, seeds), sigmas[0],
            disable_pbar=True, seed=int(seeds[0]))
    # one rollout at a time, with ComfyUI's own sampler and its own conditioning row
    outs = []
    for i in range(n):
        g = guider(select_conditioning(positive, i),
                   None if negative is None else select_conditioning(negative, i))
        outs.append(g.sample(noise[i:i + 1], latent[i:i + 1],
                             comfy.samplers.sampler_object(sampler_name), sigmas[i],
                             disable_pbar=True, seed=int(seeds[i])))
    return torch.cat(outs)


def select_conditioning(conditioning: list, index: int) -> list:
    """Row ``index`` of a batched CONDITIONING (tensors with batch > 1 are sliced)."""
    out = []
    for tokens, extra in conditioning:
        row = tokens[index:index + 1] if tokens.shape[0] > 1 else tokens
        sliced = {k: (v[index:index + 1] if torch.is_tensor(v) and v.ndim > 0
                      and v.shape[0] > 1 else v) for k, v in extra.items()}
        out.append([row, sliced])
    return out
