"""Encoder shapes, infusion identity, Reptile direction, encoder-only gradients, resume == uninterrupted."""

import numpy as np
import pytest
import torch

import reindir_nb as rn
from reindir_nb import meta
from reindir_nb.encoder import Encoder, encoder_output_size
from reindir_nb.infusion import InfusionHeads, repeat_to_matrix
from reindir_nb.inr import init_siren, siren
from reindir_nb.objective import Problem
from reindir_nb.profiles import PROFILES


@pytest.fixture(scope="module")
def cohorts():
    return {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile="smoke"), "smoke") for i in range(2)]
            for s in ("dirlab", "nlst")}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_encoder_output_is_one_voxel(name):
    prof = PROFILES[name]
    assert encoder_output_size(prof.patch_size) == [1, 1, 1]
    if name != "paper":  # the paper patch is too big for a CPU test; its plan is checked above
        enc = Encoder(prof.patch_size, width=2, embedding_length=prof.embedding_length)
        out = enc(torch.zeros(1, 2, *prof.patch_size))
        assert out.shape == (1, prof.embedding_length)


def test_paper_bottleneck_matches_table_1():
    from reindir_nb.encoder import bottleneck_plan

    plan = bottleneck_plan((336, 288, 366))
    assert plan["layer11_strided"] and plan["layer11_size"] == [7, 6, 7]
    assert plan["layer12_kernel"] == [3, 2, 3] and plan["layer13_kernel"] == 5


def test_repeat_fills_rows_with_shifted_copies():
    g = torch.arange(1025.0)
    m = repeat_to_matrix(g, (256, 256))
    assert torch.equal(m[0], g[:256]) and torch.equal(m[4, :1], g[1024:1025]) and m[4, 1] == 0  # wraps


def test_zero_heads_equal_template():
    fwd, bwd = init_siren(), init_siren()
    heads = InfusionHeads(65)
    f2, b2 = heads.infuse(torch.randn(65), fwd, bwd)
    x = torch.rand(50, 3) * 2 - 1
    assert torch.equal(siren(f2, x), siren(fwd, x)) and torch.equal(siren(b2, x), siren(bwd, x))


def test_reptile_moves_toward_adapted():
    p0 = [torch.zeros(3), torch.ones(2)]
    adapted = [[torch.full((3,), 2.0), torch.full((2,), 3.0)], [torch.full((3,), 4.0), torch.full((2,), 1.0)]]
    new = meta.reptile_update(p0, adapted, eps=0.5)
    assert torch.allclose(new[0], torch.full((3,), 1.5)) and torch.allclose(new[1], torch.full((2,), 1.5))
    for a in adapted:  # distance to the mean of the adapted weights shrinks
        pass
    mean = [torch.stack([a[i] for a in adapted]).mean(0) for i in range(2)]
    assert sum((n - m).norm() for n, m in zip(new, mean)) < sum((o - m).norm() for o, m in zip(p0, mean))


def test_encoder_step_updates_encoder_not_templates(cohorts):
    model = meta.train_reindir(cohorts, "smoke", outer_steps=1, progress=False, scale_augment=False)
    pair = cohorts["nlst"][0]
    problem = Problem.from_pair(pair)
    model.zero_grad()
    f0 = [p.clone().requires_grad_(True) for p in model.template.forward]
    f, b = model.infused(model.embed(problem), f0, model.template.backward)
    x = problem.sample_points(100, None)
    siren(f, x).pow(2).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    # the trainer's encoder step only optimises encoder + heads parameters
    trainer = meta._Trainer("reindir", cohorts, meta.TrainSettings.for_profile("smoke", scale_augment=False),
                            rn.get_profile("smoke"), 0, torch.device("cpu"), 2, 65)
    optimised = {id(p) for g in trainer.optimiser.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in list(trainer.model.encoder.parameters()) + list(trainer.model.heads.parameters())}
    before = [p.clone() for p in trainer.template.forward]
    enc_before = [p.clone() for p in trainer.model.encoder.parameters()]
    trainer._task(pair)  # inner loop + encoder step, no template update yet
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.template.forward))
    assert any(p.abs().sum() > 0 for p in trainer.model.heads.parameters())  # zero heads got gradient
    # zero heads pass no gradient to the encoder on the very first step; from the second on they do
    assert all(torch.equal(a, b) for a, b in zip(enc_before, trainer.model.encoder.parameters()))
    trainer._task(pair)
    assert any(not torch.equal(a, b) for a, b in zip(enc_before, trainer.model.encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.template.forward))


def test_untrained_reindir_equals_template_in_register(cohorts):
    model = meta.train_reindir(cohorts, "smoke", outer_steps=0, progress=False)
    pair = cohorts["dirlab"][0]
    a = rn.register(pair, init=model, iterations=0, prealign="none", progress=False)
    b = rn.register(pair, init=model.template, iterations=0, prealign="none", progress=False)
    np.testing.assert_array_equal(a.tre_mm, b.tre_mm)


@pytest.mark.parametrize("kind", ["reptile", "reindir"])
def test_resume_equals_uninterrupted(tmp_path, cohorts, kind):
    train = meta.train_reindir if kind == "reindir" else meta.train_reptile
    full = train(cohorts, "smoke", outer_steps=4, progress=False, seed=3)
    ck = tmp_path / "ck.pt"
    train(cohorts, "smoke", outer_steps=4, progress=False, seed=3, checkpoint=ck, checkpoint_every=1, stop_after=2)
    resumed = train(cohorts, "smoke", outer_steps=4, progress=False, seed=3, checkpoint=ck, resume=True)
    tf = full if kind == "reptile" else full.template
    tr = resumed if kind == "reptile" else resumed.template
    for a, b in zip(tf.forward + tf.backward, tr.forward + tr.backward):
        assert torch.equal(a, b)
    if kind == "reindir":
        for a, b in zip(full.encoder.parameters(), resumed.encoder.parameters()):
            assert torch.equal(a, b)
    path = resumed.save(tmp_path / "m.pt")
    loaded = meta.load(path)
    assert type(loaded) is type(resumed)


def test_training_log_and_templates_change(tmp_path, cohorts):
    log = tmp_path / "log.csv"
    t = meta.train_reptile(cohorts, "smoke", outer_steps=3, progress=False, log_path=log)
    import pandas as pd

    table = pd.read_csv(log)
    assert list(table["step"]) == [0, 1, 2] and "dirlab/loss_adapted" in table and table["seconds"].is_monotonic_increasing
    fresh = init_siren(generator=rn.device.make_generator(0))
    assert not torch.equal(fresh[2], t.forward[2])
