"""The ccIDIR objective on one pair: point sampling, image sampling and the loss terms.

Shared by test-time registration (:mod:`reindir_nb.inr.registration`, Adam), meta-training
(:mod:`reindir_nb.meta.training`, SGD inner loop) and sweeps through ONE typed configuration,
:class:`Objective` (similarity, regulariser, weights, derivative method). Similarities and
regularisers are entries of two small registries (:data:`SIMILARITIES`, :data:`REGULARISERS`):
adding one is one :func:`register_similarity` / :func:`register_regulariser` call here (or in
user code) plus its test. ``omega`` is not part of the objective: it belongs to the networks
(:class:`~reindir_nb.inr.network.SirenConfig`). The forward INR lives in the fixed image's INR
frame, the backward INR in the moving image's; ``Problem.f2m`` / ``m2f`` carry points between
the two frames and include the global pre-alignment (an affine map of world mm), so the
INRs model the residual deformation only:

    phi_F(x) = f2m( x + v_F(x) )      fixed INR coords  -> moving INR coords
    phi_B(y) = m2f( y + v_B(y) )      moving INR coords -> fixed INR coords
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.geometry import Grid, compose_affine, invert_affine
from ..core.geometry import apply_affine as apply_affine_np
from ..core.pair import Pair
from . import derivatives, losses
from .network import Params

__all__ = ["LossWeights", "Objective", "Similarity", "Regulariser", "SIMILARITIES", "REGULARISERS",
           "register_similarity", "register_regulariser", "Problem", "objective_terms",
           "sample_image", "apply_matrix"]


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


def _index_to_inr(grid: Grid, frame: np.ndarray, fine: bool) -> np.ndarray:
    """4x4: continuous voxel index (x, y, z) of ``grid`` -> INR coords of ``frame`` (the grid's own
    frame when not ``fine``, computed as before so the numbers stay bit for bit)."""
    if not fine:
        return invert_affine(grid.normalized_to_index_matrix())
    return compose_affine(invert_affine(frame), grid.index_to_world_matrix())


def _mask_voxels(grid: Grid, mask) -> np.ndarray:
    """Flat (z, y, x) indices of the voxels points are drawn from (mask, or every voxel)."""
    if mask is None:
        return np.arange(int(np.prod(grid.shape)))
    return np.flatnonzero(np.asarray(mask.array) > 0)


@dataclass
class Problem:
    """One pair's tensors on a device, ready for sampling (build with :meth:`from_pair`).

    The INR frame of each side maps INR coords to world mm (``fixed_to_mm`` / ``moving_to_mm``).
    It is the image grid's own ``[-1, 1]`` frame (:meth:`Grid.normalized_to_world_matrix`), except
    for a fine view (``pair.coarse`` set, see :func:`reindir_nb.data.preprocess.prepare_fine`): then
    it is the COARSE view's frame, so the networks, a template and an embedding mean the same
    world-mm motion on both views, and the images are sampled through ``*_inr_to_image``."""

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
    frames: tuple[np.ndarray, np.ndarray] | None = None  # float64 INR -> world mm (fixed, moving)
    fixed_inr_to_image: Tensor | None = None    # 4x4 INR -> the image's [-1, 1] sampling coords (None: equal)
    moving_inr_to_image: Tensor | None = None
    encoder_fixed: Tensor | None = None         # (1, 1, d, h, w) the encoder's patch (None: ``fixed``)
    encoder_moving: Tensor | None = None

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
        view = pair.coarse if pair.coarse is not None else pair
        fixed_frame = view.fixed.grid.normalized_to_world_matrix()
        moving_frame = view.moving.grid.normalized_to_world_matrix()
        pre = np.eye(4) if prealign is None else np.asarray(prealign, dtype=np.float64)
        f2m = compose_affine(invert_affine(moving_frame), pre, fixed_frame)

        def t(a) -> Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)

        def img(v) -> Tensor:
            return t(np.asarray(v.array, dtype=np.float32))[None, None]

        fine = pair.coarse is not None
        return cls(
            fixed=img(pair.fixed),
            moving=img(pair.moving),
            fixed_voxels=torch.as_tensor(_mask_voxels(fg, pair.fixed_mask), device=device),
            moving_voxels=torch.as_tensor(_mask_voxels(mg, pair.moving_mask), device=device),
            fixed_index_to_inr=t(_index_to_inr(fg, fixed_frame, fine)),
            moving_index_to_inr=t(_index_to_inr(mg, moving_frame, fine)),
            f2m=t(f2m),
            m2f=t(invert_affine(f2m)),
            fixed_to_mm=t(fixed_frame),
            moving_to_mm=t(moving_frame),
            fixed_shape=fg.shape,
            moving_shape=mg.shape,
            frames=(fixed_frame, moving_frame),
            fixed_inr_to_image=t(compose_affine(fg.world_to_normalized_matrix(), fixed_frame)) if fine else None,
            moving_inr_to_image=t(compose_affine(mg.world_to_normalized_matrix(), moving_frame)) if fine else None,
            encoder_fixed=img(view.fixed) if fine else None,
            encoder_moving=img(view.moving) if fine else None,
        )

    @property
    def encoder_images(self) -> tuple[Tensor, Tensor]:
        """The fixed and moving images the encoder sees (the coarse view's for a fine view)."""
        return (self.fixed if self.encoder_fixed is None else self.encoder_fixed,
                self.moving if self.encoder_moving is None else self.encoder_moving)

    def world_to_inr(self, points_mm: np.ndarray, side: str = "fixed") -> np.ndarray:
        """World mm (N, 3) -> INR coords of ``side`` (float64)."""
        frame = self._frames()[0 if side == "fixed" else 1]
        return apply_affine_np(invert_affine(frame), points_mm)

    def inr_to_world(self, coords: np.ndarray, side: str = "moving") -> np.ndarray:
        """INR coords (N, 3) of ``side`` -> world mm (float64)."""
        return apply_affine_np(self._frames()[0 if side == "fixed" else 1], coords)

    def _frames(self) -> tuple[np.ndarray, np.ndarray]:
        if self.frames is None:
            raise ValueError("this Problem has no frames (build it with Problem.from_pair)")
        return self.frames

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


# ------------------------------------------------------------------ similarity registry
@dataclass(frozen=True)
class Similarity:
    """An image similarity loss on sampled intensities (registry entry).

    ``loss(fixed, warped)`` takes the samples at the batch points: (N,) when ``stencil_voxels``
    is None, else (N, K) over a K-point neighbourhood of each point (the same index-space
    offsets in both images: the deformation is taken as locally a translation)."""

    name: str
    loss: Callable[[Tensor, Tensor], Tensor]
    stencil_voxels: float | None = None   # neighbourhood radius (voxels) of a local similarity


def _axis_stencil(index_to_inr: Tensor, radius_voxels: float) -> Tensor:
    """7-point stencil (centre, +-radius voxels along each index axis) in INR units, through the
    frame's index -> INR matrix (the geometry module's convention, no scaling of its own)."""
    offsets = torch.zeros(7, 3, dtype=index_to_inr.dtype, device=index_to_inr.device)
    for axis in range(3):
        offsets[1 + 2 * axis, axis] = -radius_voxels
        offsets[2 + 2 * axis, axis] = radius_voxels
    return offsets @ index_to_inr[:3, :3].t()


def _sample(image: Tensor, coords: Tensor, stencil: Tensor | None, to_image: Tensor | None = None) -> Tensor:
    """Samples of ``image`` at INR ``coords`` (N,) or, with a ``stencil`` (K, 3) of INR offsets,
    (N, K); ``to_image`` maps INR coords to the image's sampling coords (None: the same)."""
    k = 1 if stencil is None else stencil.shape[0]
    pts = coords if stencil is None else (coords[:, None, :] + stencil[None]).reshape(-1, 3)
    if to_image is not None:
        pts = apply_matrix(to_image, pts)
    out = sample_image(image, pts)
    return out if stencil is None else out.view(-1, k)


# ------------------------------------------------------------------ regulariser registry
@dataclass(frozen=True)
class Regulariser:
    """A smoothness penalty of one network's displacement at the batch points (registry entry).

    ``order``: derivatives it needs (0: displacement only, 1: Jacobian, 2: Hessian);
    ``penalty(derivative, inr_to_mm)`` gets that derivative in INR units (None for order 0) and
    the 3x3 linear INR -> mm map; ``weight(weights)`` picks its weight from :class:`LossWeights`;
    ``needs_grad``: evaluating it needs autograd even when no step follows (the last recorded
    iteration, training logs)."""

    name: str
    order: int
    penalty: Callable[[Tensor | None, Tensor], Tensor]
    weight: Callable[["LossWeights"], float]
    needs_grad: bool = False


SIMILARITIES: dict[str, Similarity] = {}
REGULARISERS: dict[str, Regulariser] = {}


def register_similarity(entry: Similarity) -> Similarity:
    """Add (or replace) a similarity under ``entry.name``; ``Objective(similarity=name)`` uses it."""
    SIMILARITIES[entry.name] = entry
    return entry


def register_regulariser(entry: Regulariser) -> Regulariser:
    """Add (or replace) a regulariser under ``entry.name``; ``Objective(regulariser=name)`` uses it."""
    if entry.order not in (0, 1, 2):
        raise ValueError(f"regulariser {entry.name!r}: order must be 0, 1 or 2, got {entry.order}")
    REGULARISERS[entry.name] = entry
    return entry


register_similarity(Similarity("ncc", losses.ncc_loss))
register_similarity(Similarity("lncc", losses.local_ncc_loss, stencil_voxels=2.0))
register_regulariser(Regulariser("jacobian", 1, lambda jac, _: losses.symmetric_jacobian_loss(jac),
                                 lambda w: w.jacobian))
register_regulariser(Regulariser("bending", 2, lambda hess, to_mm: losses.bending_energy(losses.hessian_to_mm(hess, to_mm)),
                                 lambda w: w.bending, needs_grad=True))
register_regulariser(Regulariser("none", 0, lambda _, to_mm: torch.zeros((), dtype=to_mm.dtype, device=to_mm.device),
                                 lambda w: 0.0))


# ------------------------------------------------------------------------- the objective
@dataclass(frozen=True)
class Objective:
    """The ccIDIR objective: ``similarity`` and ``regulariser`` (registry names), their
    ``weights``, and how derivatives are computed (``derivative_method``: see
    :mod:`reindir_nb.inr.derivatives`). Shared by ``register``, meta-training and sweeps."""

    similarity: str = "ncc"
    regulariser: str = "jacobian"
    weights: LossWeights = field(default_factory=LossWeights)
    derivative_method: str = "forward"

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {sorted(SIMILARITIES)}, got {self.similarity!r}")
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {sorted(REGULARISERS)}, got {self.regulariser!r}")
        if not isinstance(self.weights, LossWeights):
            raise TypeError(f"weights must be a LossWeights, got {type(self.weights).__name__}")
        for name in ("jacobian", "bending", "cycle"):
            value = getattr(self.weights, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"weights.{name} must be a finite number >= 0, got {value!r}")
        derivatives.check_method(self.derivative_method)

    @property
    def needs_grad(self) -> bool:
        """Whether evaluating the loss needs autograd even without an optimisation step."""
        return REGULARISERS[self.regulariser].needs_grad

    def terms(self, forward: Params, backward: Params, problem: "Problem", points_fixed: Tensor,
              points_moving: Tensor, omega: float) -> dict[str, Tensor]:
        """All loss terms for one batch (see :func:`objective_terms`)."""
        return objective_terms(self, forward, backward, problem, points_fixed, points_moving, omega)


def objective_terms(objective: Objective, forward: Params, backward: Params, problem: Problem,
                    points_fixed: Tensor, points_moving: Tensor, omega: float) -> dict[str, Tensor]:
    """All ccIDIR loss terms for one batch; ``terms["total"]`` is the weighted sum.

    ``points_fixed`` / ``points_moving`` are INR coords (N, 3) in the fixed / moving frame;
    ``omega`` is the networks' (their :class:`SirenConfig`). Terms: ``ncc_f``, ``ncc_b``
    (similarity loss; the name is kept for every similarity), ``reg_f``, ``reg_b`` (the
    regulariser), ``cycle_f``, ``cycle_b`` (mm^2)."""
    sim = SIMILARITIES[objective.similarity]
    reg = REGULARISERS[objective.regulariser]
    method = objective.derivative_method
    terms: dict[str, Tensor] = {}
    sides = (
        ("f", forward, backward, points_fixed, problem.f2m, problem.m2f, problem.fixed, problem.moving,
         problem.fixed_to_mm, problem.fixed_index_to_inr, problem.fixed_inr_to_image, problem.moving_inr_to_image),
        ("b", backward, forward, points_moving, problem.m2f, problem.f2m, problem.moving, problem.fixed,
         problem.moving_to_mm, problem.moving_index_to_inr, problem.moving_inr_to_image, problem.fixed_inr_to_image),
    )
    for tag, net, other, x, to_other, back, own_image, other_image, to_mm, own_index, own_s, other_s in sides:
        if reg.order == 0:
            v, derivative = derivatives.displacement(net, x, omega, method=method), None
        elif reg.order == 1:
            v, derivative = derivatives.jacobian(net, x, omega, method=method)
        else:
            v, _, derivative = derivatives.hessian(net, x, omega, method=method)
        terms[f"reg_{tag}"] = reg.penalty(derivative, to_mm[:3, :3])
        y = apply_matrix(to_other, x + v)
        # a local similarity uses the same INR offsets (from this side's voxel size) in both frames
        stencil = None if sim.stencil_voxels is None else _axis_stencil(own_index, sim.stencil_voxels)
        terms[f"ncc_{tag}"] = sim.loss(_sample(own_image, x, stencil, own_s), _sample(other_image, y, stencil, other_s))
        returned = apply_matrix(back, y + derivatives.displacement(other, y, omega, method=method))
        lin = to_mm[:3, :3].t()
        terms[f"cycle_{tag}"] = losses.cycle_loss(x @ lin, returned @ lin)
    w = objective.weights
    terms["total"] = (
        terms["ncc_f"] + terms["ncc_b"]
        + reg.weight(w) * (terms["reg_f"] + terms["reg_b"])
        + w.cycle * (terms["cycle_f"] + terms["cycle_b"])
    )
    return terms
