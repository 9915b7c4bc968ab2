"""Synthetic breathing-thorax pairs with exact ground truth (the default data of the kit).

A phantom is a seeded analytic thorax in world mm (LPS: ``+x`` left, ``+y`` posterior,
``+z`` superior): body outline with a subcutaneous fat layer, ribs, sternum and spine,
heart in its fat, descending aorta, liver and stomach under the diaphragm domes, trachea
and main bronchi, two lungs (about -850 HU, denser posteriorly, faint texture) and in each
lung a space-filling branching vessel tree (tubes whose radius follows Murray's law,
about +40 HU). The anatomy is a function of world position, so both images are rendered
exactly: the fixed image (inhale) at the voxel centres, the moving image (exhale) at
``phi^-1(y)`` for every moving voxel ``y``, where ``phi(x) = x + u(x)`` is the closed-form
:class:`reindir_nb.motion.BreathingMotion`. No resampling blur, and the ground truth is
the motion itself.

Landmarks are vessel bifurcations (nodes of the generated trees) inside the lungs; the
moving landmarks are the same points carried by the exact motion. Styles:

* ``dirlab``: anisotropic slices (``max(2.5, 1.5 x in-plane)`` mm), large motion (lung bases
  10-25 mm);
* ``nlst``: isotropic, moderate motion (lung bases 10-15 mm);
* ``cbct``: fan-beam CT (fixed) vs a cone-beam-like moving image: limited cylindrical and
  axial field of view, correlated noise, streaks, cupping and an intensity shift/scale,
  lung bases 8-16 mm plus a set-up translation up to 6 mm; landmarks are kept only inside
  the moving field of view.

Initial landmark distances (mean over a pair's 300 landmarks; 10 seeds): dirlab 7.5-12.6 mm
(DIR-LAB's real cases: 3.9-15.1), nlst 5.0-9.5 mm, cbct 6.2-11.6 mm (``benchmarks/bench_phantom.py``).

Resolution follows the run profile (``smoke`` 8 mm, ``demo`` 4 mm, ``paper`` 1 mm in-plane);
the subject (anatomy, motion, landmarks) depends only on ``seed`` and ``style``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from ..core.geometry import Grid
from .motion import BreathingMotion, ThoraxFrame
from ..core.pair import Pair
from ..core.profiles import get_profile
from ..core.volume import Volume

__all__ = [
    "STYLES", "StyleSpec", "STYLE_SPECS", "ThoraxAnatomy", "ConeBeamFOV", "phantom_grid", "make_pair",
    "make_cohort", "make_subject", "motion_of", "render_anatomy",
]

STYLES = ("dirlab", "nlst", "cbct")

# field of view of every phantom (world mm, voxel centres span it)
_FOV_MM = ((-170.0, 170.0), (-125.0, 125.0), (-165.0, 150.0))

AIR, FAT, MUSCLE, LUNG, VESSEL, BONE = -1000.0, -100.0, 40.0, -850.0, 40.0, 650.0


@dataclass(frozen=True)
class StyleSpec:
    """What distinguishes the three phantom styles."""

    amplitude_range_mm: tuple[float, float]  # superior shift of the lung bases (mm)
    noise_hu: float                          # white noise sigma of the fan-beam CT images (HU)
    shift_max_mm: float                      # global set-up translation between the scans
    anisotropic: bool                        # thick slices (DIR-LAB)
    cone_beam_moving: bool                   # degrade the moving image like a CBCT


STYLE_SPECS: dict[str, StyleSpec] = {
    "dirlab": StyleSpec((10.0, 25.0), 20.0, 0.0, True, False),
    "nlst": StyleSpec((10.0, 15.0), 15.0, 0.0, False, False),
    "cbct": StyleSpec((8.0, 16.0), 15.0, 6.0, False, True),
}


def _style(style: str) -> StyleSpec:
    if style not in STYLE_SPECS:
        raise ValueError(f"unknown phantom style {style!r}; choose one of {list(STYLES)}")
    return STYLE_SPECS[style]


def phantom_grid(style: str = "nlst", profile: str = "smoke") -> Grid:
    """The image grid of a style at a profile's resolution (identity direction, fixed mm field of view).

    In-plane spacing is the profile's ``spacing_mm``; ``dirlab`` slices are
    ``max(2.5, 1.5 x in-plane)`` mm thick (2.5 mm at ``paper`` scale, as DIR-LAB)."""
    spec, prof = _style(style), get_profile(profile)
    s = float(prof.spacing_mm)
    spacing = (s, s, max(2.5, 1.5 * s)) if spec.anisotropic else (s, s, s)
    shape_xyz, origin = [], []
    for (lo, hi), sp in zip(_FOV_MM, spacing):
        n = int(math.floor((hi - lo) / sp)) + 1
        shape_xyz.append(n)
        origin.append((lo + hi) / 2 - (n - 1) / 2 * sp)
    return Grid(tuple(shape_xyz[::-1]), spacing, tuple(origin))


# ------------------------------------------------------------------ signed distances
def _ellipsoid_sd(p: np.ndarray, centre, axes) -> np.ndarray:
    """Approximate signed distance (mm, < 0 inside) to an axis-aligned ellipsoid; ``axes`` may be
    per-point arrays. First-order ``f / |grad f|`` with ``f = sum((p-c)^2/a^2) - 1``."""
    axes = np.broadcast_to(np.asarray(axes, dtype=np.float64), p.shape)
    f = np.full(len(p), -1.0)
    g2 = np.zeros(len(p))
    for i, c in enumerate(np.asarray(centre, dtype=np.float64)):
        q = (p[:, i] - c) / axes[:, i]
        f += q * q
        g2 += (q / axes[:, i]) ** 2
    return f / np.maximum(2.0 * np.sqrt(g2), 1e-6)


def _capsule_sd(p: np.ndarray, a, b, r: float) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((p - a) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - a - t[:, None] * d, axis=-1) - r


def _occupancy(sd: np.ndarray, h: float) -> np.ndarray:
    """Partial-volume fraction of a voxel of size ``h`` mm at signed distance ``sd``."""
    return np.clip(0.5 - sd / h, 0.0, 1.0)


def _blend(img: np.ndarray, value, occ: np.ndarray) -> np.ndarray:
    return img + occ * (value - img)


# ------------------------------------------------------------------------- anatomy
@dataclass(frozen=True, eq=False)
class ThoraxAnatomy:
    """One seeded subject: shape parameters (mm) and the vessel trees."""

    body_axes: tuple[float, float]            # elliptic body cross-section semi-axes (x, y)
    fat_mm: float
    lungs: tuple[dict, dict]                  # right (x < 0), left: centre, axes, az_up, az_low, dome
    heart_centre: tuple[float, float, float]
    heart_axes: tuple[float, float, float]
    spine_y: float
    aorta: tuple[float, float, float, float]  # x, y, radius, top z
    carina_z: float
    rib_top_z: float
    rib_pitch: float
    rib_drop: float
    n_ribs: int
    texture_k: np.ndarray                     # (K, 3) rad/mm
    texture_amp: np.ndarray                   # (K,) HU
    texture_phase: np.ndarray                 # (K,)
    seg_a: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # vessel segments (S, 3) mm
    seg_b: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    seg_ra: np.ndarray = field(default_factory=lambda: np.zeros(0))      # radius at a, b (mm)
    seg_rb: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bifurcations: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (B, 3) mm
    bifurcation_radius: np.ndarray = field(default_factory=lambda: np.zeros(0))

    # ------------------------------------------------------------- building
    @classmethod
    def random(cls, seed: int | np.random.Generator = 0, territory_points: int = 2000) -> "ThoraxAnatomy":
        """A seeded subject: sizes vary by about +-8%, diaphragm domes and heart by a few cm."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        sw, sd_, sh = rng.uniform(0.93, 1.07), rng.uniform(0.93, 1.07), rng.uniform(0.92, 1.06)
        body = (158.0 * sw, 112.0 * sd_)
        cz = -40.0 + rng.uniform(-8, 8)
        lungs = []
        for side in (-1.0, 1.0):  # right lung at x < 0 (LPS), left at x > 0
            cx = side * (73.0 if side < 0 else 76.0) * sw
            ax = (58.0 if side < 0 else 54.0) * sw * rng.uniform(0.96, 1.04)
            ay = 80.0 * sd_ * rng.uniform(0.96, 1.04)
            az_up = (155.0 * sh) * rng.uniform(0.97, 1.03)
            dome_top = cz + (12.0 if side < 0 else 0.0) + rng.uniform(-6, 6)  # right dome higher (liver)
            lungs.append(
                dict(
                    side=side, centre=(cx, 10.0 * sd_, cz), ax=ax, ay=ay, az_up=az_up, az_low=75.0 * sh,
                    dome_top=dome_top, dome_x=cx + side * 5.0, dome_y=0.0, dome_ax=62.0 * sw, dome_ay=80.0 * sd_,
                    dome_drop=rng.uniform(45, 65),
                )
            )
        heart_centre = (18.0 + rng.uniform(-6, 6), -28.0 * sd_ + rng.uniform(-5, 5), cz + 30.0 + rng.uniform(-8, 8))
        heart_axes = tuple(float(a) for a in np.array([60.0, 48.0, 55.0]) * rng.uniform(0.9, 1.1, size=3))
        k = rng.normal(size=(8, 3))
        k *= (2 * np.pi / rng.uniform(6.0, 18.0, size=8) / np.linalg.norm(k, axis=1))[:, None]
        anatomy = cls(
            body_axes=body, fat_mm=rng.uniform(8, 16), lungs=tuple(lungs), heart_centre=heart_centre,
            heart_axes=heart_axes, spine_y=72.0 * sd_, aorta=(22.0 * sw, 48.0 * sd_, 12.0, cz + 120.0),
            carina_z=cz + 95.0 + rng.uniform(-8, 8), rib_top_z=cz + 160.0 * sh, rib_pitch=22.0 * sh, rib_drop=40.0,
            n_ribs=11, texture_k=k, texture_amp=rng.uniform(4.0, 9.0, size=8),
            texture_phase=rng.uniform(0, 2 * np.pi, 8),
        )
        return anatomy._with_vessels(rng, territory_points)

    def _with_vessels(self, rng: np.random.Generator, territory_points: int) -> "ThoraxAnatomy":
        segs: list[tuple[np.ndarray, np.ndarray, float, float]] = []
        nodes: list[tuple[np.ndarray, float]] = []
        for lung in self.lungs:
            territory = self._territory(lung, rng, territory_points)
            cx, cy, cz = lung["centre"]
            side = lung["side"]
            hilum = np.array([cx - side * 0.55 * lung["ax"], cy + 5.0, cz + 0.33 * lung["az_up"]])
            trunk = np.array([side * 12.0, cy - 12.0, hilum[2] + 6.0])
            r0 = 6.5
            segs.append((trunk, hilum, r0 * 1.1, r0))
            _grow_tree(hilum, territory, r0, (hilum - trunk) / np.linalg.norm(hilum - trunk), segs, nodes)
        a = np.array([s[0] for s in segs])
        b = np.array([s[1] for s in segs])
        bif = np.array([n[0] for n in nodes]) if nodes else np.zeros((0, 3))
        return replace(
            self, seg_a=a, seg_b=b, seg_ra=np.array([s[2] for s in segs]), seg_rb=np.array([s[3] for s in segs]),
            bifurcations=bif, bifurcation_radius=np.array([n[1] for n in nodes]),
        )

    def _territory(self, lung: dict, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform random points at least 4 mm inside one lung (the tree's territory)."""
        cx, cy, cz = lung["centre"]
        lo = np.array([cx - lung["ax"], cy - lung["ay"], cz - lung["az_low"]])
        hi = np.array([cx + lung["ax"], cy + lung["ay"], cz + lung["az_up"]])
        pts = np.zeros((0, 3))
        while len(pts) < n:
            cand = rng.uniform(lo, hi, size=(4 * n, 3))
            pts = np.concatenate([pts, cand[self.lung_sd(cand) < -4.0]])
        return pts[:n]

    # ------------------------------------------------------------ geometry
    def _dome_z(self, lung: dict, p: np.ndarray) -> np.ndarray:
        r2 = ((p[:, 0] - lung["dome_x"]) / lung["dome_ax"]) ** 2 + ((p[:, 1] - lung["dome_y"]) / lung["dome_ay"]) ** 2
        return lung["dome_top"] - lung["dome_drop"] * r2

    def _dome_sd(self, lung: dict, p: np.ndarray) -> np.ndarray:
        """Signed distance to the dome surface, < 0 above it (mm, first order)."""
        gx = 2 * lung["dome_drop"] * (p[:, 0] - lung["dome_x"]) / lung["dome_ax"] ** 2
        gy = 2 * lung["dome_drop"] * (p[:, 1] - lung["dome_y"]) / lung["dome_ay"] ** 2
        return (self._dome_z(lung, p) - p[:, 2]) / np.sqrt(1 + gx * gx + gy * gy)

    def _heart_sd(self, p: np.ndarray) -> np.ndarray:
        return _ellipsoid_sd(p, self.heart_centre, np.array(self.heart_axes))

    def _cylinder_sd(self, p: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
        return np.hypot(p[:, 0] - x, p[:, 1] - y) - r

    def lung_sd(self, p: np.ndarray) -> np.ndarray:
        """Signed distance (mm, < 0 inside) to the union of both lungs."""
        p = np.asarray(p, dtype=np.float64)
        out = np.full(len(p), np.inf)
        excl = np.minimum.reduce([
            self._heart_sd(p) - 4.0,
            self._cylinder_sd(p, 0.0, self.spine_y, 26.0),
            self._cylinder_sd(p, self.aorta[0], self.aorta[1], self.aorta[2] + 4.0),
            np.abs(p[:, 0]) - 14.0,  # mediastinum
        ])
        for lung in self.lungs:
            cz = lung["centre"][2]
            az = np.where(p[:, 2] > cz, lung["az_up"], lung["az_low"])
            axes = np.stack([np.full(len(p), lung["ax"]), np.full(len(p), lung["ay"]), az], axis=-1)
            sd = np.maximum(_ellipsoid_sd(p, lung["centre"], axes), self._dome_sd(lung, p))
            out = np.minimum(out, sd)
        return np.maximum(out, -excl)

    def frame(self) -> ThoraxFrame:
        """The reference frame of the breathing motion for this subject."""
        r, l = self.lungs
        x_lo, x_hi = r["centre"][0] - r["ax"], l["centre"][0] + l["ax"]
        y_lo = min(r["centre"][1] - r["ay"], l["centre"][1] - l["ay"])
        y_hi = max(r["centre"][1] + r["ay"], l["centre"][1] + l["ay"])
        # lowest lung point (costophrenic recesses), sampled on a 4 mm lattice of the lung box
        z_lo = min(lg["centre"][2] - lg["az_low"] for lg in self.lungs)
        xs, ys, zs = np.arange(x_lo, x_hi, 4.0), np.arange(y_lo, y_hi, 4.0), np.arange(z_lo, z_lo + 160.0, 4.0)
        lattice = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
        base = float(lattice[self.lung_sd(lattice) < 0, 2].min())
        return ThoraxFrame(
            centre_x_mm=(x_lo + x_hi) / 2, centre_y_mm=(y_lo + y_hi) / 2, half_width_mm=(x_hi - x_lo) / 2,
            half_depth_mm=(y_hi - y_lo) / 2, apex_z_mm=max(lg["centre"][2] + lg["az_up"] for lg in self.lungs),
            diaphragm_z_mm=base,
        )

    # ------------------------------------------------------------ rendering
    def render_base(self, p: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
        """HU and lung fraction at (N, 3) world points for voxels of size ``h`` mm (no vessels)."""
        p = np.asarray(p, dtype=np.float64)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        bx, by = self.body_axes
        img = np.full(len(p), AIR)
        ell2 = lambda ax, ay: _ellipsoid_sd(p[:, :2], (0.0, 0.0), np.array([ax, ay]))  # noqa: E731
        img = _blend(img, FAT, _occupancy(ell2(bx, by), h))
        img = _blend(img, MUSCLE, _occupancy(ell2(bx - self.fat_mm, by - self.fat_mm), h))
        # abdomen under the domes: liver (right) and stomach with a gas bubble (left)
        r, l = self.lungs
        liver = np.maximum(_ellipsoid_sd(p, (-35.0, 5.0, r["dome_top"] - 75.0), np.array([115.0, 95.0, 90.0])),
                           p[:, 2] - self._dome_z(r, p) + 6.0)
        img = _blend(img, 62.0, _occupancy(liver, h))
        gas = _ellipsoid_sd(p, (l["dome_x"] + 5.0, -5.0, l["dome_top"] - 28.0), np.array([32.0, 26.0, 14.0]))
        img = _blend(img, AIR, _occupancy(np.maximum(gas, p[:, 2] - self._dome_z(l, p) + 8.0), h))
        # rib cage: nearest rib of the evenly spaced set, elliptic band of the body wall
        rho = np.sqrt((x / bx) ** 2 + (y / by) ** 2)
        sin_t = (y / by) / np.maximum(rho, 1e-6)
        z_off = self.rib_top_z - self.rib_drop * (1 - sin_t) / 2
        k = np.clip(np.round((z_off - z) / self.rib_pitch), 0, self.n_ribs - 1)
        dz = z - (z_off - k * self.rib_pitch)
        dr = (rho - (1.0 - (self.fat_mm + 14.0) / np.sqrt(bx * by))) * np.sqrt(bx * by)
        rib = np.sqrt((dr / 5.0) ** 2 + (dz / 6.5) ** 2) * 5.0 - 5.0
        rib = np.where(sin_t > -0.8, rib, np.inf)
        img = _blend(img, BONE, _occupancy(rib, h))
        sternum = np.maximum(_ellipsoid_sd(p[:, :2], (0.0, -by + self.fat_mm + 10.0), np.array([16.0, 7.0])),
                             np.abs(z - (self.rib_top_z - 110.0)) - 80.0)
        img = _blend(img, BONE * 0.7, _occupancy(sternum, h))
        # spine: vertebral bodies with discs, spinous processes
        disc = np.abs(((z - 7.0) % 27.0) - 13.5) < 2.5
        img = _blend(img, np.where(disc, 80.0, 420.0), _occupancy(self._cylinder_sd(p, 0.0, self.spine_y, 17.0), h))
        img = _blend(img, 20.0, _occupancy(self._cylinder_sd(p, 0.0, self.spine_y + 25.0, 7.0), h))
        proc = np.maximum(self._cylinder_sd(p, 0.0, self.spine_y + 40.0, 7.0), -(np.abs(((z) % 27.0) - 13.5) - 4.0))
        img = _blend(img, BONE, _occupancy(proc, h))
        # heart in its fat, descending aorta
        img = _blend(img, -80.0, _occupancy(self._heart_sd(p), h))
        img = _blend(img, 45.0, _occupancy(self._heart_sd(p) + 4.0, h))
        ax_, ay_, ar, atop = self.aorta
        img = _blend(img, 45.0, _occupancy(np.maximum(self._cylinder_sd(p, ax_, ay_, ar), z - atop), h))
        # lungs: denser posteriorly, faint texture
        lung_frac = _occupancy(self.lung_sd(p), h)
        hu = LUNG + 45.0 * np.tanh((y - 10.0) / 80.0)
        arg = p.astype(np.float32) @ self.texture_k.T.astype(np.float32) + self.texture_phase.astype(np.float32)
        hu = hu + (np.sin(arg) @ self.texture_amp.astype(np.float32)).astype(np.float64)
        img = _blend(img, hu, lung_frac)
        # airways: trachea and main bronchi (air)
        top = np.array([0.0, 8.0, 400.0])
        carina = np.array([0.0, 10.0, self.carina_z])
        air = _capsule_sd(p, top, carina, 9.0)
        for lung in self.lungs:
            cx, cy, cz = lung["centre"]
            hil = np.array([cx - lung["side"] * 0.5 * lung["ax"], cy + 10.0, cz + 0.36 * lung["az_up"]])
            air = np.minimum(air, _capsule_sd(p, carina, hil, 6.0))
        inside_body = ell2(bx - self.fat_mm, by - self.fat_mm) < 0
        img = _blend(img, AIR, np.where(inside_body, _occupancy(air, h), 0.0))
        return img, lung_frac


def _grow_tree(
    p: np.ndarray,
    territory: np.ndarray,
    radius: float,
    direction: np.ndarray,
    segs: list,
    nodes: list,
    min_points: int = 4,
    fraction: float = 0.4,
) -> None:
    """Space-filling bifurcating tree (in the spirit of Kitaoka et al. 1999): split the territory by
    a plane containing the parent direction through its principal axis; each child heads a
    ``fraction`` of the way to its half's centroid with radius ``r * (n_half / n)^(1/3)``."""
    stack = [(p, territory, radius, direction)]
    while stack:
        p, terr, r, d = stack.pop()
        if len(terr) < min_points:
            c = terr.mean(axis=0)
            if np.linalg.norm(c - p) > 1.0:
                segs.append((p, p + 0.8 * (c - p), r, 0.85 * r))
            continue
        centred = terr - terr.mean(axis=0)
        proj = np.eye(3) - np.outer(d, d)
        cov = proj @ (centred.T @ centred) @ proj
        normal = np.linalg.eigh(cov)[1][:, -1]
        side = centred @ normal > 0
        halves = [terr[side], terr[~side]]
        if min(len(hh) for hh in halves) == 0:
            continue
        children = []
        for half in halves:
            vec = half.mean(axis=0) - p
            length = float(np.linalg.norm(vec))
            if length < 1e-6:
                continue
            end = p + fraction * vec if fraction * length > 2.0 else p + vec * min(1.0, 2.0 / length)
            rc = r * (len(half) / len(terr)) ** (1.0 / 3.0)
            children.append((end, half, rc, vec / length))
        if len(children) == 2:
            nodes.append((p.copy(), r))
        for end, half, rc, dc in children:
            segs.append((p, end, rc, 0.92 * rc))
            stack.append((end, half, rc, dc))


# ------------------------------------------------------------------ vessel rendering
def _render_vessels(
    anatomy: ThoraxAnatomy,
    grid: Grid,
    positions: np.ndarray,
    h: float,
    forward: Callable[[np.ndarray], np.ndarray] | None = None,
    lipschitz: float = 0.0,
    batch_pairs: int = 2_000_000,
) -> np.ndarray:
    """Vessel fraction (z, y, x) on ``grid`` whose voxels sample the anatomy at ``positions``
    ((z, y, x, 3) world mm). For the moving image ``positions = phi^-1(y)`` and ``forward = phi``:
    a segment's voxels are then found inside its box moved by ``phi`` (exactly bounded: the box
    is grown by ``lipschitz x`` its half diagonal)."""
    a, b, ra, rb = anatomy.seg_a, anatomy.seg_b, anatomy.seg_ra, anatomy.seg_rb
    keep = np.maximum(ra, rb) > 0.1 * h  # thinner tubes add < 4% of a voxel's contrast
    a, b, ra, rb = a[keep], b[keep], ra[keep], rb[keep]
    out = np.zeros(int(np.prod(grid.shape)), dtype=np.float32)
    if len(a) == 0:
        return out.reshape(grid.shape)
    margin = (np.maximum(ra, rb) + h)[:, None]
    lo, hi = np.minimum(a, b) - margin, np.maximum(a, b) + margin
    if forward is not None:
        centre = (lo + hi) / 2
        half_diag = np.linalg.norm(hi - lo, axis=1, keepdims=True) / 2
        shift = forward(centre) - centre
        lo, hi = lo + shift - lipschitz * half_diag - 1e-3, hi + shift + lipschitz * half_diag + 1e-3
    corners = np.stack([np.where(np.array(c)[None, :] == 1, hi, lo) for c in np.ndindex(2, 2, 2)], axis=1)
    idx = grid.world_to_index(corners.reshape(-1, 3)).reshape(-1, 8, 3)
    size = np.array(grid.shape[::-1])
    i0 = np.clip(np.floor(idx.min(axis=1)), 0, size).astype(np.int64)
    i1 = np.clip(np.ceil(idx.max(axis=1)) + 1, 0, size).astype(np.int64)
    ext = np.maximum(i1 - i0, 0)
    counts = ext.prod(axis=1)
    flat_pos = positions.reshape(-1, 3)
    nx, ny = grid.shape[2], grid.shape[1]
    start = 0
    while start < len(a):
        stop = start + 1
        total = counts[start]
        while stop < len(a) and total + counts[stop] <= batch_pairs:
            total += counts[stop]
            stop += 1
        sl = slice(start, stop)
        start = stop
        c = counts[sl]
        if c.sum() == 0:
            continue
        seg = np.repeat(np.arange(sl.start, sl.stop), c)
        local = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        ex, ey = ext[seg, 0], ext[seg, 1]
        ix = i0[seg, 0] + local % ex
        iy = i0[seg, 1] + (local // ex) % ey
        iz = i0[seg, 2] + local // (ex * ey)
        vox = (iz * ny + iy) * nx + ix
        pt = flat_pos[vox].astype(np.float64)
        d = b[seg] - a[seg]
        t = np.clip(np.einsum("ij,ij->i", pt - a[seg], d) / np.maximum(np.einsum("ij,ij->i", d, d), 1e-12), 0, 1)
        dist = np.linalg.norm(pt - a[seg] - t[:, None] * d, axis=1)
        r = ra[seg] + t * (rb[seg] - ra[seg])
        r_eff = np.maximum(r, h / 2)
        occ = _occupancy(dist - r_eff, h) * np.minimum(1.0, r / r_eff) ** 2
        np.maximum.at(out, vox, occ.astype(np.float32))
    return out.reshape(grid.shape)


def render_anatomy(
    anatomy: ThoraxAnatomy,
    grid: Grid,
    motion: BreathingMotion | None = None,
    chunk: int = 1_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HU (float32) and lung mask (bool) of the subject on ``grid``: at inhale when
    ``motion`` is None, else at exhale (the anatomy sampled at ``phi^-1(y)``, exact)."""
    h = float(np.prod(grid.spacing) ** (1.0 / 3.0))
    nz, ny, nx = grid.shape
    positions = np.empty((nz * ny * nx, 3), dtype=np.float32)  # where each voxel samples the anatomy
    img = np.empty(nz * ny * nx, dtype=np.float32)
    lung = np.empty(nz * ny * nx, dtype=bool)
    per_slab = max(1, chunk // (ny * nx))
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    for z0 in range(0, nz, per_slab):  # z-slabs keep memory bounded at paper size
        z1 = min(nz, z0 + per_slab)
        zz = np.broadcast_to(np.arange(z0, z1)[:, None, None], (z1 - z0, ny, nx))
        idx = np.stack([np.broadcast_to(xx, zz.shape), np.broadcast_to(yy, zz.shape), zz], axis=-1).reshape(-1, 3)
        pts = grid.index_to_world(idx.astype(np.float64))
        if motion is not None:
            pts = motion.inverse(pts, tol_mm=1e-3)
        sl = slice(z0 * ny * nx, z1 * ny * nx)
        positions[sl] = pts
        hu, frac = anatomy.render_base(pts, h)
        img[sl], lung[sl] = hu, frac >= 0.5
    vessels = _render_vessels(
        anatomy, grid, positions.reshape(*grid.shape, 3), h,
        forward=None if motion is None else motion.transport,
        lipschitz=0.0 if motion is None else motion.lipschitz_bound(),
    ).reshape(-1)
    img = img + vessels * (VESSEL - img)
    return img.reshape(grid.shape).astype(np.float32), lung.reshape(grid.shape)


# ------------------------------------------------------------------ cone-beam look
@dataclass(frozen=True)
class ConeBeamFOV:
    """Cylindrical, axially limited field of view of the simulated CBCT (world mm)."""

    centre_x: float
    centre_y: float
    radius: float
    z_lo: float
    z_hi: float

    def contains(self, points: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """Which (N, 3) world points lie at least ``margin_mm`` inside the field of view."""
        p = np.asarray(points, dtype=np.float64)
        r = np.hypot(p[:, 0] - self.centre_x, p[:, 1] - self.centre_y)
        return (r <= self.radius - margin_mm) & (p[:, 2] >= self.z_lo + margin_mm) & (p[:, 2] <= self.z_hi - margin_mm)

    def mask(self, grid: Grid) -> np.ndarray:
        """Boolean (z, y, x) field-of-view mask of an axis-aligned grid."""
        x, y, z = _grid_axes(grid)
        r2 = (x - self.centre_x) ** 2 + (y - self.centre_y) ** 2
        return (r2 <= self.radius**2) & (z >= self.z_lo) & (z <= self.z_hi)


def _grid_axes(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x (1, 1, nx), y (1, ny, 1), z (nz, 1, 1) of an axis-aligned grid (broadcastable, light)."""
    if not np.allclose(grid.direction, np.eye(3)):
        raise ValueError("phantom grids are axis-aligned (identity direction)")
    nz, ny, nx = grid.shape
    x = grid.origin[0] + grid.spacing[0] * np.arange(nx)
    y = grid.origin[1] + grid.spacing[1] * np.arange(ny)
    z = grid.origin[2] + grid.spacing[2] * np.arange(nz)
    return x[None, None, :], y[None, :, None], z[:, None, None]


def _cone_beam(img: np.ndarray, grid: Grid, fov: ConeBeamFOV, rng: np.random.Generator) -> np.ndarray:
    """Degrade a CT like a cone-beam CT: intensity scale/shift, cupping, streaks, correlated noise,
    and nothing (air) outside the field of view."""
    x, y, z = _grid_axes(grid)
    r2 = ((x - fov.centre_x) ** 2 + (y - fov.centre_y) ** 2) / fov.radius**2
    out = img.astype(np.float64) * rng.uniform(0.85, 1.05) + rng.uniform(-80.0, 40.0)
    out -= rng.uniform(20.0, 60.0) * (1.0 - np.clip(r2, 0, 1))  # cupping: darker centre
    for _ in range(8):  # streaks: lines in axial planes through bony parts, varying along z
        q = np.array([fov.centre_x, fov.centre_y]) + rng.normal(0.0, 40.0, size=2)
        ang = rng.uniform(0, np.pi)
        dist = np.abs((x - q[0]) * np.sin(ang) - (y - q[1]) * np.cos(ang))
        mod = 0.6 + 0.4 * np.sin(z / rng.uniform(15, 40) + rng.uniform(0, 2 * np.pi))
        out += rng.choice([-1.0, 1.0]) * rng.uniform(30, 100) * np.exp(-((dist / rng.uniform(1.5, 3.0)) ** 2)) * mod
    noise = gaussian_filter(rng.normal(size=img.shape), 0.6)
    out += noise / max(float(noise.std()), 1e-6) * rng.uniform(30.0, 50.0)
    return np.where(fov.mask(grid), out, AIR).astype(np.float32)


# ------------------------------------------------------------------ landmarks
def _select_landmarks(
    candidates: np.ndarray, n: int, rng: np.random.Generator, min_spacing_mm: float = 6.0
) -> np.ndarray:
    """Up to ``n`` candidates in random order, greedily at least ``min_spacing_mm`` apart
    (the spacing is halved until ``n`` are found)."""
    order = rng.permutation(len(candidates))
    spacing = min_spacing_mm
    while True:
        chosen: list[int] = []
        tree_pts: list[np.ndarray] = []
        for i in order:
            if tree_pts and spacing > 0:
                d = np.min(np.linalg.norm(np.asarray(tree_pts) - candidates[i], axis=1))
                if d < spacing:
                    continue
            chosen.append(int(i))
            tree_pts.append(candidates[i])
            if len(chosen) == n:
                break
        if len(chosen) == n or spacing < 0.5:
            return candidates[np.array(chosen, dtype=np.int64)] if chosen else np.zeros((0, 3))
        spacing /= 2


# ------------------------------------------------------------------------- public
def _subject_rng(seed: int, style: str, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), STYLES.index(style), purpose])


def make_subject(
    seed: int = 0, style: str = "dirlab", amplitude_mm: float | None = None
) -> tuple[ThoraxAnatomy, BreathingMotion]:
    """The anatomy and the exact breathing motion of phantom ``(seed, style)`` (what :func:`make_pair` renders)."""
    spec = _style(style)
    anatomy = ThoraxAnatomy.random(_subject_rng(seed, style, 0))
    motion = BreathingMotion.random(
        anatomy.frame(), _subject_rng(seed, style, 1), amplitude_mm,
        amplitude_range_mm=spec.amplitude_range_mm, shift_max_mm=spec.shift_max_mm,
    )
    return anatomy, motion


def make_pair(
    seed: int = 0,
    style: str = "dirlab",
    profile: str = "smoke",
    n_landmarks: int = 300,
    amplitude_mm: float | None = None,
    noise: bool = True,
    landmark_jitter_mm: float = 0.0,
) -> Pair:
    """One phantom pair: fixed = inhale CT, moving = exhale (CBCT-like for ``style="cbct"``).

    Deterministic from ``(seed, style)``; ``profile`` only sets the voxel size. Landmarks are
    ``n_landmarks`` vessel bifurcations inside the lungs (at least 6 mm apart where possible),
    optionally moved by a seeded random offset of ``landmark_jitter_mm`` (they need no jitter to be
    off the voxel lattice: tree nodes are continuous positions). Moving landmarks = fixed
    landmarks carried by the exact motion; ``ground_truth`` is ``u`` on the fixed grid (mm).
    ``meta["motion"]`` holds the motion's parameters (``BreathingMotion.from_dict``)."""
    spec = _style(style)
    if n_landmarks < 0:
        raise ValueError(f"n_landmarks must be >= 0, got {n_landmarks}")
    grid = phantom_grid(style, profile)
    anatomy, motion = make_subject(seed, style, amplitude_mm)
    fixed_hu, fixed_lung = render_anatomy(anatomy, grid)
    moving_hu, moving_lung = render_anatomy(anatomy, grid, motion)

    noise_rng = _subject_rng(seed, style, 2)
    if noise and spec.noise_hu > 0:
        fixed_hu = fixed_hu + noise_rng.normal(0.0, spec.noise_hu, fixed_hu.shape).astype(np.float32)
    fov = None
    if spec.cone_beam_moving:
        cbct_rng = _subject_rng(seed, style, 3)
        f = anatomy.frame()
        cx, cy = f.centre_x_mm + cbct_rng.normal(0, 5.0), f.centre_y_mm + cbct_rng.normal(0, 5.0)
        radius = cbct_rng.uniform(128.0, 142.0)
        zc = (f.apex_z_mm + f.diaphragm_z_mm) / 2 - 10.0 + cbct_rng.uniform(-10, 10)
        half = cbct_rng.uniform(90.0, 110.0)  # 18-22 cm axial coverage
        fov = ConeBeamFOV(cx, cy, radius, zc - half, zc + half)
        if noise:
            moving_hu = _cone_beam(moving_hu, grid, fov, cbct_rng)
        else:
            moving_hu = np.where(fov.mask(grid), moving_hu, AIR).astype(np.float32)
        moving_lung = moving_lung & fov.mask(grid)
    elif noise and spec.noise_hu > 0:
        moving_hu = moving_hu + noise_rng.normal(0.0, spec.noise_hu, moving_hu.shape).astype(np.float32)

    # landmarks: bifurcations well inside the lungs (and, for CBCT, inside the moving field of view)
    cand = anatomy.bifurcations
    cand = cand[anatomy.lung_sd(cand) < -2.0]
    cand_moving = motion.transport(cand)
    ok = grid.contains(cand, margin_voxels=-1.0) & grid.contains(cand_moving, margin_voxels=-1.0)
    if fov is not None:
        ok &= fov.contains(cand_moving, margin_mm=5.0)
    cand = cand[ok]
    lm_rng = _subject_rng(seed, style, 4)
    fixed_lm = _select_landmarks(cand, n_landmarks, lm_rng)
    if len(fixed_lm) < n_landmarks:
        raise ValueError(
            f"phantom-{style}-{seed:03d}: only {len(fixed_lm)} bifurcations inside the lungs, {n_landmarks} requested"
        )
    if landmark_jitter_mm > 0:
        fixed_lm = fixed_lm + lm_rng.uniform(-landmark_jitter_mm, landmark_jitter_mm, size=fixed_lm.shape)
    moving_lm = motion.transport(fixed_lm)

    name = f"phantom-{style}-{seed:03d}"
    prof = get_profile(profile)
    meta = {
        "label": "synthetic phantom (simulated anatomy, simulated motion)",
        "style": style, "seed": int(seed), "profile": prof.name,
        "amplitude_mm": float(motion.si_mm), "motion": motion.to_dict(),
        "fixed_phase": "inhale (T00)", "moving_phase": "exhale",
    }
    if fov is not None:
        meta["cbct_fov_mm"] = {"centre_x": fov.centre_x, "centre_y": fov.centre_y, "radius": fov.radius,
                               "z_lo": fov.z_lo, "z_hi": fov.z_hi}
    return Pair(
        fixed=Volume(fixed_hu, grid, f"{name} fixed (inhale)"),
        moving=Volume(moving_hu, grid, f"{name} moving (exhale{', CBCT-like' if fov else ''})"),
        fixed_landmarks=fixed_lm,
        moving_landmarks=moving_lm,
        fixed_mask=Volume(fixed_lung.astype(np.uint8), grid, f"{name} fixed lung mask"),
        moving_mask=Volume(moving_lung.astype(np.uint8), grid, f"{name} moving lung mask"),
        name=name,
        dataset=f"phantom-{style}",
        ground_truth=motion.field(grid),
        meta=meta,
    )


def motion_of(pair: Pair) -> BreathingMotion:
    """The exact motion of a phantom (or bundled thorax-ct) pair, from ``pair.meta["motion"]``."""
    if "motion" not in pair.meta:
        raise ValueError(f"{pair.name}: no motion parameters in pair.meta (not a simulated pair)")
    return BreathingMotion.from_dict(pair.meta["motion"])


def make_cohort(
    style: str, n: int, seed: int = 0, profile: str = "smoke", progress: bool = True, **kwargs
) -> list[Pair]:
    """``n`` phantom pairs of one style with seeds ``seed, seed+1, ...`` (see :func:`make_pair`)."""
    _style(style)
    if n < 0:
        raise ValueError(f"cohort size must be >= 0, got {n}")
    seeds = range(seed, seed + n)
    if progress:
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc=f"phantom-{style}", leave=False)
    return [make_pair(s, style, profile, **kwargs) for s in seeds]
