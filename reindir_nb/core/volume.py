"""Volume: a ``(z, y, x)`` (or ``(z, y, x, 3)`` vector) array with its mm geometry, and the
lossless bridge to SimpleITK images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Grid

__all__ = ["Volume"]


@dataclass
class Volume:
    """An image in world space.

    ``array`` is indexed ``(z, y, x)`` (scalar) or ``(z, y, x, c)`` (vector, e.g. a
    displacement in mm with components ``(x, y, z)``); ``grid`` holds spacing, origin and
    direction in mm. ``name`` is for messages (usually the file it came from).
    """

    array: np.ndarray
    grid: Grid
    name: str = ""

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim not in (3, 4) or tuple(self.array.shape[:3]) != tuple(self.grid.shape):
            raise ValueError(
                f"{self.name or 'volume'}: array shape {self.array.shape} does not match grid shape "
                f"{self.grid.shape} (expected (z, y, x) or (z, y, x, c))"
            )

    # ---------------------------------------------------------------- builders
    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        spacing=(1.0, 1.0, 1.0),
        origin=(0.0, 0.0, 0.0),
        direction=None,
        name: str = "",
    ) -> "Volume":
        arr = np.asarray(array)
        grid = Grid(arr.shape[:3], spacing, origin, np.eye(3) if direction is None else direction)
        return cls(arr, grid, name)

    @classmethod
    def from_sitk(cls, image, name: str = "") -> "Volume":
        """Lossless conversion from a ``SimpleITK.Image`` (3D, scalar or vector pixels)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise ValueError(f"{name or 'image'}: expected a 3D image, got {image.GetDimension()}D")
        arr = sitk.GetArrayFromImage(image)
        grid = Grid(arr.shape[:3], image.GetSpacing(), image.GetOrigin(), np.array(image.GetDirection()).reshape(3, 3))
        return cls(arr, grid, name)

    def to_sitk(self):
        """Lossless conversion to a ``SimpleITK.Image`` (vector pixels for 4D arrays)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.array, isVector=self.array.ndim == 4)
        image.SetSpacing(self.grid.spacing)
        image.SetOrigin(self.grid.origin)
        image.SetDirection(tuple(self.grid.direction.ravel()))
        return image

    def with_array(self, array: np.ndarray, name: str | None = None) -> "Volume":
        """Same geometry, new voxel values."""
        return Volume(np.asarray(array), self.grid, self.name if name is None else name)

    # ------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        return self.grid.origin

    @property
    def direction(self) -> np.ndarray:
        return self.grid.direction

    @property
    def components(self) -> int:
        """Values per voxel: 1 for a scalar image, ``c`` for a ``(z, y, x, c)`` vector image."""
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    def require_scalar(self, what: str) -> None:
        """Raise a ValueError naming the volume unless it is a scalar 3D image; ``what`` says what
        it was meant to be (e.g. ``"the fixed CT"``)."""
        if self.array.ndim != 3:
            raise ValueError(
                f"{self.name or 'volume'}: {what} must be a scalar 3D image, but it holds {self.components} values "
                f"per voxel (shape {self.shape}; a vector image such as a displacement field or an RGB export)"
            )

    def check_finite(self) -> None:
        """Raise a ValueError naming the volume if it holds NaN or inf."""
        if not np.all(np.isfinite(self.array)):
            bad = int(np.size(self.array) - np.count_nonzero(np.isfinite(self.array)))
            raise ValueError(f"{self.name or 'volume'}: contains {bad} NaN/inf voxel values")

    def sample_world(self, points_mm: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """Values at world points (N, 3) mm; trilinear (order=1) or nearest (order=0)."""
        from scipy.ndimage import map_coordinates

        idx = self.grid.world_to_index(points_mm)  # (x, y, z)
        coords = idx[:, ::-1].T  # (z, y, x) rows for map_coordinates
        if self.array.ndim == 3:
            return map_coordinates(self.array.astype(np.float64), coords, order=order, mode="constant", cval=cval)
        return np.stack(
            [
                map_coordinates(self.array[..., c].astype(np.float64), coords, order=order, mode="constant", cval=cval)
                for c in range(self.array.shape[3])
            ],
            axis=-1,
        )

    def __repr__(self) -> str:
        return (
            f"Volume({self.name!r}, shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"origin={tuple(round(o, 2) for o in self.origin)}, dtype={self.array.dtype})"
        )
