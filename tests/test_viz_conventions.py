"""One slicing convention and one palette for every picture: the same landmark lands on the same
displayed pixel in a widget slice, an explorer slice, a paper panel and the anatomy plot."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import reindir_nb as rn  # noqa: E402
from reindir_nb.core.pair import Pair  # noqa: E402
from reindir_nb.core.volume import Volume  # noqa: E402
from reindir_nb.viz import anatomy, explorers, figures, palette, slicing, widgets  # noqa: E402

SHAPE = (9, 10, 12)  # (z, y, x)
SPACING = (1.0, 1.5, 2.0)  # (x, y, z) mm
ORIGIN = (-7.0, 3.0, 11.0)
L0 = (3, 4, 6)  # (x, y, z) voxel of the landmark followed through every picture
# further landmarks on the same slice as L0 along each axis (so every picture shows L0's slice)
OTHERS = {"axial": [(8, 7, 6), (5, 2, 6)], "coronal": [(8, 4, 2), (5, 4, 4)], "sagittal": [(3, 7, 2), (3, 2, 4)]}
BACKGROUND, BRIGHT = -1000.0, 150.0  # HU: inside the anatomy plot's window, L0's voxel is the brightest


def make_pair(axis: str) -> Pair:
    """Fixed = moving (same grid): background with one bright voxel at L0; landmarks L0 + OTHERS[axis]
    (moving landmarks = fixed ones)."""
    arr = np.full(SHAPE, BACKGROUND, np.float32)
    arr[L0[2], L0[1], L0[0]] = BRIGHT
    fixed = Volume.from_array(arr, spacing=SPACING, origin=ORIGIN)
    moving = Volume.from_array(arr.copy(), spacing=SPACING, origin=ORIGIN)
    points = fixed.grid.index_to_world(np.array([L0, *OTHERS[axis]], float))
    return Pair(fixed, moving, points, points.copy(), name=f"toy-{axis}", meta={"label": "toy"})


def expected_fraction(axis: str) -> np.ndarray:
    """Where L0's voxel centre must appear, in axes fractions (0, 0) = bottom left: x to the right in
    axial and coronal views, y to the right in sagittal; superior (high z) up in coronal and sagittal,
    anterior (low y) up in axial."""
    x, y, z = L0
    nz, ny, nx = SHAPE
    return {"axial": np.array([(x + 0.5) / nx, 1 - (y + 0.5) / ny]),
            "coronal": np.array([(x + 0.5) / nx, (z + 0.5) / nz]),
            "sagittal": np.array([(y + 0.5) / ny, (z + 0.5) / nz])}[axis]


def axes_fraction(ax, xy) -> np.ndarray:
    """Data coordinates -> axes fraction under the axes' current view limits (inverted axes included)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return np.array([(xy[0] - x0) / (x1 - x0), (xy[1] - y0) / (y1 - y0)])


def brightest_pixel_fraction(ax) -> np.ndarray:
    """Axes fraction of the centre of the brightest pixel of the (first) image drawn on ``ax``,
    placed as matplotlib places it (extent and origin)."""
    im = ax.images[0]
    data = np.asarray(im.get_array())
    rows, cols = data.shape[:2]
    r, c = np.unravel_index(int(np.argmax(data)), data.shape[:2])
    left, right, bottom, top = im.get_extent()
    first_row_at = top if im.origin == "upper" else bottom
    last_row_side = bottom if im.origin == "upper" else top
    x = left + (c + 0.5) * (right - left) / cols
    y = first_row_at + (r + 0.5) * (last_row_side - first_row_at) / rows
    return axes_fraction(ax, (x, y))


def l0_marker(collection) -> np.ndarray:
    return np.asarray(collection.get_offsets())[0]  # landmark 0 comes first in every scatter


def shown_positions(axis: str) -> dict[str, tuple]:
    """picture name -> (axes, L0 marker data coordinates) for every picture showing L0 on ``axis``."""
    pair = make_pair(axis)
    k = slicing.landmark_slice(pair.fixed_landmarks[0], pair.fixed.grid, axis)
    out = {}
    scrubber = widgets.SliceScrubber(pair, axis=axis)
    scrubber.slice_w.value = k
    out["SliceScrubber"] = (scrubber.ax, l0_marker(scrubber.ax.collections[0]))
    pe = explorers.PairExplorer(pair, axis=axis, layer="fixed")
    pe.slice_w.value = k
    out["PairExplorer"] = (pe.ax, l0_marker(pe.ax.collections[0]))
    fig, ax = plt.subplots()
    figures.landmark_panel(ax, pair, pair.fixed_landmarks, axis=axis)
    out["landmark_panel teal"] = (ax, l0_marker(ax.collections[0]))
    out["landmark_panel pink"] = (ax, l0_marker(ax.collections[1]))
    panels = {"axial": [(0, 0)], "coronal": [(0, 1), (1, 1)], "sagittal": []}[axis]
    if panels:
        afig = anatomy.anatomy_figure(pair)
        grid_axes = np.asarray(afig.axes).reshape(2, 2)
        for r, c in panels:
            a = grid_axes[r, c]
            out[f"anatomy panel {r},{c}"] = (a, l0_marker(a.collections[0]))
    return out


@pytest.mark.parametrize("axis", slicing.AXES)
def test_same_landmark_lands_on_the_same_displayed_pixel(axis):
    want = expected_fraction(axis)
    shown = shown_positions(axis)
    assert len(shown) >= 4
    for name, (ax, marker) in shown.items():
        np.testing.assert_allclose(axes_fraction(ax, marker), want, atol=1e-9, err_msg=f"{name}: marker")
        np.testing.assert_allclose(brightest_pixel_fraction(ax), want, atol=1e-9, err_msg=f"{name}: image pixel")
        assert ax.get_aspect() == pytest.approx(slicing.slice_aspect(rn.Grid(SHAPE, SPACING, ORIGIN), axis)), name
    plt.close("all")


