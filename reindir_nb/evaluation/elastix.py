"""The classic peer: elastix affine + B-spline registration (``itk-elastix``), fixed -> moving.

Points are mapped by the registration's own ITK transform (``GetCombinationTransform``, exact,
no point files); det J comes from transformix (``spatialJacobian.nii`` in a temporary folder, read
with the kit's image reader, so it carries the fixed grid's mm geometry)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..core.pair import Pair
from ..core.volume import Volume
from ..data.images import read_image

__all__ = ["ElastixConfig", "ElastixTransform", "elastix_available", "elastix_config", "elastix_transform",
           "elastix_register"]


@dataclass(frozen=True)
class ElastixConfig:
    """elastix default affine then B-spline maps; ``bspline_spacing_mm`` the final control-point
    spacing (mm), ``max_iterations`` per resolution, ``resolutions`` pyramid levels."""

    bspline_spacing_mm: float = 8.0
    max_iterations: int = 500
    resolutions: int = 3


def elastix_config(kwargs: dict[str, Any] | None) -> ElastixConfig:
    """:class:`ElastixConfig` from keyword arguments; ValueError naming unknown keys."""
    kwargs = dict(kwargs or {})
    known = {f.name for f in fields(ElastixConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"elastix_kwargs: unknown settings {unknown} (known: {sorted(known)})")
    return ElastixConfig(**kwargs)


def elastix_available() -> bool:
    """True when ``itk-elastix`` is importable."""
    try:
        import itk

        return hasattr(itk, "ElastixRegistrationMethod")
    except Exception:  # pragma: no cover - environment dependent
        return False


def _to_itk(volume: Volume):
    import itk

    image = itk.image_from_array(np.ascontiguousarray(volume.array, dtype=np.float32))
    image.SetSpacing([float(s) for s in volume.grid.spacing])
    image.SetOrigin([float(o) for o in volume.grid.origin])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(volume.grid.direction, dtype=np.float64)))
    return image


@dataclass
class ElastixTransform:
    """A finished elastix registration of ``pair``: ``seconds`` of registration wall time."""

    pair: Pair
    transform: Any            # itk transform, fixed world mm -> moving world mm
    parameters: Any           # itk ParameterObject of the result (for transformix)
    moving_image: Any         # the itk moving image transformix needs
    seconds: float
    _det: Volume | None = None

    def transform_points(self, points_mm: np.ndarray) -> np.ndarray:
        """Fixed world mm (N, 3) -> moving world mm (N, 3)."""
        pts = np.asarray(points_mm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"{self.pair.name}: elastix maps (N, 3) points in mm, got shape {pts.shape}")
        return np.array([tuple(self.transform.TransformPoint([float(c) for c in p])) for p in pts],
                        dtype=np.float64).reshape(-1, 3)

    def jacobian_determinant(self) -> Volume:
        """det J of the transform on the fixed grid (transformix; computed once, then cached)."""
        if self._det is None:
            import itk

            with tempfile.TemporaryDirectory(prefix="reindir_transformix_") as folder:
                tfx = itk.TransformixFilter.New(Input=self.moving_image, TransformParameterObject=self.parameters)
                tfx.SetComputeDeterminantOfSpatialJacobian(True)
                tfx.SetOutputDirectory(folder + os.sep)
                tfx.SetLogToConsole(False)
                tfx.UpdateLargestPossibleRegion()
                det = read_image(os.path.join(folder, "spatialJacobian.nii"))
            grid = self.pair.fixed.grid
            if det.array.shape != grid.shape:
                raise ValueError(f"{self.pair.name}: transformix det J has shape {det.array.shape}, "
                                 f"fixed grid {grid.shape}")
            self._det = self.pair.fixed.with_array(np.asarray(det.array, dtype=np.float64), name="det J")
        return self._det


def elastix_transform(pair: Pair, config: ElastixConfig = ElastixConfig()) -> ElastixTransform:
    """Register ``pair`` with elastix (affine + B-spline, fixed -> moving). Needs ``itk-elastix``."""
    if not elastix_available():
        raise RuntimeError("elastix needs the itk-elastix package (pip install itk-elastix)")
    import itk

    params = itk.ParameterObject.New()
    for pmap in (params.GetDefaultParameterMap("affine", int(config.resolutions)),
                 params.GetDefaultParameterMap("bspline", int(config.resolutions), float(config.bspline_spacing_mm))):
        pmap["MaximumNumberOfIterations"] = [str(int(config.max_iterations))]
        params.AddParameterMap(pmap)
    moving = _to_itk(pair.moving)
    t0 = time.perf_counter()
    method = itk.ElastixRegistrationMethod.New(_to_itk(pair.fixed), moving, ParameterObject=params,
                                               LogToConsole=False)
    method.Update()
    seconds = time.perf_counter() - t0
    return ElastixTransform(pair, method.GetCombinationTransform(), method.GetTransformParameterObject(), moving,
                            seconds)


def elastix_register(
    pair: Pair,
    points_mm: np.ndarray | None = None,
    bspline_spacing_mm: float = 8.0,
    max_iterations: int = 500,
    resolutions: int = 3,
) -> np.ndarray:
    """Classic peer: elastix affine + B-spline registration of ``pair`` (fixed -> moving, the
    kit's convention); returns ``points_mm`` (default: the fixed landmarks, world mm) mapped to
    moving world mm. Needs ``itk-elastix``."""
    pts = pair.fixed_landmarks if points_mm is None else np.asarray(points_mm, dtype=np.float64)
    if pts is None or np.ndim(pts) != 2 or np.shape(pts)[1] != 3:
        raise ValueError(f"{pair.name}: elastix_register needs (N, 3) points in mm")
    config = ElastixConfig(bspline_spacing_mm, max_iterations, resolutions)
    return elastix_transform(pair, config).transform_points(pts)
