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
    record_every: int                 # history/snapshot interval of ``register``
    inner_steps: int                  # meta-training inner SGD steps (paper: 10)
    inner_points: int                 # meta-training INR batch (paper: 5000)
    outer_steps: int                  # meta-training outer iterations (paper: 22750)
    encoder_width: int                # LKU-Net start width (paper: 6)
    embedding_length: int             # paper: 1025
    seeds: int                        # evaluation seeds (paper: 10)
    folds: int                        # cross-validation folds (paper: 5)
    eval_iterations: tuple[int, ...]  # iteration counts recorded by sweeps
    # notebook recipes (one home for them, so the notebooks hold none)
    held_out_per_style: int = 5       # fresh phantom pairs per style a single-model sweep evaluates on
    voxelmorph_epochs: int = 200      # epochs of the VoxelMorph peer
    elastix_budget: tuple[int, int] | None = None  # (iterations, resolutions) of a quick elastix; None: full
    bending_points_per_step: int | None = None     # test-time batch of the bending sweep (None: points_per_step)
    reindir_warm_start: bool = False  # REINDIR templates start from the Reptile template (CPU profiles)
    reindir_warm_eps: float = 0.1     # how far the warm-started templates move per outer step (Reptile eps)
    propagation: tuple[int, int, int] = (10, 5, 2500)  # keypoint propagation: runs, kept, iterations
    # meta-training recipe (README "Training recipes"): both models see both breathing directions
    # with this probability; a warm-started REINDIR trains its encoder alone on the frozen Reptile
    # template (no inner loop) with ``reindir_encoder_steps`` zero-shot updates per task
    swap_probability: float = 0.0
    reindir_encoder_only: bool = False
    reindir_encoder_steps: int = 1
    reindir_tasks_per_set: int = 1    # encoder-only recipe: pairs drawn per set per outer step (each one update)
    reindir_cycles: int | None = None  # encoder-only recipe: cosine cycles of the lr (None: TrainSettings' 4)
    encoder_input: str = "pair"       # what the REINDIR encoder reads (meta.encoder.ENCODER_INPUTS)
    # the size the encoder's input is resampled to (None: the prepared patch). Half the demo patch
    # makes a zero-shot update ~240 ms instead of ~450, so the same minutes buy more of them (README)
    encoder_patch_size: tuple[int, int, int] | None = None
    reindir_landmark_weight: float = 0.0  # landmark supervision of the zero-shot encoder updates (0: none, the paper)

    def reindir_steps(self, outer_steps: int | None = None, warm_start: bool | None = None) -> int:
        """Outer steps of REINDIR when Reptile trains ``outer_steps`` (default: the profile's):
        2/3 of them when REINDIR starts from the Reptile template (demo: 100 of 150), else all."""
        n = self.outer_steps if outer_steps is None else int(outer_steps)
        warm = self.reindir_warm_start if warm_start is None else bool(warm_start)
        return max(1, 2 * n // 3) if warm else n

    def reindir_settings(self, warm_start: bool | None = None, eps: float | None = None) -> dict:
        """The REINDIR-only arguments of ``train_reindir`` / ``train_folds`` for this profile's
        recipe (``start`` aside): the encoder input and, when warm-started, either the encoder-only
        phase (``inner_steps=0``, ``encoder_steps``) or the gentle template step ``eps``."""
        warm = self.reindir_warm_start if warm_start is None else bool(warm_start)
        out: dict = {"encoder_input": self.encoder_input}
        if warm and self.reindir_encoder_only and eps is None:
            out.update(inner_steps=0, encoder_steps=self.reindir_encoder_steps)
            if self.reindir_tasks_per_set != 1:
                out["tasks_per_set"] = self.reindir_tasks_per_set
            if self.reindir_cycles is not None:
                out["cycles"] = self.reindir_cycles
            if self.reindir_landmark_weight > 0:
                out["landmark_weight"] = self.reindir_landmark_weight
        elif warm:
            out["eps"] = self.reindir_warm_eps if eps is None else float(eps)
        return out

    def with_(self, **changes) -> "Profile":
        """A copy with some fields changed (e.g. ``profile.with_(outer_steps=50)``)."""
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", spacing_mm=8.0, patch_size=(32, 32, 32), cohort_size=4, points_per_step=2000,
        iterations=20, record_every=5, inner_steps=3, inner_points=1000, outer_steps=3,
        encoder_width=2, embedding_length=65, seeds=2, folds=2, eval_iterations=(0, 5, 10),
        held_out_per_style=1, voxelmorph_epochs=1, elastix_budget=(50, 1), bending_points_per_step=500,
        reindir_warm_start=True, propagation=(2, 1, 10),
        swap_probability=0.5, reindir_encoder_only=True, reindir_encoder_steps=3, encoder_input="pair+difference",
    ),
    "demo": Profile(
        # The main job on 2 CPU cores in under 30 minutes (README "Profiles"): each notebook's budget is
        # sized to what it teaches; the full demo evaluation (2 pairs per style, 5 seeds, 0/10/25/50
        # steps, full elastix) is benchmarks/bench_sweep_demo.py and benchmarks/bench_meta_demo.py.
        # 5000 test-time points: a 2-core CPU step takes ~0.28 s instead of ~0.6-0.8 s at 10000
        # (TRE after 20 steps on a demo dirlab phantom: 2.09 vs 1.98 mm). Sweeps record 0/10/25:
        # where the learned starts differ from a random one (benchmarks/results/bench_sweep_demo.txt).
        name="demo", spacing_mm=4.0, patch_size=(64, 64, 64), cohort_size=20, points_per_step=5000,
        # 150 test-time steps by default: on the real elastix-lung pair at native resolution the mean
        # TRE is flat within +-0.05 mm from 100 steps on (benchmarks/results/bench_time_to_accuracy.txt)
        iterations=150, record_every=25, inner_steps=10, inner_points=2000, outer_steps=150,
        encoder_width=6, embedding_length=1025, seeds=2, folds=5, eval_iterations=(0, 10, 25),
        # warm-started REINDIR (from the Reptile template) needs 2/3 of the outer steps
        # VoxelMorph 3 epochs on the CPU (5 min at 10 epochs, 3.5 mm: a peer trained far below its
        # paper budget either way), a quick elastix (250 iterations, 2 resolutions: 1.43 mm in ~50 s
        # per demo phantom), the bending sweep at 2000 points, keypoint propagation 2 runs x 50 steps
        held_out_per_style=1, voxelmorph_epochs=3, reindir_warm_start=True,
        elastix_budget=(250, 2), bending_points_per_step=2000, propagation=(2, 1, 50),
        # both directions, encoder alone on the frozen template, its input at 32^3,
        # 100 outer steps x 9 distinct pairs x 1 update, one cosine cycle: 258 s, zero-shot 3.16 / 3.59 mm
        # held-out (as generated / swapped) where 3 updates per pair at 64^3 gave 4.21 / 3.69 in 453 s
        # (benchmarks/results/meta_demo/encoder_patch_tries.txt; the older recipe_demo.txt); the main job's
        # models, 5 seeds: 3.28 / 3.41 mm (meta_demo/main_job_models_eval.txt)
        swap_probability=0.5, reindir_encoder_only=True, reindir_encoder_steps=1, encoder_input="pair+difference",
        reindir_tasks_per_set=3, reindir_cycles=1, encoder_patch_size=(32, 32, 32),
    ),
    "paper": Profile(
        name="paper", spacing_mm=1.0, patch_size=(336, 288, 366), cohort_size=100, points_per_step=10000,
        iterations=2500, record_every=25, inner_steps=10, inner_points=5000, outer_steps=22750,
        encoder_width=6, embedding_length=1025, seeds=10, folds=5, eval_iterations=(0, 25, 100, 250),
    ),
}


def get_profile(profile: "str | Profile") -> Profile:
    """Look up a profile by name (``smoke``, ``demo``, ``paper``) or pass one through."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[str(profile)]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}") from None
