"""Methods behind the :class:`~reindir_nb.evaluation.protocol.Registration` protocol.

Adapters: :class:`InrRegistration` (wraps :class:`reindir_nb.inr.registration.RegistrationRun`),
:class:`VoxelMorphRegistration` (wraps a :class:`~reindir_nb.evaluation.voxelmorph.VoxelMorphResult`)
and :class:`ElastixRegistration` (wraps an :class:`~reindir_nb.evaluation.elastix.ElastixTransform`).

:func:`resolve_method` turns a sweep's method spec (``"random"``, a Reptile template / REINDIR
model or any :class:`~reindir_nb.inr.registration.Initialiser`, a VoxelMorph model,
``"elastix"``, ``{fold: spec}``, or a callable ``pair -> spec``) into a :class:`Method`: a
callable ``run(pair, seed) -> Registration`` with the settings that determine its result
(for the fingerprint). Dispatch is by isinstance / protocol checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import reduce
from typing import Any

import numpy as np

from ..core.pair import Pair
from ..core.metrics import deformation_statistics
from ..core.volume import Volume
from ..data.prealign import resolve_prealign
from ..inr import registration as _registration
from ..inr.registration import RANDOM_INITS, Initialiser, RegisterSettings, RegistrationRun, run_configuration
from .elastix import ElastixConfig, ElastixTransform, elastix_transform
from ..core.fingerprint import canonical, model_identity
from .protocol import CONVERGED, Registration, Timings
from .voxelmorph import VoxelMorph, VoxelMorphResult

__all__ = ["InrRegistration", "VoxelMorphRegistration", "ElastixRegistration", "SweepConfig", "Method",
           "resolve_method"]

_DEFAULT_SNAPSHOTS = RegisterSettings().snapshot_limit


def _check_iteration(iteration: int | None, recorded: list[int], what: str) -> int:
    it = recorded[-1] if iteration is None else int(iteration)
    if it not in recorded:
        raise KeyError(f"{what}: iteration {it} was not recorded (recorded: {recorded})")
    return it


# ------------------------------------------------------------------------------ adapters
@dataclass
class InrRegistration:
    """A ccIDIR / Reptile / REINDIR run as a :class:`Registration` (cycle and forward estimates,
    cycle uncertainty, det J as a Volume). ``diverged`` reads the run's own flag when it has one."""

    run: RegistrationRun
    name: str

    @property
    def iterations(self) -> list[int]:
        recorded = {int(i) for i in self.run.history["iteration"]} if len(self.run.history) else set()
        return sorted(recorded & set(self.run.recorded_iterations))

    @property
    def timings(self) -> Timings:
        hist = self.run.history.set_index("iteration")
        encoder = float(self.run.encoder_seconds)
        # history seconds include the encoder time; the table's are optimisation only
        seconds = {int(i): float(hist.loc[i, "seconds"]) - encoder for i in self.iterations}
        last = max(seconds) if seconds else 0
        step = seconds[last] / last if last > 0 else float("nan")
        return Timings(encoder_seconds=encoder, step_seconds=step, seconds=seconds)

    @property
    def diverged(self) -> bool:
        return bool(getattr(self.run, "diverged", False))

    def diverged_at(self, iteration: int) -> bool:
        """True for iterations after the run's last finite state (a diverged run stops there; the
        states it recorded up to then, that one included, are valid measurements)."""
        recorded = self.iterations
        return self.diverged and (not recorded or int(iteration) > recorded[-1])

    def transform_points(self, points_mm: np.ndarray, estimate: str = "cycle",
                         iteration: int | None = None) -> np.ndarray:
        return self.run.transform_points(points_mm, estimate=estimate, iteration=iteration)

    def jacobian_determinant(self, iteration: int | None = None) -> Volume:
        return self.run.jacobian_determinant(iteration=iteration)

    def deformation_statistics(self, iteration: int | None, mask: np.ndarray) -> dict[str, float]:
        """``pct_folded`` / ``std_log_jac`` inside ``mask`` (fixed grid), det J evaluated at the
        mask's voxels only (the same numbers as on the whole grid, ~5x cheaper for a lung mask)."""
        grid = self.run.pair.fixed.grid
        points = grid.index_to_world(np.argwhere(np.asarray(mask) > 0)[:, ::-1].astype(np.float64))
        return deformation_statistics(self.run.jacobian_determinant_at(points, iteration))

    def uncertainty_at(self, points_mm: np.ndarray, iteration: int | None = None) -> np.ndarray:
        """Cycle uncertainty (mm) at fixed world points."""
        return self.run.point_uncertainty(points_mm, iteration=iteration)


