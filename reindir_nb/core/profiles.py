"""Run profiles: ``smoke`` (tests, seconds), ``demo`` (CPU laptop, minutes), ``paper`` (GPU,
the paper's Appendix A settings). Every notebook and entry point takes a profile name."""

from __future__ import annotations

import sys
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = ["Profile", "PROFILES", "PROFILES_FILE", "get_profile", "read_profiles"]


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one run profile (mm, voxels, steps)."""

    name: str
    spacing_mm: float                 # isotropic spacing that ``prepare`` resamples to
    patch_size: tuple[int, int, int]  # (z, y, x) voxels that ``prepare`` crops/pads to
    cohort_size: int                  # phantom pairs per style
    points_per_step: int              # test-time INR batch (paper: 10000)
    iterations: int                   # default test-time iterations for ``register``
    max_iterations: int               # the most steps ``reindir-nb register`` runs (it stops when converged)
    record_every: int                 # history/snapshot interval of ``register``
    inner_steps: int                  # meta-training inner SGD steps (paper: 10)
    inner_points: int                 # meta-training INR batch (paper: 5000)
    outer_steps: int                  # meta-training outer iterations (paper: 22750)
    encoder_width: int                # LKU-Net start width (paper: 6)
    embedding_length: int             # paper: 1025
    seeds: int                        # evaluation seeds (paper: 10)
    folds: int                        # cross-validation folds (paper: 5)
    eval_iterations: tuple[int, ...]  # iteration counts recorded by sweeps
    # notebook budgets (one home for them, so the notebooks hold none); meta-training recipes are
    # in reindir_nb.meta.recipes
    held_out_per_style: int = 5       # fresh phantom pairs per style a single-model sweep evaluates on
    voxelmorph_epochs: int = 200      # epochs of the VoxelMorph peer
    elastix_budget: tuple[int, int] | None = None  # (iterations, resolutions) of a quick elastix; None: full
    bending_points_per_step: int | None = None     # test-time batch of the bending sweep (None: points_per_step)
    propagation: tuple[int, int, int] = (10, 5, 2500)  # keypoint propagation: runs, kept, iterations

    def with_(self, **changes) -> "Profile":
        """A copy with some fields changed (e.g. ``profile.with_(outer_steps=50)``)."""
        return replace(self, **changes)


PROFILES_FILE = Path(__file__).with_name("profiles.toml")


def read_profiles(path: str | Path = PROFILES_FILE) -> dict[str, Profile]:
    """The profiles of a TOML file: one table per profile, the :class:`Profile` fields in it
    (lists become tuples; a missing optional field keeps its default). An unknown or missing
    field is a ValueError naming the file and the profile."""
    path = Path(path)
    with open(path, "rb") as fh:
        tables = tomllib.load(fh)
    known = {f.name for f in fields(Profile)} - {"name"}
    required = {f.name for f in fields(Profile) if f.default is MISSING} - {"name"}
    out = {}
    for name, table in tables.items():
        unknown, missing = sorted(set(table) - known), sorted(required - set(table))
        if unknown or missing:
            raise ValueError(f"{path} [{name}]: unknown fields {unknown}, missing fields {missing}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
        out[name] = Profile(name=name, **values)
    return out


PROFILES: dict[str, Profile] = read_profiles()


def get_profile(profile: "str | Profile") -> Profile:
    """Look up a profile by name (``smoke``, ``demo``, ``paper``) or pass one through."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[str(profile)]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}") from None
