"""Automatic distinctive 3D points inside the lungs of a real CT (Foerstner-style detector).

The structure tensor ``T = G_sigma_i * (grad I grad I^T)`` (gradients at scale
``sigma_d``) has three large eigenvalues only where intensity changes in all three
directions: vessel bifurcations, vessel ends, small blobs. Along a straight vessel it has
rank two, inside homogeneous parenchyma it is small. The score is Foerstner's precision
``w = det T / trace T`` (mm^-2 x HU^2), kept where the isotropy ``q = 27 det T / trace(T)^3``
(1 for a perfect 3D corner, 0 for edges and tubes) is large enough and the point sits on a
bright structure (smoothed HU above ``min_hu``: on a vessel, not in the dark parenchyma).
Non-maximum suppression in a window of ``min_spacing_mm`` and a greedy minimum distance give
well-spread points. Points are returned in world mm ``(x, y, z)`` with sub-voxel refinement.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.volume import Volume

__all__ = ["detect_landmarks", "structure_tensor_score", "lung_mask_for_landmarks"]


def _sigma_voxels(sigma_mm: float, spacing_xyz) -> tuple[float, float, float]:
    """Gaussian sigma in voxels per array axis (z, y, x) for a sigma in mm."""
    return tuple(float(sigma_mm) / float(s) for s in spacing_xyz[::-1])


def structure_tensor_score(
    image: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    sigma_d_mm: float = 1.0,
    sigma_i_mm: float = 2.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Foerstner precision ``w = det T / trace T`` and isotropy ``q = 27 det T / trace(T)^3`` ((z, y, x)
    arrays) of the structure tensor of ``image``; derivatives in world mm (anisotropic spacing honoured)."""
    img = np.asarray(image, dtype=np.float32)
    sd = _sigma_voxels(sigma_d_mm, spacing_xyz)
    si = _sigma_voxels(sigma_i_mm, spacing_xyz)
    spacing_zyx = tuple(float(s) for s in spacing_xyz[::-1])
    grads = []
    for axis in range(3):
        order = [0, 0, 0]
        order[axis] = 1
        grads.append(ndimage.gaussian_filter(img, sd, order=order) / spacing_zyx[axis])
    t = {}
    for i in range(3):
        for j in range(i, 3):
            t[i, j] = ndimage.gaussian_filter(grads[i] * grads[j], si)
    det = (
        t[0, 0] * (t[1, 1] * t[2, 2] - t[1, 2] ** 2)
        - t[0, 1] * (t[0, 1] * t[2, 2] - t[1, 2] * t[0, 2])
        + t[0, 2] * (t[0, 1] * t[1, 2] - t[1, 1] * t[0, 2])
    )
    trace = t[0, 0] + t[1, 1] + t[2, 2]
    eps = np.float32(1e-6 * max(float(trace.max()), 1e-12))
    det = np.maximum(det, 0)
    w = det / (trace + eps)
    q = 27.0 * det / (trace + eps) ** 3
    return w.astype(np.float32), np.clip(q, 0, 1).astype(np.float32)


def lung_mask_for_landmarks(volume: Volume, threshold_hu: float = -400.0) -> Volume:
    """Lung mask of a CT in HU, from the kit's one lung-mask function (:func:`reindir_nb.preprocess.lung_mask`)."""
    from ..data.preprocess import lung_mask

    return lung_mask(volume, threshold_hu)


def detect_landmarks(
    volume: Volume,
    mask: Volume | None = None,
    n: int = 300,
    min_spacing_mm: float = 6.0,
    sigma_d_mm: float = 1.0,
    sigma_i_mm: float = 2.5,
    min_isotropy: float = 0.05,
    min_hu: float = -500.0,
    erode_mm: float = 4.0,
    hu_window: tuple[float, float] = (-1000.0, 200.0),
) -> np.ndarray:
    """Up to ``n`` distinctive points (N, 3) in world mm ``(x, y, z)``, strongest first, inside
    ``mask`` (eroded by ``erode_mm`` so the pleura does not count; default: a lung mask of
    ``volume``), at least ``min_spacing_mm`` apart. See the module docstring for the measure.
    Raises ValueError when the mask is empty or does not match the image."""
    if mask is None:
        mask = lung_mask_for_landmarks(volume)
    if mask.grid.shape != volume.grid.shape:
        raise ValueError(
            f"{mask.name or 'mask'}: shape {mask.grid.shape} differs from {volume.name or 'image'} {volume.grid.shape}"
        )
    m = np.asarray(mask.array) > 0
    if not m.any():
        raise ValueError(f"{mask.name or 'mask'}: empty mask, no landmarks can be placed")
    spacing = volume.grid.spacing
    # work in the mask's bounding box plus a margin (the filters need context)
    pad = [int(np.ceil(4 * max(sigma_d_mm, sigma_i_mm) / s)) + 1 for s in spacing[::-1]]
    nz = np.argwhere(m)
    lo = np.maximum(nz.min(axis=0) - pad, 0)
    hi = np.minimum(nz.max(axis=0) + pad + 1, m.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    img = np.clip(np.asarray(volume.array[box], dtype=np.float32), *hu_window)
    w, q = structure_tensor_score(img, spacing, sigma_d_mm, sigma_i_mm)
    smooth_hu = ndimage.gaussian_filter(img, _sigma_voxels(0.7 * sigma_d_mm, spacing))
    radius = [max(1, int(round(erode_mm / s))) for s in spacing[::-1]]
    ball = _ellipsoid_structure(radius)
    inner = ndimage.binary_erosion(m[box], structure=ball)
    valid = inner & (q >= min_isotropy) & (smooth_hu >= min_hu) & (w > 0)
    win = [2 * max(1, int(round(0.5 * min_spacing_mm / s))) + 1 for s in spacing[::-1]]
    peaks = valid & (w == ndimage.maximum_filter(w, size=win))
    idx = np.argwhere(peaks)
    if len(idx) == 0:
        return np.zeros((0, 3))
    order = np.argsort(w[tuple(idx.T)])[::-1]
    idx = idx[order]
    sub = idx.astype(np.float64) + _subvoxel_offsets(w, idx)
    world = volume.grid.index_to_world((sub + lo)[:, ::-1])
    return _greedy_spacing(world, n, min_spacing_mm)


def _ellipsoid_structure(radius_zyx) -> np.ndarray:
    rz, ry, rx = radius_zyx
    z, y, x = np.ogrid[-rz : rz + 1, -ry : ry + 1, -rx : rx + 1]
    return (z / max(rz, 1)) ** 2 + (y / max(ry, 1)) ** 2 + (x / max(rx, 1)) ** 2 <= 1.0


def _subvoxel_offsets(w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-axis parabola through the peak and its two neighbours (offset within +-0.5 voxel)."""
    off = np.zeros(idx.shape, dtype=np.float64)
    for axis in range(3):
        lo_i, hi_i = idx.copy(), idx.copy()
        lo_i[:, axis] = np.clip(idx[:, axis] - 1, 0, w.shape[axis] - 1)
        hi_i[:, axis] = np.clip(idx[:, axis] + 1, 0, w.shape[axis] - 1)
        a, b, c = (w[tuple(i.T)].astype(np.float64) for i in (lo_i, idx, hi_i))
        denom = a - 2 * b + c
        with np.errstate(divide="ignore", invalid="ignore"):
            o = np.where(denom < 0, 0.5 * (a - c) / denom, 0.0)
        off[:, axis] = np.clip(np.nan_to_num(o), -0.5, 0.5)
    return off


def _greedy_spacing(points: np.ndarray, n: int, min_spacing_mm: float) -> np.ndarray:
    """The first ``n`` points (in the given priority order) at least ``min_spacing_mm`` apart."""
    chosen = np.empty((max(n, 0), 3))
    k = 0
    for p in points:
        if k == n:
            break
        if k and np.min(np.sum((chosen[:k] - p) ** 2, axis=1)) < min_spacing_mm**2:
            continue
        chosen[k] = p
        k += 1
    return chosen[:k].copy()