@dataclass
class VoxelMorphRegistration:
    """A VoxelMorph result as a :class:`Registration` (one estimate; det J as a Volume)."""

    result: VoxelMorphResult
    name: str

    @property
    def iterations(self) -> list[int]:
        return self.result.iterations

    @property
    def timings(self) -> Timings:
        return Timings(encoder_seconds=float(self.result.encoder_seconds), step_seconds=float(self.result.step_seconds),
                       seconds={int(k): float(v) for k, v in self.result.seconds.items()})

    def transform_points(self, points_mm: np.ndarray, estimate: str = "cycle",
                         iteration: int | None = None) -> np.ndarray:
        return self.result.transform_points(points_mm, iteration=iteration)

    def jacobian_determinant(self, iteration: int | None = None) -> Volume:
        det = self.result.jacobian_determinant(iteration)
        return self.result.pair.fixed.with_array(det, name="det J")


@dataclass
class ElastixRegistration:
    """An elastix registration as a :class:`Registration`: recorded only at :data:`CONVERGED`."""

    transform: ElastixTransform
    name: str

    @property
    def iterations(self) -> list[int]:
        return [CONVERGED]

    @property
    def timings(self) -> Timings:
        return Timings(encoder_seconds=0.0, step_seconds=float("nan"), seconds={CONVERGED: float(self.transform.seconds)})

    def transform_points(self, points_mm: np.ndarray, estimate: str = "cycle",
                         iteration: int | None = None) -> np.ndarray:
        _check_iteration(iteration, self.iterations, f"elastix {self.transform.pair.name}")
        return self.transform.transform_points(points_mm)

    def jacobian_determinant(self, iteration: int | None = None) -> Volume:
        _check_iteration(iteration, self.iterations, f"elastix {self.transform.pair.name}")
        return self.transform.jacobian_determinant()


# ------------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class SweepConfig:
    """What a sweep passes to every method: recorded ``iterations`` (sorted counts), the
    ``regulariser``, the INR pre-alignment request ``prealign`` and ``device``, extra
    ``register_kwargs`` for :func:`reindir_nb.register`, VoxelMorph's per-pair pre-alignment
    matrices (``voxelmorph_prealign``, name -> 4x4) and elastix's settings."""

    iterations: tuple[int, ...]
    regulariser: str = "jacobian"
    prealign: Any = "auto"
    device: Any = None
    register_kwargs: Mapping[str, Any] = field(default_factory=dict)
    voxelmorph_prealign: Mapping[str, np.ndarray] | None = None
    elastix: ElastixConfig = ElastixConfig()


@dataclass
class Method:
    """One method resolved for one pair: ``method(pair, seed) -> Registration``.
    ``settings``: JSON-able description of everything but the pair and seed that determines
    the result; ``deterministic``: the seed does not matter (run once, for the first seed)."""

    label: str
    kind: str
    settings: dict[str, Any]
    deterministic: bool
    run: Callable[[Pair, int], Registration] = field(repr=False)

    def __call__(self, pair: Pair, seed: int) -> Registration:
        return self.run(pair, int(seed))


def _record_every(iterations: tuple[int, ...]) -> int:
    return reduce(math.gcd, [i for i in iterations if i > 0], 0) or 1


def _inr_settings(init: Any, pair: Pair, config: SweepConfig, identities: dict[int, Any]) -> dict[str, Any]:
    """What determines an INR cell's numbers: the init, the recorded iterations, the pre-alignment
    request, the objective and the result-determining :class:`RegisterSettings` fields."""
    given = {**_regulariser_kwarg(config), **config.register_kwargs}
    given.pop("device", None)
    objective, settings = run_configuration(**given)
    init_id = init if isinstance(init, str) else _identity(init, identities)
    return {"kind": "inr", "init": init_id, "iterations": list(config.iterations),
            **canonical({"prealign": config.prealign, "objective": objective, **settings.fingerprint(pair)})}


def _identity(model: Any, identities: dict[int, Any]) -> Any:
    key = id(model)
    if key not in identities:  # one parameter hash per model object and sweep
        identities[key] = (model, model_identity(model))
    return identities[key][1]


