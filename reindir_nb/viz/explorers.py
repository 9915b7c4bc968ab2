"""Linked failure-case explorers (ipywidgets 8 + matplotlib + plotly): one import for all of them.

Three explorers look at one pair and one registration run on the FIXED image's grid (world mm;
moving-side images resampled there in world coordinates; slicing convention of
:mod:`reindir_nb.viz.slicing`, colours of :mod:`reindir_nb.viz.palette`):

* :class:`PairExplorer` (:mod:`~reindir_nb.viz.pair_explorer`): axis, slice, window/level and
  a layer (fixed, moving, warped, differences, checkerboard, det J, uncertainty, displacement,
  deformed grid), landmarks drawn;
* :class:`LandmarkErrorExplorer` (:mod:`~reindir_nb.viz.landmark_explorer`): per-landmark error
  before/after, sortable list, scatter, orthogonal views and a 3D plotly scatter;
* :class:`IterationScrubber` (:mod:`~reindir_nb.viz.iteration_scrubber`): TRE curve with a
  cursor, the warped image and the landmark errors at any recorded iteration.

Explorers built with the same :class:`LinkedState` (:mod:`~reindir_nb.viz.linked`) share the
selected landmark, axis, slice and iteration, and one :class:`RunVolumes` cache per run
(:mod:`~reindir_nb.viz.run_volumes`). The failure ranking of a sweep table is
:func:`reindir_nb.evaluation.failures.rank_failures` (re-exported here for older imports); the
update-latency driver lives in ``benchmarks/bench_explorers.py``.
"""

from __future__ import annotations

from ..evaluation.failures import rank_failures
from .iteration_scrubber import IterationScrubber
from .landmark_explorer import LandmarkErrorExplorer
from .linked import LinkedState
from .pair_explorer import PairExplorer
from .palette import PREDICTED
from .run_volumes import RunVolumes
from .slicing import landmark_slice, project_points

__all__ = [
    "PREDICTED",
    "LinkedState",
    "RunVolumes",
    "PairExplorer",
    "LandmarkErrorExplorer",
    "IterationScrubber",
    "project_points",
    "landmark_slice",
    "rank_failures",
]
