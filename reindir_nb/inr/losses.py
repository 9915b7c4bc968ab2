"""Loss terms of ccIDIR / REINDIR as small pure functions on sampled points.

All inputs are tensors over a batch of N sampled points; every function returns a scalar.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ncc_loss",
    "local_ncc_loss",
    "symmetric_jacobian_penalty",
    "symmetric_jacobian_loss",
    "bending_energy",
    "cycle_loss",
    "hessian_to_mm",
    "FOLD_EPS",
]

# below this determinant the symmetric Jacobian penalty continues as a parabola (see below)
FOLD_EPS = 0.1


def ncc_loss(fixed_values: Tensor, warped_values: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - NCC`` over the whole sampled batch (global NCC, as the IDIR anchors).

    Inputs: intensities (N,) at the batch points (any units); result in [0, 2], 0 when
    the two are perfectly linearly related.
    """
    f = fixed_values - fixed_values.mean()
    m = warped_values - warped_values.mean()
    ncc = (f * m).sum() / torch.sqrt((f * f).sum() * (m * m).sum() + eps)
    return 1.0 - ncc


def local_ncc_loss(fixed_patches: Tensor, warped_patches: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 - mean local NCC``: NCC per point over a small neighbourhood, averaged.

    Inputs ``(N, K)``: the K stencil samples around each of N points in the fixed image and
    at the corresponding warped positions in the moving image.
    """
    f = fixed_patches - fixed_patches.mean(dim=1, keepdim=True)
    m = warped_patches - warped_patches.mean(dim=1, keepdim=True)
    cross = (f * m).sum(dim=1)
    ncc = cross / torch.sqrt((f * f).sum(dim=1) * (m * m).sum(dim=1) + eps)
    return 1.0 - ncc.mean()


def symmetric_jacobian_penalty(det: Tensor, eps: float = FOLD_EPS) -> Tensor:
    """Per-point penalty ``d + 1/d - 2`` on ``d = det(I + dv/dx)``; 0 at d = 1.

    Choice (documented divergence from the anchors): the IDIR/ccIDIR code clips ``d`` to
    ``[0.1, 10]``, which zeroes the gradient exactly where the map folds (``d <= 0``) or
    expands strongly. Here the penalty is used unclipped for ``d >= eps`` and continued for
    ``d < eps`` by its second-order Taylor expansion at ``eps`` (a parabola), so folded
    points keep a finite, restoring (d-increasing) gradient and nothing blows up at d = 0.
    """
    safe = torch.clamp(det, min=eps)
    inner = safe + 1.0 / safe - 2.0
    t = det - eps
    value_eps = eps + 1.0 / eps - 2.0
    slope_eps = 1.0 - 1.0 / eps**2
    curv_eps = 2.0 / eps**3
    outer = value_eps + slope_eps * t + 0.5 * curv_eps * t * t
    return torch.where(det >= eps, inner, outer)


def symmetric_jacobian_loss(jac: Tensor, eps: float = FOLD_EPS) -> Tensor:
    """Mean symmetric Jacobian penalty of a batch of displacement Jacobians ``(N, 3, 3)``.

    ``det(I + J)`` does not depend on the coordinate scaling (INR units or mm give the same
    determinant), so INR-unit Jacobians can be passed directly.
    """
    eye = torch.eye(3, dtype=jac.dtype, device=jac.device)
    det = torch.linalg.det(eye + jac)
    return symmetric_jacobian_penalty(det, eps).mean()


def hessian_to_mm(hess: Tensor, normalized_to_mm: Tensor) -> Tensor:
    """Hessian of the displacement from INR units to physical units (1/mm).

    ``hess`` (N, 3, 3, 3) is ``d^2 v_i / dx_j dx_k`` in INR units; ``normalized_to_mm`` is
    the 3x3 linear part A of the map INR -> mm. Displacements scale with A and coordinates
    with A^-1: ``H_mm[i,j,k] = A[i,a] H[a,p,q] A^-1[p,j] A^-1[q,k]``.
    """
    inv = torch.linalg.inv(normalized_to_mm)
    return torch.einsum("ia,napq,pj,qk->nijk", normalized_to_mm, hess, inv, inv)


def bending_energy(hess_mm: Tensor) -> Tensor:
    """Mean bending energy (1/mm^2) of Hessians ``(N, 3, 3, 3)`` in physical units.

    Per point ``sum_i [ sum_j (d2v_i/dx_j^2)^2 + 2 sum_{j<k} (d2v_i/dx_j dx_k)^2 ]``; summing
    all nine (symmetric) second derivatives gives exactly the cross terms weighted 2.
    """
    return hess_mm.pow(2).sum(dim=(1, 2, 3)).mean()


def cycle_loss(points_mm: Tensor, returned_mm: Tensor) -> Tensor:
    """Mean squared cycle error ``|| phi_B(phi_F(x)) - x ||^2`` in mm^2 over a batch (N, 3)."""
    return (returned_mm - points_mm).pow(2).sum(dim=1).mean()
