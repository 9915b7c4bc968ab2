"""Test-time INR registration (IDIR / ccIDIR): ``rn.register(pair, ...) -> RegistrationRun``.

Two SIRENs are optimised with Adam on batches of points: the forward network in the fixed
image's INR frame (points drawn inside the fixed mask) and the backward network in the
moving image's frame (inside the moving mask), with the ccIDIR loss of
:class:`reindir_nb.inr.objective.Objective`. A global pre-alignment (affine/rigid, world mm) is
estimated first when the pair needs it; the networks model the residual, and every output
(points, fields, warps, determinants) composes both.

``init`` is ``"random"`` (Sitzmann initialisation, seeded), ``"identity"`` (the same random
hidden layers with a zero output layer: the map starts at exactly the identity) or any :class:`Initialiser`: a
Reptile template or a REINDIR model from :mod:`reindir_nb.meta`. Iteration 0 of the history
is the state before any step, i.e. the zero-shot result of a learned initialisation.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import derivatives
from ..core.checks import require_float, require_int
from ..core.device import get_device, make_generator
from ..core.geometry import Grid
from ..core.metrics import deformation_statistics, target_registration_error
from .network import Params, SirenConfig, clone_params, init_siren, siren
from .convergence import Convergence, MapChange
from .objective import Objective, Problem, apply_matrix
from ..core.pair import Pair
from ..core.points import as_points
from ..core.profiles import get_profile
from ..core.volume import Volume
from ..data.prealign import resolve_prealign

__all__ = [
    "Initialiser", "MapSample", "RegistrationRun", "RegisterSettings", "register", "run_configuration", "RANDOM_INITS",
]

# The seeded starts ``register(init=...)`` draws itself: "random", the Sitzmann initialisation of
# both SIRENs (the published IDIR/ccIDIR start: its output layer is a random smooth field of a
# few mm), and "identity", the same hidden layers with a zero output layer (v = 0).
RANDOM_INITS = ("random", "identity")

FIELD_CHUNK = 32768


@runtime_checkable
class Initialiser(Protocol):
    """What ``register(init=...)`` accepts besides "random" (Reptile templates, REINDIR models).

    - ``siren_config``: the :class:`~reindir_nb.inr.SirenConfig` of the networks (its ``omega``
      is used by the whole run; ``register``'s own ``omega``/``output_scale`` are ignored).
    - ``initial_params(problem)``: given the pair's :class:`~reindir_nb.objective.Problem`
      (images, masks, frames, pre-alignment already composed), return ``(forward, backward)``
      parameter lists ``[W0, b0, ..., W3, b3]`` of that architecture, on any device. They are the
      starting point: ``register`` clones them (the caller's tensors are never modified).
    - ``encoder_seconds`` (optional attribute, set by ``initial_params``): wall seconds spent
      computing them (e.g. the REINDIR encoder); it becomes ``history.seconds`` at iteration 0.
      Without it, ``register`` times the call itself.
    """

    siren_config: SirenConfig

    def initial_params(self, problem: Problem) -> tuple[Params, Params]: ...


@dataclass
class MapSample:
    """The fixed->moving map evaluated once at fixed world points (pre-alignment included): the
    forward estimate phi_F(x), the backward network inverted at it (None when not asked for) and
    det J of the whole map (None when not asked for). Every output file is read from one sample."""

    points_mm: np.ndarray             # (N, 3) fixed world mm
    forward_mm: np.ndarray            # (N, 3) moving world mm
    backward_mm: np.ndarray | None    # (N, 3) moving world mm
    det: np.ndarray | None            # (N,) unitless; <= 0: folding

    def moved(self, estimate: str = "cycle") -> np.ndarray:
        """Moving world points (N, 3) mm: ``"forward"`` phi_F(x), ``"cycle"`` the midpoint of the two."""
        if estimate not in ("forward", "cycle"):
            raise ValueError(f"estimate must be 'forward' or 'cycle', got {estimate!r}")
        if estimate == "forward":
            return self.forward_mm
        if self.backward_mm is None:
            raise ValueError("this sample was taken without the backward network: no cycle estimate")
        return 0.5 * (self.forward_mm + self.backward_mm)

    @property
    def uncertainty_mm(self) -> np.ndarray:
        """(N,) cycle uncertainty: distance between the forward and the inverted backward estimate."""
        if self.backward_mm is None:
            raise ValueError("this sample was taken without the backward network: no uncertainty")
        return np.linalg.norm(self.forward_mm - self.backward_mm, axis=1)


@dataclass
class RegistrationRun:
    """Result of :func:`register`: final networks, history and recorded snapshots.

    All point/field methods take ``iteration`` (None = final) to look at a recorded snapshot.
    """

    pair: Pair
    problem: Problem
    forward: Params
    backward: Params
    siren_config: SirenConfig
    prealign_matrix: np.ndarray
    history: pd.DataFrame
    iterations: int
    snapshots: dict[int, tuple[Params, Params]] = field(default_factory=dict)
    encoder_seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    diverged: bool = False         # the loss became non-finite; the run stopped at the last finite state
    # the last det J map computed (key, values): folding_fraction, std_log_jacobian and a plot of
    # the same iteration on the same grid compute it once
    _det_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------- params
    def params_at(self, iteration: int | None = None) -> tuple[Params, Params]:
        """Forward/backward params after ``iteration`` steps (a recorded snapshot) or the final ones."""
        if iteration is None or iteration == self.iterations:
            return self.forward, self.backward
        if iteration not in self.snapshots:
            raise KeyError(f"iteration {iteration} was not recorded; recorded: {sorted(self.snapshots)}")
        dev = self.problem.device
        fwd, bwd = self.snapshots[iteration]
        return [p.to(dev) for p in fwd], [p.to(dev) for p in bwd]

    def snapshot(self, iteration: int) -> "RegistrationRun":
        """The run as it was after ``iteration`` steps (for the iteration scrubber)."""
        fwd, bwd = self.params_at(iteration)
        return replace(self, forward=fwd, backward=bwd, iterations=iteration)

    @property
    def recorded_iterations(self) -> list[int]:
        return sorted(set(self.snapshots) | {self.iterations})

    # ---------------------------------------------------------------- points
    def _inr_points(self, points_mm: np.ndarray) -> Tensor:
        x = self.problem.world_to_inr(points_mm, "fixed")
        return torch.as_tensor(x, dtype=self.problem.fixed.dtype, device=self.problem.device)

    @torch.no_grad()
    def _estimates(self, x: Tensor, iteration: int | None, backward: bool = True,
                   det: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """For fixed INR points x (N, 3), in chunks of :data:`FIELD_CHUNK` points and one network
        pass each: the forward estimate y_F = phi_F(x), (``backward``) the inverted-backward
        estimate y_B (one Newton step on phi_B(y) = x from y_F), both in moving INR coords, and
        (``det``) det(I + dv_F/dx) of the forward network (INR units, pre-alignment excluded)."""
        fwd, bwd = self.params_at(iteration)
        omega = self.siren_config.omega
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        out_f, out_b, out_det = [], [], []
        for xs in torch.split(x, FIELD_CHUNK):
            if det:
                v_f, jac_f = derivatives.jacobian(fwd, xs, omega)
                out_det.append(torch.linalg.det(eye + jac_f))
            else:
                v_f = siren(fwd, xs, omega)
            y_f = apply_matrix(self.problem.f2m, xs + v_f)
            out_f.append(y_f)
            if backward:
                v_b, jac_b = derivatives.jacobian(bwd, y_f, omega)
                residual = apply_matrix(self.problem.m2f, y_f + v_b) - xs  # in fixed INR coords
                jphi = self.problem.m2f[:3, :3] @ (eye + jac_b)  # d phi_B / d y
                out_b.append(y_f - torch.linalg.solve(jphi, residual.unsqueeze(-1)).squeeze(-1))
        cat = (lambda parts: torch.cat(parts) if parts else None)
        return torch.cat(out_f), cat(out_b), cat(out_det)

    def sample(self, points_mm: np.ndarray, iteration: int | None = None, backward: bool = True,
               det: bool = True) -> "MapSample":
        """The map at fixed world points (N, 3) mm, each network evaluated once per point: what
        every output (displacement, warp, det J, uncertainty) needs (:class:`MapSample`)."""
        pts = as_points(points_mm, "points_mm")
        y_f, y_b, dets = self._estimates(self._inr_points(pts), iteration, backward=backward, det=det)
        return MapSample(pts, self._to_moving_mm(y_f), None if y_b is None else self._to_moving_mm(y_b),
                         None if dets is None else dets.double().cpu().numpy() * self._prealign_det)

    @property
    def _prealign_det(self) -> float:
        return float(np.linalg.det(self.prealign_matrix[:3, :3]))

    def _to_moving_mm(self, y: Tensor) -> np.ndarray:
        return self.problem.inr_to_world(y.double().cpu().numpy(), "moving")

    def transform_points(self, points_mm: np.ndarray, estimate: str = "cycle", iteration: int | None = None) -> np.ndarray:
        """Map fixed world points (N, 3) mm to moving world mm.

        ``estimate="forward"``: phi_F(x). ``"cycle"`` (default): midpoint of phi_F(x) and the
        backward network inverted at that point by a Newton step (ccIDIR's inference).
        """
        if estimate not in ("forward", "cycle"):
            raise ValueError(f"estimate must be 'forward' or 'cycle', got {estimate!r}")
        pts = as_points(points_mm, "points_mm")
        y_f, y_b, _ = self._estimates(self._inr_points(pts), iteration, backward=estimate == "cycle")
        return self._to_moving_mm(y_f if y_b is None else 0.5 * (y_f + y_b))

    def point_uncertainty(self, points_mm: np.ndarray, iteration: int | None = None) -> np.ndarray:
        """Cycle uncertainty (mm) at fixed world points: distance between the forward estimate and
        the inverted backward estimate."""
        return self.sample(points_mm, iteration, det=False).uncertainty_mm

    @property
    def tre_mm(self) -> np.ndarray:
        """Per-landmark TRE (mm) of the final state, cycle estimate."""
        return self.landmark_errors()

    def landmark_errors(self, estimate: str = "cycle", iteration: int | None = None) -> np.ndarray:
        if not self.pair.has_landmarks:
            raise ValueError(f"{self.pair.name}: no landmarks")
        pred = self.transform_points(self.pair.fixed_landmarks, estimate, iteration)
        return np.linalg.norm(pred - self.pair.moving_landmarks, axis=1)

    # ---------------------------------------------------------------- fields
    def _grid_points(self, grid: Grid | None = None) -> np.ndarray:
        return (self.pair.fixed.grid if grid is None else grid).voxel_centres_world().reshape(-1, 3)

    def _fixed_volume(self, values: np.ndarray, name: str, grid: Grid | None = None):
        if grid is None:
            grid = self.pair.fixed.grid
            return self.pair.fixed.with_array(values.reshape(*grid.shape, *values.shape[1:]), name=name)
        return Volume(values.reshape(*grid.shape, *values.shape[1:]), grid, name)

    def displacement(self, estimate: str = "forward", iteration: int | None = None, grid: Grid | None = None):
        """Displacement Volume of mm vectors (x, y, z), moving point - fixed point, at the voxel
        centres of the fixed grid (or of ``grid``, any grid in fixed world space, e.g. the original
        full-resolution fixed CT); the pre-alignment included."""
        pts = self._grid_points(grid)
        return self._fixed_volume(self.transform_points(pts, estimate, iteration) - pts, "displacement (mm)", grid)

    def warp(self, volume=None, estimate: str = "forward", iteration: int | None = None, order: int = 1):
        """``volume`` (default: the pair's moving image; any Volume in moving world space)
        resampled into the fixed grid through the registration: ``moving(phi(x))``."""
        volume = self.pair.moving if volume is None else volume
        moved = self.transform_points(self._grid_points(), estimate, iteration)
        return self._fixed_volume(volume.sample_world(moved, order=order), f"warped {volume.name}")

    @torch.no_grad()
    def jacobian_determinant(self, iteration: int | None = None, grid: Grid | None = None):
        """det of the spatial Jacobian of the whole fixed->moving map (pre-alignment included),
        on the fixed grid or ``grid`` (any grid in fixed world space; unitless, <= 0: folding)."""
        key = self._det_key(grid, iteration)
        if self._det_cache.get("key") != key:
            det = self._det_at(self._inr_points(self._grid_points(grid)), iteration)
            self._det_cache.update(key=key, det=det)
        return self._fixed_volume(self._det_cache["det"].copy(), "det J", grid)

    def _det_key(self, grid: Grid | None, iteration: int | None) -> tuple:
        """What a cached det J map depends on: the grid, the pre-alignment and the forward params
        (their sums: any change to them, also in place, is seen)."""
        fwd, _ = self.params_at(iteration)
        return (grid, self.prealign_matrix.tobytes(), tuple(float(p.detach().double().sum()) for p in fwd),
                tuple(float(p.detach().abs().sum()) for p in fwd))

    @torch.no_grad()
    def jacobian_determinant_at(self, points_mm: np.ndarray, iteration: int | None = None) -> np.ndarray:
        """det J of the whole map (pre-alignment included) at fixed world points (N, 3) mm, e.g.
        the lung-mask voxels only: what a statistic inside the mask needs, without the rest."""
        return self._det_at(self._inr_points(np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)), iteration)

    def _det_at(self, x: Tensor, iteration: int | None) -> np.ndarray:
        """det J of the whole map (pre-alignment included) at fixed INR points x (N, 3)."""
        return self._estimates(x, iteration, backward=False, det=True)[2].double().cpu().numpy() * self._prealign_det

    def uncertainty(self, iteration: int | None = None, grid: Grid | None = None):
        """Cycle-uncertainty map (mm) on the fixed grid or ``grid``."""
        return self._fixed_volume(self.point_uncertainty(self._grid_points(grid), iteration),
                                  "cycle uncertainty (mm)", grid)

    def _det_in_mask(self, iteration: int | None) -> np.ndarray:
        """det J at the fixed-mask voxels (every voxel without a mask): the networks are evaluated
        there only, unless the whole map of this state is already computed."""
        mask = self.pair.fixed_mask
        if mask is None:
            return self.jacobian_determinant(iteration).array.ravel()
        inside = mask.array > 0
        key = self._det_key(None, iteration)
        if self._det_cache.get("key") == key:
            return self._det_cache["det"].reshape(inside.shape)[inside]
        if self._det_cache.get("mask_key") != key:
            points = self.pair.fixed.grid.voxel_centres_world()[inside]
            self._det_cache.update(mask_key=key, mask_det=self._det_at(self._inr_points(points), iteration))
        return self._det_cache["mask_det"]

    def folding_fraction(self, iteration: int | None = None) -> float:
        """Fraction of fixed-mask voxels (all voxels without a mask) with det J <= 0."""
        return deformation_statistics(self._det_in_mask(iteration))["pct_folded"] / 100.0

    def std_log_jacobian(self, iteration: int | None = None) -> float:
        """std of log(det J) over the fixed mask (det clipped at 1e-9, as the standard metric)."""
        return deformation_statistics(self._det_in_mask(iteration))["std_log_jac"]


# ------------------------------------------------------------------------------- register
def _check_params(params: Params, config: SirenConfig, what: str) -> None:
    """ValueError unless ``params`` is a SIREN parameter list of ``config``'s architecture."""
    sizes = [3] + [config.hidden] * config.hidden_layers + [3]
    shapes = [s for i in range(len(sizes) - 1) for s in ((sizes[i + 1], sizes[i]), (sizes[i + 1],))]
    got = [tuple(p.shape) for p in params] if isinstance(params, (list, tuple)) else None
    if got != shapes:
        raise ValueError(f"{what}: expected SIREN params with shapes {shapes}, got {got}")


def _record_iterations(iterations: int, record_every: int) -> set[int]:
    recs = set(range(0, iterations + 1, max(1, record_every)))
    recs.add(iterations)
    return recs


def _learned_start_is_worse(problem: Problem, objective: Objective, config: SirenConfig, fwd: Params, bwd: Params,
                            points: int, seed: int) -> tuple[bool, float, float]:
    """Similarity loss (forward + backward) of the learned start against the identity (zero
    displacement after pre-alignment), on one batch drawn from its own generator (the run's
    point sequence is not touched). Returns (worse, learned loss, identity loss)."""
    gen = make_generator(seed + 104729)
    xf = problem.sample_points(points, gen, "fixed")
    xb = problem.sample_points(points, gen, "moving")
    only_similarity = Objective(similarity=objective.similarity, regulariser="none", weights=objective.weights)
    with torch.no_grad():
        learned = only_similarity.terms(fwd, bwd, problem, xf, xb, config.omega)
        zero_f, zero_b = identity_params(fwd), identity_params(bwd)
        identity = only_similarity.terms(zero_f, zero_b, problem, xf, xb, config.omega)
    value = float(learned["ncc_f"] + learned["ncc_b"])
    ident = float(identity["ncc_f"] + identity["ncc_b"])
    return (not math.isfinite(value)) or value > ident, value, ident


def identity_params(params: Params) -> Params:
    """A copy of ``params`` with the output layer zeroed: the same hidden features, zero
    displacement (the identity transform after pre-alignment)."""
    out = [p.detach().clone() for p in params]
    out[-2].zero_()
    out[-1].zero_()
    return out


@dataclass(frozen=True)
class RegisterSettings:
    """How a test-time registration runs (``None``: the profile's value; the profile is ``profile``,
    else the one the pair was prepared with, else ``demo``).

    ``points_per_step``: points per network per Adam step; ``lr`` the Adam learning rate, raised
    linearly over the first ``lr_warmup`` steps (step i uses ``lr * (i + 1) / lr_warmup``; Adam's
    first steps move every weight by about ``lr`` whatever its gradient, which can undo part of a
    good learned start; 0: ``lr`` from step 0). ``safe_start``: a learned start whose similarity
    loss is worse than the identity's starts from the identity instead (its hidden layers, a zero
    output layer). ``siren``: the networks of a seeded start (default ``SirenConfig()``; a learned
    start brings its own); ``output_scale=0`` starts at exactly zero displacement.
    ``record_every``: history interval (steps); ``snapshot_limit``: states kept for the iteration
    scrubber; ``record_tre``: landmark TRE in the history. ``stop``: a
    :class:`~reindir_nb.inr.convergence.Convergence` rule ends the run before ``iterations``
    (then a maximum) once the map has settled; None runs every step."""

    iterations: int | None = None
    points_per_step: int | None = None
    lr: float = 1e-4
    lr_warmup: int = 5
    safe_start: bool = True
    siren: SirenConfig | None = None
    output_scale: float | None = None
    record_every: int | None = None
    snapshot_limit: int = 40
    record_tre: bool = True
    profile: str | None = None
    stop: Convergence | None = None

    def __post_init__(self) -> None:
        for name in ("iterations", "points_per_step", "record_every"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, require_int(getattr(self, name), name, 0 if name == "iterations" else 1))
        require_int(self.snapshot_limit, "snapshot_limit", 1)
        require_float(self.lr, "lr", positive=True)
        require_int(self.lr_warmup, "lr_warmup", 0)
        if self.siren is not None and not isinstance(self.siren, SirenConfig):
            raise TypeError(f"siren must be a SirenConfig, got {type(self.siren).__name__}")
        if self.output_scale is not None:
            require_float(self.output_scale, "output_scale", minimum=0.0)
        if self.profile is not None:
            get_profile(self.profile)
        if self.stop is not None and not isinstance(self.stop, Convergence):
            raise TypeError(f"stop must be a Convergence rule or None, got {type(self.stop).__name__}")

    def for_pair(self, pair: Pair) -> "RegisterSettings":
        """A copy with the profile's values filled in for ``pair``."""
        prof = get_profile(self.profile or pair.preparation.profile or "demo")
        return replace(self, profile=prof.name,
                       iterations=prof.iterations if self.iterations is None else self.iterations,
                       points_per_step=prof.points_per_step if self.points_per_step is None else self.points_per_step,
                       record_every=prof.record_every if self.record_every is None else self.record_every)

    def fingerprint(self, pair: Pair) -> dict:
        """The fields that determine a run's numbers for ``pair`` (not its length, recording or profile)."""
        done = self.for_pair(pair)
        out = {name: getattr(done, name) for name in
               ("points_per_step", "lr", "lr_warmup", "safe_start", "siren", "output_scale")}
        if done.stop is not None:  # only when set: fingerprints of runs without it are unchanged
            out["stop"] = done.stop
        return out


_OBJECTIVE_FIELDS = {f.name for f in fields(Objective)}
_SETTINGS_FIELDS = {f.name for f in fields(RegisterSettings)}


def run_configuration(objective: Objective | None = None, settings: RegisterSettings | None = None,
                      **options) -> tuple[Objective, RegisterSettings]:
    """The objective and settings of a run from the typed arguments and the short forms
    (``regulariser=``, ``similarity=``, ``weights=``, ``derivative_method=`` for the objective;
    any :class:`RegisterSettings` field such as ``lr=``). Unknown names are a TypeError."""
    unknown = sorted(set(options) - _OBJECTIVE_FIELDS - _SETTINGS_FIELDS)
    if unknown:
        raise TypeError(f"register: unknown arguments {unknown}; settings: {sorted(_SETTINGS_FIELDS)}, "
                        f"objective: {sorted(_OBJECTIVE_FIELDS)}")
    short = {k: v for k, v in options.items() if k in _OBJECTIVE_FIELDS and v is not None}
    if objective is None:
        objective = Objective(**short)
    elif not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
    elif short:
        raise ValueError(f"give either objective= or its fields ({', '.join(short)}), not both")
    if settings is not None and not isinstance(settings, RegisterSettings):
        raise TypeError(f"settings must be a RegisterSettings, got {type(settings).__name__}")
    changes = {k: v for k, v in options.items() if k in _SETTINGS_FIELDS}
    return objective, replace(settings or RegisterSettings(), **changes)


def register(
    pair: Pair,
    init: "str | Initialiser" = "random",
    iterations: int | None = None,
    seed: int = 0,
    prealign: "str | np.ndarray" = "auto",
    objective: Objective | None = None,
    settings: RegisterSettings | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options,
) -> RegistrationRun:
    """ccIDIR test-time optimisation of one pair: Adam on the forward and backward SIRENs, points
    drawn with a generator seeded from ``seed`` (same seed, same device -> identical history).

    ``init``: "random" (Sitzmann initialisation from ``seed``), "identity" (the same hidden layers
    with a zero output layer: the map starts at exactly the identity; :data:`RANDOM_INITS`) or an
    :class:`Initialiser` (a Reptile template or REINDIR model; its ``siren_config`` is used; its
    tensors are cloned, never modified). ``iterations``: Adam steps (default: the profile's).
    ``prealign``: see :func:`reindir_nb.data.prealign.resolve_prealign`. ``objective``: the
    :class:`~reindir_nb.inr.objective.Objective` (default: NCC, symmetric Jacobian, paper
    weights); ``settings``: a :class:`RegisterSettings`. ``options`` are their fields as short
    forms (``regulariser="bending"``, ``lr=3e-4``, ``points_per_step=10000`` ...).

    History rows (every ``record_every`` steps and the last) hold the state after exactly that
    many steps; row 0 is the initialisation (a learned init's zero-shot result), its ``seconds``
    the encoder time; ``run.settings["start"]`` and the ``start`` column say which start was used
    (see ``safe_start``). A non-finite loss stops the run at the last finite state with a warning:
    ``run.diverged`` is True and the history's ``diverged`` column marks the last row.
    """
    objective, settings = run_configuration(objective, settings, **options)
    if not isinstance(pair, Pair):
        raise TypeError(f"register: pair must be a Pair (rn.load_pair / rn.prepare), got {type(pair).__name__}")
    if isinstance(init, str) and init not in RANDOM_INITS:
        raise ValueError(f"init must be 'random', 'identity' or an Initialiser (Reptile template / REINDIR model), got {init!r}")
    if not isinstance(init, (str, Initialiser)):
        raise ValueError(f"init must be 'random', 'identity' or have initial_params(problem) and siren_config, "
                         f"got {type(init).__name__}")
    if iterations is not None:
        settings = replace(settings, iterations=iterations)
    settings = settings.for_pair(pair)
    iterations, points, record_every = settings.iterations, settings.points_per_step, settings.record_every
    lr, lr_warmup, siren, output_scale = settings.lr, settings.lr_warmup, settings.siren, settings.output_scale
    safe_start, record_tre, snapshot_limit = settings.safe_start, settings.record_tre, settings.snapshot_limit
    seed = require_int(seed, "seed", 0)
    dev = get_device(device)

    kind, pre = resolve_prealign(pair, prealign)
    problem = Problem.from_pair(pair, prealign=pre, device=dev)

    t0 = time.perf_counter()
    start = init if isinstance(init, str) else "learned"
    if isinstance(init, str):
        config = siren or SirenConfig()
        if output_scale is not None:
            config = replace(config, output_scale=output_scale)
        if init == "identity":
            config = replace(config, output_scale=0.0)
        gen_init = make_generator(seed)
        fwd0 = init_siren(config, gen_init, device=dev)
        bwd0 = init_siren(config, gen_init, device=dev)
        encoder_seconds = 0.0
    else:
        config = init.siren_config
        fwd0, bwd0 = init.initial_params(problem)
        encoder_seconds = float(getattr(init, "encoder_seconds", None) or time.perf_counter() - t0)
        _check_params(fwd0, config, f"{type(init).__name__}.initial_params (forward)")
        _check_params(bwd0, config, f"{type(init).__name__}.initial_params (backward)")
        fwd0, bwd0 = [p.to(dev) for p in fwd0], [p.to(dev) for p in bwd0]
        if safe_start:
            worse, learned_loss, identity_loss = _learned_start_is_worse(problem, objective, config, fwd0, bwd0,
                                                                         points, seed)
            if worse:
                fwd0, bwd0 = identity_params(fwd0), identity_params(bwd0)
                start = f"identity (learned start similarity {learned_loss:.4f} > identity {identity_loss:.4f})"
    fwd = clone_params([p.to(dev) for p in fwd0], requires_grad=True)
    bwd = clone_params([p.to(dev) for p in bwd0], requires_grad=True)
    optimiser = torch.optim.Adam(fwd + bwd, lr=lr)
    gen_points = make_generator(seed + 7919)

    run = RegistrationRun(
        pair=pair, problem=problem, forward=fwd, backward=bwd, siren_config=config, prealign_matrix=pre,
        history=pd.DataFrame(), iterations=0, encoder_seconds=encoder_seconds,
        settings={"init": init if isinstance(init, str) else type(init).__name__, "prealign": kind,
                  "regulariser": objective.regulariser, "points_per_step": points, "lr": lr,
                  "lr_warmup": lr_warmup, "seed": seed,
                  "similarity": objective.similarity, "device": str(dev), "start": start,
                  "objective": objective},
    )
    records = _record_iterations(iterations, record_every)
    snap_every = max(1, math.ceil(len(records) / max(1, snapshot_limit)))
    rows: list[dict] = []
    elapsed = encoder_seconds
    previous: tuple[Params, Params, dict] | None = None  # the last finite state and its loss terms
    change = None if settings.stop is None else MapChange(settings.stop, problem, config.omega, seed)
    run.settings["stopped"] = {"reason": "iterations", "iteration": iterations}
    bar = tqdm(total=iterations, desc=f"ccIDIR {pair.name}", disable=not progress, leave=False)

    def record(it: int, terms: dict, diverged: bool = False) -> dict:
        run.forward, run.backward, run.iterations = fwd, bwd, it
        row = {"iteration": it, "seconds": elapsed, **{k: float(v.detach()) for k, v in terms.items()},
               "start": start, "diverged": diverged}
        if change is not None:
            row["map_change_mm"] = math.nan if change.last is None else change.last
            row["map_change_mean_mm"] = math.nan if change.last_mean is None else change.last_mean
        if record_tre and pair.has_landmarks:
            for est in ("cycle", "forward"):
                stats = target_registration_error(run.transform_points(pair.fixed_landmarks, est), pair.moving_landmarks)
                suffix = "" if est == "cycle" else "_forward"
                row.update({f"tre_{k}{suffix}_mm": v for k, v in stats.items()})
        rows.append(row)
        return row

    for it in range(iterations + 1):
        stepping = it < iterations
        t_step = time.perf_counter()
        xf = problem.sample_points(points, gen_points, "fixed")
        xb = problem.sample_points(points, gen_points, "moving")
        with torch.set_grad_enabled(stepping or objective.needs_grad):
            terms = objective.terms(fwd, bwd, problem, xf, xb, config.omega)
        step_seconds = time.perf_counter() - t_step
        if not torch.isfinite(terms["total"]).item():
            if previous is None:
                raise ValueError(f"{pair.name}: the loss of the initial networks is not finite "
                                 f"({float(terms['total'])}); check the init and the images")
            with torch.no_grad():
                for p, q in zip(fwd + bwd, previous[0] + previous[1]):
                    p.copy_(q)
            warnings.warn(f"{pair.name}: the loss became non-finite at step {it} (lr={lr:g}); the run stops at the "
                          f"last finite state (step {it - 1}) and is marked diverged", RuntimeWarning, stacklevel=2)
            run.diverged = True
            if rows and rows[-1]["iteration"] == it - 1:
                rows[-1]["diverged"] = True
            else:
                record(it - 1, previous[2], diverged=True)
            iterations = it - 1
            run.settings["stopped"] = {"reason": "diverged", "iteration": iterations}
            break
        t_check = time.perf_counter()
        converged = stepping and change is not None and change.check(it, fwd)
        elapsed += time.perf_counter() - t_check if change is not None else 0.0
        if converged:  # the state after `it` steps is the result: record it, take no more steps
            stepping, iterations = False, it
            records.add(it)
            run.settings["stopped"] = {"reason": "converged", "iteration": it, "map_change_mm": change.last,
                                       "best_map_change_mm": change.plateau.best, "rule": vars(settings.stop)}
        # record BEFORE this iteration's update: the state after exactly `it` steps
        if it in records:  # loss terms were evaluated at exactly that state
            row = record(it, terms)
            if it < iterations and (len(rows) - 1) % snap_every == 0:
                run.snapshots[it] = (clone_params([p.cpu() for p in fwd]), clone_params([p.cpu() for p in bwd]))
            if progress and "tre_mean_mm" in row:
                bar.set_postfix(tre=f"{row['tre_mean_mm']:.2f}mm", loss=f"{row['total']:.3f}")
        if stepping:
            t_step = time.perf_counter()
            previous = ([p.detach().clone() for p in fwd], [p.detach().clone() for p in bwd],
                        {k: v.detach() for k, v in terms.items()})
            optimiser.zero_grad(set_to_none=True)
            terms["total"].backward()
            if lr_warmup:
                optimiser.param_groups[0]["lr"] = lr * min(1.0, (it + 1) / lr_warmup)
            optimiser.step()
            elapsed += step_seconds + time.perf_counter() - t_step
            bar.update(1)
        if converged:
            break
    bar.close()
    run.forward = [p.detach() for p in fwd]
    run.backward = [p.detach() for p in bwd]
    run.iterations = iterations
    run.snapshots = {k: v for k, v in run.snapshots.items() if k < iterations}
    run.history = pd.DataFrame(rows)
    return run
