"""Preprocessing: lung masks, isotropic resampling, crop/pad to the profile's patch,
intensity normalisation, scale augmentation, and :func:`prepare` (``rn.prepare``).

Everything keeps world-mm geometry exact: resampling and cropping change the voxel grid,
never where a world point is, so landmarks (world mm) are untouched. Images come in HU and
leave :func:`prepare` normalised to [0, 1] (``0 <-> -1000 HU``, ``1 <-> 500 HU``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage

from ..core.geometry import Grid, apply_affine, invert_affine
from ..core.pair import HU_RANGE, Pair, Preparation
from ..core.profiles import Profile, get_profile
from ..core.volume import Volume
from .prealign import resolve_prealign

__all__ = [
    "HU_RANGE",
    "normalize_intensity",
    "resample_to_grid",
    "resample_isotropic",
    "isotropic_grid",
    "crop_or_pad",
    "lung_mask",
    "scale_augment",
    "swap_direction",
    "prepare",
    "prepare_fine",
]

log = logging.getLogger(__name__)


_SLICE_2D = np.zeros((3, 3, 3), dtype=bool)  # 4-connectivity inside each axial (z) slice only
_SLICE_2D[1] = ndimage.generate_binary_structure(2, 1)


# ------------------------------------------------------------------ intensities
def normalize_intensity(volume: Volume, hu_range: tuple[float, float] = HU_RANGE) -> Volume:
    """Clip HU to ``hu_range`` and scale linearly to [0, 1] (float32, unitless):
    ``hu_range[0]`` HU -> 0, ``hu_range[1]`` HU -> 1."""
    lo, hi = (float(v) for v in hu_range)
    if not hi > lo:
        raise ValueError(f"{volume.name or 'volume'}: hu_range must be increasing, got {hu_range}")
    arr = (np.clip(volume.array.astype(np.float32), lo, hi) - lo) / (hi - lo)
    return volume.with_array(arr.astype(np.float32))


# ------------------------------------------------------------------- resampling
def resample_to_grid(volume: Volume, grid: Grid, order: int = 1, default: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``grid`` in WORLD coordinates (SimpleITK; ``order`` 1 = trilinear,
    0 = nearest; vector volumes component-wise); world points outside the source get ``default``.
    Boolean masks stay boolean."""
    import SimpleITK as sitk

    if order not in (0, 1):
        raise ValueError(f"{volume.name or 'volume'}: order must be 0 (nearest) or 1 (trilinear), got {order}")
    ref = sitk.Image([int(s) for s in grid.shape[::-1]], sitk.sitkUInt8)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(tuple(grid.direction.ravel()))
    is_bool = volume.array.dtype == bool
    src = volume.with_array(volume.array.astype(np.uint8)) if is_bool else volume
    interp = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
    out = sitk.GetArrayFromImage(sitk.Resample(src.to_sitk(), ref, sitk.Transform(), interp, float(default)))
    return Volume(out >= 0.5 if is_bool else out, grid, volume.name)


def isotropic_grid(grid: Grid, spacing_mm: float) -> Grid:
    """Grid with isotropic ``spacing_mm``, the same direction and first voxel centre, whose extent
    matches the old extent to the nearest whole voxel per axis."""
    size_xyz = np.maximum(1, np.round(grid.extent_mm / spacing_mm).astype(int) + 1)
    return Grid(tuple(size_xyz[::-1]), (float(spacing_mm),) * 3, grid.origin, grid.direction)


