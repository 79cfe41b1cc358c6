"""ART's options (the ``art`` config section, ``--art.*``), beside :mod:`.art`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ....policies.fields import check_values, option

if TYPE_CHECKING:
    from ..config import TrainConfig


@dataclass
class ARTConfig:
    """ART: continuous-time actor-critic over the clock speed (no reward model; REFERENCE.md
    section 2). ``batch`` contexts give one trajectory each per iteration (the paper: 1)."""

    solver: str = option("actor_critic", choices=("actor_critic", "direct"))
    """``actor_critic``: the paper's ART-RL. ``direct``: no RL; trajectories on the uniform
    clock measure the mean |Q| on each grid cell of psi, and the deployed clock is the exact
    minimiser of ART's objective for a global clock (the schedule ART-RL converges to in
    theory; policies.art.equidistributed_schedule)."""
    grid: int = option(100, ge=2, le=100_000)
    """K: points of the training time grid (dt = horizon / grid)."""
    horizon: float = option(1.0, gt=0)
    """T: the clock's total time; the constraint is psi(T) = T."""
    lam: float = option(0.1, gt=0)
    """lambda: exploration temperature; the speed's variance is lam / max(|Q|, eps) and the
    critic is V = NN + lam * t."""
    eps: float = option(1e-6, gt=0)
    """Floor on |Q| in the policy variance."""
    lr: float = option(1e-4, gt=0, le=10)
    """Adam learning rate of actor and critic (the engine's schedule scales it as it scales
    lr)."""
    critic_lr: float | None = option(None, gt=0, le=10)
    """Adam learning rate of the critic (None: ``lr``)."""
    gamma_lr: float = option(0.1, ge=0)
    """Step of the Lagrange multiplier: gamma += gamma_lr * mean(psi(T) - T)."""
    penalty: float = option(10.0, ge=0)
    """rho of the augmented Lagrangian: a terminal reward -rho/2 (psi(T) - T)^2 (0: the
    paper's plain Lagrangian, which oscillates between a racing and a stalled clock)."""
    natural_gradient: bool = True
    """Scale each step's actor score by the policy variance (the natural gradient of the
    Gaussian mean: same fixed point, far less variance from the high-|Q| steps whose score
    ``(theta - mu) |Q| / lam`` is large). Off: the paper's plain score."""
    trace: float = option(0.0, ge=0, le=1)
    """Eligibility trace of the advantage that drives actor and critic: ``A_k = sum_j
    trace^(j-k) delta_j`` (0: the paper's one-step TD error; 1: the Monte Carlo return to go
    minus the critic, which needs no accurate value slope dV/dpsi from the critic)."""
    project: bool = False
    """Project the actor's step onto speed changes that keep the clock's total (the constraint
    psi(T) = T): the per-step gradient on the mean speed minus its mean over the batch's active
    steps. This is the Lagrange multiplier taken to its fast-time-scale limit (the value that
    makes every actor step constraint-neutral) instead of a dual step that lags the actor."""
    restore: float = 10.0
    """With ``project``: the (normalised) projected step is pulled back towards psi(T) = T
    by ``restore * (psi(T) - T)`` on every step of the trajectory."""
    trapezoid: bool = False
    """Charge each step the mean |Q| of its two ends (trapezoid rule) instead of the |Q| at
    its start: on a coarse grid a fast step otherwise jumps over a high-|Q| stretch for free."""
    critic_warmup: int = option(0, ge=0, le=10_000_000)
    """Iterations at the start in which only the critic learns (actor and gamma frozen), so
    that the actor's first steps follow a fitted value slope dV/dpsi."""
    width: int = option(128, ge=1, le=16_384)
    """Width of the actor's and the critic's MLPs."""
    layers: int = option(3, ge=1, le=64)
    """Linear layers of each MLP (Softplus between them)."""
    features: bool = True
    """Actor and critic read the context features (initial noise, prompt) through an
    encoder: an instance-level clock. Off: a clock of (t, psi) only."""
    deploy: str = option("global", choices=("global", "instance"))
    """What the policy file holds: ``global`` (the distilled clock, one schedule; the paper)
    or ``instance`` (the clock of each context's features)."""
    distill_contexts: int = option(256, ge=1, le=1_000_000)
    """Training-pool contexts the global clock is distilled over (mean speed)."""
    sigma_floor: float = option(1e-3, gt=0, lt=1)
    """Smallest flow time at which the field is evaluated (an exploring clock may overshoot)."""
    q_method: str = option("auto", choices=("auto", "forward_ad", "func", "double_backward"))
    """How Q's JVP is taken: ``auto`` (the back-end's choice), ``forward_ad`` (dual tensors),
    ``func`` (torch.func.jvp) or ``double_backward`` (two reverse-mode passes)."""
    error_signal: str = option("jvp", choices=("jvp", "finite_difference"))
    """How |Q| is computed: ``jvp``, the exact forward-mode JVP (``q_method``; on a ComfyUI
    model float32 tangents under MATH attention, ~35x a bf16 forward at real size), or
    ``finite_difference``, the one-sided difference ``(v(x + h v, sigma + h) - v) / h`` along
    the flow: ONE extra plain forward in the model's own dtype and attention kernel (docs/art.md,
    "Cheap error signal", for its measured error against the JVP)."""
    fd_step: float | None = option(None, gt=0, lt=0.5)
    """h of ``finite_difference`` in flow time (None: the step measured best for the model's
    compute dtype, ``training.rl.flow_error.FD_STEPS``: 1e-3 float32, 3e-2 bf16)."""
    min_speed: float = option(1e-3, gt=0, lt=1)
    """Floor on the deployed clock's speed (every step moves forward)."""

    def check(self, prefix: str) -> None:
        """Types, ranges and choices of the section's own fields."""
        check_values(self, prefix)

    def validate(self, config: TrainConfig) -> None:
        """Raise ``ValueError`` for options the run cannot use."""
        if self.deploy == "instance" and not self.features:
            raise ValueError("art.deploy 'instance' needs art.features (a clock of the "
                             "context's features).")
        if self.deploy == "instance" and self.solver == "direct":
            raise ValueError("art.solver 'direct' gives one global clock; use art.deploy "
                             "'global'.")


__all__ = ["ARTConfig"]
