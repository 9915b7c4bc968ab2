"""Drive the linked explorers from Python and assert the state they show.

Exact checks use a pure translation (a run object with the RegistrationRun API whose answers are
known in closed form); one real smoke registration checks the explorers on ``rn.register``'s run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume
from reindir_nb.evaluation.failures import rank_failures
from reindir_nb.viz.explorers import (
    IterationScrubber,
    LandmarkErrorExplorer,
    LinkedState,
    PairExplorer,
    landmark_slice,
    project_points,
)
from reindir_nb.viz.slicing import take_slice
from reindir_nb.viz.latency import update_latency

SPACING = (2.0, 2.5, 3.0)  # mm (x, y, z)
SHAPE = (10, 12, 14)  # (z, y, x)
SHIFT_VOX = 2  # true motion: +2 voxels (+4 mm) in x


def _texture() -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    return (np.sin(0.7 * x) + np.cos(0.5 * y) + 0.3 * z + 0.05 * x * y).astype(np.float32)


def make_pair() -> Pair:
    """Moving = fixed moved by +4 mm in x (moving(x + t) = fixed(x)); landmarks at voxel
    positions, moving landmarks = fixed + t + a per-landmark offset in y (so errors differ)."""
    fixed = _texture()
    moving = np.zeros_like(fixed)
    moving[:, :, SHIFT_VOX:] = fixed[:, :, :-SHIFT_VOX]
    fv = Volume.from_array(fixed, spacing=SPACING, origin=(-10.0, 5.0, 2.0), name="fixed")
    mv = Volume.from_array(moving, spacing=SPACING, origin=(-10.0, 5.0, 2.0), name="moving")
    idx = np.array([[3, 4, 5], [6, 2, 2], [8, 9, 7], [4, 6, 5]], float)  # (x, y, z) voxels
    fl = fv.grid.index_to_world(idx)
    offsets = np.array([[0, 0.0, 0], [0, 1.0, 0], [0, 3.0, 0], [0, 2.0, 0]])
    ml = fl + np.array([2.0 * SHIFT_VOX, 0, 0]) + offsets
    return Pair(fv, mv, fl, ml, name="toy")


class TranslationRun:
    """Registration whose transform after k of K steps is x -> x + (k/K) t, t = +4 mm in x.

    Implements the RegistrationRun API the explorers use; counts full-volume computations."""

    def __init__(self, pair: Pair, iterations: int = 10, recorded=(0, 5, 10)):
        self.pair, self.iterations = pair, iterations
        self.recorded_iterations = list(recorded)
        self.t = np.array([2.0 * SHIFT_VOX, 0.0, 0.0])
        self.calls: dict[str, int] = {}
        self.history = pd.DataFrame({"iteration": self.recorded_iterations,
                                     "total": np.linspace(1, 0, len(self.recorded_iterations))})
        if pair.has_landmarks:
            self.history["tre_mean_mm"] = [np.linalg.norm(self.transform_points(pair.fixed_landmarks, iteration=k)
                                                          - pair.moving_landmarks, axis=1).mean()
                                           for k in self.recorded_iterations]

    def shift(self, iteration=None) -> np.ndarray:
        k = self.iterations if iteration is None else iteration
        return self.t * k / self.iterations

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def _grid_points(self):
        return self.pair.fixed.grid.voxel_centres_world().reshape(-1, 3)

    def _vol(self, values, name):
        return self.pair.fixed.with_array(values.reshape(*SHAPE, *values.shape[1:]), name=name)

    def transform_points(self, points_mm, estimate="cycle", iteration=None):
        return np.asarray(points_mm, float).reshape(-1, 3) + self.shift(iteration)

    def point_uncertainty(self, points_mm, iteration=None):
        return np.abs(np.asarray(points_mm, float).reshape(-1, 3)[:, 0]) * 0.01 * (1 + (iteration or 0))

    def warp(self, volume=None, estimate="forward", iteration=None, order=1):
        self._count("warp")
        moved = self.transform_points(self._grid_points(), iteration=iteration)
        return self._vol(self.pair.moving.sample_world(moved, order=order), "warped")

    def jacobian_determinant(self, iteration=None):
        self._count("jacobian_determinant")
        return self._vol(np.ones(int(np.prod(SHAPE))), "det J")

    def uncertainty(self, iteration=None):
        self._count("uncertainty")
        return self._vol(self.point_uncertainty(self._grid_points(), iteration), "unc")

    def displacement(self, estimate="forward", iteration=None):
        self._count("displacement")
        pts = self._grid_points()
        return self._vol(self.transform_points(pts, iteration=iteration) - pts, "disp")


@pytest.fixture()
def toy():
    pair = make_pair()
    return pair, TranslationRun(pair)


# ----------------------------------------------------------------------------- PairExplorer
def test_pair_explorer_slices_layers_and_window(toy):
    pair, run = toy
    pe = PairExplorer(pair, run, layer="fixed")
    assert pe.axis == "axial" and pe.index == SHAPE[0] // 2 and pe.iteration == 10
    np.testing.assert_array_equal(pe.image, pair.fixed.array[5])
    pe.slice_w.value = 3
    assert pe.index == 3 and pe.state.index == 3
    np.testing.assert_array_equal(pe.image, pair.fixed.array[3])
    # warped moving at the final iteration = fixed (exact translation), away from the x border
    pe.layer_w.value = "warped"
    np.testing.assert_allclose(pe.image[:, :-SHIFT_VOX], pair.fixed.array[3][:, :-SHIFT_VOX], atol=1e-5)
    pe.layer_w.value = "difference after"
    assert np.abs(pe.image[:, :-SHIFT_VOX]).max() < 1e-5
    pe.layer_w.value = "difference before"
    np.testing.assert_allclose(pe.image, pair.moving.array[3] - pair.fixed.array[3], atol=1e-6)
    pe.layer_w.value = "det J"
    np.testing.assert_array_equal(pe.image, 1.0)
    assert pe.clim == (0.0, 2.0)
    pe.layer_w.value = "displacement"
    np.testing.assert_allclose(pe.image, 4.0, atol=1e-5)  # |t| = 4 mm everywhere
    pe.layer_w.value = "checkerboard"
    assert pe.image.shape == (SHAPE[1], SHAPE[2])
    # window / level: display range = level -+ window / 2
    pe.layer_w.value = "fixed"
    pe.level_w.value, pe.width_w.value = 1.0, 2.0
    assert pe.clim == pytest.approx((0.0, 2.0), abs=0.02)
    pe.layer_w.value = "difference before"
    assert pe.clim == pytest.approx((-1.0, 1.0), abs=0.02)
    # coronal: rows are z flipped (superior at the top), mm aspect
    pe.axis_w.value = "coronal"
    assert pe.state.axis == "coronal" and pe.slice_w.max == SHAPE[1] - 1 and pe.index == SHAPE[1] // 2
    pe.layer_w.value = "fixed"
    np.testing.assert_array_equal(pe.image, pair.fixed.array[:, SHAPE[1] // 2, :][::-1])
    assert pe.ax.get_aspect() == pytest.approx(SPACING[2] / SPACING[0])
    with pytest.raises(ValueError, match="not available"):
        PairExplorer(pair, None, layer="warped")


def test_pair_explorer_landmarks_and_deformed_grid(toy):
    pair, run = toy
    pe = PairExplorer(pair, run, layer="deformed grid", grid_step=1)
    pe.slice_w.value = 5  # landmarks 0 (z=5) and 3 (z=5) lie on axial slice 5
    np.testing.assert_allclose(np.sort(pe.fixed_points, axis=0), [[3, 4], [4, 6]])
    np.testing.assert_allclose(np.sort(pe.predicted_points, axis=0), [[5, 4], [6, 6]])  # +2 voxels in x
    # deformed grid: every polyline is the voxel lattice moved by t / sx = 2 columns
    rows, cols = SHAPE[1], SHAPE[2]
    assert len(pe.grid_lines) == rows + cols
    np.testing.assert_allclose(pe.grid_lines[0], np.stack([np.arange(cols) + 2.0, np.zeros(cols)], 1), atol=1e-9)
    np.testing.assert_allclose(pe.grid_lines[rows + 3], np.stack([np.full(rows, 5.0), np.arange(rows)], 1), atol=1e-9)
    # selecting landmark 2 jumps to its slice and marks fixed / moving / predicted
    pe.state.landmark = 2
    assert pe.index == 7 and pe.slice_w.value == 7
    np.testing.assert_allclose(pe.selected_marks["fixed"], [8, 9])
    np.testing.assert_allclose(pe.selected_marks["moving"], [10, 9 + 3.0 / 2.5])
    np.testing.assert_allclose(pe.selected_marks["predicted"], [10, 9])
    pe.axis_w.value = "sagittal"  # the selected landmark stays in view: x index 8
    assert pe.index == 8
    np.testing.assert_allclose(pe.selected_marks["fixed"], [9, SHAPE[0] - 1 - 7])


def test_run_volumes_are_cached_and_planes_match_the_volume(toy):
    pair, run = toy
    pe = PairExplorer(pair, run, layer="warped")
    assert run.calls == {"warp": 1}
    for k in range(SHAPE[0]):
        pe.slice_w.value = k
    pe.axis_w.value = "coronal"
    assert run.calls == {"warp": 1}  # slider and axis moves only re-slice
    vols = pe.volumes
    # slice-wise evaluation of an iteration not cached equals slicing the full volume
    plane = vols.plane("warped", 5, "sagittal", 4, full=False)
    assert run.calls == {"warp": 1}
    np.testing.assert_allclose(plane, take_slice(vols.volume("warped", 5), "sagittal", 4), atol=1e-6)
    np.testing.assert_allclose(vols.plane("uncertainty", 5, "axial", 2, full=False),
                               take_slice(vols.volume("uncertainty", 5), "axial", 2), atol=1e-6)
    assert set(vols.compute_seconds) == {("warped", 10), ("warped", 5), ("uncertainty", 5)}
    with pytest.raises(ValueError, match="unknown run volume"):
        vols.volume("bogus")


def test_run_on_another_grid_is_refused(toy):
    pair, run = toy
    other = Pair(Volume.from_array(pair.fixed.array[:, :, :-1], spacing=SPACING), pair.moving, name="other")
    with pytest.raises(ValueError, match="another fixed grid"):
        PairExplorer(other, run)


# --------------------------------------------------------------------- LandmarkErrorExplorer
def expected_errors(pair, run, k):
    return np.linalg.norm(pair.fixed_landmarks + run.shift(k) - pair.moving_landmarks, axis=1)


def test_landmark_explorer_table_selection_and_views(toy):
    pair, run = toy
    le = LandmarkErrorExplorer(pair, run)
    np.testing.assert_allclose(le.errors_before, np.linalg.norm(pair.moving_landmarks - pair.fixed_landmarks, axis=1))
    np.testing.assert_allclose(le.errors_after, [0.0, 1.0, 3.0, 2.0])  # only the y offsets remain
    assert list(le.order) == [2, 3, 1, 0]  # largest error after first
    assert le.table_w.options[0] == ("#2: 5.00 \u2192 3.00", 2)
    assert le.selected == 2  # nothing picked: the views show the worst landmark
    le.sort_w.value = "index"
    assert [v for _, v in le.table_w.options] == [0, 1, 2, 3]
    le.sort_w.value = "gain"  # gain = before - after: smallest first
    gain = le.errors_before - le.errors_after
    assert list(le.order) == list(np.argsort(gain, kind="stable"))
    # picking in the list selects the landmark for every linked view
    le.table_w.value = 1
    assert le.state.landmark == 1 and le.selected == 1
    lm = pair.fixed_landmarks[1]  # voxel (6, 2, 2)
    for axis in ("axial", "coronal", "sagittal"):
        k = landmark_slice(lm, pair.fixed.grid, axis)
        np.testing.assert_array_equal(le.views[axis], take_slice(pair.fixed.array, axis, k))
        np.testing.assert_allclose(le.marks[axis]["fixed"], project_points(lm, pair.fixed.grid, axis)[0])
    np.testing.assert_allclose(le.marks["axial"]["moving"], [8, 2 + 1.0 / 2.5])
    np.testing.assert_allclose(le.marks["axial"]["predicted"], [8, 2])
    assert le.state.index == 2  # axial slice of landmark 1 (z = 2)
    # 3D scatter: colours are the errors after; the selected track is fixed -> moving -> predicted
    fig = le.scatter3d
    np.testing.assert_allclose(fig.data[0].marker.color, le.errors_after)
    np.testing.assert_allclose(fig.data[1].x, [lm[0], pair.moving_landmarks[1, 0], lm[0] + 4.0])
    # a click on the 3D scatter selects (plotly FigureWidget callback)
    le._on_click3d(fig.data[0], type("Points", (), {"point_inds": [3]})(), None)
    assert le.state.landmark == 3 and le.table_w.value == 3


def test_landmark_explorer_needs_landmarks_and_a_run(toy):
    pair, run = toy
    with pytest.raises(ValueError, match="needs a registration run"):
        LandmarkErrorExplorer(pair, None)
    bare = pair.replace(fixed_landmarks=None, moving_landmarks=None)
    with pytest.raises(ValueError, match="needs landmarks"):
        LandmarkErrorExplorer(bare, TranslationRun(bare))
    with pytest.raises(Exception, match="landmark must be"):
        LinkedState().select_landmark(0)  # no landmarks attached


# -------------------------------------------------------------------------- IterationScrubber
def test_iteration_scrubber_cursor_image_and_errors(toy):
    pair, run = toy
    sc = IterationScrubber(pair, run)
    assert list(sc.iteration_w.options) == [0, 5, 10] and sc.cursor_iteration == 10
    sc.iteration_w.value = 5
    assert sc.cursor_iteration == 5 and sc.state.iteration == 5
    np.testing.assert_allclose(sc.errors, expected_errors(pair, run, 5))
    assert sc.tre_at_cursor == pytest.approx(expected_errors(pair, run, 5).mean())
    cursor = sc.ax_curve.lines[-1].get_xdata()  # the vertical cursor line
    assert list(cursor) == [5, 5]
    # warped slice at iteration 5 = moving sampled 1 voxel further in x = fixed shifted by one voxel
    z = sc.state.index
    np.testing.assert_allclose(sc.image[:, 1:-1], pair.fixed.array[z][:, :-2], atol=1e-5)
    assert "warp" not in run.calls  # computed at the slice's points only
    sc.iteration_w.value = 0
    np.testing.assert_allclose(sc.image, pair.moving.array[z], atol=1e-5)


# ---------------------------------------------------------------------------------- linking
def test_linked_explorers_share_landmark_slice_and_iteration(toy):
    pair, run = toy
    state = LinkedState()
    pe = PairExplorer(pair, run, state=state, layer="warped")
    le = LandmarkErrorExplorer(pair, run, state=state)
    sc = IterationScrubber(pair, run, state=state)
    assert pe.volumes is le.volumes is sc.volumes  # one cache per run
    sc.iteration_w.value = 5
    assert pe.iteration == 5 and le.iteration == 5
    np.testing.assert_allclose(le.errors_after, expected_errors(pair, run, 5))
    np.testing.assert_allclose(pe.image[:, 1:-1], pair.fixed.array[pe.index][:, :-2], atol=1e-5)
    le.table_w.value = 2  # landmark 2 sits at z = 7
    assert pe.index == 7 and pe.slice_w.value == 7 and state.index == 7
    np.testing.assert_allclose(pe.selected_marks["predicted"], [8 + 1, 9])  # half the shift at iteration 5
    pe.slice_w.value = 4
    assert sc.state.index == 4 and sc._last_key[2] == 4
    pe.axis_w.value = "coronal"  # coronal slice of the selected landmark: y = 9
    assert sc.state.axis == "coronal" and pe.index == 9
    renders = pe.renders
    pe.update()  # nothing changed: no redraw
    assert pe.renders == renders
    assert np.isfinite(pe.update_seconds) and np.isfinite(le.update_seconds) and np.isfinite(sc.update_seconds)


def test_state_refuses_pairs_on_other_grids(toy):
    pair, run = toy
    state = LinkedState()
    PairExplorer(pair, run, state=state)
    other = Pair(Volume.from_array(np.zeros((4, 5, 6), np.float32)), Volume.from_array(np.zeros((4, 5, 6), np.float32)))
    with pytest.raises(ValueError, match="same fixed grid"):
        PairExplorer(other, state=state)


# ------------------------------------------------------------------------- real registration
@pytest.fixture(scope="module")
def smoke_run():
    import reindir_nb as rn

    pair = rn.prepare(rn.phantom.make_pair(0, "nlst", profile="smoke"), "smoke")
    return pair, rn.register(pair, iterations=4, record_every=2, seed=0, progress=False, prealign="none")


def test_explorers_on_a_real_run(smoke_run):
    pair, run = smoke_run
    state = LinkedState()
    pe = PairExplorer(pair, run, state=state, layer="warped")
    le = LandmarkErrorExplorer(pair, run, state=state)
    sc = IterationScrubber(pair, run, state=state)
    assert run.recorded_iterations == [0, 2, 4]
    sc.iteration_w.value = 2
    np.testing.assert_allclose(pe.image, take_slice(run.warp(iteration=2).array, "axial", pe.index), atol=1e-5)
    np.testing.assert_allclose(sc.image, pe.image, atol=1e-5)  # slice-wise == full volume
    np.testing.assert_allclose(le.errors_after, run.landmark_errors(iteration=2), atol=1e-9)
    assert sc.tre_at_cursor == pytest.approx(float(run.history.set_index("iteration").loc[2, "tre_mean_mm"]), rel=1e-6)
    worst = int(np.argmax(le.errors_after))
    assert list(le.order)[0] == worst
    le.table_w.value = worst
    assert pe.index == landmark_slice(pair.fixed_landmarks[worst], pair.fixed.grid, "axial")
    assert pe.png()[:8] == b"\x89PNG\r\n\x1a\n" and le.png() != sc.png()


# --------------------------------------------------------------------------------- ranking
def test_rank_failures_hand_computed():
    rows = []
    # (pair, method, iteration, seed, tre, uncertainty)
    tre = {("a", "REINDIR", 25): [2.0, 4.0], ("b", "REINDIR", 25): [5.0, 5.0], ("c", "REINDIR", 25): [1.0, 1.0],
           ("a", "REINDIR", 0): [6.0, 6.0], ("b", "REINDIR", 0): [9.0, 9.0], ("c", "REINDIR", 0): [3.0, 3.0],
           ("a", "Reptile", 0): [10.0, 10.0], ("b", "Reptile", 0): [9.5, 9.5], ("c", "Reptile", 0): [7.0, 7.0]}
    unc = {"a": 0.5, "b": 0.2, "c": 0.9}
    for (pair, method, it), values in tre.items():
        for seed, v in enumerate(values):
            rows.append({"pair": pair, "dataset": "phantom-nlst", "method": method, "seed": seed, "iteration": it,
                         "regulariser": "jacobian", "tre_mean_mm": v, "uncertainty_mean_mm": unc[pair] + seed})
    rows.append({"pair": "a", "dataset": "phantom-nlst", "method": "REINDIR", "seed": 0, "iteration": 25,
                 "regulariser": "bending", "tre_mean_mm": 99.0, "uncertainty_mean_mm": 99.0})  # filtered out
    table = pd.DataFrame(rows)
    r = rank_failures(table)
    assert list(r["pair"]) == ["b", "a", "c"]  # largest TRE after optimisation first
    assert r.set_index("pair")["tre_after_mm"].to_dict() == {"a": 3.0, "b": 5.0, "c": 1.0}
    assert r.set_index("pair")["reindir_gain_mm"].to_dict() == {"a": 4.0, "b": 0.5, "c": 4.0}
    assert r.set_index("pair")["uncertainty_mm"].to_dict() == pytest.approx({"a": 1.0, "b": 0.7, "c": 1.4})
    assert r.set_index("pair")["worst_seed"].to_dict() == {"a": 1, "b": 0, "c": 0}
    assert list(rank_failures(table, by="gain")["pair"]) == ["b", "a", "c"]
    assert list(rank_failures(table, by="uncertainty")["pair"]) == ["c", "a", "b"]
    overall = rank_failures(table, by="overall").set_index("pair")
    # ranks: tre b1 a2 c3; gain b1 a2 c2; uncertainty c1 a2 b3 -> mean b 5/3, a 2, c 2
    assert overall["mean_rank"].to_dict() == pytest.approx({"b": 5 / 3, "a": 2.0, "c": 2.0})
    assert list(overall.index) == ["b", "a", "c"]
    only_cc = table.assign(method="ccIDIR")
    assert rank_failures(only_cc)["reindir_gain_mm"].isna().all()
    with pytest.raises(ValueError, match="lacks columns"):
        rank_failures(table.drop(columns="tre_mean_mm"))
    with pytest.raises(ValueError, match="not in the table"):
        rank_failures(table, method="VoxelMorph")


# -------------------------------------------------------------------------- latency
def test_update_latency_drives_every_explorer_and_restores_the_state(toy):
    pair, run = toy
    state = LinkedState()
    views = [PairExplorer(pair, run, state=state), LandmarkErrorExplorer(pair, run, state=state),
             IterationScrubber(pair, run, state=state)]
    saved = (state.axis, state.index, state.landmark, state.iteration)
    table = update_latency(views, steps=2)
    assert list(table["explorer"]) == ["PairExplorer", "LandmarkErrorExplorer", "IterationScrubber", "IterationScrubber"]
    assert list(table["action"])[1:] == ["pick landmark", "iteration (first visit)", "iteration (cached)"]
    assert (table["updates"] == 2).all() and (table["own_median_s"] > 0).all()
    assert (table["own_max_s"] >= table["own_median_s"]).all() and np.isfinite(table["wall_median_s"]).all()
    assert (state.axis, state.index, state.landmark, state.iteration) == saved
    with pytest.raises(ValueError, match="unknown explorer"):
        update_latency([type("Other", (), {"state": state})()])
