"""Command line for people who use elastix or ANTs: ``reindir-nb register FIXED MOVING --out DIR``.

One subcommand so far, ``register`` (ccIDIR from a random start, or from a Reptile template /
REINDIR model saved by :mod:`reindir_nb.meta`). It reads the images, masks and landmark files with
the kit's readers (:func:`reindir_nb.data.datasets.load_generic_pair`), prepares the two views of
the pair (:func:`reindir_nb.data.preprocess.prepare_fine`: the images at their own resolution, or
``--spacing``, cropped to the lung box, for the INRs; the profile's patch for the encoder, whose
INR frame the networks use; global pre-alignment), registers it (:func:`reindir_nb.register`) and writes, atomically (all files or
none), into ``--out``:

* ``displacement_itk.nii.gz``  ITK displacement field, fixed -> moving, world mm (LPS), on the output grid
* ``displacement_learn2reg.nii.gz``  Learn2Reg displacement (voxels), on FIXED's own voxel grid
* ``warped_moving.nii.gz``  MOVING (its own intensities) resampled onto FIXED's grid through the map
* ``jacobian_determinant.nii.gz``, ``uncertainty_mm.nii.gz``, ``registration_mask.nii.gz``  maps on the output grid
  (isotropic ``--output-spacing`` over the fixed lung box)
* ``predicted_landmarks.txt`` (elastix point set, with landmarks), ``history.csv``, ``report.json``

Conventions, every option and the exit codes: ``docs/cli.md``. Exit codes: 0 done, 2 bad input
(one line ``reindir-nb: error: ...`` on stderr naming the argument or file), 3 outputs written but
the optimisation diverged (``report.json`` says so), 130 interrupted. Set ``REINDIR_NB_DEBUG=1`` to
see the traceback of an input error.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["main", "build_parser", "OUTPUT_FORMAT", "OUTPUT_FILES"]

PROG = "reindir-nb"
OUTPUT_FORMAT = "reindir_nb registration folder 1"  # report.json["format"]: marks a folder the kit wrote
OUTPUT_FILES = {
    "displacement_itk": "displacement_itk.nii.gz",
    "displacement_learn2reg": "displacement_learn2reg.nii.gz",
    "warped_moving": "warped_moving.nii.gz",
    "jacobian_determinant": "jacobian_determinant.nii.gz",
    "uncertainty": "uncertainty_mm.nii.gz",
    "registration_mask": "registration_mask.nii.gz",
    "predicted_landmarks": "predicted_landmarks.txt",
    "history": "history.csv",
}
REPORT = "report.json"


class UserError(Exception):
    """Bad input found by the command line itself (the message names the argument or file)."""


# ------------------------------------------------------------------------------------ parser
def _parsed(text: str, convert, kind: str, ok, need: str):
    """``convert(text)`` for argparse, an ArgumentTypeError saying what was expected otherwise."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    return _parsed(text, int, "a whole number", lambda v: v >= 0, ">= 0")


def _positive_mm(text: str) -> float:
    return _parsed(text, float, "a number of mm", lambda v: math.isfinite(v) and v > 0, "a positive number of mm")


def _positive_int(text: str) -> int:
    return _parsed(text, int, "a whole number", lambda v: v >= 1, ">= 1")


def _finite(text: str) -> float:
    return _parsed(text, float, "a number", math.isfinite, "finite")


