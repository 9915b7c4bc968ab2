"""Notebook 02 runs under papermill (smoke) and registers the real pair and a phantom."""

import json

import numpy as np

from nbrun import run_notebook


def test_notebook_02(tmp_path):
    run_notebook("02_inr_registration.ipynb", tmp_path, profile="smoke", ITERATIONS=30)
    out = tmp_path / "02_registration"
    summary = json.loads((out / "summary.json").read_text())
    real = summary["elastix-lung"]
    # the INRs register the real pair's own images: native voxels (the DIR-LAB-like 1.37 x 1.37 x 2.5 mm), not the
    # 8 mm smoke patch; its lung box only (smaller than the 256 x 256 x 94 scan, larger than the 32^3 patch)
    assert np.allclose(real["view_spacing_mm"], [1.3672, 1.3672, 2.5], atol=0.01), real["view_spacing_mm"]
    assert min(real["view_shape"]) > 64
    # the affine pre-alignment (35 mm apart) was estimated once on the coarse view and used by register
    assert real["prealign"] == "prepared" and real["initial_mean_mm"] > 34
    assert real["prealign_mean_mm"] < 9.0  # affine alone at 8 mm voxels: ~7 mm
    # measured at smoke: 35.3 -> 7.3 (affine) -> 3.1 mm (30 ccIDIR steps); elastix affine + B-spline: 7.1 mm
    assert real["final_mean_mm"] < min(5.0, real["prealign_mean_mm"]) and real["iterations"] == 30 and real["seconds"] > 0
    phantom = next(v for k, v in summary.items() if k.startswith("phantom-"))
    assert phantom["prealign"] == "none" and phantom["prealign_mean_mm"] == phantom["initial_mean_mm"]
    assert phantom["final_mean_mm"] < phantom["initial_mean_mm"] / 2  # measured 9.7 -> 2.9 mm
    assert phantom["folding_fraction"] < 0.01
    regs = summary["regularisers"]
    assert regs["jacobian"]["std_log_jacobian"] < regs["none"]["std_log_jacobian"]
    assert (out / "tre_curves.png").stat().st_size > 1000
