"""The sampling space of a ComfyUI model, read from its own ``model_sampling`` object.

ComfyUI builds ``model_sampling`` as ``class ModelSampling(<sampling>, <prediction>)``
(``comfy.model_base.model_sampling``), from the config class's ``sampling_settings`` and the
model type read from the checkpoint (SDXL's ``v_pred`` / ``ztsnr`` keys, SD 2.x's
v-prediction test, ...), and nodes such as ``ModelSamplingSD3`` / ``ModelSamplingFlux`` /
``ModelSamplingDiscrete`` replace it. Reading the object itself therefore tells what a
schedule on this model means, whatever the family row says:

* ``flow``: rectified flow, sigma in [0, 1] (``ModelSamplingDiscreteFlow`` with its
  ``shift`` and ``multiplier``: the network sees ``multiplier * sigma``; ``ModelSamplingFlux``
  with its ``shift`` = mu, the network sees sigma);
* ``discrete_eps`` / ``discrete_v``: the 1000-step DDPM schedule of SD 1.x / 2.x / SDXL
  (``ModelSamplingDiscrete``), predicting eps or v, with ``zsnr`` for zero-terminal SNR;
* ``edm`` / ``edm_v``: continuous EDM sigmas (Playground 2.5, EDM v-prediction);
* ``other`` for anything else (Stable Cascade, Cosmos, LCM / x0 patches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingSpace:
    """What a model's sigmas mean."""

    kind: str
    """``flow``, ``discrete_eps``, ``discrete_v``, ``edm``, ``edm_v`` or ``other``."""
    prediction: str
    """What the network predicts: ``eps``, ``v``, ``edm``, ``flow`` (CONST), ``x0``,
    ``lcm``..."""
    sampling: str
    """The ``model_sampling`` base that maps time to sigma (``ModelSamplingDiscreteFlow``,
    ``ModelSamplingFlux``, ``ModelSamplingDiscrete``, ``ModelSamplingContinuousEDM``...)."""
    sigma_min: float
    sigma_max: float
    shift: float | None = None
    """Flow time shift (SD3-style ``shift``, or Flux-style mu)."""
    multiplier: float | None = None
    """Flow models: the network's timestep is ``multiplier * sigma`` (1000 for SD3, 1 for
    Flux-style sampling)."""
    zero_terminal_snr: bool = False
    """Discrete models rescaled to zero terminal SNR (``ztsnr`` checkpoints, ``zsnr=True``)."""
    sigma_data: float = 1.0

    @property
    def is_flow(self) -> bool:
        return self.kind == "flow"

    @property
    def is_discrete(self) -> bool:
        return self.kind in ("discrete_eps", "discrete_v")


_PREDICTIONS = {"IMG_TO_IMG": "x0", "X0": "x0", "LCM": "lcm", "EDM": "edm", "V_PREDICTION": "v",
                "CONST": "flow", "COSMOS_RFLOW": "flow", "EPS": "eps"}
"""Prediction classes of ``comfy.model_sampling`` (and ``LCM`` of ComfyUI's
``ModelSamplingDiscrete`` node); the first one in the object's MRO wins (EDM is a
V_PREDICTION, V_PREDICTION / X0 / LCM are EPS)."""

_SAMPLINGS = ("ModelSamplingDiscreteFlow", "ModelSamplingFlux", "StableCascadeSampling",
              "ModelSamplingDiscreteEDM", "ModelSamplingDiscrete", "ModelSamplingCosmosRFlow",
              "ModelSamplingContinuousV", "ModelSamplingContinuousEDM")


def _first_base(sampling: Any, names: tuple[str, ...] | dict[str, str]) -> str | None:
    """The first class of the object's MRO named in ``names`` (most specific first)."""
    return next((c.__name__ for c in type(sampling).__mro__ if c.__name__ in names), None)


def is_discrete_sampling(sampling: Any) -> bool:
    """True when a ``model_sampling`` object is discrete-time: a ``ModelSamplingDiscrete``
    (or a subclass other than Stable Cascade's), whose sigmas are its ``sigmas`` table of
    DDPM timesteps, whatever it predicts (eps, v, and also ComfyUI's LCM / x0 patches); the
    ``discrete_eps`` / ``discrete_v`` kinds of :func:`sampling_space` are these. Read from
    the object's classes alone (no tensor is touched)."""
    return _first_base(sampling, _SAMPLINGS) in ("ModelSamplingDiscrete",
                                                 "ModelSamplingDiscreteEDM")


def sampling_space(model_or_sampling: Any) -> SamplingSpace:
    """The :class:`SamplingSpace` of a ComfyUI MODEL or of its ``model_sampling`` object."""
    sampling = model_or_sampling
    if hasattr(model_or_sampling, "get_model_object"):
        sampling = model_or_sampling.get_model_object("model_sampling")
    prediction = _PREDICTIONS.get(_first_base(sampling, _PREDICTIONS), "unknown")
    base = _first_base(sampling, _SAMPLINGS) or type(sampling).__name__
    lo, hi = float(sampling.sigma_min), float(sampling.sigma_max)
    sigma_data = float(getattr(sampling, "sigma_data", 1.0))
    if base in ("ModelSamplingDiscreteFlow", "ModelSamplingFlux") and prediction == "flow":
        multiplier = float(getattr(sampling, "multiplier", 1.0)) \
            if base == "ModelSamplingDiscreteFlow" else 1.0
        return SamplingSpace("flow", prediction, base, lo, hi, shift=float(sampling.shift),
                             multiplier=multiplier, sigma_data=sigma_data)
    if base in ("ModelSamplingDiscrete", "ModelSamplingDiscreteEDM") \
            and prediction in ("eps", "v"):
        return SamplingSpace(f"discrete_{prediction}", prediction, base, lo, hi,
                             zero_terminal_snr=bool(getattr(sampling, "zsnr", False)),
                             sigma_data=sigma_data)
    if base in ("ModelSamplingContinuousEDM", "ModelSamplingContinuousV") \
            and prediction in ("edm", "v", "eps"):
        kind = "edm" if prediction in ("edm", "eps") else "edm_v"
        return SamplingSpace(kind, prediction, base, lo, hi, sigma_data=sigma_data)
    return SamplingSpace("other", prediction, base, lo, hi, sigma_data=sigma_data)


__all__ = ["SamplingSpace", "is_discrete_sampling", "sampling_space"]
