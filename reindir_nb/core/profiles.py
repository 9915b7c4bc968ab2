"""Run profiles: ``smoke`` (tests, seconds), ``demo`` (CPU laptop, minutes), ``paper`` (GPU,
the paper's Appendix A settings). Every notebook and entry point takes a profile name."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Profile", "PROFILES", "get_profile"]


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


# The profiles side by side, one row per Profile field. demo is the main job on 2 CPU cores, each
# notebook's budget sized to what it teaches (the timings and measurements behind these numbers are
# in docs/results.md); paper is the paper's Appendix A / Table 2.
_NAMES = ("smoke", "demo", "paper")
_TABLE: dict[str, tuple] = {
    #                          smoke            demo             paper
    "spacing_mm":             (8.0,             4.0,             1.0),
    "patch_size":             ((32, 32, 32),    (64, 64, 64),    (336, 288, 366)),
    "cohort_size":            (4,               20,              100),
    "points_per_step":        (2000,            5000,            10000),
    "iterations":             (20,              150,             2500),
    "max_iterations":         (20,              300,             2500),
    "record_every":           (5,               25,              25),
    "inner_steps":            (3,               10,              10),
    "inner_points":           (1000,            2000,            5000),
    "outer_steps":            (3,               150,             22750),
    "encoder_width":          (2,               6,               6),
    "embedding_length":       (65,              1025,            1025),
    "seeds":                  (2,               2,               10),
    "folds":                  (2,               5,               5),
    "eval_iterations":        ((0, 5, 10),      (0, 10, 25),     (0, 25, 100, 250)),
    "held_out_per_style":     (1,               1,               5),
    "voxelmorph_epochs":      (1,               3,               200),
    "elastix_budget":         ((50, 1),         (250, 2),        None),
    "bending_points_per_step": (500,            2000,            None),
    "propagation":            ((2, 1, 10),      (2, 1, 50),      (10, 5, 2500)),
}
PROFILES: dict[str, Profile] = {
    name: Profile(name=name, **{field: row[i] for field, row in _TABLE.items()}) for i, name in enumerate(_NAMES)
}


def get_profile(profile: "str | Profile") -> Profile:
    """Look up a profile by name (``smoke``, ``demo``, ``paper``) or pass one through."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[str(profile)]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}") from None