def build_parser() -> argparse.ArgumentParser:
    """The ``reindir-nb`` argument parser (one subparser per command)."""
    from .inr.convergence import Convergence

    parser = argparse.ArgumentParser(
        prog=PROG, description="INR deformable registration of lung CT (ccIDIR, Reptile, REINDIR).",
        epilog="Conventions and output files: docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    reg = commands.add_parser(
        "register", help="register MOVING onto FIXED (fixed -> moving map, as elastix/ANTs)",
        description="Register MOVING onto FIXED: the map phi sends fixed world points to moving world points "
                    "(backward warping, as elastix and ANTs); the warped moving image is moving(phi(x)).")
    reg.add_argument("fixed", metavar="FIXED", help="fixed image (any SimpleITK format: .nii.gz, .mha, .nrrd ...), CT in HU")
    reg.add_argument("moving", metavar="MOVING", help="moving image, CT in HU")
    reg.add_argument("--out", required=True, metavar="DIR",
                     help="output folder (created; a non-empty folder is only replaced when reindir-nb wrote it)")
    reg.add_argument("--fixed-mask", metavar="M", help="lung mask of FIXED (nonzero = lung; default: threshold lung mask)")
    reg.add_argument("--moving-mask", metavar="M", help="lung mask of MOVING")
    reg.add_argument("--resample-masks", action="store_true",
                     help="resample a mask that is not on its image's grid (world space, nearest) instead of refusing it")
    reg.add_argument("--fixed-landmarks", metavar="F", help="landmarks in FIXED (csv/txt or elastix point set)")
    reg.add_argument("--moving-landmarks", metavar="F", help="corresponding landmarks in MOVING (same order)")
    reg.add_argument("--units", choices=("mm", "voxel"),
                     help="units of the landmark files: world mm, or voxel indices (x y z, 0-based unless --one-based)")
    reg.add_argument("--one-based", action="store_true", help="voxel landmark indices start at 1 (DIR-LAB files)")
    reg.add_argument("--hu-offset", type=_finite, default=0.0, metavar="HU",
                     help="subtracted from both images (1024 for unsigned exports storing HU + 1024; default 0)")
    reg.add_argument("--init", default="identity", metavar="identity|random|MODEL.pt",
                     help="'identity' (ccIDIR with random hidden layers and a zero output layer: starts at the "
                          "identity map, faster to a given TRE), 'random' (the published Sitzmann start) or a "
                          "Reptile template / REINDIR model saved by reindir_nb (default identity)")
    reg.add_argument("--iterations", type=_nonnegative_int, metavar="N",
                     help="the most optimisation steps (default: the profile's max_iterations, demo 300; 0 = the "
                          "initialisation only); the run stops before when the map has converged (--stop-tolerance)")
    reg.add_argument("--stop-tolerance", type=_positive_mm, default=Convergence.tolerance_mm, metavar="MM",
                     help="the convergence stop: every 5 steps the map change (95th percentile of how far probe "
                          f"points in the fixed lung moved over the last {Convergence.window} steps) is measured; "
                          f"the run stops when it has not fallen {100 * Convergence.min_improvement:g} %% below its "
                          f"best for {Convergence.patience} checks, or at once below MM "
                          f"(default {Convergence.tolerance_mm:g}); never before step {Convergence.min_steps}")
    reg.add_argument("--no-stop", action="store_true", help="run every one of --iterations steps (no convergence stop)")
    reg.add_argument("--record-every", type=_positive_int, metavar="N",
                     help="steps between the rows of history.csv (default: the profile's)")
    reg.add_argument("--spacing", type=_positive_mm, metavar="MM",
                     help="isotropic spacing of the images the INRs register, in mm (default: the images' own "
                          "resolution); the REINDIR encoder always sees the profile's patch")
    reg.add_argument("--output-spacing", type=_positive_mm, metavar="MM",
                     help="isotropic spacing of the written ITK field, det J, uncertainty and mask maps over the "
                          "fixed lung box (default: the profile's: smoke 8, demo 4, paper 1)")
    reg.add_argument("--prealign", choices=("auto", "affine", "rigid", "none"), default="auto",
                     help="global pre-alignment before the INRs: auto = affine when the lung centroids are more "
                          "than 15 mm apart (default auto)")
    reg.add_argument("--profile", choices=("smoke", "demo", "paper"), default="demo",
                     help="run profile: spacing, points per step, default iterations (default demo)")
    reg.add_argument("--estimate", choices=("cycle", "forward"), default="cycle",
                     help="point estimate written to the fields: cycle = ccIDIR's inference (midpoint of the forward "
                          "map and the inverted backward one), forward = the forward network only (default cycle)")
    reg.add_argument("--seed", type=_nonnegative_int, default=0, metavar="S", help="random seed (default 0)")
    reg.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto = cuda when available, else cpu (default auto)")
    reg.add_argument("--outputs", nargs="+", choices=tuple(OUTPUT_FILES), default=list(OUTPUT_FILES), metavar="NAME",
                     help="the files to write (report.json always): " + ", ".join(OUTPUT_FILES) + " (default: all)")
    reg.add_argument("--quiet", action="store_true", help="no progress bar, no messages (errors only)")
    reg.set_defaults(handler=_register_command)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


# ----------------------------------------------------------------------------------- helpers
def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


