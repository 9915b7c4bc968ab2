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
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.files import atomic_path
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
    "plot_landmarks_on_anatomy",
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


# ---------------------------------------------------------------------------- figure
def plot_landmarks_on_anatomy(pair: Pair, path: str | Path, slab_mm: float = 4.0, dpi: int = 110) -> Path:
    """Save a PNG: fixed axial and coronal slices with the fixed landmarks within ``+-slab_mm/2``,
    a zoom on one lung, and the moving coronal slice with the moving landmarks. Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not pair.has_landmarks:
        raise ValueError(f"{pair.name}: no landmarks to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fixed, moving = pair.fixed, pair.moving
    grid = fixed.grid
    if not np.allclose(grid.direction, np.eye(3), atol=1e-6):
        raise ValueError(f"{pair.name}: plot_landmarks_on_anatomy expects an axis-aligned image")
    fl = grid.world_to_index(pair.fixed_landmarks)
    ml = moving.grid.world_to_index(pair.moving_landmarks)
    sx, sy, sz = grid.spacing
    # slices through the densest landmark levels
    z = int(np.clip(np.round(np.median(fl[:, 2])), 0, grid.shape[0] - 1))
    y = int(np.clip(np.round(np.median(fl[:, 1])), 0, grid.shape[1] - 1))
    half_z, half_y = slab_mm / 2 / sz, slab_mm / 2 / sy
    win = dict(cmap="gray", vmin=-1000, vmax=200)
    fig, ax = plt.subplots(2, 2, figsize=(12, 11))
    a = ax[0, 0]
    a.imshow(fixed.array[z], **win, extent=(-0.5, grid.shape[2] - 0.5, grid.shape[1] - 0.5, -0.5), aspect=sy / sx)
    sel = np.abs(fl[:, 2] - z) <= half_z
    a.scatter(fl[sel, 0], fl[sel, 1], s=40, facecolors="none", edgecolors="red", linewidths=1.2)
    z_mm = grid.index_to_world([[0, 0, z]])[0, 2]
    a.set_title(f"fixed (real CT), axial z={z_mm:.0f} mm: {sel.sum()} landmarks in a {slab_mm:g} mm slab")
    a = ax[0, 1]
    a.imshow(fixed.array[:, y], **win, origin="lower", aspect=sz / sx)
    sel_c = np.abs(fl[:, 1] - y) <= half_y
    a.scatter(fl[sel_c, 0], fl[sel_c, 2], s=40, facecolors="none", edgecolors="red", linewidths=1.2)
    a.set_title(f"fixed, coronal y={grid.index_to_world([[0, y, 0]])[0, 1]:.0f} mm: {sel_c.sum()} landmarks")
    # zoom on the image-left lung (patient right) of the axial slice
    a = ax[1, 0]
    lung_slice = pair.fixed_mask.array[z] > 0 if pair.fixed_mask is not None else np.ones(grid.shape[1:], bool)
    lung_cols, lung_rows = np.flatnonzero(lung_slice.any(axis=0)), np.flatnonzero(lung_slice.any(axis=1))
    if len(lung_cols) == 0:
        lung_cols, lung_rows = np.arange(grid.shape[2]), np.arange(grid.shape[1])
    x0, x1 = max(lung_cols.min() - 3, 0), min((lung_cols.min() + lung_cols.max()) // 2 + 3, grid.shape[2] - 1)
    y0, y1 = max(lung_rows.min() - 3, 0), min(lung_rows.max() + 3, grid.shape[1] - 1)
    a.imshow(fixed.array[z, y0 : y1 + 1, x0 : x1 + 1], cmap="gray", vmin=-1000, vmax=0,
             extent=(x0 - 0.5, x1 + 0.5, y1 + 0.5, y0 - 0.5), aspect=sy / sx)
    zs = sel & (fl[:, 0] >= x0) & (fl[:, 0] <= x1) & (fl[:, 1] >= y0) & (fl[:, 1] <= y1)
    a.scatter(fl[zs, 0], fl[zs, 1], s=160, facecolors="none", edgecolors="red", linewidths=1.5)
    a.set_title("zoom (lung window): landmarks at vessel bifurcations")
    a = ax[1, 1]
    ym = int(np.clip(np.round(np.median(ml[:, 1])), 0, moving.grid.shape[1] - 1))
    a.imshow(moving.array[:, ym], **win, origin="lower", aspect=moving.grid.spacing[2] / moving.grid.spacing[0])
    sel_m = np.abs(ml[:, 1] - ym) <= slab_mm / 2 / moving.grid.spacing[1]
    a.scatter(ml[sel_m, 0], ml[sel_m, 2], s=40, facecolors="none", edgecolors="cyan", linewidths=1.2)
    a.set_title(f"moving (simulated exhale), coronal: {sel_m.sum()} moved landmarks")
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    label = pair.meta.get("label", "")
    d = pair.initial_distances()
    fig.suptitle(
        f"{pair.name} — {label}\n{len(d)} landmarks, initial distance mean {d.mean():.1f} mm, max {d.max():.1f} mm"
    )
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path
