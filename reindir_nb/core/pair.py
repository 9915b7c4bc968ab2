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

__all__ = ["Pair", "Preparation", "HU_RANGE", "landmark_distances"]

HU_RANGE = (-1000.0, 500.0)  # HU window that preparation maps to [0, 1]


def landmark_distances(fixed_points: np.ndarray, moving_points: np.ndarray) -> np.ndarray:
    """Per-landmark Euclidean distance in mm between two corresponding (N, 3) point sets."""
    fixed = as_points(fixed_points, "fixed_points", allow_empty=True)
    moving = as_points(moving_points, "moving_points", allow_empty=True)
    if len(fixed) != len(moving):
        raise ValueError(f"{len(fixed)} fixed points but {len(moving)} moving points; they must correspond")
    return np.linalg.norm(fixed - moving, axis=1)


@dataclass(frozen=True)
class Preparation:
    """What :func:`reindir_nb.prepare` did to a pair: the typed view of the record it keeps in
    ``Pair.meta`` (``prepared``, ``normalized``, ``hu_range``, ``prealign_matrix``; plain JSON
    values, so saved pairs keep it).

    ``profile``: the run profile it was prepared for (None: not prepared); ``normalized``:
    intensities are ``hu_range`` HU mapped to [0, 1]; ``prealign_matrix``: 4x4 global
    pre-alignment, fixed world mm -> moving world mm (None: none estimated)."""

    profile: str | None = None
    normalized: bool = False
    hu_range: tuple[float, float] = HU_RANGE
    prealign_matrix: np.ndarray | None = None

    _KEYS = ("prepared", "normalized", "hu_range", "prealign_matrix")

    @classmethod
    def of(cls, meta: dict[str, Any]) -> "Preparation":
        """Read the record from a pair's ``meta`` (absent keys: not prepared)."""
        matrix = meta.get("prealign_matrix")
        lo, hi = meta.get("hu_range", HU_RANGE)
        return cls(profile=meta.get("prepared"), normalized=bool(meta.get("normalized", False)),
                   hu_range=(float(lo), float(hi)),
                   prealign_matrix=None if matrix is None else np.asarray(matrix, dtype=np.float64).reshape(4, 4))

    def to_meta(self) -> dict[str, Any]:
        """The record as ``meta`` entries (JSON values)."""
        out: dict[str, Any] = {"prepared": self.profile, "normalized": self.normalized,
                               "hu_range": [float(v) for v in self.hu_range]}
        if self.prealign_matrix is not None:
            out["prealign_matrix"] = np.asarray(self.prealign_matrix, dtype=np.float64).tolist()
        return out

    def to_image_units(self, hu: float) -> float:
        """A HU value in the pair's intensity units (HU, or [0, 1] when normalised)."""
        if not self.normalized:
            return float(hu)
        lo, hi = self.hu_range
        return (float(np.clip(hu, lo, hi)) - lo) / (hi - lo)


@dataclass
class Pair:
    """One registration task.

    ``ground_truth`` (optional) is the true displacement in mm on the fixed grid
    (``(z, y, x, 3)`` vectors, components ``(x, y, z)``): ``moving_point = x + u(x)``.
    ``meta`` carries free-form facts (e.g. ``{"label": "real anatomy, simulated motion"}``).
    ``coarse`` (optional): the fixed-size view of the same pair in the same world geometry that
    the REINDIR encoder embeds and whose INR frame the networks use, when this pair is a fine
    view for the INRs (:func:`reindir_nb.data.preprocess.prepare_fine`).
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
    coarse: "Pair | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming the offending file/volume for any inconsistent input."""
        if self.coarse is not None and not isinstance(self.coarse, Pair):
            raise TypeError(f"{self.name}: coarse must be a Pair (the encoder's view) or None, "
                            f"got {type(self.coarse).__name__}")
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

    @property
    def preparation(self) -> Preparation:
        """What preparation did to this pair (:class:`Preparation`; ``profile`` None when raw)."""
        return Preparation.of(self.meta)

    def with_preparation(self, preparation: Preparation, **changes: Any) -> "Pair":
        """A copy carrying ``preparation`` (replacing any earlier record) and other ``changes``."""
        meta = {k: v for k, v in self.meta.items() if k not in Preparation._KEYS}
        return replace(self, meta={**meta, **preparation.to_meta()}, **changes)

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
