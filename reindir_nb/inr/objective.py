"""The ccIDIR objective on one pair: point sampling, image sampling and the loss terms.

Shared by test-time registration (:mod:`reindir_nb.register`, Adam) and meta-training
(:mod:`reindir_nb.meta`, SGD inner loop). The forward INR lives in the fixed image's INR
frame, the backward INR in the moving image's; ``Problem.f2m`` / ``m2f`` carry points between
the two frames and include the global pre-alignment (an affine map of world mm), so the
INRs model the residual deformation only:

    phi_F(x) = f2m( x + v_F(x) )      fixed INR coords  -> moving INR coords
    phi_B(y) = m2f( y + v_B(y) )      moving INR coords -> fixed INR coords
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import derivatives

from . import losses
from ..core.geometry import Grid, compose_affine, invert_affine
from .network import Params
from ..core.pair import Pair

__all__ = ["LossWeights", "Problem", "ccidir_terms", "sample_image", "apply_matrix"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the ccIDIR loss (paper Table 2). ``bending`` is per mm^-2 of bending energy."""

    jacobian: float = 0.05
    bending: float = 1.0e4
    cycle: float = 0.001


def apply_matrix(matrix: Tensor, points: Tensor) -> Tensor:
    """Apply a 4x4 homogeneous matrix to (N, 3) points."""
    return torch.addmm(matrix[:3, 3], points, matrix[:3, :3].t())


def sample_image(image: Tensor, coords: Tensor) -> Tensor:
    """Trilinear samples (N,) of ``image`` (1, 1, D, H, W) at INR coords (N, 3) ``(x, y, z)``,
    ``align_corners=True``; outside the image the border value is used."""
    grid = coords.view(1, -1, 1, 1, 3).to(image.dtype)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(-1)


def _mask_voxels(grid: Grid, mask) -> np.ndarray:
    """Flat (z, y, x) indices of the voxels points are drawn from (mask, or every voxel)."""
    if mask is None:
        return np.arange(int(np.prod(grid.shape)))
    return np.flatnonzero(np.asarray(mask.array) > 0)