@contextmanager
def _short_warnings(quiet: bool) -> Iterator[None]:
    """Show the kit's warnings as one line ``reindir-nb: warning: ...`` (none with ``quiet``)."""
    def show(message, category, filename, lineno, file=None, line=None):
        if not quiet:
            print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _grid_info(grid) -> dict:
    return {"shape_xyz": list(grid.shape[::-1]), "spacing_mm": list(grid.spacing), "origin_mm": list(grid.origin),
            "direction": np.asarray(grid.direction).ravel().tolist()}


def _check_inputs(args: argparse.Namespace) -> None:
    """Argument combinations and input files, before anything slow (UserError / FileNotFoundError)."""
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        given, missing = (("--fixed-landmarks", "--moving-landmarks") if args.moving_landmarks is None
                          else ("--moving-landmarks", "--fixed-landmarks"))
        raise UserError(f"{given} given without {missing}: landmarks need a fixed and a moving file")
    if args.fixed_landmarks is not None and args.units is None:
        raise UserError("--units is required with landmark files: say --units mm (world mm) or --units voxel "
                        "(voxel indices); it is never guessed")
    if args.units is not None and args.fixed_landmarks is None:
        raise UserError("--units given without --fixed-landmarks/--moving-landmarks")
    if args.one_based and args.units != "voxel":
        raise UserError("--one-based applies to voxel landmark files only (--units voxel)")
    from .inr.registration import RANDOM_INITS

    files = [("FIXED", args.fixed), ("MOVING", args.moving), ("--fixed-mask", args.fixed_mask),
             ("--moving-mask", args.moving_mask), ("--fixed-landmarks", args.fixed_landmarks),
             ("--moving-landmarks", args.moving_landmarks)]
    if args.init not in RANDOM_INITS:
        files.append(("--init", args.init))
    for what, name in files:
        if name is None:
            continue
        path = Path(name)
        if path.is_dir():
            raise UserError(f"{what} {path}: is a folder, not a file")
        if not path.is_file():
            raise UserError(f"{what} {path}: file not found")


def _check_out(folder: Path) -> None:
    """FileExistsError naming ``folder`` unless it may be (re)written: absent, empty, or an output
    folder of ``reindir-nb register`` that holds only its own files (its report.json lists them:
    :func:`reindir_nb.core.files.check_replaceable`). Then probe that its parent is writable."""
    from .core.files import check_replaceable, ensure_writable

    if folder.name in ("", ".", ".."):
        raise UserError(f"--out {folder}: give a folder name")
    check_replaceable(folder, REPORT, "output folder", format=OUTPUT_FORMAT, shown=f"--out {folder}")
    ensure_writable(folder.resolve().parent, f"the output folder {folder.name}")


def _with_lung_masks(pair, args: argparse.Namespace):
    """The pair with the threshold lung mask (:func:`reindir_nb.data.preprocess.lung_mask`) of each
    side that has none."""
    from .data.preprocess import lung_mask

    changes = {}
    for side, option in (("fixed", "--fixed-mask"), ("moving", "--moving-mask")):
        if getattr(pair, f"{side}_mask") is None:
            _say(args, f"computing the lung mask of {side.upper()} (give {option} to skip)")
            try:
                changes[f"{side}_mask"] = lung_mask(getattr(pair, side))
            except ValueError as err:
                raise UserError(f"{err}; give {option}") from None
    return pair.replace(**changes) if changes else pair


class _FieldMap:
    """The written displacement field as a map of world points (what ITK does with it): trilinear
    interpolation of the mm field; outside the field's grid, the global pre-alignment alone.
    Has the ``pair`` and ``transform_points`` that :func:`reindir_nb.inr.export.learn2reg_displacement`
    reads, with ``pair`` = the input images (so Learn2Reg indices are those of FIXED and MOVING)."""

    def __init__(self, displacement, prealign_matrix: np.ndarray, pair) -> None:
        self.displacement, self.prealign_matrix, self.pair = displacement, prealign_matrix, pair

    def transform_points(self, points_mm: np.ndarray, estimate: str | None = None) -> np.ndarray:
        from .core.geometry import apply_affine

        pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        disp = self.displacement.sample_world(pts, order=1, cval=np.nan)
        outside = ~np.all(np.isfinite(disp), axis=1)
        moved = pts + np.where(outside[:, None], 0.0, disp)
        if outside.any():
            moved[outside] = apply_affine(self.prealign_matrix, pts[outside])
        return moved