@pytest.mark.parametrize("axis", slicing.AXES)
def test_project_points_puts_a_voxel_on_the_pixel_take_slice_puts_its_value(axis):
    grid = rn.Grid(SHAPE, SPACING, ORIGIN)
    arr = np.arange(np.prod(SHAPE), dtype=float).reshape(SHAPE)
    rng = np.random.default_rng(1)
    for x, y, z in rng.integers([0, 0, 0], [SHAPE[2], SHAPE[1], SHAPE[0]], size=(20, 3)):
        world = grid.index_to_world([[x, y, z]])
        k = slicing.landmark_slice(world[0], grid, axis)
        col, row = np.rint(slicing.project_points(world, grid, axis)[0]).astype(int)
        assert slicing.take_slice(arr, axis, k)[row, col] == arr[z, y, x]
        sel, px = slicing.landmarks_in_slab(world, grid, axis, k, half_width=0.0)
        assert sel.tolist() == [0] and np.allclose(px, [[col, row]])


def test_bad_axis_names_the_argument():
    grid = rn.Grid(SHAPE, SPACING)
    with pytest.raises(ValueError, match="axis must be one of"):
        slicing.take_slice(np.zeros(SHAPE), "transverse", 0)
    with pytest.raises(ValueError, match="axis must be one of"):
        slicing.project_points(np.zeros((1, 3)), grid, "frontal")
    with pytest.raises(ValueError, match="no points"):
        slicing.median_slice(np.zeros((0, 3)), grid, "axial")
    with pytest.raises(ValueError, match="half_width"):
        slicing.landmarks_in_slab(np.zeros((1, 3)), grid, "axial", 0, half_width=-1)
    with pytest.raises(ValueError, match="shape"):
        slicing.checkerboard(np.zeros((2, 3)), np.zeros((3, 2)))


def _face_hex(collection) -> str:
    return matplotlib.colors.to_hex(collection.get_facecolor()[0])


def _edge_hex(collection) -> str:
    return matplotlib.colors.to_hex(collection.get_edgecolor()[0])


def test_one_palette_everywhere():
    # older names are the palette's entries
    assert widgets.TEAL == figures.FIXED_COLOUR == palette.FIXED
    assert widgets.PINK == figures.MOVING_COLOUR == palette.MOVING
    assert explorers.PREDICTED == palette.PREDICTED
    assert figures.METHOD_COLOURS is palette.METHOD_COLOURS
    assert palette.method_colour("REINDIR", 3) == palette.METHOD_COLOURS["REINDIR"]
    assert palette.method_colour("my method", 12) == "C2"
    # and the pictures draw with them
    pair = make_pair("coronal")
    s = widgets.SliceScrubber(pair, axis="coronal")
    s.slice_w.value = L0[1]
    assert [_face_hex(c) for c in s.ax.collections] == [palette.FIXED, palette.MOVING]
    fig, ax = plt.subplots()
    figures.landmark_panel(ax, pair, pair.fixed_landmarks)
    assert [_face_hex(c) for c in ax.collections] == [palette.FIXED, palette.MOVING]
    afig = anatomy.anatomy_figure(pair)
    a = np.asarray(afig.axes).reshape(2, 2)
    assert _edge_hex(a[0, 1].collections[0]) == palette.FIXED and _edge_hex(a[1, 1].collections[0]) == palette.MOVING
    plt.close("all")


def test_rn_names_reach_the_split_modules():
    from reindir_nb.viz import iteration_scrubber, landmark_explorer, linked, pair_explorer, run_volumes

    assert rn.widgets.PairExplorer is explorers.PairExplorer is pair_explorer.PairExplorer
    assert rn.widgets.LandmarkErrorExplorer is landmark_explorer.LandmarkErrorExplorer
    assert rn.widgets.IterationScrubber is iteration_scrubber.IterationScrubber
    assert rn.widgets.LinkedState is explorers.LinkedState is linked.LinkedState
    assert explorers.RunVolumes is run_volumes.RunVolumes
    assert rn.widgets.take_slice is slicing.take_slice
    assert rn.figures.plot_landmarks_on_anatomy is anatomy.plot_landmarks_on_anatomy
    assert not hasattr(widgets, "__getattr__")  # plain imports, no lazy module attribute


def test_library_code_never_picks_a_matplotlib_backend():
    root = Path(rn.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("use", "switch_backend"):
                base = node.func.value
                if isinstance(base, ast.Name) and base.id in ("matplotlib", "mpl", "plt"):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, f"matplotlib backend chosen in library code: {offenders}"


def test_anatomy_plot_writes_a_png_without_pyplot(tmp_path):
    pair = make_pair("axial")
    open_before = plt.get_fignums()
    out = anatomy.plot_landmarks_on_anatomy(pair, tmp_path / "a" / "landmarks.png", dpi=40)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(out.parent.iterdir()) == [out]
    assert plt.get_fignums() == open_before  # no pyplot figure opened or left behind
    with pytest.raises(ValueError, match="no landmarks"):
        anatomy.anatomy_figure(pair.replace(fixed_landmarks=None, moving_landmarks=None))
    with pytest.raises(ValueError, match="slab_mm"):
        anatomy.anatomy_figure(pair, slab_mm=0.0)
