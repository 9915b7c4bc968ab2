"""Notebook 03 runs under papermill (smoke): trains both models, writes checkpoints and a first look."""

import json

import pandas as pd
import torch

import reindir_nb as rn
from nbrun import run_notebook


def test_notebook_03(tmp_path):
    run_notebook("03_training.ipynb", tmp_path, profile="smoke", OUTER_STEPS=2, EVAL_SEEDS=1, EVAL_ITERATIONS=5)
    summary = json.loads((tmp_path / "03_training" / "summary.json").read_text())
    # REINDIR warm-started from the Reptile template (the CPU recipe): 2/3 of the outer steps
    assert summary["outer_steps"] == {"Reptile": 2, "REINDIR": 1} and len(summary["held_out"]) == 3
    assert summary["reindir_from_reptile"] is True
    assert {"reptile.pt", "reindir.pt"} <= set(summary["checkpoints"])
    model = rn.meta.load(tmp_path / "checkpoints" / "reindir.pt")
    assert isinstance(model, rn.meta.ReindirModel) and model.info["start"]["outer_steps"] == 2
    log = pd.read_csv(tmp_path / "03_training" / "reindir_log.csv")
    assert list(log["step"]) == [0]
    # the smoke/demo recipe: the encoder alone on the frozen Reptile template, both directions
    assert model.encoder_input == "pair+difference" and model.info["settings"]["inner_steps"] == "0"
    assert model.info["settings"]["encoder_steps"] == "3" and model.info["settings"]["swap_probability"] == "0.5"
    template = rn.meta.load(tmp_path / "checkpoints" / "reptile.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.template.forward, template.forward))
    first = pd.read_csv(tmp_path / "03_training" / "first_look.csv")
    assert set(first["method"]) == {"ccIDIR", "Reptile", "REINDIR"} and set(first["iteration"]) == {0, 5}
    assert (first["tre_mean_mm"] > 0).all()
    assert (tmp_path / "03_training" / "zero_shot_field.png").is_file()
