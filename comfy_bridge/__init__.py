"""The ComfyUI bridge: what the nodes and the ComfyUI back-end of the trainer share.

* :mod:`.features`: model family (from :mod:`policies.families`, plain errors for unsupported
  models), x_T through ComfyUI's own noise object, CONDITIONING -> text features;
* :mod:`.sigmas`: flow time <-> a model's sigmas, ComfyUI's default schedules
  (``BasicScheduler``'s step and denoise arithmetic);
* :mod:`.service`: policy -> SIGMAS for this model, prompt and noise (node, eval, sample grids);
* :mod:`.sampler`: the step loop, once, as a ``KSAMPLER`` sampler function driven by an actor.

Imported by ``nodes/`` and ``training/comfy/``, never by ``policies/`` or the RL core.
ComfyUI itself is imported lazily, inside the functions that need it.
"""
