"""Spatial derivatives of the SIREN displacement ``v(x)`` at a batch of points.

``J[n, i, j] = d v_i / d x_j`` and ``H[n, i, j, k] = d^2 v_i / d x_j d x_k``, all in INR units.

Two implementations of each:

* ``method="forward"`` (default): forward-mode tangents carried through the layers next to
  the values (``d sin(z) = cos(z) dz``), one pass, no double backward.
* ``method="autograd"``: the reference, autograd double backward with ``create_graph=True``
  (one backward per output component), as in the IDIR/ccIDIR code.

Both are differentiable w.r.t. the weights, so they can sit inside a training loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .inr import Params, layer, num_layers, siren

__all__ = ["jacobian", "hessian", "jacobian_autograd", "hessian_autograd", "jacobian_forward"]


def jacobian_autograd(params: Params, x: Tensor, omega: float = 30.0) -> tuple[Tensor, Tensor]:
    """Reference: ``(v, J)`` by autograd, one backward per output component."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = siren(params, x, omega)
        rows = [torch.autograd.grad(v[:, i].sum(), x, create_graph=True)[0] for i in range(3)]
    return v, torch.stack(rows, dim=1)


def hessian_autograd(params: Params, x: Tensor, omega: float = 30.0) -> tuple[Tensor, Tensor, Tensor]:
    """Reference: ``(v, J, H)`` by autograd (double backward of every Jacobian entry)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = siren(params, x, omega)
        rows = [torch.autograd.grad(v[:, i].sum(), x, create_graph=True)[0] for i in range(3)]
        jac = torch.stack(rows, dim=1)
        hess = torch.stack(
            [
                torch.stack([torch.autograd.grad(jac[:, i, j].sum(), x, create_graph=True)[0] for j in range(3)], dim=1)
                for i in range(3)
            ],
            dim=1,
        )
    return v, jac, hess


def jacobian_forward(params: Params, x: Tensor, omega: float = 30.0) -> tuple[Tensor, Tensor]:
    """``(v, J)`` by forward-mode tangents: the three directions ``e_j`` travel with the values."""
    n = num_layers(params)
    w, b = layer(params, 0)
    z = torch.addmm(b, x, w.t())                      # (N, H)
    dz = w.t().unsqueeze(0)                           # (1, 3, H): d z / d x_j = W[:, j]
    h = torch.sin(omega * z)
    dh = (omega * torch.cos(omega * z)).unsqueeze(1) * dz  # (N, 3, H)
    for i in range(1, n - 1):
        w, b = layer(params, i)
        z = torch.addmm(b, h, w.t())
        dz = dh @ w.t()
        h = torch.sin(omega * z)
        dh = (omega * torch.cos(omega * z)).unsqueeze(1) * dz
    w, b = layer(params, n - 1)
    v = torch.addmm(b, h, w.t())
    jac = (dh @ w.t()).transpose(1, 2)                # (N, i, j)
    return v, jac


def jacobian(params: Params, x: Tensor, omega: float = 30.0, method: str = "forward") -> tuple[Tensor, Tensor]:
    """``(v, J)`` with ``J[n, i, j] = dv_i/dx_j`` (INR units)."""
    if method == "forward":
        return jacobian_forward(params, x, omega)
    if method == "autograd":
        return jacobian_autograd(params, x, omega)
    raise ValueError(f"unknown derivative method {method!r} (use 'forward' or 'autograd')")


def hessian(params: Params, x: Tensor, omega: float = 30.0, method: str = "autograd") -> tuple[Tensor, Tensor, Tensor]:
    """``(v, J, H)`` with ``H[n, i, j, k] = d^2 v_i / dx_j dx_k`` (INR units)."""
    if method == "autograd":
        return hessian_autograd(params, x, omega)
    raise ValueError(f"unknown derivative method {method!r}")
