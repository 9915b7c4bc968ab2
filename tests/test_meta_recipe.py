"""The recipes (one per model and profile) and the demo REINDIR recipe's levers: direction swapping
(``swap_direction``, ``swap_probability``), encoder-only training on frozen templates
(``inner_steps=0``), several zero-shot encoder steps per task (``encoder_steps``), the encoder's
input channels (``encoder_input``) and its input size; the train CLI and notebook 03 train the
same recipe."""

import json

import numpy as np
import pytest
import torch

import reindir_nb as rn
from reindir_nb.data.preprocess import swap_direction
from reindir_nb.meta import training as meta
from reindir_nb.meta.encoder import DIFFERENCE_GAIN, encoder_channels
from reindir_nb.inr.objective import Problem
from reindir_nb.meta.trainer import Trainer


@pytest.fixture(scope="module")
def cohorts():
    return {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile="smoke"), "smoke") for i in range(2)]
            for s in ("dirlab", "nlst")}


@pytest.fixture(scope="module")
def template(cohorts):
    return rn.meta.train_reptile(cohorts, "smoke", progress=False, outer_steps=2)


def _trainer(kind, cohorts, start=None, encoder_input="pair", **changes):
    """A smoke-profile trainer (REINDIR: the from-scratch recipe, its encoder reading ``encoder_input``)."""
    if kind == "reindir":
        recipe = rn.meta.recipe(kind, "smoke", warm_start=False, encoder_input=encoder_input, **changes)
    else:
        recipe = rn.meta.recipe(kind, "smoke", **changes)
    return Trainer(recipe, cohorts, 0, torch.device("cpu"), start)


def test_swap_direction_swaps_images_landmarks_and_back(cohorts):
    pair = cohorts["dirlab"][0]
    swapped = swap_direction(pair)
    assert swapped.fixed is pair.moving and swapped.moving is pair.fixed
    assert swapped.fixed_mask is pair.moving_mask and swapped.moving_mask is pair.fixed_mask
    np.testing.assert_array_equal(swapped.fixed_landmarks, pair.moving_landmarks)
    np.testing.assert_array_equal(swapped.moving_landmarks, pair.fixed_landmarks)
    np.testing.assert_allclose(swapped.initial_distances(), pair.initial_distances())
    assert swapped.meta["swapped"] and swapped.ground_truth is None and "motion" not in swapped.meta
    back = swap_direction(swapped)
    assert back.fixed is pair.fixed and not back.meta["swapped"]
    np.testing.assert_array_equal(back.fixed_landmarks, pair.fixed_landmarks)


def test_swap_direction_inverts_a_recorded_prealignment(cohorts):
    from dataclasses import replace

    pair = cohorts["nlst"][0]
    shift = np.eye(4)
    shift[:3, 3] = (4.0, -2.0, 7.0)
    moved = pair.with_preparation(replace(pair.preparation, prealign_matrix=shift))
    back = swap_direction(moved).preparation.prealign_matrix
    np.testing.assert_allclose(back[:3, 3], (-4.0, 2.0, -7.0))
    np.testing.assert_allclose(swap_direction(swap_direction(moved)).preparation.prealign_matrix, shift)


def test_swapped_registration_is_measured_against_the_swapped_landmarks(cohorts):
    """TRE of a swapped pair at iteration 0 (identity) is the same initial distance, and the
    forward network of the swapped pair must move the other way: a template fitted to the pair
    as given starts worse on the swapped pair than the identity does."""
    pair = cohorts["dirlab"][0]
    fitted = rn.register(pair, iterations=40, seed=0, prealign="none", progress=False)
    template = meta.ReptileTemplate(fitted.forward, fitted.backward, fitted.siren_config)
    as_given = rn.register(pair, init=template, iterations=0, prealign="none", progress=False, safe_start=False)
    swapped = rn.register(swap_direction(pair), init=template, iterations=0, prealign="none", progress=False,
                          safe_start=False)
    initial = pair.initial_distances().mean()
    assert as_given.history["tre_mean_mm"].iloc[0] < 0.6 * initial
    assert swapped.history["tre_mean_mm"].iloc[0] > initial


