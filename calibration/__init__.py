"""Calibration: a schedule for one model from the model alone, by matching its own many-step
result (pure torch, no ComfyUI import, nothing from ``training/``).

The seam: a back-end (the ComfyUI bridge, :mod:`comfy_bridge.calibration`, or the analytic
testbed) describes a :class:`~.problem.Problem` (start noise, a denoiser ``x0(x, sigma)``, the
map from flow time to the model's sigmas, the policy features); this package computes the
teacher's many-step targets (:mod:`.teacher`, cached on disk), searches one global schedule
over the teacher's grid (:mod:`.search`, OSS-style dynamic programming, forwards only), refines
it by gradients through the few-step sampler (:mod:`.fit`, LD3-style, activation
checkpointing) and trains a per-image policy the same way (INDIS-style). :mod:`.run` ties them
together with a budget, progress and cancellation.
"""
