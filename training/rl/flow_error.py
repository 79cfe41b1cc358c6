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

A back-end exposes its field as a :class:`FlowField` (:meth:`Backend.flow_rollout`); finite
differences are a test reference only (in float64 with a small step; at Euler-sized steps they
are off by 8-100% on real models).

Forward-mode AD needs every op on the path to implement it: PyTorch's fused SDPA kernels
(flash / memory-efficient, the default attention of ComfyUI on a GPU) do not, so a back-end
evaluates Q under the MATH SDPA backend (:func:`ad_capable_attention`). Pure torch; no ComfyUI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("auto", "forward_ad", "func", "double_backward")
"""How the JVP is taken: ``torch.autograd.forward_ad`` dual tensors, ``torch.func.jvp``, or
two reverse-mode passes (``J u = d/dw [(J^T w) . u]``); ``auto`` takes the field's
:attr:`FlowField.jvp_method`."""


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


__all__ = ["FlowField", "METHODS", "velocity_and_error", "error_size",
           "finite_difference_error", "ad_capable_attention"]
