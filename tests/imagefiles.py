"""Small image-file writers shared by the data-layer tests."""

from __future__ import annotations

import SimpleITK as sitk

IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
FLIP_XY = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # LPS image of a RAS-stored NIfTI


def write_sitk(path, arr, spacing, origin, direction=IDENTITY):
    """Write ``arr`` (z, y, x) with the given ITK geometry to ``path`` (parents created)."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path
