"""The Learned Sampler node (V3 API): a learned policy as a ComfyUI ``SAMPLER``.

Plugs into ``SamplerCustomAdvanced`` (or ``SamplerCustom``) in place of ``KSamplerSelect``.
With an AdaGen (step-wise) policy it decides every step of every image while sampling, within
the incoming SIGMAS' start, end and length; with a one-shot policy (Dirichlet, ART's clocks)
it gives every image of a batch its own schedule. The maths is in
``comfy_bridge/policy_sampler.py``.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..comfy_bridge.features import text_features
from ..comfy_bridge.policy_sampler import policy_ksampler
from ..comfy_bridge.sampler import RULES
from .input_checks import number_in_range
from .policy_cache import get_policy
from .policy_choice import policy_options, policy_tooltip
from .schedule_nodes import FOLDER, _policy_path, check_policy, policy_files

CATEGORY = "sampling/custom_sampling/samplers"


class LearnedSampler(io.ComfyNode):
    """A SAMPLER whose sigmas a learned policy chooses for every image of the batch."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_LearnedSampler",
            display_name="Learned Sampler",
            category=CATEGORY,
            description="A sampler whose steps a learned policy chooses for each image: AdaGen "
                        "policies decide every step while sampling, one-shot policies give "
                        "every image of the batch its own schedule.",
            inputs=[
                io.Combo.Input("policy",
                               options=policy_options(files := policy_files("sampler")),
                               tooltip=policy_tooltip(files, "sampler")),
                io.Conditioning.Input("positive", tooltip="The positive prompt's conditioning "
                                      "(the same as the guider's); its text features feed the "
                                      "policy."),
                io.Combo.Input("sampler_name", options=list(RULES), default="euler",
                               tooltip="The update rule of every step (ComfyUI's euler, heun "
                                       "or dpmpp_2m arithmetic, one sigma per image)."),
                io.Combo.Input("mode", options=["mean", "sample"], default="mean",
                               tooltip="mean: the policy's deterministic choice; sample: a "
                                       "draw, seeded by the sampler's noise seed."),
                io.Float.Input("scale", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="AdaGen only: strength of the learned residual on the "
                                       "incoming sigmas (0 follows them; below 1 keeps closer "
                                       "to them, the fidelity-diversity knob)."),
            ],
            outputs=[io.Sampler.Output(tooltip="Connect to SamplerCustomAdvanced's sampler "
                                               "input; the SIGMAS input gives the start, end "
                                               "and number of steps.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, policy: str) -> bool | str:
        # the type only: execute reports a missing or unusable policy (see LearnedSchedule)
        if not isinstance(policy, str):
            return f"policy must be the name of a policy file, got {policy!r}."
        return True

    @classmethod
    def fingerprint_inputs(cls, policy: str, **kwargs):
        path = folder_paths.get_full_path(FOLDER, policy)
        return os.path.getmtime(path) if path else None

    @classmethod
    def execute(cls, policy: str, positive, sampler_name: str = "euler", mode: str = "mean",
                scale: float = 1.0) -> io.NodeOutput:
        if sampler_name not in RULES:
            raise ValueError(f"sampler_name must be one of {', '.join(RULES)}, got "
                             f"{sampler_name!r}.")
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        scale = number_in_range("scale", scale, 0.0, 4.0)
        check_policy(policy, "sampler")
        loaded = get_policy(_policy_path(policy))
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
        sampler = policy_ksampler(loaded, text_features(positive), rule=sampler_name,
                                  mode=mode, scale=scale, name=os.path.splitext(policy)[0],
                                  node_id=node_id)
        return io.NodeOutput(sampler)


NODES = [LearnedSampler]
