"""Calibration on a ComfyUI MODEL: the adapter between ComfyUI and the pure-torch
:mod:`calibration` core, for the ``calibrate`` command and for a node.

Pure inputs: MODEL, positive / negative CONDITIONING (batch 1, or one row per context),
``cfg`` and the start noise ``[N, C, h, w]`` (ComfyUI's ``RandomNoise`` for each seed, before
the model's noise scaling). Everything runs inside one ``CFGGuider.sample`` call with our own
sampler function (a ``KSAMPLER``), so model loading, patches (LoRA...), conditioning, CFG and
Flux guidance are ComfyUI's own code; the function gets the guided ``x0`` prediction
``denoise(x, sigma)`` for the whole batch, differentiable (autograd is enabled inside, also
when the caller runs under ComfyUI's inference mode) and the start ``x`` after
``noise_scaling``. Flow time <-> the model's sigmas is the bridge's map
(:func:`.sigmas.flow_to_model`).

Two experts (Wan 2.2 A14B: ``low_model`` and ``boundary``, a model sigma): the low-noise
expert's guided denoiser is opened the same way inside the high-noise one's sampler call, and
the problem's denoiser takes each context's step to the high-noise expert while its sigma lies
above the boundary and to the low-noise one from it on, what the two-sampler graph does
(:mod:`training.comfy.experts`; ComfyUI's latent round trip between the two samplers aside).
The problem's sigmas get one step exactly on the boundary
(:func:`policies.experts.snap_to_boundary`, the node's rule), so the search and the gradients
score what the graph runs, and the calibrated flow schedules are returned snapped.

For a node: :func:`calibrate` takes ``progress(done, total)`` (model calls: drive
``comfy.utils.ProgressBar``) and ``should_stop()`` (e.g. ``comfy.model_management.
processing_interrupted``; a stop raises :class:`calibration.problem.Stopped`), returns a
deterministic result for the same inputs, and remembers results by
:func:`calibration_key` (model identity + conditioning + noise + cfg + options) so that a
second call is instant; the teacher's many-step states are also cached on disk
(``cache_dir``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import torch

from ..calibration.problem import Problem
from ..calibration.run import CalibrationOptions, CalibrationResult, calibrate_global
from ..calibration.sampler import euler
from ..policies.experts import snap_to_boundary
from .sampling_space import sampling_space
from .sigmas import default_flow, flow_to_model, model_to_flow, sampling_of

_RESULTS: dict[str, CalibrationResult] = {}
"""Results of :func:`calibrate` by :func:`calibration_key` (this process)."""
RESULT_LIMIT = 32


def _tensor_digest(h: Any, t: torch.Tensor, samples: int = 4096) -> None:
    flat = t.detach().flatten()
    step = max(1, flat.numel() // samples)
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(flat[::step][:samples].float().cpu().numpy().tobytes())


def model_identity(model: Any) -> str:
    """A stable digest of a MODEL: its class, sampling space, a strided sample of its weights
    (16 tensors spread over the state dict) and of its patches (LoRA...) with strengths."""
    h = hashlib.sha256()
    inner = model.model
    h.update(type(inner).__name__.encode())
    h.update(repr(sampling_space(model)).encode())
    sd = inner.diffusion_model.state_dict()
    keys = sorted(sd)
    for k in keys[:: max(1, len(keys) // 16)]:
        h.update(k.encode())
        _tensor_digest(h, sd[k])
    for key in sorted(getattr(model, "patches", {}) or {}):
        h.update(key.encode())
        for patch in model.patches[key]:
            h.update(repr(patch[0]).encode())  # strength
            value = patch[1]
            tensors = value if isinstance(value, (tuple, list)) else (value,)
            for t in tensors:
                if torch.is_tensor(t):
                    _tensor_digest(h, t, 256)
    return h.hexdigest()[:32]


def conditioning_identity(conditioning: Any) -> str:
    """A digest of a CONDITIONING (tensors and plain options)."""
    h = hashlib.sha256()
    for tokens, extra in conditioning or []:
        _tensor_digest(h, tokens)
        for key in sorted(extra):
            value = extra[key]
            if torch.is_tensor(value):
                h.update(key.encode())
                _tensor_digest(h, value)
            elif isinstance(value, (int, float, str, bool)) or value is None:
                h.update(f"{key}={value!r}".encode())
    return h.hexdigest()[:32]


def problem_identity(model: Any, positive: Any, negative: Any, cfg: float,
                     noise: torch.Tensor) -> str:
    """What the teacher depends on: model, conditioning, guidance and the start noise."""
    h = hashlib.sha256()
    _tensor_digest(h, noise, 1 << 16)
    return "|".join([model_identity(model), conditioning_identity(positive),
                     conditioning_identity(negative), f"cfg={float(cfg)!r}", h.hexdigest()[:32]])


def calibration_key(model: Any, positive: Any, negative: Any, cfg: float, noise: torch.Tensor,
                    options: CalibrationOptions, teacher_steps: int) -> str:
    """The stable cache key of a calibration: its inputs' identity and every option."""
    text = json.dumps([problem_identity(model, positive, negative, cfg, noise),
                       options.key(), int(teacher_steps)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _clone_cond(conditioning: Any) -> list | None:
    """A CONDITIONING with its tensors copied out of inference mode (autograd may save
    them)."""
    if conditioning is None:
        return None
    out = []
    for tokens, extra in conditioning:
        out.append([tokens.clone(), {k: (v.clone() if torch.is_tensor(v) else v)
                                     for k, v in extra.items()}])
    return out


def normal_weights(module: torch.nn.Module) -> int:
    """Replace the parameters and buffers of ``module`` that are inference tensors (a model
    loaded, or patched for sampling, inside ComfyUI's ``torch.inference_mode``, as in a
    node) by normal copies of the same values, one tensor at a time, so that autograd may
    save them for the backward; returns how many were replaced (0 outside ComfyUI's
    executor)."""
    n = 0
    with torch.inference_mode(False):
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.is_inference():
                    mod._parameters[name] = torch.nn.Parameter(p.clone(),
                                                               requires_grad=p.requires_grad)
                    n += 1
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_inference():
                    mod._buffers[name] = b.clone()
                    n += 1
    return n


def _in_guider(model: Any, positive: Any, negative: Any, cfg: float, noise: torch.Tensor,
               fn: Callable[[Any, torch.Tensor], Any], seed: int) -> Any:
    """``fn(denoise, x)`` inside one ``CFGGuider.sample`` call of ``model`` (``denoise``: its
    guided ``x0`` prediction, ``x``: the start after noise scaling); what ``fn`` returns."""
    import comfy.samplers

    sampling = sampling_of(model)
    guider = comfy.samplers.CFGGuider(model)
    neg = _clone_cond(negative) if negative is not None and cfg != 1.0 else []
    guider.set_conds(_clone_cond(positive), neg)
    guider.set_cfg(float(cfg))
    box: dict[str, Any] = {}

    def sampler_function(k_model: Any, x: torch.Tensor, sigmas: torch.Tensor,
                         extra_args: dict | None = None, callback: Any = None,
                         disable: bool | None = None) -> torch.Tensor:
        extra = dict(extra_args or {})
        normal_weights(model.model)  # loaded / patched under inference mode in a node

        def denoise(xx: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return k_model(xx, sigma.to(device=xx.device, dtype=xx.dtype), **extra)

        box["out"] = fn(denoise, x.detach().clone())
        return x

    sigma_max = float(flow_to_model(sampling, torch.ones(1, dtype=torch.float64)))
    guider.sample(noise, torch.zeros_like(noise), comfy.samplers.KSAMPLER(sampler_function),
                  torch.tensor([sigma_max, 0.0]), disable_pbar=True, seed=int(seed))
    return box["out"]


def _experts(high: Any, low: Any, boundary: float) -> Any:
    """One denoiser of two experts: each context's call to ``high`` while its sigma lies
    above ``boundary``, to ``low`` from it on."""
    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        upper = sigma > boundary
        if bool(upper.all()):
            return high(x, sigma)
        if not bool(upper.any()):
            return low(x, sigma)
        out = torch.empty_like(x)
        out[upper] = high(x[upper], sigma[upper])
        out[~upper] = low(x[~upper], sigma[~upper])
        return out

    return denoise


def snapped_to_sigma(sampling: Any, boundary: float | None) -> Callable[[torch.Tensor],
                                                                          torch.Tensor]:
    """Flow schedules ``[..., L+1]`` -> model sigmas, with one step on the experts'
    ``boundary`` where there is one (schedules of 2 or more steps)."""
    def to_sigma(t: torch.Tensor) -> torch.Tensor:
        sig = flow_to_model(sampling, t.double())
        if boundary is None or sig.shape[-1] < 3:
            return sig
        return snap_to_boundary(sig, boundary)[0]

    return to_sigma


def snap_flow(model: Any, flow: torch.Tensor, boundary: float | None) -> torch.Tensor:
    """A flow schedule with the experts' boundary step in it (as the graph runs it)."""
    sampling = sampling_of(model)
    if boundary is None:
        return flow
    return model_to_flow(sampling, snapped_to_sigma(sampling, boundary)(flow)).to(flow.dtype)


def run_in_model(model: Any, positive: Any, negative: Any, cfg: float, noise: torch.Tensor,
                 fn: Callable[[Problem], Any], identity: str = "",
                 features: dict[str, torch.Tensor] | None = None, seed: int = 0,
                 low_model: Any = None, boundary: float | None = None) -> Any:
    """Run ``fn(problem)`` on the model's guided denoiser for a batch (see the module
    docstring; ``low_model`` and ``boundary``: two experts) and return what it returns."""
    sampling = sampling_of(model)
    to_sigma = snapped_to_sigma(sampling, boundary if low_model is not None else None)

    def run(denoise: Any, x: torch.Tensor) -> Any:
        problem = Problem(start=x, denoise=denoise, to_sigma=to_sigma, features=features,
                          identity=identity)
        with torch.enable_grad():
            return fn(problem)

    with torch.inference_mode(False):
        noise = noise.clone()
        if low_model is None:
            return _in_guider(model, positive, negative, cfg, noise, run, seed)
        if boundary is None:
            raise ValueError("Two experts need their boundary sigma.")

        def high_then_low(high: Any, x: torch.Tensor) -> Any:
            return _in_guider(low_model, positive, negative, cfg, noise,
                              lambda low, _x: run(_experts(high, low, float(boundary)), x),
                              seed)

        return _in_guider(model, positive, negative, cfg, noise, high_then_low, seed)


def teacher_grid(model: Any, teacher_steps: int, scheduler: str = "simple") -> torch.Tensor:
    """The teacher's grid: the model's ``scheduler`` at ``teacher_steps``, in flow time."""
    grid = default_flow(model, teacher_steps, scheduler).double()
    grid[0], grid[-1] = 1.0, 0.0
    return grid


def calibrate(model: Any, positive: Any, negative: Any, cfg: float, noise: torch.Tensor,
              options: CalibrationOptions, *, teacher_steps: int = 30,
              teacher_scheduler: str = "simple", cache_dir: str | None = None,
              progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              features: dict[str, torch.Tensor] | None = None,
              then: Callable[[Problem, CalibrationResult], Any] | None = None,
              use_memory: bool = True, low_model: Any = None,
              boundary: float | None = None) -> CalibrationResult:
    """Calibrate global schedules (flow time, by step count) for this model, conditioning
    and noise; ``then(problem, result)`` runs afterwards in the same model context (e.g. a
    per-image fit), its value kept in ``result.extra``. Results are remembered by
    :func:`calibration_key` (``use_memory``). ``low_model`` and ``boundary``: two experts
    (see the module docstring); the schedules come back with their boundary step."""
    options.check()
    experts = "" if low_model is None else \
        f"|low={model_identity(low_model)}|boundary={float(boundary or 0)!r}"
    key = calibration_key(model, positive, negative, cfg, noise, options, teacher_steps) + \
        (hashlib.sha256(experts.encode()).hexdigest()[:8] if experts else "")
    if use_memory and then is None and key in _RESULTS:
        if progress is not None:
            progress(1, 1)
        return _RESULTS[key]
    grid = teacher_grid(model, teacher_steps, teacher_scheduler)
    identity = problem_identity(model, positive, negative, cfg, noise) + \
        f"|teacher={teacher_scheduler}" + experts

    def run(problem: Problem) -> CalibrationResult:
        result = calibrate_global(
            problem, grid, options, cache_dir=cache_dir, progress=progress,
            should_stop=should_stop,
            default_flow=lambda steps: default_flow(model, steps, teacher_scheduler))
        result.key = key
        if low_model is not None:
            for r in result.schedules.values():
                r.flow = snap_flow(model, r.flow, boundary)
        if then is not None:
            result.extra = then(problem, result)
        return result

    result = run_in_model(model, positive, negative, cfg, noise, run, identity=identity,
                          features=features, low_model=low_model, boundary=boundary)
    if use_memory and then is None:
        if len(_RESULTS) >= RESULT_LIMIT:
            _RESULTS.pop(next(iter(_RESULTS)))
        _RESULTS[key] = result
    return result


def sample_few_step(model: Any, positive: Any, negative: Any, cfg: float, noise: torch.Tensor,
                    schedules: dict[str, torch.Tensor], low_model: Any = None,
                    boundary: float | None = None) -> dict[str, torch.Tensor]:
    """The Euler results ``[N, ...]`` (CPU) of named flow schedules (``[L+1]`` shared or
    ``[N, L+1]`` per context), no gradient, as a sampler node outputs them (the latent
    format's ``process_out`` applied: what the VAE decodes and the trainer's rollouts give):
    what the evaluation table compares (two experts: every schedule with its boundary
    step)."""
    out_of_sampler = model.model.process_latent_out

    def run(problem: Problem) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {name: out_of_sampler(euler(problem, problem.sigmas(flow).to(
                problem.start.device))).float().cpu() for name, flow in schedules.items()}

    return run_in_model(model, positive, negative, cfg, noise, run, low_model=low_model,
                        boundary=boundary)


__all__ = ["model_identity", "conditioning_identity", "problem_identity", "calibration_key",
           "normal_weights", "snapped_to_sigma", "snap_flow", "run_in_model", "teacher_grid",
           "calibrate", "sample_few_step"]
