"""bundled thorax-ct: the real CT, its simulated exhale, automatic landmarks on real vessels."""

import numpy as np
import pytest

from reindir_nb import bundled, figures, landmarks
from reindir_nb.simulation.motion import BreathingMotion, ThoraxFrame, jacobian_determinant, warp_image


@pytest.fixture(scope="module")
def ct():
    return bundled.load_thorax_ct()


@pytest.fixture(scope="module")
def lung_mask(ct):
    return landmarks.lung_mask_for_landmarks(ct)


@pytest.fixture(scope="module")
def pair():
    """4 mm for speed (landmarks are still detected on the 2 mm CT)."""
    return bundled.thorax_ct_pair(seed=0, spacing_mm=4.0)


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_bundled_ct_geometry(ct):
    assert ct.grid.shape == (141, 147, 183)
    np.testing.assert_allclose(ct.grid.spacing, (2.0, 2.0, 2.0))
    assert ct.array.min() >= -1100 and ct.array.max() > 1000  # HU


def test_lung_mask_is_plausible(ct, lung_mask):
    m = lung_mask.array > 0
    litres = m.sum() * np.prod(ct.grid.spacing) / 1e6
    assert 3.0 < litres < 8.0
    assert np.median(ct.array[m]) < -700  # air-filled lung, vessels included
    frame = ThoraxFrame.from_mask(lung_mask)
    assert 150 < frame.height_mm < 280 and 200 < 2 * frame.half_width_mm < 330


def test_detector_finds_spread_points_on_vessels(ct, lung_mask):
    pts = landmarks.detect_landmarks(ct, lung_mask, n=300, min_spacing_mm=6.0)
    assert len(pts) >= 100
    gaps = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    assert gaps[~np.eye(len(pts), dtype=bool)].min() >= 6.0 - 1e-9
    inside = lung_mask.sample_world(pts, order=0) > 0
    assert inside.all()
    # on bright structures (vessels), not on parenchyma noise: compare with random lung voxels
    hu = ct.sample_world(pts)
    rng = np.random.default_rng(0)
    idx = np.argwhere(lung_mask.array > 0)
    rand = ct.array[tuple(idx[rng.choice(len(idx), 2000)].T)]
    assert np.median(hu) > np.median(rand) + 300, (np.median(hu), np.median(rand))
    assert np.mean(hu > -700) > 0.9
    # deterministic
    np.testing.assert_array_equal(pts, landmarks.detect_landmarks(ct, lung_mask, n=300, min_spacing_mm=6.0))


def test_structure_tensor_prefers_corners_over_tubes():
    """A straight bright tube scores (near) zero isotropy; its end, a 3D corner, scores high."""
    img = np.full((40, 40, 40), -850.0, dtype=np.float32)
    img[20 - 2 : 20 + 3, 20 - 2 : 20 + 3, 5:25] = 40.0  # tube along x ending at x=24
    w, q = landmarks.structure_tensor_score(img, (1.0, 1.0, 1.0), sigma_d_mm=1.0, sigma_i_mm=2.0)
    assert q[20, 20, 24] > 10 * q[20, 20, 12]
    assert w[20, 20, 24] > 10 * w[20, 20, 12]


def test_pair_labels_and_geometry(pair):
    assert pair.dataset == "thorax-ct"
    assert pair.meta["label"] == "real anatomy, simulated motion"
    assert "real-anatomy-simulated-motion" in pair.name
    assert pair.fixed.grid.spacing == (4.0, 4.0, 4.0) and pair.moving.grid.same_as(pair.fixed.grid)
    assert len(pair.fixed_landmarks) >= 100
    assert "POPI" in pair.meta["citation"]


def test_landmarks_move_by_exact_motion_and_truth_is_invertible(pair):
    motion = BreathingMotion.from_dict(pair.meta["motion"])
    np.testing.assert_allclose(pair.moving_landmarks, pair.fixed_landmarks + motion.displacement(pair.fixed_landmarks),
                               atol=1e-9)
    d = pair.initial_distances()
    assert 4.0 < d.mean() < 14.0 and d.max() < 30.0
    assert jacobian_determinant(pair.ground_truth).min() > 0.5


def test_moving_image_really_moved(pair):
    # intensities at corresponding landmarks agree; at the unmoved positions they do not
    f = pair.fixed.sample_world(pair.fixed_landmarks)
    m = pair.moving.sample_world(pair.moving_landmarks)
    m0 = pair.moving.sample_world(pair.fixed_landmarks)
    assert np.corrcoef(f, m)[0, 1] > 0.75 and np.corrcoef(f, m0)[0, 1] < 0.5
    assert np.mean(np.abs(f - m)) < 0.5 * np.mean(np.abs(f - m0))
    # warping the moving image back with the truth restores the fixed image in the lungs
    back = warp_image(pair.moving, pair.ground_truth)
    lungs = pair.fixed_mask.array > 0
    before = _ncc(pair.fixed.array[lungs], pair.moving.array[lungs])
    after = _ncc(pair.fixed.array[lungs], back.array[lungs])
    assert after > 0.85 and after > before + 0.3, (before, after)


def test_seeded(pair):
    again = bundled.thorax_ct_pair(seed=0, spacing_mm=4.0)
    np.testing.assert_array_equal(again.moving.array, pair.moving.array)
    other = bundled.thorax_ct_pair(seed=1, spacing_mm=4.0)
    assert not np.allclose(other.moving_landmarks, pair.moving_landmarks)
    np.testing.assert_array_equal(other.fixed_landmarks, pair.fixed_landmarks)  # same anatomy, same points


def test_plot_writes_png(pair, tmp_path):
    out = figures.plot_landmarks_on_anatomy(pair, tmp_path / "fig" / "landmarks.png")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert list(out.parent.iterdir()) == [out]  # written atomically, no temp file left


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        bundled.thorax_ct_pair(path=tmp_path / "nothing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="unreadable"):
        bundled.load_thorax_ct(bad)
