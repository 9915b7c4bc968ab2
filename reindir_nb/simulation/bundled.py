"""``bundled:thorax-ct``: a pair made from ONE real thoracic CT — real anatomy, simulated motion.

The bundled volume (``data/thorax_ct/thorax_ct_phase00_2mm.nii.gz``, 2 mm isotropic, HU) is
one breathing phase of a real 4D CT (provenance and licence in ``data/PROVENANCE.md``; most
likely the POPI model: Vandemeulebroucke, Sarrut, Clarysse, ICCR 2007). There is no second
phase and there are no landmarks, so :func:`thorax_ct_pair` builds a pair with known truth:

* fixed  = the real CT (optionally resampled to a coarser spacing, anti-aliased);
* moving = the same CT under a seeded breathing motion :class:`reindir_nb.motion.BreathingMotion`
  shaped by the lung mask (``M(y) = F(phi^-1(y))``, trilinear; border slices repeated);
* landmarks = distinctive real structures (vessel bifurcations) found automatically inside
  the lungs by :func:`reindir_nb.landmarks.detect_landmarks` on the 2 mm CT; moving landmarks =
  the same points carried by the exact motion;
* ``ground_truth`` = the displacement on the fixed grid (mm), ``meta["label"]`` =
  ``"real anatomy, simulated motion"`` (the name says so too).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.geometry import Grid
from .landmarks import detect_landmarks, lung_mask_for_landmarks
from .motion import BreathingMotion, ThoraxFrame, warp_image
from ..core.pair import Pair
from ..core.volume import Volume
from ..data.datasets import data_root

__all__ = [
    "LABEL",
    "THORAX_CT_FILE",
    "thorax_ct_path",
    "load_thorax_ct",
    "thorax_ct_pair",
]

LABEL = "real anatomy, simulated motion"
THORAX_CT_FILE = "thorax_ct_phase00_2mm.nii.gz"
CITATION = (
    "Vandemeulebroucke J, Sarrut D, Clarysse P. The POPI-model, a point-validated pixel-based breathing "
    "thorax model. ICCR 2007. CT from InsightSoftwareConsortium/ITKElastix (Apache-2.0)."
)


def thorax_ct_path() -> Path:
    """Path of the bundled 2 mm CT: ``$REINDIR_NB_DATA/thorax_ct/`` if set, else the repository's
    ``data/thorax_ct/``."""
    return data_root() / "thorax_ct" / THORAX_CT_FILE


def load_thorax_ct(path: str | Path | None = None) -> Volume:
    """The real CT as a float32 HU Volume (2 mm isotropic, LPS world mm)."""
    import SimpleITK as sitk

    p = Path(path) if path is not None else thorax_ct_path()
    if not p.is_file():
        raise ValueError(f"{p}: bundled thorax CT not found (a repository checkout ships it in data/thorax_ct/)")
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as err:
        raise ValueError(f"{p}: unreadable image ({err})") from None
    vol = Volume.from_sitk(image, name=str(p.name))
    vol = vol.with_array(vol.array.astype(np.float32))
    vol.check_finite()
    return vol


@functools.lru_cache(maxsize=4)
def _anatomy(path: str, mtime: float, n_landmarks: int, min_spacing_mm: float):
    """CT, lung mask and detected landmarks (cached: detection takes ~1 s)."""
    ct = load_thorax_ct(path)
    mask = lung_mask_for_landmarks(ct)
    points = detect_landmarks(ct, mask, n=n_landmarks, min_spacing_mm=min_spacing_mm)
    return ct, mask, points


def _coarser_grid(grid: Grid, spacing_mm: float) -> Grid:
    """Same physical box (first voxel centre, direction), isotropic ``spacing_mm``."""
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be a positive number of mm, got {spacing_mm}")
    n_xyz = np.floor(grid.extent_mm / spacing_mm).astype(int) + 1
    return Grid(tuple(int(n) for n in n_xyz[::-1]), (spacing_mm,) * 3, grid.origin, grid.direction)


def _antialias(volume: Volume, spacing_mm: float) -> Volume:
    """Gaussian pre-filter before resampling to ``spacing_mm`` (no-op when not coarser)."""
    sig = [0.4 * np.sqrt(max(spacing_mm**2 - s**2, 0.0)) / s for s in volume.grid.spacing[::-1]]
    if max(sig) <= 0:
        return volume
    return volume.with_array(ndimage.gaussian_filter(volume.array, sig).astype(np.float32))


def thorax_ct_pair(
    seed: int = 0,
    n_landmarks: int = 300,
    amplitude_mm: float | None = None,
    spacing_mm: float | None = None,
    amplitude_range_mm: tuple[float, float] = (10.0, 20.0),
    min_spacing_mm: float = 6.0,
    path: str | Path | None = None,
) -> Pair:
    """The bundled real CT and its seeded simulated exhale (see the module docstring).

    ``amplitude_mm``: superior shift of the diaphragm (default drawn from ``amplitude_range_mm``
    by ``seed``); ``spacing_mm``: resample both images to this isotropic spacing (default: the
    CT's 2 mm). Landmarks that leave the moving image are dropped from both sets."""
    p = Path(path) if path is not None else thorax_ct_path()
    if not p.is_file():
        raise ValueError(f"{p}: bundled thorax CT not found (a repository checkout ships it in data/thorax_ct/)")
    ct, mask, points = _anatomy(str(p), p.stat().st_mtime, int(n_landmarks), float(min_spacing_mm))
    motion = BreathingMotion.random(
        ThoraxFrame.from_mask(mask), np.random.default_rng([int(seed), 7001]), amplitude_mm, amplitude_range_mm
    )
    grid = ct.grid if spacing_mm is None else _coarser_grid(ct.grid, float(spacing_mm))
    source = ct if spacing_mm is None else _antialias(ct, float(spacing_mm))
    identity = Volume(np.zeros(grid.shape + (3,), np.float32), grid)
    inverse = motion.inverse_field(grid)
    fixed = ct if spacing_mm is None else warp_image(source, identity)
    moving = warp_image(source, inverse, order=1, mode="nearest")
    fixed_mask = mask if spacing_mm is None else warp_image(mask, identity, order=0, mode="constant")
    moving_mask = warp_image(mask, inverse, order=0, mode="constant")

    fixed_lm = points
    moving_lm = motion.transport(fixed_lm)
    keep = grid.contains(fixed_lm, margin_voxels=0.0) & grid.contains(moving_lm, margin_voxels=0.0)
    fixed_lm, moving_lm = fixed_lm[keep], moving_lm[keep]

    name = f"thorax-ct-real-anatomy-simulated-motion-{seed:03d}"
    return Pair(
        fixed=fixed.with_array(fixed.array, name=f"{ct.name} (real CT, fixed)"),
        moving=moving.with_array(moving.array, name=f"{ct.name} under simulated exhale (seed {seed})"),
        fixed_landmarks=fixed_lm,
        moving_landmarks=moving_lm,
        fixed_mask=fixed_mask.with_array(fixed_mask.array.astype(np.uint8), name="thorax-ct fixed lung mask"),
        moving_mask=moving_mask.with_array(moving_mask.array.astype(np.uint8), name="thorax-ct moving lung mask"),
        name=name,
        dataset="thorax-ct",
        ground_truth=motion.field(grid),
        meta={
            "label": LABEL,
            "seed": int(seed),
            "amplitude_mm": float(motion.si_mm),
            "motion": motion.to_dict(),
            "source": str(p.name),
            "citation": CITATION,
            "landmarks": "automatic (Foerstner structure tensor) at vessel bifurcations inside the lungs",
        },
    )