def _regulariser_kwarg(config: SweepConfig) -> dict[str, Any]:
    """``regulariser=`` for register, unless an ``objective=`` already carries it."""
    return {} if config.register_kwargs.get("objective") is not None else {"regulariser": config.regulariser}


def _inr_method(label: str, init: Any, pair: Pair, config: SweepConfig, identities: dict[int, Any]) -> Method:
    every = _record_every(config.iterations)
    total = max(config.iterations)
    kwargs: dict[str, Any] = {"prealign": config.prealign, **_regulariser_kwarg(config), **config.register_kwargs}
    if config.device is not None:
        kwargs["device"] = config.device
    records = total // every + 1
    if records > _DEFAULT_SNAPSHOTS:
        kwargs.setdefault("snapshot_limit", records)  # keep every recorded iteration evaluable

    def run(p: Pair, seed: int) -> Registration:
        result = _registration.register(p, init=init, iterations=total, seed=seed, record_every=every,
                                        progress=False, **kwargs)
        return InrRegistration(result, label)

    return Method(label, "inr", _inr_settings(init, pair, config, identities), False, run)


def _voxelmorph_method(label: str, model: VoxelMorph, pair: Pair, config: SweepConfig,
                       identities: dict[int, Any]) -> Method:
    given = config.voxelmorph_prealign
    pre_setting = (canonical(np.asarray(given[pair.name], dtype=np.float64)) if given is not None and pair.name in given
                   else canonical(config.prealign))

    def run(p: Pair, seed: int) -> Registration:
        if given is not None and p.name in given:
            matrix = np.asarray(given[p.name], dtype=np.float64)
        else:  # the same pre-alignment choice register() makes for this request
            kind, matrix = resolve_prealign(p, config.prealign)
            matrix = None if kind == "none" else matrix
        return VoxelMorphRegistration(model.register(p, iterations=config.iterations, prealign=matrix), label)

    settings = {"kind": "voxelmorph", "model": _identity(model, identities), "config": canonical(asdict(model.config)),
                "iterations": list(config.iterations), "prealign": pre_setting}
    return Method(label, "voxelmorph", settings, True, run)


def _elastix_method(label: str, config: SweepConfig) -> Method:
    def run(p: Pair, seed: int) -> Registration:
        return ElastixRegistration(elastix_transform(p, config.elastix), label)

    return Method(label, "elastix", {"kind": "elastix", **canonical(asdict(config.elastix))}, True, run)


def _fold_spec(spec: Mapping, label: str, pair: Pair, fold: Any) -> Any:
    if fold is None:
        raise ValueError(f"method {label!r} has per-fold models but pair {pair.name!r} has no fold "
                         "(pass folds={pair name: fold})")
    for key in (fold, str(fold)):
        if key in spec:
            return spec[key]
    try:
        return spec[int(fold)]
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"method {label!r}: no model for fold {fold!r} of pair {pair.name!r} "
                         f"(have folds {sorted(spec, key=str)})") from None


def resolve_method(label: str, spec: Any, pair: Pair, fold: Any, config: SweepConfig,
                   identities: dict[int, Any] | None = None) -> Method:
    """The :class:`Method` that ``spec`` means for ``pair`` (``fold``: the fold that held the
    pair out, for per-fold specs). ``identities`` caches model hashes across calls."""
    identities = {} if identities is None else identities
    if isinstance(spec, Mapping):
        spec = _fold_spec(spec, label, pair, fold)
    if isinstance(spec, str):
        if spec in RANDOM_INITS:
            return _inr_method(label, spec, pair, config, identities)
        if spec == "elastix":
            return _elastix_method(label, config)
        raise ValueError(f"method {label!r}: unknown string {spec!r} (use 'random', 'identity' or 'elastix')")
    if isinstance(spec, VoxelMorph):
        return _voxelmorph_method(label, spec, pair, config, identities)
    if isinstance(spec, Initialiser):
        return _inr_method(label, spec, pair, config, identities)
    if callable(spec):
        resolved = spec(pair)
        if callable(resolved) and not isinstance(resolved, (str, Initialiser, VoxelMorph)):
            raise ValueError(f"method {label!r}: the callable returned another callable for {pair.name!r}")
        return resolve_method(label, resolved, pair, fold, config, identities)
    raise ValueError(f"method {label!r}: cannot use {type(spec).__name__} as a method (expected 'random', "
                     "'elastix', an Initialiser (Reptile/REINDIR), a VoxelMorph model, {fold: ...} or a callable)")