def resample_isotropic(volume: Volume, spacing_mm: float, order: int = 1, antialias: bool = True) -> Volume:
    """Resample to isotropic ``spacing_mm`` (mm): images trilinear (``order=1``) with a Gaussian
    anti-aliasing blur (sigma = 0.4 x the coarsening factor, voxels) along axes that get coarser;
    masks nearest (``order=0``). The first voxel centre keeps its world position (same origin and
    direction) and the extent is kept to within half a new voxel per axis. Outside the source
    (the last partial voxel) images get their minimum, masks 0."""
    if not spacing_mm > 0:
        raise ValueError(f"{volume.name or 'volume'}: spacing_mm must be positive, got {spacing_mm}")
    target = isotropic_grid(volume.grid, spacing_mm)
    src = volume
    if antialias and order == 1 and volume.array.ndim == 3:
        factor = spacing_mm / np.array(volume.spacing)  # (x, y, z)
        sigma_zyx = np.where(factor > 1, 0.4 * factor, 0.0)[::-1]
        if np.any(sigma_zyx > 0):
            src = volume.with_array(ndimage.gaussian_filter(volume.array.astype(np.float32), sigma_zyx, mode="nearest"))
    default = float(volume.array.min()) if (order == 1 and volume.array.ndim == 3) else 0.0
    return resample_to_grid(src, target, order=order, default=default)


# ------------------------------------------------------------------ crop / pad
def crop_or_pad(
    volume: Volume, patch_size_zyx: tuple[int, int, int], centre_mm, pad_value: float | None = None
) -> Volume:
    """Crop/pad to ``patch_size_zyx`` (z, y, x) voxels around the world point ``centre_mm`` (x, y, z).

    The patch's central voxel (index ``size // 2`` per axis) is the source voxel nearest to
    ``centre_mm``. No interpolation: every kept voxel keeps its value AND its world position (the
    origin moves by whole voxels along the direction axes). Padding uses ``pad_value`` (default:
    the image minimum; 0 for masks)."""
    grid = volume.grid
    size = np.array(tuple(int(s) for s in patch_size_zyx)[::-1])  # (x, y, z)
    if len(size) != 3 or size.min() < 1:
        raise ValueError(
            f"{volume.name or 'volume'}: patch size must be three positive (z, y, x) sizes, got {patch_size_zyx}"
        )
    centre_idx = np.round(grid.world_to_index(np.asarray(centre_mm, float).reshape(1, 3))[0]).astype(int)
    start = centre_idx - size // 2
    return _crop_at(volume, start, size, pad_value)


def _crop_at(volume: Volume, start_xyz: np.ndarray, size_xyz: np.ndarray, pad_value: float | None) -> Volume:
    """Patch of ``size_xyz`` voxels whose first voxel is source index ``start_xyz`` (may be outside)."""
    grid = volume.grid
    new_origin = grid.index_to_world(start_xyz.reshape(1, 3).astype(float))[0]
    target = Grid(tuple(int(s) for s in size_xyz[::-1]), grid.spacing, tuple(new_origin), grid.direction)
    if pad_value is None:
        pad_value = 0 if volume.array.dtype == bool else float(volume.array.min())
    out = np.full(target.shape + volume.array.shape[3:], pad_value, dtype=volume.array.dtype)
    src_lo = np.maximum(start_xyz, 0)
    src_hi = np.minimum(start_xyz + size_xyz, grid.size_xyz.astype(int))
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - start_xyz
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[2]:dst_hi[2], dst_lo[1]:dst_hi[1], dst_lo[0]:dst_hi[0]] = volume.array[
            src_lo[2]:src_hi[2], src_lo[1]:src_hi[1], src_lo[0]:src_hi[0]
        ]
    return Volume(out, target, volume.name)


# ------------------------------------------------------------------- lung mask
def _require_contrast(volume: Volume, step: str) -> None:
    """Raise a ValueError naming the image when all its voxels have one value (nothing to segment
    or register)."""
    arr = volume.array
    if arr.size and float(arr.max()) == float(arr.min()):
        raise ValueError(
            f"{volume.name or 'image'}: every voxel has the value {float(arr.min()):g}; {step} needs an image with "
            f"contrast (a blank or failed export?)"
        )


@functools.lru_cache(maxsize=1)
def _lungmask_inferer() -> Any:
    """The ``lungmask`` (Hofmanninger et al.) model when the package imports AND its weights load;
    else None (logged once). Cached: weights are loaded at most once per process."""
    try:
        from lungmask import LMInferer  # type: ignore[import-not-found]
    except Exception:  # not installed: the optional extra is absent, nothing to say
        return None
    try:
        return LMInferer()
    except Exception as err:  # weights are downloaded on first use; no network here
        log.warning("lungmask is installed but its weights could not be loaded (%s); "
                    "using the threshold lung mask", err)
        return None


