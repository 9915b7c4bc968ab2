"""The demo REINDIR recipe's levers: direction swapping (``swap_direction``, ``swap_probability``),
encoder-only training on frozen templates (``inner_steps=0``), several zero-shot encoder steps
per task (``encoder_steps``) and the encoder's input channels (``encoder_input``)."""

import numpy as np
import pytest
import torch

import reindir_nb as rn
from reindir_nb.data.preprocess import swap_direction
from reindir_nb.meta import training as meta
from reindir_nb.meta.encoder import matched_moving, DIFFERENCE_GAIN, encoder_channels


@pytest.fixture(scope="module")
def cohorts():
    return {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile="smoke"), "smoke") for i in range(2)]
            for s in ("dirlab", "nlst")}


@pytest.fixture(scope="module")
def template(cohorts):
    return rn.meta.train_reptile(cohorts, "smoke", progress=False, outer_steps=2)


def _trainer(kind, cohorts, start=None, encoder_input="pair", **changes):
    settings = meta.TrainSettings.for_profile("smoke", **changes)
    return meta._Trainer(kind, cohorts, settings, rn.get_profile("smoke"), 0, torch.device("cpu"),
                         meta.Architecture(2, 65, encoder_input), start)


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
    original = meta.Problem.from_pair

    def spy(pair, **kw):
        seen.append(bool(pair.meta.get("swapped", False)))
        return original(pair, **kw)

    monkeypatch.setattr(meta.Problem, "from_pair", staticmethod(spy))
    for p, expected in ((0.0, 0.0), (1.0, 1.0)):
        seen.clear()
        trainer = _trainer("reptile", cohorts, swap_probability=p)
        for _ in range(2):
            trainer.outer_step()
        assert len(seen) == 4 and np.mean(seen) == expected
    seen.clear()
    trainer = _trainer("reptile", cohorts, swap_probability=0.5)
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


def test_matched_difference_undoes_an_intensity_change_inside_a_field_of_view():
    """moving = 0.6 * fixed + 0.05 inside a cylinder-like field of view, 0 outside: the matched
    moving equals the fixed image on the overlap, so the difference channel is ~0 everywhere
    (the raw difference is not), and the moving/difference channels are 0 outside it."""
    gen = torch.Generator().manual_seed(0)
    fixed = 0.2 + 0.8 * torch.rand(1, 1, 8, 8, 8, generator=gen)
    fov = torch.zeros_like(fixed, dtype=torch.bool)
    fov[..., 2:6, 1:7, 1:7] = True
    moving = torch.where(fov, 0.6 * fixed + 0.05, torch.zeros_like(fixed))
    matched, overlap = matched_moving(fixed, moving)
    assert torch.equal(overlap.bool(), fov)
    torch.testing.assert_close(matched[fov], fixed[fov], rtol=1e-5, atol=1e-5)
    x = encoder_channels(fixed, moving, "matched+difference")
    assert x.shape == (1, 3, 8, 8, 8) and float(x[:, 2].abs().max()) < 1e-4
    assert float(encoder_channels(fixed, moving, "pair+difference")[:, 2].abs().mean()) > 1.0
    assert float(x[:, 1][~fov[:, 0]].abs().max()) == 0.0
    torch.testing.assert_close(x[:, 0], fixed[:, 0] - fixed.mean())
    # without an overlap worth the name (< 1 % of the patch) the match uses every voxel, finite
    tiny = torch.zeros_like(fixed)
    tiny[..., 0, 0, 0] = 0.5
    assert torch.isfinite(encoder_channels(fixed, tiny, "matched+difference")).all()