def _warped_moving(pair, learn2reg: np.ndarray):
    """MOVING resampled onto FIXED's grid (trilinear; outside MOVING: its minimum) through the
    Learn2Reg displacement ``(X, Y, Z, 3)``: fixed voxel (i, j, k) -> moving index (i, j, k) + disp."""
    from scipy.ndimage import map_coordinates

    moving = pair.moving
    index = np.indices(learn2reg.shape[:3], dtype=np.float32)  # (3, X, Y, Z): i, j, k
    coords = [(index[c] + learn2reg[..., c]).transpose(2, 1, 0) for c in (2, 1, 0)]  # (z, y, x) rows, (Z, Y, X)
    values = map_coordinates(moving.array.astype(np.float32), coords, order=1, mode="constant",
                             cval=float(moving.array.min()))
    return pair.fixed.with_array(values, name=f"warped {moving.name}")


# ----------------------------------------------------------------------------------- register
def _tre_block(pair, run, field_map, estimate: str) -> dict:
    """TRE statistics (mm) before, after pre-alignment, after registration (cycle and forward
    estimates) and through the written ITK field; per-landmark errors of the written estimate."""
    from .core.geometry import apply_affine
    from .core.metrics import landmark_errors, target_registration_error

    fl, ml = pair.fixed_landmarks, pair.moving_landmarks
    predicted = {est: run.transform_points(fl, est) for est in ("cycle", "forward")}
    return {
        "count": int(len(fl)),
        "initial": target_registration_error(fl, ml),
        "after_prealign": target_registration_error(apply_affine(run.prealign_matrix, fl), ml),
        "final_cycle": target_registration_error(predicted["cycle"], ml),
        "final_forward": target_registration_error(predicted["forward"], ml),
        "final_itk_field": target_registration_error(field_map.transform_points(fl), ml),
        "estimate_written": estimate,
        "per_landmark_mm": landmark_errors(predicted[estimate], ml).tolist(),
    }, predicted[estimate]


def _write_outputs(tmp: Path, args: argparse.Namespace, pair, prepared, run, grid) -> dict:
    """The output files ``args.outputs`` into the (temporary) folder ``tmp``; returns the report's
    file and result parts. The networks are evaluated once per output-grid point
    (:meth:`~reindir_nb.inr.registration.RegistrationRun.sample`: the map, det J and the
    uncertainty together); the Learn2Reg field and the warped image follow from the ITK field
    by one vectorised resample each."""
    from .core.metrics import deformation_statistics
    from .core.files import atomic_path
    from .core.volume import Volume
    from .data.images import write_image
    from .data.points import write_elastix_points
    from .data.preprocess import resample_to_grid
    from .inr.export import learn2reg_from_field, save_learn2reg_array

    wanted = set(args.outputs)
    files = {}

    def image(key: str, volume, dtype) -> None:
        if key in wanted:
            write_image(volume.with_array(np.asarray(volume.array, dtype=dtype)), tmp / OUTPUT_FILES[key])
            files[key] = OUTPUT_FILES[key]

    _say(args, f"evaluating the map on the output grid ({grid.spacing[0]:g} mm over the fixed lung box)")
    points = grid.voxel_centres_world().reshape(-1, 3)
    sample = run.sample(points, backward=args.estimate == "cycle" or "uncertainty" in wanted, det=True)
    disp = Volume((sample.moved(args.estimate) - points).reshape(*grid.shape, 3), grid, "displacement (mm)")
    image("displacement_itk", disp, np.float64)  # what SimpleITK's DisplacementFieldTransform takes as it is
    det = Volume(sample.det.reshape(grid.shape), grid, "det J")
    image("jacobian_determinant", det, np.float32)
    if "uncertainty" in wanted:
        image("uncertainty", Volume(sample.uncertainty_mm.reshape(grid.shape), grid, "cycle uncertainty (mm)"),
              np.float32)
    mask = resample_to_grid(prepared.fixed_mask.with_array(prepared.fixed_mask.array.astype(np.float32)), grid,
                            order=1, default=0.0)
    mask = mask.with_array(mask.array >= 0.5)
    image("registration_mask", mask, np.uint8)
    stats = deformation_statistics(det.array, mask.array)
    deformation = {"folding_fraction": stats["pct_folded"] / 100.0, "pct_folded": stats["pct_folded"],
                   "std_log_jacobian": stats["std_log_jac"], "where": "inside the fixed lung mask, output grid"}

    if wanted & {"displacement_learn2reg", "warped_moving"}:
        _say(args, "the Learn2Reg displacement and the warped moving image on FIXED's grid")
        learn2reg = learn2reg_from_field(disp, run.prealign_matrix, pair.fixed.grid, pair.moving.grid)
        if "displacement_learn2reg" in wanted:
            save_learn2reg_array(learn2reg, pair.fixed.grid, tmp / OUTPUT_FILES["displacement_learn2reg"],
                                 compression_level=1)
            files["displacement_learn2reg"] = OUTPUT_FILES["displacement_learn2reg"]
        image("warped_moving", _warped_moving(pair, learn2reg), np.float32)

    landmarks = None
    if pair.has_landmarks:
        landmarks, predicted = _tre_block(pair, run, _FieldMap(disp, run.prealign_matrix, pair), args.estimate)
        if "predicted_landmarks" in wanted:
            write_elastix_points(predicted, tmp / OUTPUT_FILES["predicted_landmarks"])
            files["predicted_landmarks"] = OUTPUT_FILES["predicted_landmarks"]
    if "history" in wanted:
        with atomic_path(tmp / OUTPUT_FILES["history"]) as path:
            run.history.to_csv(path, index=False)
        files["history"] = OUTPUT_FILES["history"]
    return {"files": files, "deformation": deformation, "landmarks": landmarks,
            "registration_grid": _grid_info(disp.grid)}