def test_swap_probability_swaps_that_share_of_tasks(cohorts, monkeypatch):
    seen = []
    original = Problem.from_pair

    def spy(pair, **kw):
        seen.append(bool(pair.meta.get("swapped", False)))
        return original(pair, **kw)

    monkeypatch.setattr(Problem, "from_pair", staticmethod(spy))
    for p, expected in ((0.0, 0.0), (1.0, 1.0)):
        seen.clear()
        trainer = _trainer("reptile", cohorts, swap_probability=p, inner_steps=1, inner_points=64)
        for _ in range(2):
            trainer.outer_step()
        assert len(seen) == 4 and np.mean(seen) == expected
    seen.clear()
    trainer = _trainer("reptile", cohorts, swap_probability=0.5, inner_steps=1, inner_points=64)
    for _ in range(20):
        trainer.outer_step()
    assert 0.2 < np.mean(seen) < 0.8


def test_swap_probability_zero_draws_nothing_extra(cohorts):
    """Probability 0 keeps the runs of the paper recipe as they were: the task's generator draws the
    scale factor and nothing else."""
    trainer = _trainer("reptile", cohorts, swap_probability=0.0)
    trainer._seed_task(0)
    reference = np.random.default_rng(trainer.rng.bit_generator.seed_seq)
    trainer._problem(cohorts["dirlab"][0])
    reference.uniform(*trainer.settings.scale_range)
    assert trainer.rng.bit_generator.state == reference.bit_generator.state


def test_encoder_only_training_keeps_templates_and_lowers_the_zero_shot_loss(cohorts, template):
    trainer = _trainer("reindir", cohorts, start=template, inner_steps=0, encoder_steps=3, outer_steps=8,
                       warmup_steps=1, encoder_lr=1e-3, scale_augment=False)
    calls = []
    step = trainer.zero_shot_step

    def spy(problem, step_now=True):
        calls.append(step(problem, step_now))
        return calls[-1]

    trainer.zero_shot_step = spy
    before = [p.detach().clone() for p in trainer.model.encoder.parameters()]
    for _ in range(8):
        trainer.outer_step()
    assert len(calls) == 8 * 2 * 3  # outer steps x tasks x encoder steps
    assert all(torch.equal(a, b) for a, b in zip(trainer.template.forward, template.forward))
    assert all(torch.equal(a, b) for a, b in zip(trainer.template.backward, template.backward))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.encoder.parameters()))
    first, last = np.mean(calls[:6]), np.mean(calls[-6:])
    assert last < first, (first, last)


def test_encoder_steps_add_zero_shot_updates_to_the_joint_loop(cohorts, template):
    trainer = _trainer("reindir", cohorts, start=template, encoder_steps=3, eps=0.1)
    calls = []
    step = trainer.zero_shot_step
    trainer.zero_shot_step = lambda problem, step_now=True: calls.append(1) or step(problem, step_now)
    trainer.outer_step()
    assert len(calls) == 2 * 2  # the third update of each task comes from the first inner step


def test_recipe_settings_are_checked():
    with pytest.raises(ValueError, match="swap_probability"):
        meta.TrainSettings.for_profile("smoke", swap_probability=1.5)
    with pytest.raises(ValueError, match="encoder_loss_at='template'"):
        meta.TrainSettings.for_profile("smoke", inner_steps=0, encoder_loss_at="adapted")
    with pytest.raises(ValueError, match="encoder_steps"):
        meta.TrainSettings.for_profile("smoke", encoder_steps=0)


def test_reptile_refuses_no_inner_steps(cohorts):
    with pytest.raises(ValueError, match="Reptile needs inner_steps"):
        rn.meta.train_reptile(cohorts, "smoke", progress=False, inner_steps=0)


