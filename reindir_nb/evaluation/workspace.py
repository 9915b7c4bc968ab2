"""The notebooks' shared workspace folder: what each notebook leaves for the next, and the one
fallback policy when a step before has not run ("find it, else make it now, and say so").

Layout of ``WORKSPACE``: ``prepared/`` (notebook 01: prepared pairs + ``manifest.csv``),
``checkpoints/`` (notebook 03: ``reptile.pt``, ``reindir.pt``, fold models, ``voxelmorph.pt``),
``results/`` (notebook 04: ``sweep.csv`` and the evaluated pairs in ``results/pairs/``), one
output folder per notebook (``02_registration/`` ...). Budgets come from the run profile
(:class:`~reindir_nb.core.profiles.Profile`), never from the notebooks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.pair import Pair
from ..core.profiles import Profile, get_profile
from ..data import io
from ..data.preprocess import prepare
from ..simulation import phantom
from .checkpoints import load_models, load_voxelmorph

__all__ = ["Workspace", "HELD_OUT_SEED"]

HELD_OUT_SEED = 10_000  # phantom seeds from here on are never in a training cohort (those use 0..cohort_size-1)


def _say(message: str) -> None:
    print(f"!! {message}")


@dataclass
class Workspace:
    """The workspace folder ``root`` of a notebook run in ``profile``."""

    root: str | os.PathLike
    profile: "str | Profile" = "demo"
    styles: tuple[str, ...] = phantom.STYLES
    verbose: bool = True
    _loaded: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.profile = get_profile(self.profile)
        unknown = [s for s in self.styles if s not in phantom.STYLES]
        if unknown:
            raise ValueError(f"Workspace: unknown phantom styles {unknown}; choose from {list(phantom.STYLES)}")

    # ------------------------------------------------------------------ folders
    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def folder(self, name: str) -> Path:
        """``root/name``, created if needed (a notebook's output folder)."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _note(self, message: str) -> None:
        if self.verbose:
            _say(message)

    # ------------------------------------------------------------------ pairs
    def prepared_pairs(self, dataset: str | None = None) -> list[Pair]:
        """The pairs notebook 01 prepared (optionally of one data set); [] when it has not run."""
        if not (self.prepared / "manifest.csv").is_file():
            return []
        return io.load_manifest(self.prepared, dataset=dataset)

    def prepared_pair(self, dataset: str, make: Callable[[], Pair]) -> Pair:
        """The first prepared pair of ``dataset``, else ``prepare(make())`` now (said aloud)."""
        found = self.prepared_pairs(dataset)
        if found:
            return found[0]
        self._note(f"no prepared {dataset} pair in {self.prepared}: preparing one now")
        return prepare(make(), self.profile)

    def phantom_pair(self, seed: int, style: str) -> Pair:
        """Phantom ``(seed, style)`` at the profile's size, prepared."""
        return prepare(phantom.make_pair(seed=seed, style=style, profile=self.profile.name), self.profile)

    def training_pairs(self) -> list[Pair]:
        """The prepared phantom pairs of notebook 01, else ``cohort_size`` fresh ones per style."""
        pairs = [p for p in self.prepared_pairs() if p.dataset.startswith("phantom-")]
        if pairs:
            return pairs
        self._note(f"no prepared phantom pairs in {self.prepared}: generating "
                   f"{self.profile.cohort_size} per style ({', '.join(self.styles)}) now")
        return [self.phantom_pair(i, s) for s in self.styles for i in range(self.profile.cohort_size)]

    def held_out_pairs(self, per_style: int | None = None) -> list[Pair]:
        """Fresh phantom pairs no training cohort contains (seeds from :data:`HELD_OUT_SEED`),
        ``per_style`` (default: the profile's ``held_out_per_style``) of each style."""
        n = self.profile.held_out_per_style if per_style is None else int(per_style)
        if n < 1:
            raise ValueError(f"held_out_pairs: per_style must be >= 1, got {per_style}")
        pairs = [self.phantom_pair(HELD_OUT_SEED + i, s) for s in self.styles for i in range(n)]
        overlap = {p.name for p in self.prepared_pairs()} & {p.name for p in pairs}
        if overlap:
            raise ValueError(f"held-out pairs {sorted(overlap)} are also prepared training pairs in {self.prepared}")
        return pairs

    def saved_pair(self, name: str) -> Pair:
        """A pair by name, saved by notebook 04 (``results/pairs``) or 01 (``prepared``)."""
        for root in (self.results / "pairs", self.prepared):
            if (root / "manifest.csv").is_file():
                hit = [p for p in io.load_manifest(root) if p.name == name]
                if hit:
                    return hit[0]
        raise ValueError(f"pair {name!r}: not saved under {self.results / 'pairs'} or {self.prepared}")

    # ------------------------------------------------------------------ models
    def models(self, train_if_missing: bool = True) -> tuple[dict[str, Any], dict[str, int] | None]:
        """The learned initialisers of notebook 03 (``({"Reptile": ..., "REINDIR": ...}, folds)``,
        see :func:`~reindir_nb.evaluation.checkpoints.load_models`); when there are none and
        ``train_if_missing``, profile-sized models are trained now on :meth:`training_pairs` and saved."""
        methods, folds = load_models(self.checkpoints) if self.checkpoints.is_dir() else ({}, None)
        if methods or not train_if_missing:
            return methods, folds
        from ..meta import training
        from ..meta.recipes import profile_recipes

        self._note(f"no checkpoints in {self.checkpoints}: notebook 03 has not run here; training "
                   f"{self.profile.name}-profile Reptile and REINDIR models now (the profile's recipes)")
        pairs = self.training_pairs()
        recipes = profile_recipes(self.profile)
        reptile = training.train_reptile(pairs, recipes["reptile"], progress=False)
        reindir = training.train_reindir(pairs, recipes["reindir"], progress=False,
                                         start=reptile if recipes["reindir"].warm_start else None)
        reptile.save(self.checkpoints / "reptile.pt")
        reindir.save(self.checkpoints / "reindir.pt")
        return {"Reptile": reptile, "REINDIR": reindir}, None

    def voxelmorph(self, folds: dict[str, int] | None = None, epochs: int | None = None) -> Any:
        """The VoxelMorph peer: saved in ``checkpoints/`` (per fold with ``folds``), else trained
        now for ``epochs`` (default: the profile's) on the training pairs and saved. None when the
        voxelmorph package is not installed."""
        from . import voxelmorph

        if not voxelmorph.available():
            return None
        saved = load_voxelmorph(self.checkpoints, folds) if self.checkpoints.is_dir() else None
        if saved is not None:
            return saved
        epochs = self.profile.voxelmorph_epochs if epochs is None else int(epochs)
        if folds is not None:
            pool = [p for p in self.prepared_pairs() if p.name in folds]
            return voxelmorph.train_voxelmorph_folds(pool, folds, epochs=epochs, folder=self.checkpoints,
                                                     progress=False)
        model = voxelmorph.train_voxelmorph(self.training_pairs(), epochs=epochs, progress=False)
        model.save(self.checkpoints / "voxelmorph.pt")
        return model

    def sweep_pairs(self, folds: dict[str, int] | None, per_style: int | None = None) -> tuple[list[Pair], str]:
        """The pairs a sweep evaluates and where they come from: with per-fold models the prepared
        pairs the folds held out, else :meth:`held_out_pairs` (``per_style`` of each style)."""
        if folds is not None:
            return [p for p in self.prepared_pairs() if p.name in folds], "prepared pairs, per-fold models"
        return self.held_out_pairs(per_style), "fresh held-out phantom pairs, single models"
