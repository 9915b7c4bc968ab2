"""The ONE coordinate convention of the kit: voxel index <-> world mm <-> INR [-1, 1].

Conventions (pinned by ``tests/test_geometry.py``):

* Arrays are indexed ``(z, y, x)`` (SimpleITK's ``GetArrayFromImage`` order).
* Points and continuous indices are ``(N, 3)`` arrays in ``(x, y, z)`` order.
* World coordinates are ITK physical space in millimetres:
  ``world = origin + direction @ (spacing * index)``.
* INR coordinates are ``[-1, 1]`` per axis with the ``align_corners=True`` convention
  of ``torch.nn.functional.grid_sample``: voxel centre 0 -> -1, voxel centre s-1 -> +1.
  They are in ``(x, y, z)`` order, the order ``grid_sample`` expects for a
  ``(D, H, W) = (z, y, x)`` volume.

Every conversion in the kit goes through :class:`Grid`; nothing else scales by
``(s - 1) / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .points import as_points

__all__ = ["Grid", "compose_affine", "apply_affine", "invert_affine", "DIRECTION_TOLERANCE"]

# largest |D^T D - I| entry accepted for a direction matrix (float32 headers round to ~1e-7; 1e-3
# changes a voxel step by at most 0.05 %)
DIRECTION_TOLERANCE = 1e-3


def _as_points(points: np.ndarray, what: str = "points") -> np.ndarray:
    """Geometry maps any (N, 3) array, empty or not, NaN passing through (callers validate)."""
    return as_points(points, what, allow_empty=True, allow_nonfinite=True)


def _check_direction(direction: np.ndarray) -> None:
    """Raise ValueError unless the columns of ``direction`` are orthonormal (a rotation or reflection).

    A scaled or sheared matrix would make every voxel step differ from ``spacing``: an
    "isotropic 8 mm" grid whose direction columns have length 1.16 steps 9.3 mm.
    """
    if not np.all(np.isfinite(direction)):
        raise ValueError(f"direction must hold finite numbers, got {direction.round(4).tolist()}")
    deviation = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if deviation > DIRECTION_TOLERANCE:
        lengths = np.linalg.norm(direction, axis=0)
        gram = direction.T @ direction
        cosines = [gram[0, 1], gram[0, 2], gram[1, 2]] / np.maximum(
            [lengths[0] * lengths[1], lengths[0] * lengths[2], lengths[1] * lengths[2]], 1e-12)
        angles = np.degrees(np.arccos(np.clip(cosines, -1, 1)))
        raise ValueError(
            "direction must be orthonormal (unit-length, mutually perpendicular columns), got column lengths "
            f"{np.round(lengths, 4).tolist()} and angles {np.round(angles, 2).tolist()} deg between them; "
            "a voxel step would not equal the spacing. Put the scale into spacing and orthonormalise the "
            "direction (e.g. its polar factor U @ Vt from numpy.linalg.svd)"
        )


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous matrix to ``(N, 3)`` points."""
    pts = _as_points(points)
    return pts @ matrix[:3, :3].T + matrix[:3, 3]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 homogeneous affine matrix."""
    return np.linalg.inv(matrix)


def compose_affine(*matrices: np.ndarray) -> np.ndarray:
    """``compose_affine(A, B, C)`` is the matrix of ``x -> A(B(C(x)))``."""
    out = np.eye(4)
    for m in matrices:
        out = out @ m
    return out


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D image: array shape ``(z, y, x)``, spacing/origin in mm ``(x, y, z)``,
    direction cosines (3x3, columns are the index axes in world space)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"grid shape must be three positive sizes (z, y, x), got {self.shape}")
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive finite mm values, got {self.spacing}")
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise ValueError(f"origin must be three finite mm values, got {self.origin}")
        _check_direction(direction)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # ------------------------------------------------------------------ sizes
    @property
    def size_xyz(self) -> np.ndarray:
        """Number of voxels per axis in (x, y, z) order."""
        return np.array(self.shape[::-1], dtype=np.float64)

    @property
    def extent_mm(self) -> np.ndarray:
        """Distance between the first and last voxel centre per axis (x, y, z), mm."""
        return (self.size_xyz - 1) * np.array(self.spacing)

    # --------------------------------------------------------------- matrices
    def index_to_world_matrix(self) -> np.ndarray:
        """4x4 matrix mapping continuous index (x, y, z) to world mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def normalized_to_index_matrix(self) -> np.ndarray:
        """4x4 matrix mapping INR [-1, 1] (align_corners=True) to continuous index."""
        half = np.where(self.size_xyz > 1, (self.size_xyz - 1) / 2.0, 1.0)
        m = np.eye(4)
        m[:3, :3] = np.diag(half)
        m[:3, 3] = np.where(self.size_xyz > 1, half, 0.0)
        return m

    def normalized_to_world_matrix(self) -> np.ndarray:
        """4x4 matrix mapping INR [-1, 1] coordinates to world mm."""
        return self.index_to_world_matrix() @ self.normalized_to_index_matrix()

    def world_to_normalized_matrix(self) -> np.ndarray:
        return invert_affine(self.normalized_to_world_matrix())

    # ---------------------------------------------------------------- points
    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Continuous index (x, y, z), 0-based -> world mm."""
        return apply_affine(self.index_to_world_matrix(), index)

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """World mm -> continuous 0-based index (x, y, z)."""
        return apply_affine(invert_affine(self.index_to_world_matrix()), points)

    def normalized_to_world(self, coords: np.ndarray) -> np.ndarray:
        """INR [-1, 1] coordinates (x, y, z) -> world mm."""
        return apply_affine(self.normalized_to_world_matrix(), coords)

    def index_to_normalized(self, index: np.ndarray) -> np.ndarray:
        return apply_affine(invert_affine(self.normalized_to_index_matrix()), index)

    def normalized_vectors_to_mm(self, vectors: np.ndarray) -> np.ndarray:
        """Displacement vectors in INR units -> mm (linear part only)."""
        return _as_points(vectors, "vectors") @ self.normalized_to_world_matrix()[:3, :3].T

    def contains(self, points: np.ndarray, margin_voxels: float = 0.5) -> np.ndarray:
        """Boolean mask of world points inside the image (voxel-centre box grown by ``margin_voxels``)."""
        idx = self.world_to_index(points)
        upper = self.size_xyz - 1 + margin_voxels
        return np.all((idx >= -margin_voxels) & (idx <= upper), axis=1)

    def voxel_centres_world(self) -> np.ndarray:
        """World mm of all voxel centres, shape ``(z, y, x, 3)`` in (x, y, z) component order."""
        zz, yy, xx = np.meshgrid(*[np.arange(s) for s in self.shape], indexing="ij")
        idx = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3).astype(np.float64)
        return self.index_to_world(idx).reshape(*self.shape, 3)

    def differences(self, other: "Grid", voxel_tol: float = 1e-3) -> list[str]:
        """What differs between two grids, in words (empty when they describe the same voxels):
        shape, spacing (relative ``voxel_tol``), origin (``voxel_tol`` of a voxel) and direction
        (``voxel_tol``)."""
        out: list[str] = []
        if self.shape != other.shape:
            out.append(f"shape {self.shape} vs {other.shape}")
        sp_a, sp_b = np.array(self.spacing), np.array(other.spacing)
        if np.any(np.abs(sp_a - sp_b) > voxel_tol * np.minimum(sp_a, sp_b)):
            out.append(f"spacing {np.round(sp_a, 4).tolist()} vs {np.round(sp_b, 4).tolist()} mm")
        if np.any(np.abs(np.subtract(self.origin, other.origin)) > voxel_tol * np.minimum(sp_a, sp_b)):
            out.append(f"origin {np.round(self.origin, 3).tolist()} vs {np.round(other.origin, 3).tolist()} mm")
        if np.abs(self.direction - other.direction).max() > voxel_tol:
            out.append(f"direction {np.round(self.direction, 3).tolist()} vs {np.round(other.direction, 3).tolist()}")
        return out

    def same_as(self, other: "Grid", tol: float = 1e-5) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )
