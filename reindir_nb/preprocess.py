"""Preprocessing: lung masks, isotropic resampling, crop/pad to the profile's patch,
intensity normalisation, scale augmentation, and :func:`prepare` (``rn.prepare``).

Everything keeps world-mm geometry exact: resampling and cropping change the voxel grid,
never where a world point is, so landmarks (world mm) are untouched.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from scipy import ndimage

from .geometry import Grid
from .pair import Pair
from .profiles import Profile, get_profile
from .volume import Volume

__all__ = [
    "HU_RANGE",
    "normalize_intensity",
    "resample_to_grid",
    "resample_isotropic",
    "crop_or_pad",
    "lung_mask",
    "scale_augment",
    "prepare",
]

log = logging.getLogger(__name__)

HU_RANGE = (-1000.0, 500.0)  # window mapped to [0, 1] by normalize_intensity


def normalize_intensity(volume: Volume, hu_range: tuple[float, float] = HU_RANGE) -> Volume:
    """Clip HU to ``hu_range`` and scale linearly to [0, 1] (float32, unitless)."""
    lo, hi = hu_range
    arr = (np.clip(volume.array.astype(np.float32), lo, hi) - lo) / (hi - lo)
    return volume.with_array(arr.astype(np.float32))


def resample_to_grid(volume: Volume, grid: Grid, order: int = 1, default: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``grid`` in WORLD coordinates (order 1 = trilinear, 0 = nearest;
    vector volumes component-wise); outside the source, ``default``."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in grid.shape[::-1]], sitk.sitkUInt8)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(tuple(grid.direction.ravel()))
    interp = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
    src = volume.to_sitk() if volume.array.dtype != bool else volume.with_array(volume.array.astype(np.uint8)).to_sitk()
    out = sitk.Resample(src, ref, sitk.Transform(), interp, float(default))
    arr = sitk.GetArrayFromImage(out)
    if volume.array.dtype == bool:
        arr = arr > 0
    return Volume(arr, grid, volume.name)


def _isotropic_grid(grid: Grid, spacing_mm: float) -> Grid:
    """Grid with isotropic ``spacing_mm`` whose first voxel centre is the old one and whose extent
    covers the old extent (rounded to whole voxels)."""
    size_xyz = np.maximum(1, np.round(grid.extent_mm / spacing_mm).astype(int) + 1)
    return Grid(tuple(size_xyz[::-1]), (spacing_mm,) * 3, grid.origin, grid.direction)


def resample_isotropic(volume: Volume, spacing_mm: float, order: int = 1, antialias: bool = True) -> Volume:
    """Resample to isotropic ``spacing_mm``; images trilinear (``order=1``) with a Gaussian
    anti-aliasing blur along axes that get coarser, masks nearest (``order=0``)."""
    target = _isotropic_grid(volume.grid, spacing_mm)
    src = volume
    if antialias and order == 1 and volume.array.ndim == 3:
        factor = spacing_mm / np.array(volume.spacing)  # (x, y, z)
        sigma_zyx = np.where(factor > 1, 0.4 * factor, 0.0)[::-1]
        if np.any(sigma_zyx > 0):
            src = volume.with_array(ndimage.gaussian_filter(volume.array.astype(np.float32), sigma_zyx))
    return resample_to_grid(src, target, order=order, default=float(volume.array.min()) if order else 0.0)


def crop_or_pad(volume: Volume, patch_size: tuple[int, int, int], centre_mm, pad_value: float | None = None) -> Volume:
    """Crop/pad to ``patch_size`` (z, y, x) voxels centred on the world point ``centre_mm``
    (snapped to the voxel grid). World positions of kept voxels do not change: the origin is
    moved by whole voxels. Padding uses ``pad_value`` (default: the image minimum)."""
    grid = volume.grid
    centre_idx = np.round(grid.world_to_index(np.asarray(centre_mm, float).reshape(1, 3))[0]).astype(int)
    size = np.array(patch_size[::-1])  # (x, y, z)
    start = centre_idx - size // 2
    new_origin = grid.index_to_world(start.reshape(1, 3).astype(float))[0]
    target = Grid(tuple(patch_size), grid.spacing, tuple(new_origin), grid.direction)
    fill = float(volume.array.min()) if pad_value is None else pad_value
    shape = tuple(patch_size) + volume.array.shape[3:]
    out = np.full(shape, fill, dtype=volume.array.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, grid.size_xyz.astype(int))
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[2]:dst_hi[2], dst_lo[1]:dst_hi[1], dst_lo[0]:dst_hi[0]] = volume.array[
            src_lo[2]:src_hi[2], src_lo[1]:src_hi[1], src_lo[0]:src_hi[0]
        ]
    return Volume(out, target, volume.name)


def _lung_mask_lungmask_package(volume: Volume) -> Volume | None:
    """The Hofmanninger et al. ``lungmask`` model when installed AND its weights load; else None."""
    try:
        from lungmask import LMInferer  # type: ignore
    except Exception:
        return None
    try:
        labels = LMInferer().apply(volume.to_sitk())
    except Exception as err:  # weights cannot be downloaded here
        log.warning("lungmask is installed but could not run (%s); using the threshold mask", err)
        return None
    return volume.with_array(np.asarray(labels) > 0, name=f"{volume.name} lung mask (lungmask)")


def lung_mask(volume: Volume, threshold_hu: float = -400.0, use_lungmask: bool = True) -> Volume:
    """Lung mask of a CT in HU (bool Volume).

    With ``use_lungmask`` the ``lungmask`` package (optional extra) is tried first; by default,
    and whenever it is unavailable, air below ``threshold_hu`` is taken, per axial slice the air
    regions touching the slice border are outside air, the two largest remaining 3D regions are the lungs (one if
    the second is < 20 % of the first), vessels are filled slice by slice and the mask is closed.
    Raises ValueError naming the image when no lung-like region exists.
    """
    if use_lungmask:
        found = _lung_mask_lungmask_package(volume)
        if found is not None:
            return found
    a = np.asarray(volume.array)
    air = a < threshold_hu
    if not air.any():
        raise ValueError(f"{volume.name or 'image'}: no voxel below {threshold_hu:g} HU, cannot find lungs")
    # outside air, slice by slice: 2D air regions touching the slice border (a 3D labelling
    # leaks into the lungs through the airways or a thin chest wall at the top/bottom faces)
    body_air = air.copy()
    for z in range(air.shape[0]):
        lab2, _ = ndimage.label(air[z])
        border = np.unique(np.concatenate([lab2[0], lab2[-1], lab2[:, 0], lab2[:, -1]]))
        body_air[z] &= ~np.isin(lab2, border[border > 0])
    if not body_air.any():  # cropped to the lungs: they touch the faces too; keep all air
        body_air = air
    labels, n = ndimage.label(body_air)
    sizes = ndimage.sum_labels(np.ones_like(labels, dtype=np.int64), labels, index=np.arange(1, n + 1)).astype(float)
    order = np.argsort(sizes)[::-1]
    keep = [order[0] + 1]
    if n > 1 and sizes[order[1]] > 0.2 * sizes[order[0]]:
        keep.append(order[1] + 1)
    mask = np.isin(labels, keep)
    mask = np.stack([ndimage.binary_fill_holes(s) for s in mask])
    mask = ndimage.binary_closing(mask, structure=ndimage.generate_binary_structure(3, 1), iterations=2)
    if mask.sum() < 10:
        raise ValueError(f"{volume.name or 'image'}: lung mask is (nearly) empty")
    return volume.with_array(mask, name=f"{volume.name} lung mask (threshold {threshold_hu:g} HU)")


def scale_augment(pair: Pair, scale: float | None = None, generator: np.random.Generator | None = None,
                  scale_range: tuple[float, float] = (0.8, 1.2)) -> Pair:
    """The same pair with its anatomy scaled by ``scale`` (drawn from ``scale_range`` with
    ``generator`` when None) about the fixed image centre, on the SAME voxel grids.

    The world map ``S(x) = c + s (x - c)`` is applied consistently: images and masks are
    resampled (``I'(x) = I(S^-1 x)``), landmarks become ``S(l)``, the ground-truth displacement
    becomes ``u'(x) = s u(S^-1 x)``. Landmark pairs that leave either image are dropped from both.
    """
    if scale is None:
        rng = generator if generator is not None else np.random.default_rng()
        scale = float(rng.uniform(*scale_range))
    if scale <= 0:
        raise ValueError(f"{pair.name}: scale must be positive, got {scale}")
    centre = pair.fixed.grid.index_to_world(((pair.fixed.grid.size_xyz - 1) / 2).reshape(1, 3))[0]

    def scaled_grid(g: Grid) -> Grid:  # where the voxels of g land under S
        origin = centre + scale * (np.array(g.origin) - centre)
        return Grid(g.shape, tuple(scale * np.array(g.spacing)), tuple(origin), g.direction)

    def rescale(v: Volume | None, order: int, factor: float = 1.0) -> Volume | None:
        if v is None:
            return None
        moved = Volume(v.array if factor == 1.0 else v.array * factor, scaled_grid(v.grid), v.name)
        default = 0.0 if (order == 0 or v.array.ndim == 4) else float(v.array.min())
        return resample_to_grid(moved, v.grid, order=order, default=default)

    fl = ml = None
    if pair.has_landmarks:
        fl = centre + scale * (pair.fixed_landmarks - centre)
        ml = centre + scale * (pair.moving_landmarks - centre)
        keep = pair.fixed.grid.contains(fl) & pair.moving.grid.contains(ml)
        fl, ml = fl[keep], ml[keep]
    return replace(
        pair,
        fixed=rescale(pair.fixed, 1), moving=rescale(pair.moving, 1),
        fixed_mask=rescale(pair.fixed_mask, 0), moving_mask=rescale(pair.moving_mask, 0),
        ground_truth=rescale(pair.ground_truth, 1, factor=scale),
        fixed_landmarks=fl, moving_landmarks=ml,
        meta={**pair.meta, "scale": scale},
    )


def _crop_centre(mask: Volume, points: np.ndarray | None, patch_size, spacing_mm: float) -> np.ndarray:
    """World centre of the crop: the lung-mask box centre, shifted so the landmarks fit if possible."""
    idx = np.argwhere(mask.array > 0)  # (z, y, x)
    lo = mask.grid.index_to_world(idx.min(0)[::-1].reshape(1, 3).astype(float))[0]
    hi = mask.grid.index_to_world(idx.max(0)[::-1].reshape(1, 3).astype(float))[0]
    centre = (lo + hi) / 2
    if points is not None and len(points):
        half = (np.array(patch_size[::-1]) - 1) / 2 * spacing_mm - spacing_mm  # world half-extent, 1 voxel margin
        plo, phi = points.min(0), points.max(0)
        # smallest shift that brings [plo, phi] inside [centre - half, centre + half] (when it fits)
        centre = np.clip(centre, phi - half, plo + half) if np.all(phi - plo <= 2 * half) else (plo + phi) / 2
    return centre


def prepare(pair: Pair, profile: "str | Profile" = "demo") -> Pair:
    """Resample/crop/normalise a pair for a run profile; world-mm geometry is kept exact.

    Steps: lung masks when missing (HU images); each image, mask and the ground truth resampled
    to the profile's isotropic ``spacing_mm``; each side cropped/padded to ``patch_size`` around
    its lung-mask centre (shifted so the landmarks fit); intensities clipped to
    :data:`HU_RANGE` and scaled to [0, 1]. Sets ``meta["prepared"]`` and ``meta["normalized"]``.
    Raises ValueError naming the pair when landmarks cannot all be kept inside the patches.
    """
    prof = get_profile(profile)
    if pair.meta.get("prepared"):
        return pair
    if pair.meta.get("normalized"):
        raise ValueError(f"{pair.name}: images are already normalised but not prepared; give the HU pair")
    sp, patch = prof.spacing_mm, prof.patch_size
    fmask = pair.fixed_mask if pair.fixed_mask is not None else lung_mask(pair.fixed)
    mmask = pair.moving_mask if pair.moving_mask is not None else lung_mask(pair.moving)

    def side(image: Volume, mask: Volume, points, gt: Volume | None):
        image_iso = resample_isotropic(image, sp)
        mask_iso = resample_to_grid(mask.with_array(mask.array > 0), image_iso.grid, order=0)
        if not mask_iso.array.any():
            raise ValueError(f"{pair.name}: lung mask of {image.name or 'image'} vanishes at {sp} mm")
        centre = _crop_centre(mask_iso, points, patch, sp)
        img = crop_or_pad(image_iso, patch, centre, pad_value=float(image.array.min()))
        msk = crop_or_pad(mask_iso, patch, centre, pad_value=0)
        gt_out = None
        if gt is not None:
            gt_out = resample_to_grid(gt, img.grid, order=1, default=0.0)
        return normalize_intensity(img), msk, gt_out

    fixed, fixed_mask, gt = side(pair.fixed, fmask, pair.fixed_landmarks, pair.ground_truth)
    moving, moving_mask, _ = side(pair.moving, mmask, pair.moving_landmarks, None)
    if not fixed_mask.array.any() or not moving_mask.array.any():
        raise ValueError(f"{pair.name}: the lung mask is empty after cropping to {patch}")
    try:
        return replace(
            pair, fixed=fixed, moving=moving, fixed_mask=fixed_mask, moving_mask=moving_mask, ground_truth=gt,
            meta={**pair.meta, "prepared": prof.name, "normalized": True, "hu_range": list(HU_RANGE)},
        )
    except ValueError as err:
        raise ValueError(f"{pair.name}: landmarks do not fit the {patch} patch at {sp} mm ({err})") from None
