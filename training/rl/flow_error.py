"""The error signal of ART: how fast the probability-flow field changes along the flow.

A sampler integrates the probability-flow ODE ``dx/dsigma = v(x, sigma)`` from flow time
``sigma = 1`` (noise) down to 0. ART (``../shared/REFERENCE.md`` section 2) runs it on a
reparameterised clock: progress ``psi = 1 - sigma`` moves at speed ``theta = dpsi/ds``, and the
state follows ``dx/ds = theta F(x, psi)`` with ``F = dx/dpsi = -v(x, 1 - psi)``. One Euler step
of length ``h`` then makes the local error ``(h^2 / 2) theta^2 Q`` with

    Q(x, psi) = dF/dpsi along the flow = J_x F . F + dF/dpsi
              = J_x v . v + dv/dsigma          (the same vector, written in sigma)

a Jacobian-vector product plus a time derivative: ONE forward-mode JVP of ``v`` at
``(x, sigma)`` with the tangent ``(v(x, sigma), 1)``. Its primal output is ``v`` itself, so one
velocity call (for the tangent) and one JVP give both. :func:`velocity_and_error` does that with
``torch.autograd.forward_ad`` (default) or ``torch.func.jvp``; :func:`error_size` reduces the
vector to the scalar ``|Q|`` the ART objective weighs (its root mean square over an item's
elements, so that the signal's scale does not grow with the latent's size; the paper leaves the
norm open, and any norm gives the same optimal clock up to the constant the total-time
constraint removes).

A back-end exposes its field as a :class:`FlowField` (:meth:`Backend.flow_rollout`).

Forward-mode AD needs every op on the path to implement it: PyTorch's fused SDPA kernels
(flash / memory-efficient, the default attention of ComfyUI on a GPU) do not, so a back-end
sets :attr:`FlowField.jvp_context` to :func:`ad_capable_attention` (the MATH SDPA backend)
and :func:`velocity_and_error` runs under it.

The cheap signal (:func:`finite_difference_q`, ART's ``--art.error-signal finite_difference``)
is a ONE-sided difference along the same tangent, ``Q ~ (v(x + h v, sigma + h) - v) / h``,
reusing the ``v`` the trajectory has already computed: one plain forward in the model's own
dtype and attention kernel. Its step ``h`` trades truncation (``O(h)``) against cancellation
(``~ eps_dtype |v| / h``): :data:`FD_STEPS` holds the step measured best per model dtype
(``bench/q_finite_difference.py``, docs/art.md). :func:`finite_difference_error` (central, two
calls) stays a test reference in float64. Pure torch; no ComfyUI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("auto", "forward_ad", "func", "double_backward")
"""How the JVP is taken: ``torch.autograd.forward_ad`` dual tensors, ``torch.func.jvp``, or
two reverse-mode passes (``J u = d/dw [(J^T w) . u]``); ``auto`` takes the field's
:attr:`FlowField.jvp_method`."""

ERROR_SIGNALS = ("jvp", "finite_difference")
"""How ART's error signal is computed: the exact JVP (:func:`velocity_and_error`) or the
one-sided difference along the flow (:func:`finite_difference_q`, one extra forward)."""

FD_STEPS: dict[torch.dtype, float] = {torch.float64: 1e-4, torch.float32: 1e-3,
                                      torch.bfloat16: 3e-2, torch.float16: 1e-2}
"""The finite-difference step ``h`` (flow time) per model compute dtype, chosen by the error
sweep of ``bench/q_finite_difference.py`` (docs/art.md, "Cheap error signal")."""

FD_RELATIVE = 0.1
"""Cap of the finite-difference step relative to sigma: ``h(sigma) = min(h, 0.1 sigma)``. The
field changes on the scale of sigma itself near the data end, where a fixed bf16 step (3e-2
at sigma 0.01) would average Q away (on the testbed it halved ART's gain at L = 8)."""


@dataclass
class FlowField:
    """A batch of contexts' probability-flow field, differentiable (forward-AD capable)."""

    start: Tensor
    """``x`` at flow time 1 (the initial noise) ``[N, ...]``."""
    velocity: Callable[[Tensor, Tensor], Tensor]
    """``v(x [N, ...], sigma [N]) = dx/dsigma`` in flow time (the sampler integrates it from
    sigma 1 down to 0)."""
    calls: int = 0
    """Velocity evaluations so far (plain forwards; see :attr:`jvps`)."""
    jvps: int = 0
    """JVP evaluations so far (each costs a few forwards, see the benchmark)."""
    jvp_method: str = "forward_ad"
    """The JVP method ``auto`` picks for this field: forward mode for networks; the small
    analytic testbed prefers ``double_backward`` (in this PyTorch, every forward-AD op that
    mixes a dual and a plain tensor costs ~0.3 ms, which dominates a closed-form field of a
    few dozen elementwise ops but not a network's matrix products)."""
    jvp_context: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    """The context every call of :func:`velocity_and_error` runs in (the ComfyUI field:
    :func:`ad_capable_attention`); plain calls and finite differences run outside it."""
    compute_dtype: torch.dtype | None = None
    """The dtype the model computes in (bf16 weights: ``torch.bfloat16``), which sets the
    default finite-difference step (:data:`FD_STEPS`); None: the dtype of ``start``."""
    sigma_max: float = 1.0
    """The largest flow time the field is defined at: a finite difference that would leave
    it steps the other way."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """One plain velocity evaluation (counted)."""
        self.calls += 1
        return self.velocity(x, sigma)


def velocity_and_error(field: FlowField, x: Tensor, sigma: Tensor,
                       method: str = "forward_ad") -> tuple[Tensor, Tensor]:
    """``(v, Q)`` at ``(x [N, ...], sigma [N])``: the velocity and the error vector
    ``Q = J_x v . v + dv/dsigma`` (the derivative of ``v`` along the flow), both ``[N, ...]``.

    Costs one velocity call (the tangent) and one JVP; no gradient is recorded.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "auto":
        method = field.jvp_method
    with field.jvp_context():
        return _velocity_and_error(field, x, sigma, method)


def _velocity_and_error(field: FlowField, x: Tensor, sigma: Tensor,
                        method: str) -> tuple[Tensor, Tensor]:
    x = x.detach()
    sigma = sigma.detach().to(x.dtype)
    with torch.no_grad():
        tangent = field(x, sigma)
    ones = torch.ones_like(sigma)
    field.jvps += 1
    if method == "func":
        from torch.func import jvp

        v, q = jvp(field.velocity, (x, sigma), (tangent, ones))
        return v.detach(), q.detach()
    if method == "double_backward":
        with torch.enable_grad():
            xg, sg = x.clone().requires_grad_(True), sigma.clone().requires_grad_(True)
            out = field.velocity(xg, sg)
            w = torch.zeros_like(out, requires_grad=True)
            gx, gs = torch.autograd.grad(out, (xg, sg), w, create_graph=True,
                                         allow_unused=True)
            total = sum(((g * u).sum() for g, u in ((gx, tangent), (gs, ones))
                         if g is not None), out.new_zeros(()))
            q = torch.autograd.grad(total, w, allow_unused=True)[0] \
                if total.requires_grad else None
        return out.detach(), (torch.zeros_like(out) if q is None else q.detach())
    import torch.autograd.forward_ad as fwad

    with torch.no_grad(), fwad.dual_level():
        out = field.velocity(fwad.make_dual(x, tangent), fwad.make_dual(sigma, ones))
        v, q = fwad.unpack_dual(out)
        if q is None:  # the field does not depend on its inputs (a constant velocity)
            q = torch.zeros_like(v)
        return v.clone(), q.clone()


def error_size(q: Tensor) -> Tensor:
    """``|Q|`` per item ``[N]``: the root mean square of the error vector ``[N, ...]``."""
    return q.detach().flatten(1).double().pow(2).mean(1).sqrt().to(q.dtype)


def default_fd_step(field: FlowField) -> float:
    """:data:`FD_STEPS` for the field's compute dtype (float32's for an unknown dtype)."""
    dtype = field.compute_dtype or field.start.dtype
    return FD_STEPS.get(dtype, FD_STEPS[torch.float32])


def finite_difference_q(field: FlowField, x: Tensor, sigma: Tensor, v: Tensor,
                        h: float | None = None) -> Tensor:
    """``Q`` by ONE plain forward: ``(v(x + h v, sigma + h) - v) / h`` with ``v = v(x, sigma)``
    the velocity the caller has already computed, per item, or the backward difference
    ``(v - v(x - h v, sigma - h)) / h`` where ``sigma + h`` would pass
    :attr:`FlowField.sigma_max` (the trajectory's first point, sigma 1). ``h``: flow time
    (None: :func:`default_fd_step`), capped at :data:`FD_RELATIVE` ``* sigma``. One counted
    field call; no gradient."""
    step = default_fd_step(field) if h is None else float(h)
    if not step > 0:
        raise ValueError(f"The finite-difference step must be positive, got {h}.")
    sigma = sigma.detach()
    step_of = torch.minimum(torch.full_like(sigma, step), FD_RELATIVE * sigma)
    signed = torch.where(sigma + step_of <= field.sigma_max, step_of, -step_of)
    hx = signed.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    with torch.no_grad():
        other = field(x.detach() + hx * v, sigma + signed)
    return (other - v) / hx.to(other.dtype)


def finite_difference_error(field: FlowField, x: Tensor, sigma: Tensor,
                            h: float = 1e-4) -> Tensor:
    """The reference ``Q`` by central differences along the tangent ``(v, 1)`` (run it in
    float64 with a small ``h``; a test reference, not the method)."""
    with torch.no_grad():
        v = field(x, sigma)
        plus = field(x + h * v, sigma + h)
        minus = field(x - h * v, sigma - h)
    return (plus - minus) / (2 * h)


@contextlib.contextmanager
def ad_capable_attention() -> Iterator[None]:
    """Restrict PyTorch's scaled-dot-product attention to its MATH backend (the fused
    flash / memory-efficient kernels implement no forward-mode AD)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # an older torch: nothing to restrict
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


__all__ = ["FlowField", "METHODS", "ERROR_SIGNALS", "FD_STEPS", "FD_RELATIVE", "velocity_and_error",
           "error_size", "default_fd_step", "finite_difference_q", "finite_difference_error",
           "ad_capable_attention"]