def test_difference_input_channels_by_hand():
    fixed = torch.rand(1, 1, 4, 4, 4)
    moving = torch.rand(1, 1, 4, 4, 4)
    x = encoder_channels(fixed, moving, "pair+difference")
    mean = fixed.mean()
    torch.testing.assert_close(x[:, 0], fixed[:, 0] - mean)
    torch.testing.assert_close(x[:, 1], moving[:, 0] - mean)
    torch.testing.assert_close(x[:, 2], DIFFERENCE_GAIN * (fixed[:, 0] - moving[:, 0]))
    torch.testing.assert_close(encoder_channels(fixed, moving), torch.cat([fixed, moving], 1))
    with pytest.raises(ValueError, match="encoder input"):
        encoder_channels(fixed, moving, "difference")


def test_encoder_input_is_saved_loaded_and_fingerprinted(tmp_path, cohorts, template):
    model = rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=2, inner_steps=0,
                                  encoder_input="pair+difference", checkpoint=tmp_path / "r.ckpt")
    assert model.encoder.in_channels == 3
    assert model.info["fingerprint"]["architecture.encoder_input"] == "'pair+difference'"
    loaded = rn.meta.load(model.save(tmp_path / "r.pt"))
    assert loaded.encoder_input == "pair+difference"
    problem = Problem.from_pair(cohorts["nlst"][1])
    for a, b in zip(model.initial_params(problem)[0], loaded.initial_params(problem)[0]):
        torch.testing.assert_close(a, b)
    retired = {**model.state(), "output_shift": True}  # a file from the retired output-shift experiment
    torch.save(retired, tmp_path / "retired.pt")
    with pytest.raises(ValueError, match="retired.pt.*output-shift"):
        rn.meta.load(tmp_path / "retired.pt")
    torch.save({**model.state(), "encoder_input": "matched+difference"}, tmp_path / "matched.pt")
    with pytest.raises(ValueError, match="matched.pt.*encoder input"):
        rn.meta.load(tmp_path / "matched.pt")
    with pytest.raises(ValueError, match="encoder_input"):  # the checkpoint is not resumed for another input
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=3, inner_steps=0,
                              encoder_input="pair", checkpoint=tmp_path / "r.ckpt")
    with pytest.raises(ValueError, match="encoder_input must be one of"):
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=1,
                              encoder_input="difference")


def test_profile_recipes():
    demo = rn.meta.recipe("reindir", "demo")
    assert demo.warm_start and demo.architecture == rn.meta.Architecture(6, 1025, "pair+difference", (32, 32, 32))
    s = demo.settings
    assert (s.outer_steps, s.inner_steps, s.encoder_steps, s.tasks_per_set, s.cycles) == (100, 0, 1, 3, 1)
    assert (s.encoder_loss_at, s.swap_probability, s.encoder_lr, s.warmup_steps) == ("template", 0.5, 1e-4, 15)
    paper = rn.meta.recipe("reindir", "paper")  # the paper: from scratch, its input, Algorithm 1
    assert not paper.warm_start and paper.architecture.encoder_input == "pair"
    assert (paper.settings.outer_steps, paper.settings.inner_steps, paper.settings.encoder_loss_at) == (22750, 10, "adapted")
    assert rn.meta.recipe("reptile", "demo").settings.swap_probability == 0.5
    assert meta.TrainSettings.for_profile("paper").swap_probability == 0.0
    scratch = rn.meta.recipe("reindir", "demo", warm_start=False)  # the from-scratch recipe: no encoder-only phase
    assert (scratch.settings.outer_steps, scratch.settings.inner_steps, scratch.settings.tasks_per_set) == (150, 10, 1)
    both = rn.meta.profile_recipes("demo", outer_steps=30)  # REINDIR follows Reptile's budget: 2/3 of it
    assert both["reptile"].settings.outer_steps == 30 and both["reindir"].settings.outer_steps == 20
    assert rn.meta.profile_recipes("smoke")["reindir"] == rn.meta.recipe("reindir", "smoke")
    with pytest.raises(ValueError, match="Reptile needs inner_steps"):
        rn.meta.recipe("reptile", "smoke", inner_steps=0)
    with pytest.raises(TypeError, match="unknown training settings"):
        rn.meta.recipe("reindir", "demo", landmark_weight=1.0)  # a retired experiment knob
    with pytest.raises(TypeError, match="no encoder"):
        rn.meta.recipe("reptile", "demo", encoder_input="pair")