@dataclass
class Problem:
    """One pair's tensors on a device, ready for sampling (build with :meth:`from_pair`)."""

    fixed: Tensor                 # (1, 1, D, H, W) intensities
    moving: Tensor
    fixed_voxels: Tensor          # (M,) flat voxel indices to sample forward points from
    moving_voxels: Tensor
    fixed_index_to_inr: Tensor    # 4x4: continuous index (x, y, z) -> fixed INR coords
    moving_index_to_inr: Tensor
    f2m: Tensor                   # 4x4: fixed INR -> moving INR (includes pre-alignment)
    m2f: Tensor
    fixed_to_mm: Tensor           # 4x4: fixed INR -> world mm
    moving_to_mm: Tensor
    fixed_shape: tuple[int, int, int]
    moving_shape: tuple[int, int, int]

    @classmethod
    def from_pair(
        cls,
        pair: Pair,
        prealign: np.ndarray | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "Problem":
        """``prealign`` is a 4x4 matrix mapping fixed world mm to moving world mm (identity if None)."""
        fg, mg = pair.fixed.grid, pair.moving.grid
        pre = np.eye(4) if prealign is None else np.asarray(prealign, dtype=np.float64)
        f2m = compose_affine(mg.world_to_normalized_matrix(), pre, fg.normalized_to_world_matrix())

        def t(a) -> Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)

        def img(v) -> Tensor:
            return t(np.asarray(v.array, dtype=np.float32))[None, None]

        return cls(
            fixed=img(pair.fixed),
            moving=img(pair.moving),
            fixed_voxels=torch.as_tensor(_mask_voxels(fg, pair.fixed_mask), device=device),
            moving_voxels=torch.as_tensor(_mask_voxels(mg, pair.moving_mask), device=device),
            fixed_index_to_inr=t(invert_affine(fg.normalized_to_index_matrix())),
            moving_index_to_inr=t(invert_affine(mg.normalized_to_index_matrix())),
            f2m=t(f2m),
            m2f=t(invert_affine(f2m)),
            fixed_to_mm=t(fg.normalized_to_world_matrix()),
            moving_to_mm=t(mg.normalized_to_world_matrix()),
            fixed_shape=fg.shape,
            moving_shape=mg.shape,
        )

    @property
    def device(self) -> torch.device:
        return self.fixed.device

    def sample_points(self, n: int, generator: torch.Generator | None, side: str = "fixed") -> Tensor:
        """``n`` INR coords (N, 3) drawn uniformly inside the mask of ``side`` ("fixed" or
        "moving"), jittered uniformly within each voxel (sub-voxel positions)."""
        voxels = self.fixed_voxels if side == "fixed" else self.moving_voxels
        shape = self.fixed_shape if side == "fixed" else self.moving_shape
        to_inr = self.fixed_index_to_inr if side == "fixed" else self.moving_index_to_inr
        gen_device = generator.device if generator is not None else self.device
        pick = torch.randint(len(voxels), (n,), generator=generator, device=gen_device).to(self.device)
        flat = voxels[pick]
        _, ny, nx = shape
        z = flat // (ny * nx)
        y = (flat // nx) % ny
        x = flat % nx
        index = torch.stack([x, y, z], dim=1).to(self.fixed.dtype)
        jitter = torch.rand(n, 3, generator=generator, device=gen_device, dtype=self.fixed.dtype).to(self.device)
        index = index + jitter - 0.5
        upper = torch.tensor([nx - 1, ny - 1, shape[0] - 1], dtype=index.dtype, device=index.device)
        index = torch.minimum(torch.clamp(index, min=0.0), upper)
        return apply_matrix(to_inr, index)


def _similarity(
    image_a: Tensor, coords_a: Tensor, image_b: Tensor, coords_b: Tensor, similarity: str, stencil: Tensor | None
) -> Tensor:
    if similarity == "ncc":
        return losses.ncc_loss(sample_image(image_a, coords_a), sample_image(image_b, coords_b))
    if similarity == "lncc":
        # same offset in both frames: the deformation is taken as locally a translation
        k = stencil.shape[0]
        a = sample_image(image_a, (coords_a[:, None, :] + stencil[None]).reshape(-1, 3)).view(-1, k)
        b = sample_image(image_b, (coords_b[:, None, :] + stencil[None]).reshape(-1, 3)).view(-1, k)
        return losses.local_ncc_loss(a, b)
    raise ValueError(f"unknown similarity {similarity!r} (use 'ncc' or 'lncc')")


def lncc_stencil(shape: tuple[int, int, int], radius_voxels: float, device, dtype) -> Tensor:
    """7-point stencil (centre and +-radius along each axis) in INR units of a grid ``shape``."""
    half = torch.tensor([(s - 1) / 2.0 for s in shape[::-1]], dtype=dtype, device=device).clamp(min=1.0)
    offs = [torch.zeros(3, dtype=dtype, device=device)]
    for axis in range(3):
        for sign in (-1.0, 1.0):
            o = torch.zeros(3, dtype=dtype, device=device)
            o[axis] = sign * radius_voxels / half[axis]
            offs.append(o)
    return torch.stack(offs)


def ccidir_terms(
    forward: Params,
    backward: Params,
    problem: Problem,
    points_fixed: Tensor,
    points_moving: Tensor,
    regulariser: str = "jacobian",
    weights: LossWeights = LossWeights(),
    omega: float = 30.0,
    similarity: str = "ncc",
    derivative_method: str = "forward",
    derivative_bf16: bool = False,
) -> dict[str, Tensor]:
    """All ccIDIR loss terms for one batch; ``terms["total"]`` is the weighted sum.

    ``points_fixed`` / ``points_moving`` are INR coords (N, 3) in the fixed / moving frame.
    Terms: ``ncc_f``, ``ncc_b`` (1 - NCC), ``reg_f``, ``reg_b`` (symmetric Jacobian, or bending
    energy in mm^-2), ``cycle_f``, ``cycle_b`` (mm^2).

    ``derivative_method`` picks the Jacobian/Hessian implementation (see
    :mod:`reindir_nb.derivatives`); ``derivative_bf16`` (opt-in speed knob, ``"forward"`` only)
    runs the derivative matmuls in bfloat16 (det J errors up to ~1e-2: validate on TRE).
    """
    terms: dict[str, Tensor] = {}
    dev, dt = points_fixed.device, points_fixed.dtype
    sides = (
        ("f", forward, backward, points_fixed, problem.f2m, problem.m2f, problem.fixed, problem.moving,
         problem.fixed_to_mm, problem.fixed_shape),
        ("b", backward, forward, points_moving, problem.m2f, problem.f2m, problem.moving, problem.fixed,
         problem.moving_to_mm, problem.moving_shape),
    )
    for tag, net, other, x, to_other, back, own_image, other_image, to_mm, shape in sides:
        if regulariser == "jacobian":
            v, jac = derivatives.jacobian(net, x, omega, method=derivative_method, bf16=derivative_bf16)
            terms[f"reg_{tag}"] = losses.symmetric_jacobian_loss(jac)
        elif regulariser == "bending":
            v, _, hess = derivatives.hessian(net, x, omega, method=derivative_method, bf16=derivative_bf16)
            terms[f"reg_{tag}"] = losses.bending_energy(losses.hessian_to_mm(hess, to_mm[:3, :3]))
        elif regulariser == "none":
            v = derivatives.displacement(net, x, omega, method=derivative_method)
            terms[f"reg_{tag}"] = torch.zeros((), device=dev, dtype=dt)
        else:
            raise ValueError(f"unknown regulariser {regulariser!r} (use 'jacobian', 'bending' or 'none')")
        y = apply_matrix(to_other, x + v)
        stencil = lncc_stencil(shape, 2.0, dev, dt) if similarity == "lncc" else None
        terms[f"ncc_{tag}"] = _similarity(own_image, x, other_image, y, similarity, stencil)
        returned = apply_matrix(back, y + derivatives.displacement(other, y, omega, method=derivative_method))
        lin = to_mm[:3, :3].t()
        terms[f"cycle_{tag}"] = losses.cycle_loss(x @ lin, returned @ lin)
    reg_weight = weights.jacobian if regulariser == "jacobian" else weights.bending
    terms["total"] = (
        terms["ncc_f"] + terms["ncc_b"]
        + reg_weight * (terms["reg_f"] + terms["reg_b"])
        + weights.cycle * (terms["cycle_f"] + terms["cycle_b"])
    )
    return terms
