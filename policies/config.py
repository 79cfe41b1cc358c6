"""The policy section of the trainer's config: the network and its Dirichlet distribution.

Owned here, beside the policies that read it; the trainer nests it as ``config.policy`` (flags
``--hidden``, ``--concentration``...; ``"policy"`` in a run's ``config.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .fields import check_number, check_values, option
from .latent_encoder import PRESETS

CONCENTRATION_FORMS = ("softplus", "scheduled")
"""``PolicyConfig.concentration`` values (the ``concentration`` of
:class:`policies.dirichlet.DirichletPolicy`)."""


@dataclass
class PolicyConfig:
    """Policy options: network size and the Dirichlet policy's concentration."""

    hidden: int = option(128, ge=1, le=16_384)
    """Width of the policy's encoder and head."""
    depth: int = option(2, ge=1, le=64)
    """Number of FiLM blocks in the vector encoder."""
    encoder_preset: str = option("auto", choices=("auto", *PRESETS))
    """Policy encoder size preset: auto (flux / sd3 by model family), tiny, or small (one
    stride-2 level: latents down to 4x4, e.g. the digits model at 32x32)."""
    init_schedule: str = option("default", choices=("default", "uniform"))
    """Where the policy's mean schedule starts: ``default`` (the model's own schedule, on
    back-ends that have one: comfy) or ``uniform`` (uniform in flow time)."""
    init_concentration: float | None = None
    """Total Dirichlet concentration at initialisation (None: 40 with the ``scheduled``
    concentration, 8 * (L + 1) with ``softplus``)."""
    concentration: str = option("scheduled", choices=CONCENTRATION_FORMS)
    """How the Dirichlet policy parameterises its concentrations: ``scheduled`` (separate
    mean and total concentration; the concentration is not learned but moves geometrically
    from init_concentration to final_concentration over the run) or ``softplus`` (the
    paper's ``alpha = softplus(head)``: its concentration runs away under REINFORCE and can
    collapse the policy to one context-independent schedule, bench/results/
    learning_quality.md; runs before this option used it)."""
    final_concentration: float | None = None
    """Total concentration at the last iteration with ``concentration=scheduled`` (None: 10 x
    the initial one, i.e. 40 -> 400)."""

    def validate(self, steps: int) -> None:
        """``ValueError`` naming the field, for ``steps`` sampler steps (L + 1 segments)."""
        check_values(self)
        # the head starts each of the L + 1 concentrations above the Dirichlet's floor (1e-3)
        low = 0.002 * (steps + 1)
        check_number("init_concentration", self.init_concentration, gt=low, le=1e7)
        check_number("final_concentration", self.final_concentration, gt=low, le=1e7)


__all__ = ["CONCENTRATION_FORMS", "PolicyConfig"]
