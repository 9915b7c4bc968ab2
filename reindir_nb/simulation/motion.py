"""A smooth, invertible breathing motion model with a closed form.

World coordinates are ITK physical space (LPS): ``+x`` patient left, ``+y`` posterior,
``+z`` superior, all in mm. The model is the displacement from INHALE (the fixed image,
T00) to EXHALE (the moving image): ``moving_point = x + u(x)``, the convention of
:class:`reindir_nb.pair.Pair` (``Pair.ground_truth`` holds ``u`` on the fixed grid).

At exhale the diaphragm rises, the chest wall moves in and back. ``u`` is the sum of

* a superior shift ``u_z`` growing from 0 at the lung apex to ``si_mm`` at the lung bases
  on the diaphragm and below (smoothstep in z, so mid-lung moves about half as much),
  larger posteriorly than anteriorly and slightly different for the two hemidiaphragms;
* a posterior shift ``u_y`` of the anterior chest wall (``ap_mm``) and a medial shift
  ``u_x`` of the lateral walls (``lr_mm``), both stronger toward the lung bases;
* a random smooth component: a few low-frequency Fourier modes (wavelengths >= 110 mm);
* an optional global translation (patient set-up difference, used for CBCT).

Every term has a bounded gradient; :meth:`BreathingMotion.lipschitz_bound` adds the bounds
up, and the constructor refuses a model whose bound reaches 0.9. With ``||grad u|| < 1``
the map ``x -> x + u(x)`` is a diffeomorphism (``det(I + grad u) > 0`` everywhere) and the
inverse is the limit of the contraction ``x <- y - u(x)`` (:meth:`BreathingMotion.inverse`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.ndimage import map_coordinates

from ..core.geometry import Grid
from ..core.volume import Volume

__all__ = [
    "ThoraxFrame",
    "BreathingMotion",
    "breathing_displacement",
    "invert_displacement",
    "warp_image",
    "transport_points",
    "jacobian_determinant",
    "sample_field",
]

_MAX_LIPSCHITZ = 0.9
_FAST_SIN_MIN_POINTS = 100_000  # batches at least this large use float32 sines (grids)


# --------------------------------------------------------------------------- frame
@dataclass(frozen=True)
class ThoraxFrame:
    """Where the lungs are, in world mm (LPS): the reference the motion is shaped by."""

    centre_x_mm: float      # mid-sagittal plane
    centre_y_mm: float      # middle of the lungs front-to-back
    half_width_mm: float    # half the lateral extent of both lungs together
    half_depth_mm: float    # half the anterior-posterior extent of the lungs
    apex_z_mm: float        # top of the lungs (the motion vanishes here)
    diaphragm_z_mm: float   # lowest lung bases on the diaphragm (the full superior shift from here down)

    def __post_init__(self) -> None:
        if self.half_width_mm <= 0 or self.half_depth_mm <= 0:
            raise ValueError(f"ThoraxFrame: half width/depth must be positive mm, got {self}")
        if self.apex_z_mm - self.diaphragm_z_mm < 20.0:
            raise ValueError(
                f"ThoraxFrame: the apex ({self.apex_z_mm:.1f} mm) must lie at least 20 mm above the "
                f"diaphragm ({self.diaphragm_z_mm:.1f} mm); +z is superior (LPS)"
            )

    @property
    def height_mm(self) -> float:
        return self.apex_z_mm - self.diaphragm_z_mm

    @classmethod
    def from_mask(cls, mask: Volume) -> "ThoraxFrame":
        """Frame from a lung mask: its bounding box in mm (apex = highest, diaphragm = lowest lung
        point). Points are first binned by world height in 2 mm bins, and only heights whose bin holds
        at least 5% of the fullest one count for the apex and base (drops the trachea and strays)."""
        idx = np.argwhere(np.asarray(mask.array) > 0)
        if idx.size == 0:
            raise ValueError(f"{mask.name or 'mask'}: empty lung mask, cannot place the breathing motion")
        world = mask.grid.index_to_world(idx[:, ::-1].astype(np.float64))
        lo, hi = world.min(axis=0), world.max(axis=0)
        bins = np.floor((world[:, 2] - lo[2]) / 2.0).astype(np.int64)
        counts = np.bincount(bins)
        full = np.flatnonzero(counts >= 0.05 * counts.max())
        z = world[:, 2][np.isin(bins, full)]
        lo[2], hi[2] = z.min(), z.max()
        return cls(
            centre_x_mm=float((lo[0] + hi[0]) / 2),
            centre_y_mm=float((lo[1] + hi[1]) / 2),
            half_width_mm=float(max((hi[0] - lo[0]) / 2, 1.0)),
            half_depth_mm=float(max((hi[1] - lo[1]) / 2, 1.0)),
            apex_z_mm=float(hi[2]),
            diaphragm_z_mm=float(lo[2]),
        )

    @classmethod
    def from_grid(cls, grid: Grid) -> "ThoraxFrame":
        """Default frame when no anatomy is known: lungs fill the central 70% of the image box."""
        corners = grid.index_to_world(
            np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
            * (grid.size_xyz - 1)
        )
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        c, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1.0)
        return cls(
            centre_x_mm=float(c[0]),
            centre_y_mm=float(c[1]),
            half_width_mm=float(0.7 * half[0]),
            half_depth_mm=float(0.7 * half[1]),
            apex_z_mm=float(c[2] + 0.7 * half[2]),
            diaphragm_z_mm=float(c[2] - 0.7 * half[2]),
        )


# --------------------------------------------------------------------------- model
def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True, eq=False)
class BreathingMotion:
    """Closed-form inhale -> exhale displacement ``u(x)`` in mm (see the module docstring).

    Build one with :meth:`random` (seeded); evaluate with :meth:`displacement`, move points
    with :meth:`transport`, invert with :meth:`inverse`, sample on a grid with :meth:`field`.
    """

    frame: ThoraxFrame
    si_mm: float                 # superior shift at the diaphragm dome (mm, >= 0 at exhale)
    ap_mm: float                 # posterior shift of the anterior chest wall (mm)
    lr_mm: float                 # medial shift of the lateral chest walls (mm)
    posterior_gain: float = 0.2  # posterior bases move (1 + g) x si, anterior (1 - g) x si
    left_right_gain: float = 0.0  # left hemidiaphragm moves (1 + g) x, right (1 - g) x
    wavevectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))   # (K, 3) rad/mm
    mode_amplitudes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (K, 3) mm
    phases: np.ndarray = field(default_factory=lambda: np.zeros(0))               # (K,) rad
    shift_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))            # (3,) mm

    def __post_init__(self) -> None:
        shapes = {"wavevectors": (-1, 3), "mode_amplitudes": (-1, 3), "phases": (-1,), "shift_mm": (3,)}
        for name, shape in shapes.items():
            arr = np.asarray(getattr(self, name), dtype=np.float64).reshape(shape)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        k = len(self.wavevectors)
        if len(self.mode_amplitudes) != k or len(self.phases) != k:
            raise ValueError("BreathingMotion: wavevectors, mode_amplitudes and phases must have the same length")
        if not (abs(self.posterior_gain) < 1 and abs(self.left_right_gain) < 1):
            raise ValueError("BreathingMotion: posterior_gain and left_right_gain must lie in (-1, 1)")
        bound = self.lipschitz_bound()
        if bound >= _MAX_LIPSCHITZ:
            raise ValueError(
                f"BreathingMotion: gradient bound {bound:.2f} >= {_MAX_LIPSCHITZ} (si {self.si_mm:.1f} mm over a lung "
                f"height of {self.frame.height_mm:.0f} mm); the motion would not be safely invertible — "
                "lower the amplitude"
            )

    # ----------------------------------------------------------- construction
    @classmethod
    def random(
        cls,
        frame: ThoraxFrame,
        seed: int | np.random.Generator = 0,
        amplitude_mm: float | None = None,
        amplitude_range_mm: tuple[float, float] = (10.0, 25.0),
        random_fraction: float = 0.12,
        n_modes: int = 6,
        wavelength_range_mm: tuple[float, float] = (110.0, 250.0),
        shift_max_mm: float = 0.0,
    ) -> "BreathingMotion":
        """A seeded breathing motion.

        ``amplitude_mm`` is the superior shift of the lung bases (drawn uniformly from
        ``amplitude_range_mm`` when None). The anterior-posterior and lateral terms are
        20-35% and 8-18% of it; the random Fourier modes have an r.m.s. amplitude of about
        ``random_fraction * amplitude_mm``; ``shift_max_mm`` bounds a global translation.
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        amp = float(rng.uniform(*amplitude_range_mm)) if amplitude_mm is None else float(amplitude_mm)
        if not np.isfinite(amp) or amp < 0:
            raise ValueError(f"amplitude_mm must be a finite value >= 0, got {amplitude_mm}")
        ap = amp * rng.uniform(0.20, 0.35)
        lr = amp * rng.uniform(0.08, 0.18)
        pg = rng.uniform(0.1, 0.3)
        lrg = rng.uniform(-0.1, 0.1)
        directions = rng.normal(size=(n_modes, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength_range_mm, size=n_modes)
        wavevectors = directions * (2 * np.pi / wavelengths)[:, None]
        amplitudes = rng.normal(size=(n_modes, 3)) * (random_fraction * amp / np.sqrt(1.5 * max(n_modes, 1)))
        phases = rng.uniform(0, 2 * np.pi, size=n_modes)
        shift = np.zeros(3)
        if shift_max_mm > 0:
            v = rng.normal(size=3)
            shift = v / np.linalg.norm(v) * rng.uniform(0.3, 1.0) * shift_max_mm
        return cls(frame, amp, ap, lr, pg, lrg, wavevectors, amplitudes, phases, shift)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters (floats and lists); :meth:`from_dict` rebuilds the model."""
        d = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BreathingMotion":
        d = dict(d)
        frame = d.pop("frame")
        return cls(ThoraxFrame(**frame), **d)

    # ----------------------------------------------------------- evaluation
    def _profiles(self, p: np.ndarray):
        f = self.frame
        s = _smoothstep((f.apex_z_mm - p[:, 2]) / f.height_mm)     # 0 at apex -> 1 at the lung bases
        ny = np.tanh((p[:, 1] - f.centre_y_mm) / f.half_depth_mm)  # -1 anterior .. +1 posterior
        nx = np.tanh((p[:, 0] - f.centre_x_mm) / f.half_width_mm)  # -1 right .. +1 left
        return s, ny, nx

    def displacement(self, points_mm: np.ndarray) -> np.ndarray:
        """``u(x)`` in mm at (N, 3) world points (x, y, z); exact (closed form)."""
        p = np.asarray(points_mm, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be an (N, 3) array in mm, got shape {p.shape}")
        s, ny, nx = self._profiles(p)
        base = 0.4 + 0.6 * s
        u = np.empty_like(p)
        u[:, 0] = -self.lr_mm * nx * base
        u[:, 1] = self.ap_mm * 0.5 * (1.0 - ny) * base
        u[:, 2] = self.si_mm * s * (1.0 + self.posterior_gain * ny) * (1.0 + self.left_right_gain * nx)
        if len(self.phases):
            u += self._modes(p)
        return u + self.shift_mm

    def _modes(self, p: np.ndarray) -> np.ndarray:
        if len(p) < _FAST_SIN_MIN_POINTS:
            return np.sin(p @ self.wavevectors.T + self.phases) @ self.mode_amplitudes
        # whole grids: float32 sines (SIMD, ~30x faster); error ~1e-6 rad, i.e. a few 1e-6 mm
        arg = p.astype(np.float32) @ self.wavevectors.T.astype(np.float32) + self.phases.astype(np.float32)
        return (np.sin(arg) @ self.mode_amplitudes.astype(np.float32)).astype(np.float64)

    def transport(self, points_mm: np.ndarray) -> np.ndarray:
        """Fixed (inhale) world points -> moving (exhale) world points: ``x + u(x)``."""
        p = np.asarray(points_mm, dtype=np.float64)
        return p + self.displacement(p)

    def inverse(self, points_mm: np.ndarray, tol_mm: float = 1e-4, max_iterations: int = 100) -> np.ndarray:
        """Moving world points ``y`` -> the fixed points ``x`` with ``x + u(x) = y``.

        Fixed-point iteration ``x <- y - u(x)``: a contraction since ``||grad u|| < 1``, so it
        converges to the unique inverse; stops when no point moves more than ``tol_mm``."""
        y = np.asarray(points_mm, dtype=np.float64)
        x = y - self.displacement(y)
        for _ in range(max_iterations):
            x_new = y - self.displacement(x)
            step = np.max(np.abs(x_new - x)) if len(x) else 0.0
            x = x_new
            if step < tol_mm:
                return x
        raise RuntimeError(f"BreathingMotion.inverse did not converge to {tol_mm} mm in {max_iterations} iterations")

    def jacobian(self, points_mm: np.ndarray) -> np.ndarray:
        """Exact ``d u_i / d x_j`` (N, 3, 3) in mm/mm (for checks; fields use finite differences)."""
        p = np.asarray(points_mm, dtype=np.float64)
        f = self.frame
        s, ny, nx = self._profiles(p)
        t = (f.apex_z_mm - p[:, 2]) / f.height_mm
        ds_dz = np.where((t > 0) & (t < 1), 6 * t * (1 - t), 0.0) * (-1.0 / f.height_mm)
        dny = (1 - ny**2) / f.half_depth_mm
        dnx = (1 - nx**2) / f.half_width_mm
        base = 0.4 + 0.6 * s
        g_y, g_x = 1.0 + self.posterior_gain * ny, 1.0 + self.left_right_gain * nx
        jac = np.zeros((len(p), 3, 3))
        jac[:, 0, 0] = -self.lr_mm * dnx * base
        jac[:, 0, 2] = -self.lr_mm * nx * 0.6 * ds_dz
        jac[:, 1, 1] = -self.ap_mm * 0.5 * dny * base
        jac[:, 1, 2] = self.ap_mm * 0.5 * (1.0 - ny) * 0.6 * ds_dz
        jac[:, 2, 0] = self.si_mm * s * g_y * self.left_right_gain * dnx
        jac[:, 2, 1] = self.si_mm * s * self.posterior_gain * dny * g_x
        jac[:, 2, 2] = self.si_mm * ds_dz * g_y * g_x
        if len(self.phases):
            c = np.cos(p @ self.wavevectors.T + self.phases)  # (N, K)
            jac += np.einsum("nk,ki,kj->nij", c, self.mode_amplitudes, self.wavevectors)
        return jac

    def lipschitz_bound(self) -> float:
        """An upper bound of the spectral norm of ``grad u`` over all of space (mm/mm)."""
        f = self.frame
        dsz = 1.5 / f.height_mm  # max |d smoothstep / dz|
        rows = [
            np.hypot(abs(self.lr_mm) / f.half_width_mm, abs(self.lr_mm) * 0.6 * dsz),
            np.hypot(abs(self.ap_mm) * 0.5 / f.half_depth_mm, abs(self.ap_mm) * 0.6 * dsz),
            abs(self.si_mm) * np.sqrt(
                ((1 + abs(self.posterior_gain)) * abs(self.left_right_gain) / f.half_width_mm) ** 2
                + (abs(self.posterior_gain) * (1 + abs(self.left_right_gain)) / f.half_depth_mm) ** 2
                + ((1 + abs(self.posterior_gain)) * (1 + abs(self.left_right_gain)) * dsz) ** 2
            ),
        ]
        smooth = float(np.sqrt(np.sum(np.square(rows))))  # Frobenius >= spectral norm
        modes = float(np.sum(np.linalg.norm(self.mode_amplitudes, axis=1) * np.linalg.norm(self.wavevectors, axis=1)))
        return smooth + modes

    # ------------------------------------------------------------- on grids
    def field(self, grid: Grid, dtype=np.float32) -> Volume:
        """``u`` sampled at the voxel centres of ``grid``: Volume (z, y, x, 3) of mm vectors."""
        return Volume(_map_grid(self.displacement, grid, dtype), grid, "breathing displacement (mm)")

    def inverse_field(self, grid: Grid, dtype=np.float32, tol_mm: float = 1e-3) -> Volume:
        """``v(y) = phi^-1(y) - y`` at the voxel centres of ``grid`` (the moving grid), mm vectors,
        accurate to ``tol_mm``."""
        return Volume(
            _map_grid(lambda y: self.inverse(y, tol_mm=tol_mm) - y, grid, dtype),
            grid,
            "inverse breathing displacement (mm)",
        )


def _map_grid(fn: Callable[[np.ndarray], np.ndarray], grid: Grid, dtype, chunk: int = 2_000_000) -> np.ndarray:
    """Evaluate a points -> vectors function at all voxel centres of ``grid`` in z-slab chunks."""
    nz, ny, nx = grid.shape
    out = np.empty((nz, ny, nx, 3), dtype=dtype)
    per_slab = max(1, chunk // (ny * nx))
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    for z0 in range(0, nz, per_slab):
        z1 = min(nz, z0 + per_slab)
        zz = np.arange(z0, z1)[:, None, None] * np.ones((1, ny, nx))
        idx = np.stack([np.broadcast_to(xx, zz.shape), np.broadcast_to(yy, zz.shape), zz], axis=-1)
        pts = grid.index_to_world(idx.reshape(-1, 3).astype(np.float64))
        out[z0:z1] = fn(pts).reshape(z1 - z0, ny, nx, 3)
    return out


# ------------------------------------------------------------------ public helpers
def breathing_displacement(
    grid: Grid,
    seed: int = 0,
    amplitude_mm: float | None = None,
    frame: ThoraxFrame | None = None,
    **kwargs: Any,
) -> Volume:
    """Seeded breathing displacement ``u`` (mm vectors, (z, y, x, 3)) on ``grid``.

    ``frame`` places the lungs (default: :meth:`ThoraxFrame.from_grid`); other keyword
    arguments go to :meth:`BreathingMotion.random`. Use ``BreathingMotion.random(...)``
    directly when you also need the exact (closed-form) motion at arbitrary points."""
    motion = BreathingMotion.random(frame or ThoraxFrame.from_grid(grid), seed, amplitude_mm, **kwargs)
    return motion.field(grid)


def sample_field(disp: Volume, points_mm: np.ndarray) -> np.ndarray:
    """Trilinear samples (N, 3) of a vector field at world points; outside the grid the nearest
    border value is used (smooth fields extend well that way)."""
    if disp.array.ndim != 4 or disp.array.shape[3] != 3:
        raise ValueError(f"{disp.name or 'field'}: expected a (z, y, x, 3) vector field, got {disp.array.shape}")
    coords = disp.grid.world_to_index(np.asarray(points_mm, dtype=np.float64))[:, ::-1].T
    return np.stack(
        [map_coordinates(disp.array[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=-1
    ).astype(np.float64)


def invert_displacement(disp: Volume, tol_mm: float = 1e-3, max_iterations: int = 100) -> Volume:
    """Numerical inverse of a sampled displacement: ``v`` on the same grid with
    ``y + v(y) = phi^-1(y)``, i.e. ``v(y) = -u(y + v(y))`` (fixed-point iteration on the
    trilinearly interpolated ``u``; needs ``||grad u|| < 1``, which it checks by convergence)."""
    grid = disp.grid
    y = grid.voxel_centres_world().reshape(-1, 3)
    v = -sample_field(disp, y)
    for _ in range(max_iterations):
        v_new = -sample_field(disp, y + v)
        step = float(np.max(np.abs(v_new - v)))
        v = v_new
        if step < tol_mm:
            return Volume(v.reshape(disp.array.shape).astype(disp.array.dtype), grid, f"inverse of {disp.name}")
    raise RuntimeError(
        f"{disp.name or 'displacement'}: inversion did not converge to {tol_mm} mm in {max_iterations} iterations "
        "(is the field folding, |grad u| >= 1?)"
    )


def warp_image(
    volume: Volume,
    inverse_disp: Volume,
    order: int = 1,
    mode: str = "nearest",
    cval: float = 0.0,
    name: str | None = None,
) -> Volume:
    """Resample ``volume`` through a displacement: ``out(y) = volume(y + v(y))`` on ``inverse_disp``'s
    grid (trilinear for ``order=1``, nearest for masks with ``order=0``).

    To render the moving image of a motion ``u`` pass ``v = phi^-1 - id`` (:func:`invert_displacement`
    or :meth:`BreathingMotion.inverse_field`): ``M(y) = F(phi^-1(y))``. ``mode`` is scipy's boundary
    rule for points outside ``volume`` (``"nearest"`` repeats the border slices)."""
    y = inverse_disp.grid.voxel_centres_world().reshape(-1, 3)
    src = y + inverse_disp.array.reshape(-1, 3).astype(np.float64)
    coords = volume.grid.world_to_index(src)[:, ::-1].T
    values = map_coordinates(np.asarray(volume.array, dtype=np.float64 if order else volume.array.dtype),
                             coords, order=order, mode=mode, cval=cval)
    out = values.reshape(inverse_disp.grid.shape).astype(volume.array.dtype, copy=False)
    return Volume(out, inverse_disp.grid, name if name is not None else f"{volume.name} (warped)")


def transport_points(points_mm: np.ndarray, motion: "BreathingMotion | Volume") -> np.ndarray:
    """Fixed world points -> moving world points ``x + u(x)``: exact for a :class:`BreathingMotion`,
    trilinear interpolation of the field for a displacement Volume."""
    p = np.asarray(points_mm, dtype=np.float64)
    if isinstance(motion, BreathingMotion):
        return motion.transport(p)
    return p + sample_field(motion, p)


def jacobian_determinant(disp: Volume) -> np.ndarray:
    """``det(I + grad u)`` (z, y, x) of a displacement field in mm, by central finite differences
    in world mm (one-sided at the borders); the grid's direction matrix is honoured."""
    u = np.asarray(disp.array, dtype=np.float64)
    if u.ndim != 4 or u.shape[3] != 3:
        raise ValueError(f"{disp.name or 'field'}: expected a (z, y, x, 3) vector field, got {u.shape}")
    grid = disp.grid
    # d u_c / d index_k for index axes k = x, y, z (array axes 2, 1, 0)
    d_index = np.empty(u.shape[:3] + (3, 3))
    for k, axis in enumerate((2, 1, 0)):
        if u.shape[axis] < 2:
            d_index[..., :, k] = 0.0
        else:
            d_index[..., :, k] = np.gradient(u, axis=axis)
    to_world = np.linalg.inv(grid.direction @ np.diag(grid.spacing))  # d index / d world
    jac = d_index @ to_world + np.eye(3)
    return np.linalg.det(jac)
