"""Pair: a fixed and a moving image with optional masks, landmarks and ground-truth motion.

A registration of a pair maps FIXED world coordinates to MOVING world coordinates
(backward warping). Landmarks are ``(N, 3)`` world mm ``(x, y, z)``; landmark ``i`` of
the fixed set corresponds to landmark ``i`` of the moving set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .points import as_points
from .volume import Volume

__all__ = ["Pair", "landmark_distances"]


def landmark_distances(fixed_points: np.ndarray, moving_points: np.ndarray) -> np.ndarray:
    """Per-landmark Euclidean distance in mm between two corresponding (N, 3) point sets."""
    fixed = as_points(fixed_points, "fixed_points", allow_empty=True)
    moving = as_points(moving_points, "moving_points", allow_empty=True)
    if len(fixed) != len(moving):
        raise ValueError(f"{len(fixed)} fixed points but {len(moving)} moving points; they must correspond")
    return np.linalg.norm(fixed - moving, axis=1)


@dataclass
class Pair:
    """One registration task.

    ``ground_truth`` (optional) is the true displacement in mm on the fixed grid
    (``(z, y, x, 3)`` vectors, components ``(x, y, z)``): ``moving_point = x + u(x)``.
    ``meta`` carries free-form facts (e.g. ``{"label": "real anatomy, simulated motion"}``).
    """

    fixed: Volume
    moving: Volume
    fixed_landmarks: np.ndarray | None = None
    moving_landmarks: np.ndarray | None = None
    fixed_mask: Volume | None = None
    moving_mask: Volume | None = None
    name: str = "pair"
    dataset: str = ""
    ground_truth: Volume | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming the offending file/volume for any inconsistent input."""
        for vol, which in ((self.fixed, "fixed"), (self.moving, "moving")):
            if not isinstance(vol, Volume):
                raise TypeError(f"{self.name}: {which} must be a Volume, got {type(vol).__name__}")
            vol.require_scalar(f"the {which} image")
            vol.check_finite()
        for mask, image, which in ((self.fixed_mask, self.fixed, "fixed"), (self.moving_mask, self.moving, "moving")):
            if mask is None:
                continue
            if not isinstance(mask, Volume):
                raise TypeError(f"{self.name}: {which}_mask must be a Volume or None, got {type(mask).__name__}")
            if mask.grid.shape != image.grid.shape:
                raise ValueError(
                    f"{mask.name or 'mask'}: shape {mask.grid.shape} differs from its image "
                    f"{image.name or ''} {image.grid.shape}"
                )
            differ = mask.grid.differences(image.grid)
            if differ:  # same voxel count, other place: world-space and voxel-wise readers would disagree
                raise ValueError(
                    f"{mask.name or 'mask'}: the {which} mask has the image's shape but not its grid "
                    f"({'; '.join(differ)}; mask vs image {image.name or ''}). Resample it in world space "
                    f"(reindir_nb.data.preprocess.resample_to_grid(mask, image.grid, order=0), or "
                    f"resample_masks=True in load_generic_pair), or, if only its header is wrong, "
                    f"Volume(mask.array, image.grid)"
                )
            if not np.any(mask.array):
                raise ValueError(f"{mask.name or 'mask'}: the mask is empty (no foreground voxel)")
        fl, ml = self.fixed_landmarks, self.moving_landmarks
        if (fl is None) != (ml is None):
            raise ValueError(f"{self.name}: landmarks given for only one of fixed/moving")
        if fl is not None:
            fl = as_points(fl, f"{self.name}: fixed_landmarks", allow_empty=True, allow_nonfinite=True)
            ml = as_points(ml, f"{self.name}: moving_landmarks", allow_empty=True, allow_nonfinite=True)
            if len(fl) != len(ml):
                raise ValueError(
                    f"{self.name}: {len(fl)} fixed landmarks but {len(ml)} moving landmarks; they must correspond"
                )
            if not (np.all(np.isfinite(fl)) and np.all(np.isfinite(ml))):
                raise ValueError(f"{self.name}: landmarks contain NaN/inf")
            for pts, vol, which in ((fl, self.fixed, "fixed"), (ml, self.moving, "moving")):
                inside = vol.grid.contains(pts, margin_voxels=1.0)
                if not np.all(inside):
                    first = int(np.flatnonzero(~inside)[0])
                    raise ValueError(
                        f"{self.name}: {int((~inside).sum())} {which} landmarks lie outside the {which} image "
                        f"{vol.name or ''} (first: #{first} at {np.round(pts[first], 2).tolist()} mm)"
                    )
            self.fixed_landmarks, self.moving_landmarks = fl, ml

    # ------------------------------------------------------------- utilities
    @property
    def has_landmarks(self) -> bool:
        return self.fixed_landmarks is not None

    def initial_distances(self) -> np.ndarray:
        """Per-landmark distance in mm before registration (identity transform)."""
        if not self.has_landmarks:
            raise ValueError(f"{self.name}: no landmarks")
        return landmark_distances(self.fixed_landmarks, self.moving_landmarks)

    def replace(self, **changes: Any) -> "Pair":
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """One row for a summary table: shapes, spacing, landmark count and initial distances (mm)."""
        row: dict[str, Any] = {
            "name": self.name,
            "dataset": self.dataset,
            "fixed_shape": self.fixed.grid.shape,
            "moving_shape": self.moving.grid.shape,
            "spacing_mm": tuple(round(s, 3) for s in self.fixed.grid.spacing),
            "landmarks": 0 if not self.has_landmarks else len(self.fixed_landmarks),
        }
        if self.has_landmarks:
            d = self.initial_distances()
            row["initial_mean_mm"] = float(d.mean())
            row["initial_max_mm"] = float(d.max())
        return row

    def __repr__(self) -> str:
        n = 0 if not self.has_landmarks else len(self.fixed_landmarks)
        return f"Pair({self.name!r}, dataset={self.dataset!r}, fixed={self.fixed.grid.shape}, moving={self.moving.grid.shape}, landmarks={n})"