def _register_command(args: argparse.Namespace) -> int:
    """``reindir-nb register``: read, prepare, register, write (see the module docstring)."""
    t_start = time.perf_counter()
    _check_inputs(args)
    out = Path(args.out)
    _check_out(out)

    import torch

    import reindir_nb as rn
    from .core.files import atomic_folder, write_json
    from .core.profiles import get_profile
    from .data.datasets import load_generic_pair
    from .data.preprocess import isotropic_grid, prepare_fine
    from .inr.convergence import Convergence
    from .inr.registration import RANDOM_INITS, RegisterSettings

    timings: dict[str, float] = {}
    try:
        device = rn.get_device(None if args.device == "auto" else args.device)
    except RuntimeError as err:
        raise UserError(f"--device {args.device}: {err}") from None
    init: Any = args.init
    if args.init not in RANDOM_INITS:
        try:
            init = rn.meta.load(args.init)
        except (ValueError, FileNotFoundError) as err:
            raise UserError(f"--init: {err}") from None

    t = time.perf_counter()
    _say(args, f"reading {args.fixed} and {args.moving}")
    pair = load_generic_pair(
        args.fixed, args.moving, fixed_landmarks=args.fixed_landmarks, moving_landmarks=args.moving_landmarks,
        units=args.units, fixed_mask=args.fixed_mask, moving_mask=args.moving_mask, one_based=args.one_based,
        hu_offset=args.hu_offset, resample_masks=args.resample_masks)
    timings["read_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    pair = _with_lung_masks(pair, args)
    timings["lung_mask_seconds"] = time.perf_counter() - t

    profile = get_profile(args.profile)
    t = time.perf_counter()
    _say(args, f"preparing: the INRs' view at {'native resolution' if args.spacing is None else f'{args.spacing:g} mm'}, "
               f"the encoder's patch {profile.patch_size} (z, y, x) at {profile.spacing_mm:g} mm, "
               f"pre-alignment {args.prealign}")
    try:
        prepared = prepare_fine(pair, profile, spacing_mm=args.spacing,
                                prealign=None if args.prealign == "none" else args.prealign)
    except ValueError as err:
        raise UserError(str(err)) from None
    timings["prepare_seconds"] = time.perf_counter() - t  # includes the pre-alignment estimate
    matrix = prepared.preparation.prealign_matrix
    out_grid = isotropic_grid(prepared.fixed.grid, args.output_spacing or profile.spacing_mm)
    prealign_kind = "none" if matrix is None else ("affine" if args.prealign == "auto" else args.prealign)

    t = time.perf_counter()
    stop = None if args.no_stop else Convergence(tolerance_mm=args.stop_tolerance)
    iterations = profile.max_iterations if args.iterations is None else args.iterations
    run = rn.register(prepared, init=init, iterations=iterations, seed=args.seed, device=device,
                      prealign="none" if matrix is None else np.asarray(matrix, dtype=np.float64),
                      settings=RegisterSettings(profile=profile.name, stop=stop, record_every=args.record_every),
                      progress=not args.quiet)
    if device.type == "cuda":
        torch.cuda.synchronize()
    timings["register_seconds"] = time.perf_counter() - t
    timings["optimisation_seconds"] = float(run.history["seconds"].iloc[-1])  # steps + encoder, as the history
    timings["encoder_seconds"] = float(run.encoder_seconds)

    t = time.perf_counter()
    with atomic_folder(out, marker=REPORT, what="output folder", format=OUTPUT_FORMAT, shown=f"--out {out}") as tmp:
        results = _write_outputs(tmp, args, pair, prepared, run, out_grid)
        timings["outputs_seconds"] = time.perf_counter() - t
        timings["total_seconds"] = time.perf_counter() - t_start
        report = {
            "format": OUTPUT_FORMAT,
            "reindir_nb_version": _version(),
            "torch_version": torch.__version__,
            "command": [PROG, *args.argv],
            "inputs": {k: (str(Path(v).resolve()) if isinstance(v, str) else v) for k, v in (
                ("fixed", args.fixed), ("moving", args.moving), ("fixed_mask", args.fixed_mask),
                ("moving_mask", args.moving_mask), ("fixed_landmarks", args.fixed_landmarks),
                ("moving_landmarks", args.moving_landmarks), ("init", None if args.init in RANDOM_INITS else args.init))},
            "options": {k: v for k, v in vars(args).items() if k not in ("handler", "argv")},
            "device": str(device),
            "cpu_threads": torch.get_num_threads(),
            "profile": {"name": profile.name, "spacing_mm": profile.spacing_mm, "patch_size_zyx": profile.patch_size,
                        "points_per_step": profile.points_per_step, "record_every": profile.record_every},
            "views": {"inr_fixed": _grid_info(prepared.fixed.grid), "inr_moving": _grid_info(prepared.moving.grid),
                      "encoder_fixed": _grid_info(prepared.coarse.fixed.grid),
                      "note": "the INRs register the inr_* images in the encoder patch's INR frame"},
            "lung_masks": {"fixed": "given" if args.fixed_mask else "threshold lung mask",
                           "moving": "given" if args.moving_mask else "threshold lung mask"},
            "prealign": {"requested": args.prealign, "used": prealign_kind,
                         "matrix_fixed_to_moving_mm": matrix},
            "iterations": int(run.iterations),
            "run_settings": run.settings,
            "diverged": bool(run.diverged),
            "timings": timings,
            "fixed_grid": _grid_info(pair.fixed.grid),
            "moving_grid": _grid_info(pair.moving.grid),
            **results,
        }
        write_json(tmp / REPORT, report)
    _summary(args, report)
    return 3 if run.diverged else 0


def _summary(args: argparse.Namespace, report: dict) -> None:
    if args.quiet:
        return
    lm = report["landmarks"]
    tre = (f"TRE {lm['initial']['mean']:.2f} -> {lm['final_cycle']['mean']:.2f} mm (cycle), "
           f"{lm['final_forward']['mean']:.2f} mm (forward); " if lm else "")
    stopped = report["run_settings"]["stopped"]
    why = {"iterations": "the --iterations maximum", "diverged": "diverged"}.get(stopped["reason"])
    if why is None:
        rule = stopped["rule"]
        why = (f"converged (map change {stopped['map_change_mm']:.3f} mm over {rule['window']} steps, best "
               f"{stopped['best_map_change_mm']:.3f} mm, no {100 * rule['min_improvement']:g} % improvement "
               f"in {rule['patience'] * rule['check_every']} steps)")
    print(f"{PROG}: {tre}folding {report['deformation']['pct_folded']:.3f} %; stopped after {report['iterations']} "
          f"steps: {why}; {report['timings']['total_seconds']:.1f} s in all; outputs in {args.out}"
          + (" (DIVERGED: see report.json)" if report["diverged"] else ""))


# --------------------------------------------------------------------------------------- main
_USER_ERRORS = (UserError, ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                FileExistsError, PermissionError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``reindir-nb`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help / --version (0) or a bad argument (2, message printed)
        return int(exit_.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _short_warnings(getattr(args, "quiet", False)):
            return args.handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written to the output folder", file=sys.stderr)
        return 130
    except _USER_ERRORS as err:
        if os.environ.get("REINDIR_NB_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