def test_warm_started_recipe_needs_its_start_template(cohorts):
    with pytest.raises(ValueError, match="starts from a trained Reptile template"):
        rn.meta.train_reindir(cohorts, "smoke", progress=False, outer_steps=1)


def _notebook_recipes(profile: str) -> dict:
    """The recipes notebook 03 trains: its parameter cell and its "recipe" cell, run as written."""
    import nbformat
    from reindir_nb.pipeline import NOTEBOOKS

    nb = nbformat.read(NOTEBOOKS / "03_training.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    parameters = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    recipe_cell = next(c for c in cells if "recipe" in c.metadata.get("tags", []))
    scope: dict = {}
    exec(parameters.source, scope)
    scope["PROFILE"] = profile  # what papermill injects
    exec(recipe_cell.source, scope)
    return scope["recipe_table"]


@pytest.mark.parametrize("profile", ["smoke", "demo"])
def test_train_cli_and_notebook_03_train_the_same_recipe(profile, capsys):
    from reindir_nb.train import main

    notebook = _notebook_recipes(profile)
    for kind in ("reptile", "reindir"):
        assert main([kind, "--profile", profile, "--print-recipe"]) == 0
        assert json.loads(capsys.readouterr().out) == notebook[kind], kind
        assert notebook[kind] == rn.meta.recipe(kind, profile).fingerprint()


def test_lr_warmup_scales_the_first_steps(cohorts, monkeypatch):
    """Step i uses lr * (i + 1) / lr_warmup, then lr; 0 is a constant lr."""
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    pair = cohorts["nlst"][0]
    rn.register(pair, iterations=6, lr=1e-3, lr_warmup=4, prealign="none", progress=False)
    np.testing.assert_allclose(seen, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    seen.clear()
    rn.register(pair, iterations=3, lr=1e-3, lr_warmup=0, prealign="none", progress=False)
    np.testing.assert_allclose(seen, [1e-3] * 3)
    with pytest.raises(ValueError, match="lr_warmup"):
        rn.register(pair, iterations=1, lr_warmup=-1, progress=False)


def test_encoder_patch_size_resamples_the_input_and_is_saved_and_fingerprinted(tmp_path, cohorts, template):
    """A smaller encoder input (16^3 of the smoke profile's 32^3 patches): the encoder is built for
    it, the model loads with it and gives the same start, a resume with another size is refused,
    and sizes that make no sense are an error (too large: a warning)."""
    model = rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=2, inner_steps=0,
                                  encoder_patch_size=(16, 16, 16), checkpoint=tmp_path / "r.ckpt")
    assert model.encoder.patch_size == (16, 16, 16)
    assert model.info["fingerprint"]["architecture.patch_size"] == "(16, 16, 16)"
    problem = Problem.from_pair(cohorts["dirlab"][1])
    assert tuple(model.patches(problem).shape[2:]) == (16, 16, 16)
    loaded = rn.meta.load(model.save(tmp_path / "r.pt"))
    assert loaded.encoder.patch_size == (16, 16, 16)
    for a, b in zip(model.initial_params(problem)[1], loaded.initial_params(problem)[1]):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="patch_size"):  # not resumed for another input size
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=3, inner_steps=0,
                              checkpoint=tmp_path / "r.ckpt")
    with pytest.raises(ValueError, match="encoder_patch_size must be 3"):
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=1, encoder_patch_size=(16, 16))
    with pytest.raises(ValueError, match="encoder_patch_size"):
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=1,
                              encoder_patch_size=(16, 0, 16))
    with pytest.warns(RuntimeWarning, match="larger than the prepared patch"):
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=1, inner_steps=0,
                              encoder_patch_size=(48, 32, 32))