def test_encoder_input_is_saved_loaded_and_fingerprinted(tmp_path, cohorts, template):
    model = rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=2, inner_steps=0,
                                  encoder_input="pair+difference", checkpoint=tmp_path / "r.ckpt")
    assert model.encoder.in_channels == 3 and model.info["fingerprint"]["encoder_input"] == "pair+difference"
    loaded = rn.meta.load(model.save(tmp_path / "r.pt"))
    assert loaded.encoder_input == "pair+difference"
    problem = meta.Problem.from_pair(cohorts["nlst"][1])
    for a, b in zip(model.initial_params(problem)[0], loaded.initial_params(problem)[0]):
        torch.testing.assert_close(a, b)
    shifted = rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=2, inner_steps=0,
                                    encoder_input="pair+difference", output_shift=True)
    assert shifted.info["fingerprint"]["output_shift"] == "True" and "output_shift" not in model.info["fingerprint"]
    back = rn.meta.load(shifted.save(tmp_path / "s.pt"))
    assert back.heads.output_shift and not loaded.heads.output_shift
    assert float(back.heads.shift["forwardout"].weight.abs().sum()) > 0  # the shift head learned
    for a, b in zip(shifted.initial_params(problem)[0], back.initial_params(problem)[0]):
        torch.testing.assert_close(a, b)
    lying = {**model.state(), "output_shift": True}  # says it has shift heads, holds none
    torch.save(lying, tmp_path / "lying.pt")
    with pytest.raises(ValueError, match="lying.pt.*output_shift True"):
        rn.meta.load(tmp_path / "lying.pt")
    with pytest.raises(ValueError, match="encoder_input"):  # the checkpoint is not resumed for another input
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=3, inner_steps=0,
                              checkpoint=tmp_path / "r.ckpt")
    with pytest.raises(ValueError, match="encoder_input must be one of"):
        rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=1,
                              encoder_input="difference")


def test_profile_recipes():
    demo, paper = rn.get_profile("demo"), rn.get_profile("paper")
    assert demo.reindir_settings() == {"encoder_input": "pair+difference", "inner_steps": 0, "encoder_steps": 1,
                                       "tasks_per_set": 3, "cycles": 1}
    assert demo.encoder_patch_size == (32, 32, 32)
    assert demo.reindir_settings(eps=0.2) == {"encoder_input": "pair+difference", "eps": 0.2}
    assert paper.reindir_settings() == {"encoder_input": "pair"}  # the paper: from scratch, its input
    assert meta.TrainSettings.for_profile("demo").swap_probability == 0.5
    assert meta.TrainSettings.for_profile("paper").swap_probability == 0.0


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


def test_landmark_error_at_the_identity_is_the_initial_distance(cohorts):
    from reindir_nb.inr.network import SirenConfig, init_siren
    from reindir_nb.inr.objective import Problem, landmark_error_mm

    pair = cohorts["nlst"][1]
    problem = Problem.from_pair(pair)
    zero = init_siren(SirenConfig(output_scale=0.0), rn.device.make_generator(0))  # v(x) = 0: the identity
    assert float(landmark_error_mm(zero, zero, problem, 30.0)) == pytest.approx(pair.initial_distances().mean(), rel=1e-4)
    # a constant output c (INR units) moves every point by A c mm (A: the side's INR -> mm matrix):
    # chosen as +3 mm along x in the fixed frame; the backward net moves moving points by A_m A_f^-1 (3, 0, 0)
    a_f, a_m = (np.asarray(m[:3, :3], dtype=np.float64) for m in (problem.fixed_to_mm, problem.moving_to_mm))
    c = np.linalg.solve(a_f, [3.0, 0.0, 0.0])
    shift = [p.clone() for p in zero]
    shift[-1] = shift[-1] + torch.as_tensor(c, dtype=shift[-1].dtype)
    d = pair.moving_landmarks - pair.fixed_landmarks
    forward = np.linalg.norm(d - [3.0, 0.0, 0.0], axis=1).mean()
    backward = np.linalg.norm(-d - a_m @ c, axis=1).mean()
    assert float(landmark_error_mm(shift, shift, problem, 30.0)) == pytest.approx((forward + backward) / 2, rel=1e-3)
    with pytest.raises(ValueError, match="no landmarks"):
        landmark_error_mm(zero, zero, Problem.from_pair(pair.replace(fixed_landmarks=None, moving_landmarks=None)), 30.0)


