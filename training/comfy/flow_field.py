"""A ComfyUI model's probability-flow field, differentiable, for ART's error signal.

ComfyUI's samplers run under ``no_grad`` and hand the sampler function only the *denoised*
estimate ``x0 = x - sigma v``. ART needs the velocity ``v(x, sigma)`` itself, forward-AD capable
(:mod:`training.rl.flow_error`), so:

* the model is cloned with its ``model_sampling`` object patched (ComfyUI's own
  ``add_object_patch``, as the ``ModelSamplingSD3`` node does) so that ``calculate_denoised``
  returns the network's output, the flow velocity, instead of ``x - sigma v``: the "denoised"
  the guider combines with CFG is then the velocity, exactly, at every sigma (CFG is linear,
  so this is the CFG velocity; ``(x - x0_pred) / sigma`` is the same vector in exact arithmetic
  but loses precision as sigma -> 0, hence the network's velocity output directly);
* our own sampler function (a ComfyUI ``KSAMPLER``) runs inside ``CFGGuider.sample`` (model
  loading, conditioning, CFG, Flux guidance: ComfyUI's own code) and hands the caller's
  function a :class:`~training.rl.flow_error.FlowField` whose ``velocity`` calls the guider;
  the caller runs its own Euler loop on it (an ART trajectory, a finite-difference check);
* the error signal's forward-mode JVPs run with PyTorch's MATH attention
  (:func:`~training.rl.flow_error.ad_capable_attention`, the field's ``jvp_context``): the
  fused SDPA kernels have no forward AD. On a GPU that is slower than ComfyUI's default
  attention; bf16 weights need float32 tangents cast (not done here: this path is exercised
  on CPU, float32). Plain calls, and so the finite-difference error signal, keep ComfyUI's
  usual attention and the model's own dtype (:func:`compute_dtype`).

ComfyUI is imported lazily; this module belongs to the ComfyUI back-end.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from ...comfy_bridge.sigmas import is_flow_sampling, sampling_of, sigma_range
from ..rl.flow_error import FlowField, ad_capable_attention


def velocity_model(model: Any) -> Any:
    """A clone of a flow MODEL whose "denoised" output is the flow velocity ``dx/dsigma``
    (model sigma space). ``ValueError`` for a model that is not a rectified flow."""
    sampling = sampling_of(model)
    if not is_flow_sampling(sampling):
        raise ValueError("The flow field needs a rectified-flow model (Flux, SD3, Qwen-Image... "
                         "the flow families).")

    def calculate_denoised(self: Any, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        return model_output

    cls = type(f"Velocity{type(sampling).__name__}", (type(sampling),),
               {"calculate_denoised": calculate_denoised})
    patched = copy.copy(sampling)  # shares the buffers; only the class differs
    patched.__class__ = cls
    clone = model.clone()
    clone.add_object_patch("model_sampling", patched)
    return clone


class FlowFieldSampler:
    """A k-diffusion-style sampler function that hands ``fn`` the guider's flow field.

    ``fn(field)`` returns a dict of tensors (kept in :attr:`result`); the sampler returns its
    input latent unchanged (the caller integrates on its own)."""

    def __init__(self, fn: Callable[[FlowField], dict[str, torch.Tensor]], scale: float,
                 dtype: torch.dtype | None = None):
        self.fn = fn
        self.scale = scale
        self.dtype = dtype
        self.result: dict[str, torch.Tensor] | None = None

    def __call__(self, model: Any, x: torch.Tensor, sigmas: torch.Tensor,
                 extra_args: dict | None = None, callback: Any = None,
                 disable: bool | None = None) -> torch.Tensor:
        extra = {} if extra_args is None else extra_args
        scale = self.scale

        def velocity(xx: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            # flow time t -> model sigma = scale * t; dx/dt = scale * dx/dsigma
            return model(xx, sigma * scale, **extra) * scale

        self.result = self.fn(FlowField(start=x.detach().clone(), velocity=velocity,
                                        jvp_context=ad_capable_attention,
                                        compute_dtype=self.dtype))
        return x


def compute_dtype(model: Any) -> torch.dtype | None:
    """The dtype a MODEL's network computes in: ComfyUI's manual-cast dtype, else its
    weights' dtype (None when neither is known)."""
    base = model.model
    cast = getattr(base, "manual_cast_dtype", None)
    if cast is not None:
        return cast
    dtype = base.get_dtype() if hasattr(base, "get_dtype") else None
    if dtype is None:
        param = next(iter(base.diffusion_model.parameters()), None)
        dtype = None if param is None else param.dtype
    return dtype


def run_flow_field(model: Any, positive: list, negative: list | None, cfg: float,
                   noise: torch.Tensor, fn: Callable[[FlowField], dict[str, torch.Tensor]],
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Run ``fn`` on the flow field of a batch: ``positive`` / ``negative`` CONDITIONING with
    the batch's rows, ``noise [N, C, H, W]`` the initial x (flow time 1). Outside inference
    mode, so forward-mode AD works."""
    import comfy.samplers

    from .sampling import make_guider

    vmodel = velocity_model(model)
    _, sigma_max = sigma_range(sampling_of(model))
    sampler = FlowFieldSampler(fn, sigma_max, compute_dtype(model))
    guider = make_guider(vmodel, positive, negative, cfg)
    with torch.inference_mode(False):
        guider.sample(noise, torch.zeros_like(noise), comfy.samplers.KSAMPLER(sampler),
                      torch.tensor([sigma_max, 0.0]), disable_pbar=True, seed=int(seed))
    assert sampler.result is not None
    return sampler.result


__all__ = ["velocity_model", "FlowFieldSampler", "compute_dtype", "run_flow_field"]
