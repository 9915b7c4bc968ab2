"""Export a registration's displacement field: ITK displacement-field image and Learn2Reg format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import write_image
from .volume import Volume

__all__ = ["write_itk_displacement", "read_itk_displacement_transform", "write_learn2reg_displacement"]


def write_itk_displacement(run, path: str | Path, estimate: str = "forward") -> Path:
    """Write the fixed->moving displacement (mm vectors, float64, on the fixed grid) as an ITK
    displacement field image (e.g. ``.nii.gz``/``.mha``). ``sitk.DisplacementFieldTransform`` built
    from it maps fixed world points to moving world points (pre-alignment included), as
    ``run.transform_points`` does — between voxel centres by trilinear interpolation."""
    disp = run.displacement(estimate=estimate)
    return write_image(disp.with_array(disp.array.astype(np.float64)), path)


def read_itk_displacement_transform(path: str | Path):
    """A ``SimpleITK.DisplacementFieldTransform`` from a displacement field image file."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path), sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(image)


def write_learn2reg_displacement(run, folder: str | Path, fixed_id: int, moving_id: int, estimate: str = "forward") -> Path:
    """Learn2Reg submission file ``disp_{fixed:04d}_{moving:04d}.nii.gz``: the displacement in
    VOXEL units of the fixed grid, array laid out as the challenge's evaluation reads it with
    nibabel, ``disp[x, y, z, c]`` with components (x, y, z) (written here as a 3-component vector
    image on the fixed grid: SimpleITK's (z, y, x, c) array is nibabel's (x, y, z, c)). A fixed
    keypoint at voxel k maps to moving voxel ``k + disp[k]`` (the moving image is assumed on the
    fixed image's grid, as in the challenge)."""
    disp = run.displacement(estimate=estimate)
    grid = disp.grid
    # mm vectors -> voxel vectors on the fixed grid: index = inverse(direction @ diag(spacing)) @ mm
    to_index = np.linalg.inv(grid.direction @ np.diag(grid.spacing))
    vox = disp.array.reshape(-1, 3) @ to_index.T
    out = Volume(vox.reshape(disp.array.shape).astype(np.float32), grid, "disp (voxels)")
    path = Path(folder) / f"disp_{fixed_id:04d}_{moving_id:04d}.nii.gz"
    return write_image(out, path)