def test_landmark_supervision_lowers_the_zero_shot_landmark_error(cohorts, template):
    """The encoder alone, 8 outer steps: with a strong landmark term the infused templates' mean
    landmark error on the training pairs falls further than without it (same seeds, same draws)."""
    from reindir_nb.inr.objective import Problem, landmark_error_mm

    def trained_error(weight):
        trainer = _trainer("reindir", cohorts, start=template, inner_steps=0, encoder_steps=3, outer_steps=8,
                           warmup_steps=1, encoder_lr=1e-3, scale_augment=False, landmark_weight=weight)
        for _ in range(8):
            trainer.outer_step()
        errs = []
        with torch.no_grad():
            for p in [p for ps in cohorts.values() for p in ps]:
                problem = Problem.from_pair(p)
                infused = trainer.model.infused(trainer.model.embed(problem), *trainer._templates_here())
                errs.append(float(landmark_error_mm(*infused, problem, 30.0)))
        return np.mean(errs)

    without, supervised = trained_error(0.0), trained_error(1.0)
    assert supervised < without, (supervised, without)


def test_landmark_supervision_settings_are_checked(cohorts, template):
    with pytest.raises(ValueError, match="landmark_weight"):
        meta.TrainSettings.for_profile("smoke", landmark_weight=-1.0)
    with pytest.raises(ValueError, match="encoder_steps >= 2"):
        meta.TrainSettings.for_profile("smoke", landmark_weight=1.0)  # inner steps, one (inner-step) update
    with pytest.raises(ValueError, match="Reptile trains without landmarks"):
        _trainer("reptile", cohorts, landmark_weight=1.0, encoder_steps=2)
    bare = {"nlst": [cohorts["nlst"][0].replace(fixed_landmarks=None, moving_landmarks=None)]}
    with pytest.raises(ValueError, match="without landmarks"):
        _trainer("reindir", bare, start=template, inner_steps=0, encoder_steps=2, landmark_weight=1.0)


def test_heads_lr_moves_the_heads_at_their_own_rate(cohorts, template):
    trainer = _trainer("reindir", cohorts, start=template, inner_steps=0, encoder_steps=1, heads_lr=1e-2)
    encoder_group, heads_group = trainer.optimiser.param_groups
    assert {id(p) for p in heads_group["params"]} == {id(p) for p in trainer.model.heads.parameters()}
    assert {id(p) for p in encoder_group["params"]} == {id(p) for p in trainer.model.encoder.parameters()}
    factor = trainer.scheduler.get_last_lr()[1] / 1e-2  # the shared warm-up/cosine factor of the first step
    before = [p.detach().clone() for p in trainer.model.heads.parameters()]
    trainer.zero_shot_step(trainer._problem(cohorts["dirlab"][0]))
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(trainer.model.heads.parameters(), before))
    assert moved == pytest.approx(1e-2 * factor, rel=1e-3)  # Adam's first step: lr per parameter
    default = _trainer("reindir", cohorts, start=template, inner_steps=0)
    assert len(default.optimiser.param_groups) == 1  # None: one group at encoder_lr (older checkpoints load)
    with pytest.raises(ValueError, match="heads_lr"):
        meta.TrainSettings.for_profile("smoke", heads_lr=0.0)


def test_encoder_patch_size_resamples_the_input_and_is_saved_and_fingerprinted(tmp_path, cohorts, template):
    """A smaller encoder input (16^3 of the smoke profile's 32^3 patches): the encoder is built for
    it, the model loads with it and gives the same start, a resume with another size is refused,
    and sizes that make no sense are an error (too large: a warning)."""
    model = rn.meta.train_reindir(cohorts, "smoke", progress=False, start=template, outer_steps=2, inner_steps=0,
                                  encoder_patch_size=(16, 16, 16), checkpoint=tmp_path / "r.ckpt")
    assert model.encoder.patch_size == (16, 16, 16)
    assert model.info["fingerprint"]["encoder_patch_size"] == "16x16x16"
    problem = meta.Problem.from_pair(cohorts["dirlab"][1])
    assert tuple(model.patches(problem).shape[2:]) == (16, 16, 16)
    loaded = rn.meta.load(model.save(tmp_path / "r.pt"))
    assert loaded.encoder.patch_size == (16, 16, 16)
    for a, b in zip(model.initial_params(problem)[1], loaded.initial_params(problem)[1]):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="encoder_patch_size"):  # not resumed for another input size
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