def _lung_mask_lungmask_package(volume: Volume) -> Volume | None:
    inferer = _lungmask_inferer()
    if inferer is None:
        return None
    try:
        labels = np.asarray(inferer.apply(volume.to_sitk()))
    except Exception as err:
        log.warning("lungmask failed on %s (%s); using the threshold lung mask", volume.name or "image", err)
        return None
    if labels.shape != volume.grid.shape or not labels.any():
        log.warning("lungmask found no lungs in %s; using the threshold lung mask", volume.name or "image")
        return None
    return volume.with_array(labels > 0, name=f"{volume.name} lung mask (lungmask)")


def _outside_air(array: np.ndarray, air: np.ndarray, clear_air_hu: float, rim_voxels: int) -> np.ndarray:
    """Air outside the body, slice by slice: clear air (< ``clear_air_hu``) connected to the slice
    border, grown ``rim_voxels`` into the partial-volume rim. Lung parenchyma (about -850 HU) is not
    clear air, so lungs that touch the border of a cropped image are kept, and a lung that touches
    the outside through a partial-volume gap in a thin chest wall is not swallowed."""
    clear = array < clear_air_hu
    labels, _ = ndimage.label(clear, structure=_SLICE_2D)
    border = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()]))
    outside = np.isin(labels, border[border > 0])
    if rim_voxels > 0 and outside.any():
        outside = ndimage.binary_dilation(outside, structure=_SLICE_2D, iterations=rim_voxels, mask=air)
    return outside


def _closing_padded(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary closing (6-neighbour cross) that does not erode voxels at the array faces."""
    if iterations < 1:
        return mask
    padded = np.pad(mask, iterations + 1)
    closed = ndimage.binary_closing(padded, structure=ndimage.generate_binary_structure(3, 1), iterations=iterations)
    inner = tuple(slice(iterations + 1, -(iterations + 1)) for _ in range(3))
    return closed[inner] | mask


def lung_mask(
    volume: Volume,
    threshold_hu: float = -400.0,
    use_lungmask: bool = True,
    clear_air_hu: float = -950.0,
    second_lung_fraction: float = 0.2,
    max_hole_mm2: float = 600.0,
    max_fraction: float = 0.9,
) -> Volume:
    """Lung mask (bool Volume) of a CT in HU.

    With ``use_lungmask`` the ``lungmask`` package (optional extra ``reindir_nb[lungmask]``) is
    used when it imports and its weights load; otherwise (the default here: its weights cannot be
    downloaded) a warning is logged once and the threshold method runs:

    1. air = voxels below ``threshold_hu``;
    2. outside air removed slice by slice (clear air below ``clear_air_hu`` connected to the slice
       border, plus its partial-volume rim), so only air inside the body remains;
    3. 3D connected components: the largest is kept, and the second largest too when it has at
       least ``second_lung_fraction`` of the largest's volume (two lungs; one component when they
       are joined through the airways); gas in the bowel or stomach is smaller and dropped;
    4. holes up to ``max_hole_mm2`` filled slice by slice (vessels, airways; not the diaphragm
       domes, which appear as large tissue islands in axial slices near the lung bases), then a
       small closing (two 6-neighbour steps).

    Raises ValueError naming the image when no lung-like region exists, when the image is constant
    (every voxel would be "lung") or when the mask would fill more than ``max_fraction`` of the image
    (not a thorax CT in HU).
    """
    name = volume.name or "image"
    if volume.array.ndim != 3:
        raise ValueError(f"{name}: lung_mask needs a scalar 3D image, got shape {volume.array.shape}")
    if use_lungmask:
        found = _lung_mask_lungmask_package(volume)
        if found is not None:
            return found
    a = np.asarray(volume.array, dtype=np.float32)
    air = a < threshold_hu
    if not air.any():
        raise ValueError(f"{name}: no voxel below {threshold_hu:g} HU, cannot find lungs (values "
                         f"{float(a.min()):g}..{float(a.max()):g}; an image storing HU + 1024 needs hu_offset=1024 "
                         f"when it is loaded)")
    _require_contrast(volume, "lung_mask")
    in_plane = min(volume.spacing[0], volume.spacing[1])
    rim = max(1, int(np.ceil(2.0 / in_plane)))  # about 2 mm of partial-volume skin edge
    inside_air = air & ~_outside_air(a, air, clear_air_hu, rim)
    labels, n = ndimage.label(inside_air)
    if n == 0:
        raise ValueError(f"{name}: all air below {threshold_hu:g} HU is outside the body; no lungs found")
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(float)
    order = np.argsort(sizes)[::-1]
    keep = [order[0] + 1]
    if n > 1 and sizes[order[1]] >= second_lung_fraction * sizes[order[0]]:
        keep.append(order[1] + 1)
    mask = np.isin(labels, keep)
    max_hole = max_hole_mm2 / (volume.spacing[0] * volume.spacing[1])  # voxels
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        holes, k = ndimage.label(ndimage.binary_fill_holes(mask[z]) & ~mask[z])
        if k:
            area = np.bincount(holes.ravel(), minlength=k + 1)
            mask[z] |= (area <= max_hole)[holes] & (holes > 0)
    mask = _closing_padded(mask, 2)
    if mask.sum() < 10:
        raise ValueError(f"{name}: lung mask is (nearly) empty ({int(mask.sum())} voxels)")
    if mask.mean() > max_fraction:
        raise ValueError(
            f"{name}: the lung mask would cover {100 * mask.mean():.0f} % of the image (more than "
            f"{100 * max_fraction:.0f} %): this does not look like a thorax CT in HU; give a lung mask or check "
            f"the image's intensities")
    return volume.with_array(mask, name=f"{volume.name} lung mask (threshold {threshold_hu:g} HU)")


# ---------------------------------------------------------------- augmentation
def scale_augment(
    pair: Pair,
    scale: float | None = None,
    generator: np.random.Generator | None = None,
    scale_range: tuple[float, float] = (0.8, 1.2),
    seed: int | None = None,
) -> Pair:
    """The same pair with its anatomy scaled by ``scale`` about the fixed image centre, on the
    SAME voxel grids. Without ``scale`` it is drawn uniformly from ``scale_range`` with
    ``generator`` (or ``np.random.default_rng(seed)``).

    The world map ``S(x) = c + s (x - c)`` is applied consistently to both sides: images and
    masks are resampled (``I'(x) = I(S^-1 x)``; masks nearest), landmarks become ``S(l)``, the
    ground-truth displacement becomes ``u'(x) = s u(S^-1 x)`` (so ``S(l) + u'(S(l)) = S(l + u(l))``).
    Landmark pairs that leave either image are dropped from both. ``meta["scale"]`` holds the
    total scale; ``meta["motion"]`` (an exact phantom motion, no longer valid) is removed.
    """
    if scale is None:
        rng = generator if generator is not None else np.random.default_rng(seed)
        scale = float(rng.uniform(*scale_range))
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"{pair.name}: scale must be positive, got {scale}")
    centre = pair.fixed.grid.index_to_world(((pair.fixed.grid.size_xyz - 1) / 2).reshape(1, 3))[0]

    def scaled_grid(g: Grid) -> Grid:  # where the voxel centres of g land under S
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
    meta = {k: v for k, v in pair.meta.items() if k != "motion"}
    meta["scale"] = scale * float(pair.meta.get("scale", 1.0))
    return replace(
        pair,
        fixed=rescale(pair.fixed, 1), moving=rescale(pair.moving, 1),
        fixed_mask=rescale(pair.fixed_mask, 0), moving_mask=rescale(pair.moving_mask, 0),
        ground_truth=rescale(pair.ground_truth, 1, factor=scale),
        fixed_landmarks=fl, moving_landmarks=ml, meta=meta,
    )


def swap_direction(pair: Pair) -> Pair:
    """The same pair registered the other way: fixed and moving swapped (images, masks, landmarks,
    and the coarse view of a fine view). ``meta["swapped"]`` flips; ``ground_truth`` (``u`` on the
    old fixed grid) and ``meta["motion"]`` no longer describe the pair and are dropped; landmark
    TRE stays exact (the landmark pairs swap with the images). Swapping twice gives the original
    images and landmarks back. Meta-training uses it as an augmentation
    (``TrainSettings.swap_probability``): the templates then see both breathing directions and only
    the encoder can tell which way a pair moves."""
    meta = {k: v for k, v in pair.meta.items() if k != "motion"}
    meta["swapped"] = not bool(pair.meta.get("swapped", False))
    coarse = None if pair.coarse is None else swap_direction(pair.coarse)
    swapped = replace(pair, fixed=pair.moving, moving=pair.fixed, fixed_mask=pair.moving_mask,
                      moving_mask=pair.fixed_mask, fixed_landmarks=pair.moving_landmarks,
                      moving_landmarks=pair.fixed_landmarks, ground_truth=None, meta=meta, coarse=coarse)
    prep = pair.preparation
    if prep.prealign_matrix is None:
        return swapped
    # the recorded pre-alignment maps fixed -> moving: the swapped pair needs its inverse
    return swapped.with_preparation(replace(prep, prealign_matrix=invert_affine(prep.prealign_matrix)))


# --------------------------------------------------------------------- prepare
def _crop_start(mask: Volume, points_mm: np.ndarray | None, size_xyz: np.ndarray, centre_mm, pair_name: str,
                side: str) -> np.ndarray:
    """First voxel (index x, y, z of ``mask``'s grid) of the patch: centred on ``centre_mm`` (default:
    the lung mask's bounding-box centre), then shifted by the least amount that puts every landmark
    at least one voxel inside (centred on the landmarks when that does not fit: each then lies at
    most half a voxel outside the outer voxel centres). Raises when the landmarks span more than
    the patch."""
    grid = mask.grid
    if centre_mm is None:
        idx = np.argwhere(mask.array)[:, ::-1]  # (x, y, z)
        centre_idx = (idx.min(0) + idx.max(0)) / 2
    else:
        centre_idx = grid.world_to_index(np.asarray(centre_mm, float).reshape(1, 3))[0]
    start = np.round(centre_idx).astype(int) - size_xyz // 2
    if points_mm is None or not len(points_mm):
        return start
    p = grid.world_to_index(points_mm)
    lo, hi = p.min(0), p.max(0)
    span = hi - lo
    if np.any(span > size_xyz - 1):
        spacing = np.array(grid.spacing)
        raise ValueError(
            f"{pair_name}: the {side} landmarks span {np.round(span * spacing, 1).tolist()} mm (x, y, z) but the "
            f"{tuple(int(s) for s in size_xyz[::-1])} (z, y, x) patch at {spacing[0]:g} mm covers only "
            f"{np.round((size_xyz - 1) * spacing, 1).tolist()} mm; use a profile with a larger patch or coarser spacing"
        )
    # integer starts keeping every landmark one voxel inside: lo - start >= 1, start + size - 1 - hi >= 1
    s_min = np.ceil(hi + 1.0 - (size_xyz - 1)).astype(int)
    s_max = np.floor(lo - 1.0).astype(int)
    fits = s_min <= s_max
    centred = np.round((lo + hi - (size_xyz - 1)) / 2).astype(int)  # within half a voxel of inside
    return np.where(fits, np.clip(start, s_min, np.maximum(s_max, s_min)), centred)


def _resolve_prealign(prealign: Any, fixed: Volume, moving: Volume, fixed_mask: Volume, moving_mask: Volume,
                      pair: Pair) -> np.ndarray | None:
    """4x4 fixed-world -> moving-world matrix for ``prealign`` on the resampled images (None: no
    pre-alignment); the policy itself is :func:`reindir_nb.data.prealign.resolve_prealign`."""
    iso = Pair(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, name=pair.name, dataset=pair.dataset,
               fixed_landmarks=pair.fixed_landmarks, moving_landmarks=pair.moving_landmarks)
    kind, matrix = resolve_prealign(iso, prealign)
    return None if kind == "none" else matrix


def _lung_mask_of(image: Volume, mask: Volume | None, preparation: Preparation) -> Volume:
    """``mask`` when given, else a lung mask of ``image`` (thresholds in the image's units)."""
    if mask is not None:
        return mask
    if preparation.normalized:  # threshold in [0, 1] units; the lungmask model needs HU
        return lung_mask(image, threshold_hu=preparation.to_image_units(-400.0),
                         clear_air_hu=preparation.to_image_units(-950.0), use_lungmask=False)
    return lung_mask(image)


def _to_spacing(pair: Pair, image: Volume, mask: Volume, spacing_mm: float) -> tuple[Volume, Volume]:
    """Image (anti-aliased trilinear) and mask (partial volume >= 0.5) at isotropic ``spacing_mm``."""
    image_iso = resample_isotropic(image, spacing_mm)
    mask_f = mask.with_array((mask.array > 0).astype(np.float32))
    mask_iso = resample_to_grid(mask_f, image_iso.grid, order=1, default=0.0)
    mask_iso = mask_iso.with_array(mask_iso.array >= 0.5)
    if not mask_iso.array.any():
        raise ValueError(f"{pair.name}: the lung mask of {image.name or 'an image'} vanishes at {spacing_mm:g} mm")
    return image_iso, mask_iso


def prepare(pair: Pair, profile: "str | Profile" = "demo", prealign: Any = None) -> Pair:
    """Resample, crop and normalise a pair for a run profile; world-mm geometry is kept exact.

    Steps: lung masks when missing (:func:`lung_mask`); each image (trilinear, anti-aliased),
    mask and the ground truth resampled to the profile's isotropic ``spacing_mm``; each side
    cropped/padded to ``patch_size`` (z, y, x) around its own lung-mask centre, shifted so that
    its landmarks stay inside (a ValueError naming the pair when they span more than the patch);
    intensities clipped to :data:`HU_RANGE` and scaled to [0, 1] unless already normalised.
    A constant image raises ValueError naming it. Fixed and moving keep their own world geometry and landmarks are not
    changed. ``prealign`` (None, "rigid", "affine", "auto" or a 4x4 fixed->moving world matrix)
    centres the moving patch on the pre-aligned fixed centre instead, so both patches hold the
    same anatomy when the scans are positioned differently; the matrix goes to
    the pair's :class:`~reindir_nb.core.pair.Preparation` record (``pair.preparation``), which also
    holds the profile name and the intensity units. A pair already prepared for this profile is
    returned as is.
    """
    prof = get_profile(profile)
    before = pair.preparation
    if before.profile == prof.name and prealign is None:
        return pair
    for image in (pair.fixed, pair.moving):
        _require_contrast(image, f"prepare ({pair.name})")
    sp = float(prof.spacing_mm)
    size_xyz = np.array(prof.patch_size[::-1], dtype=int)
    normalized = before.normalized

    f_img, f_msk = _to_spacing(pair, pair.fixed, _lung_mask_of(pair.fixed, pair.fixed_mask, before), sp)
    m_img, m_msk = _to_spacing(pair, pair.moving, _lung_mask_of(pair.moving, pair.moving_mask, before), sp)
    matrix = _resolve_prealign(prealign, f_img, m_img, f_msk, m_msk, pair)

    f_start = _crop_start(f_msk, pair.fixed_landmarks, size_xyz, None, pair.name, "fixed")
    m_centre = None
    if matrix is not None:  # moving patch centred where the fixed patch centre maps to
        f_centre = f_img.grid.index_to_world((f_start + size_xyz // 2).reshape(1, 3).astype(float))
        m_centre = apply_affine(matrix, f_centre)[0]
    m_start = _crop_start(m_msk, pair.moving_landmarks, size_xyz, m_centre, pair.name, "moving")

    def crop(image: Volume, mask: Volume, start: np.ndarray, source: Volume) -> tuple[Volume, Volume]:
        img = _crop_at(image, start, size_xyz, float(source.array.min()))
        msk = _crop_at(mask, start, size_xyz, False)
        if not msk.array.any():
            raise ValueError(
                f"{pair.name}: the lung mask of {source.name or 'an image'} is empty after cropping to {prof.patch_size}"
            )
        return (img if normalized else normalize_intensity(img, HU_RANGE)), msk

    fixed, fixed_mask = crop(f_img, f_msk, f_start, pair.fixed)
    moving, moving_mask = crop(m_img, m_msk, m_start, pair.moving)
    gt = None if pair.ground_truth is None else resample_to_grid(pair.ground_truth, fixed.grid, order=1, default=0.0)
    record = Preparation(profile=prof.name, normalized=True, hu_range=before.hu_range if normalized else HU_RANGE,
                         prealign_matrix=matrix)
    return pair.with_preparation(record, fixed=fixed, moving=moving, fixed_mask=fixed_mask,
                                 moving_mask=moving_mask, ground_truth=gt)


def _lung_box(image: Volume, mask: Volume, points_mm: np.ndarray | None, margin_mm: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(start, size)`` voxel index (x, y, z) of the mask's bounding box (and the landmarks)
    plus ``margin_mm``, within the image (no padding)."""
    grid = image.grid
    idx = np.argwhere(np.asarray(mask.array) > 0)[:, ::-1].astype(float)  # (x, y, z)
    if points_mm is not None and len(points_mm):
        idx = np.vstack([idx, grid.world_to_index(np.asarray(points_mm, float))])
    margin = np.ceil(margin_mm / np.asarray(grid.spacing, float))
    lo = np.maximum(np.floor(idx.min(axis=0)) - margin, 0).astype(int)
    hi = np.minimum(np.ceil(idx.max(axis=0)) + margin, grid.size_xyz - 1).astype(int)
    return lo, hi - lo + 1


def prepare_fine(pair: Pair, profile: "str | Profile" = "demo", spacing_mm: float | None = None,
                 prealign: Any = None, margin_mm: float = 10.0) -> Pair:
    """The two views of a raw pair: a fine view for the INRs whose ``coarse`` is the encoder's view.

    ``coarse = prepare(pair, profile, prealign)`` (the fixed-size patch the REINDIR encoder
    embeds; its INR frame is the networks' frame, so a template or an embedding means the same
    world-mm motion on both views). The fine view keeps each image at its own resolution, or
    resamples it to the isotropic ``spacing_mm`` (anti-aliased), crops it to its lung mask's
    box plus ``margin_mm`` (landmarks kept inside) and normalises intensities as ``prepare``;
    the INRs sample it inside its masks. Same world geometry and landmarks as ``pair``; the
    pre-alignment matrix is the coarse view's."""
    if pair.coarse is not None or pair.preparation.profile is not None:
        raise ValueError(f"{pair.name}: prepare_fine needs the raw pair (this one is already prepared"
                         f"{' as a fine view' if pair.coarse is not None else ''})")
    if spacing_mm is not None and not (isinstance(spacing_mm, (int, float)) and np.isfinite(spacing_mm)
                                       and spacing_mm > 0):
        raise ValueError(f"{pair.name}: spacing_mm must be a positive number of mm or None, got {spacing_mm!r}")
    coarse = prepare(pair, profile, prealign)
    before = pair.preparation

    def view(image: Volume, mask: Volume | None, points: np.ndarray | None) -> tuple[Volume, Volume]:
        mask = _lung_mask_of(image, mask, before)
        if spacing_mm is not None:
            image, mask = _to_spacing(pair, image, mask, float(spacing_mm))
        start, size = _lung_box(image, mask, points, margin_mm)
        box = _crop_at(image, start, size, None)
        mask = _crop_at(mask.with_array(np.asarray(mask.array) > 0), start, size, False)
        return (box if before.normalized else normalize_intensity(box, HU_RANGE)), mask

    fixed, fixed_mask = view(pair.fixed, pair.fixed_mask, pair.fixed_landmarks)
    moving, moving_mask = view(pair.moving, pair.moving_mask, pair.moving_landmarks)
    gt = None if pair.ground_truth is None else resample_to_grid(pair.ground_truth, fixed.grid, order=1, default=0.0)
    return pair.with_preparation(coarse.preparation, fixed=fixed, moving=moving, fixed_mask=fixed_mask,
                                 moving_mask=moving_mask, ground_truth=gt, coarse=coarse)
