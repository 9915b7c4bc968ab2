"""Meta-training (Algorithm 1): Reptile direction in the training loop, encoder-only gradients,
untrained REINDIR == template through ``register``, resume == uninterrupted, log, save/load, folds."""

import numpy as np
import pandas as pd
import pytest
import torch

import reindir_nb as rn
from reindir_nb.meta import training as meta
from reindir_nb.meta.trainer import Trainer, cosine_with_restarts
from reindir_nb.core.device import make_generator
from reindir_nb.inr.network import init_siren
from reindir_nb.inr.objective import Problem


@pytest.fixture(scope="module")
def cohorts():
    return {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile="smoke"), "smoke") for i in range(2)]
            for s in ("dirlab", "nlst")}


def _trainer(kind, cohorts, **changes):
    """A smoke-profile trainer (REINDIR: the from-scratch recipe, its encoder reading the pair)."""
    if kind == "reindir":
        changes.update(warm_start=False, encoder_input="pair")
    return Trainer(rn.meta.recipe(kind, "smoke", **changes), cohorts, 0, torch.device("cpu"))


def test_reptile_update_moves_toward_adapted_by_hand():
    p0 = [torch.zeros(3), torch.ones(2)]
    adapted = [[torch.full((3,), 2.0), torch.full((2,), 3.0)], [torch.full((3,), 4.0), torch.full((2,), 1.0)]]
    new = meta.reptile_update(p0, adapted, eps=0.5)  # mean adapted = (3, 2); halfway from (0, 1)
    assert torch.equal(new[0], torch.full((3,), 1.5)) and torch.equal(new[1], torch.full((2,), 1.5))
    assert all(torch.equal(a, b) for a, b in zip(meta.reptile_update(p0, adapted, 1.0), [torch.full((3,), 3.0), torch.full((2,), 2.0)]))


@pytest.mark.parametrize("eps", [1.0, 0.25])
def test_outer_step_moves_templates_toward_adapted_weights(cohorts, eps):
    """In the real loop: phi0_new = phi0 + eps * mean_sets(adapted - phi0), closer to the adapted mean."""
    trainer = _trainer("reptile", cohorts, eps=eps, scale_augment=False)
    recorded = []
    task = trainer._task

    def spy(pair):  # calls through, keeps what the inner loop returned
        recorded.append(task(pair))
        return recorded[-1]

    trainer._task = spy
    old = [p.clone() for p in trainer.template.forward + trainer.template.backward]
    trainer.outer_step()
    assert len(recorded) == 2  # one task per set
    mean = [torch.stack([r[0][i] for r in recorded]).mean(0) for i in range(8)]
    mean += [torch.stack([r[1][i] for r in recorded]).mean(0) for i in range(8)]
    new = trainer.template.forward + trainer.template.backward
    for o, m, n in zip(old, mean, new):
        torch.testing.assert_close(n, o + eps * (m - o), rtol=1e-6, atol=1e-7)
    dist_old = sum(float((o - m).norm()) for o, m in zip(old, mean))
    dist_new = sum(float((n - m).norm()) for n, m in zip(new, mean))
    assert dist_old > 0 and dist_new == pytest.approx((1 - eps) * dist_old, rel=1e-4, abs=1e-6)


def test_encoder_step_reaches_encoder_and_heads_not_templates(cohorts):
    trainer = _trainer("reindir", cohorts, scale_augment=False, encoder_loss_at="adapted")
    optimised = {id(p) for g in trainer.optimiser.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in list(trainer.model.encoder.parameters()) + list(trainer.model.heads.parameters())}
    _random_heads(trainer)
    problem = Problem.from_pair(cohorts["nlst"][0])
    fwd = [p.clone().requires_grad_(True) for p in trainer.template.forward]
    bwd = [p.clone().requires_grad_(True) for p in trainer.template.backward]
    template_before = [p.clone() for p in trainer.template.forward + trainer.template.backward]
    encoder_before = [p.clone() for p in trainer.model.encoder.parameters()]
    trainer.encoder_step(problem, fwd, bwd)
    assert all(p.grad is None for p in fwd + bwd)  # no gradient into the (adapted) INR weights
    grads = [p.grad for p in trainer.model.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(int(torch.count_nonzero(g)) for g in grads) > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.heads.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, trainer.model.encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(template_before, trainer.template.forward + trainer.template.backward))


def _random_heads(trainer):
    with torch.no_grad():  # non-zero heads so that the encoder is on the gradient path
        for p in trainer.model.heads.parameters():
            p.normal_(0, 1e-3, generator=make_generator(0))


def test_template_mode_trains_the_encoder_on_the_zero_shot_loss(cohorts):
    """encoder_loss_at="template": the encoder gradient is the gradient of the loss of the INFUSED
    TEMPLATES (same points as the first inner step), not of the adapted weights; templates untouched."""
    a, b = (_trainer("reindir", cohorts, scale_augment=False, encoder_loss_at="template") for _ in range(2))
    for t in (a, b):
        _random_heads(t)
    problem = Problem.from_pair(cohorts["nlst"][0])
    template_before = [p.clone() for p in a.template.forward + a.template.backward]
    a.optimiser.zero_grad(set_to_none=True)
    a.adapt(problem, encoder_grad=True)
    # by hand on the twin: zero-shot loss, points from the same generator state as a's first step
    zero_shot = b._loss(*b.model.infused(b.model.embed(problem), b.template.forward, b.template.backward), problem)
    zero_shot["total"].backward()
    pairs = list(zip(a.model.encoder.parameters(), b.model.encoder.parameters()))
    pairs += list(zip(a.model.heads.parameters(), b.model.heads.parameters()))
    assert sum(int(torch.count_nonzero(pa.grad)) for pa, _ in pairs) > 0
    for pa, pb in pairs:
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-9)
    assert all(torch.equal(x, y) for x, y in zip(template_before, a.template.forward + a.template.backward))
    # one whole task: an Adam step on encoder and heads, the template copies adapt, templates stay
    enc0 = [p.clone() for p in a.model.encoder.parameters()]
    fwd, _, stats = a._task(cohorts["nlst"][0])
    assert any(not torch.equal(x, y) for x, y in zip(enc0, a.model.encoder.parameters()))
    assert not torch.equal(fwd[2], a.template.forward[2]) and stats["loss_adapted"] < stats["loss_first"]
    assert all(torch.equal(x, y) for x, y in zip(template_before, a.template.forward + a.template.backward))


def test_encoder_loss_at_is_checked():
    with pytest.raises(ValueError, match="encoder_loss_at"):
        meta.TrainSettings.for_profile("smoke", encoder_loss_at="adpated")
    assert meta.TrainSettings.for_profile("paper").encoder_loss_at == "adapted"  # Algorithm 1


@pytest.mark.parametrize("at", ["adapted", "template"])
def test_zero_heads_pass_no_gradient_to_the_encoder_on_the_first_step(cohorts, at):
    """With zero heads the encoder is off the gradient path; one Adam step on the heads puts it on."""
    trainer = _trainer("reindir", cohorts, scale_augment=False, encoder_loss_at=at)
    enc0 = [p.clone() for p in trainer.model.encoder.parameters()]
    tmpl0 = [p.clone() for p in trainer.template.forward]
    pair = cohorts["nlst"][0]
    trainer._task(pair)
    assert all(torch.equal(a, b) for a, b in zip(enc0, trainer.model.encoder.parameters()))
    assert any(p.abs().sum() > 0 for p in trainer.model.heads.parameters())
    trainer._task(pair)
    assert any(not torch.equal(a, b) for a, b in zip(enc0, trainer.model.encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(tmpl0, trainer.template.forward))  # only outer_step moves them


def test_untrained_reindir_equals_template_in_register(cohorts):
    model = meta.train_reindir(cohorts, "smoke", outer_steps=0, progress=False, warm_start=False)
    pair = cohorts["dirlab"][0]
    a = rn.register(pair, init=model, iterations=0, prealign="none", progress=False)
    b = rn.register(pair, init=model.template, iterations=0, prealign="none", progress=False)
    np.testing.assert_array_equal(a.tre_mm, b.tre_mm)
    assert model.encoder_seconds > 0


@pytest.mark.parametrize("kind", ["reptile", "reindir", "reindir-adapted"])
def test_resume_equals_uninterrupted(tmp_path, cohorts, kind):
    train = meta.train_reptile if kind == "reptile" else meta.train_reindir
    kw = dict(outer_steps=3, progress=False, seed=3)
    if kind == "reindir":
        kw["warm_start"] = False
    if kind == "reindir-adapted":
        kind, kw["encoder_loss_at"], kw["warm_start"] = "reindir", "adapted", False
    full = train(cohorts, "smoke", log_path=tmp_path / "full.csv", **kw)
    ck = tmp_path / "ck.pt"
    train(cohorts, "smoke", checkpoint=ck, checkpoint_every=1, stop_after=1, log_path=tmp_path / "r.csv", **kw)
    assert torch.load(ck, weights_only=False)["step"] == 1
    resumed = train(cohorts, "smoke", checkpoint=ck, resume=True, log_path=tmp_path / "r.csv", **kw)
    tf = full if kind == "reptile" else full.template
    tr = resumed if kind == "reptile" else resumed.template
    for a, b in zip(tf.forward + tf.backward, tr.forward + tr.backward):
        assert torch.equal(a, b)
    if kind == "reindir":
        for a, b in zip(list(full.parameters()), list(resumed.parameters())):
            assert torch.equal(a, b)
    a, b = pd.read_csv(tmp_path / "full.csv"), pd.read_csv(tmp_path / "r.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    loaded = meta.load(resumed.save(tmp_path / "m.pt"))
    assert type(loaded) is type(resumed)
    lt = loaded if kind == "reptile" else loaded.template
    assert all(torch.equal(x, y) for x, y in zip(lt.forward, tr.forward))
    if kind == "reindir":
        assert all(torch.equal(x, y) for x, y in zip(loaded.parameters(), resumed.parameters()))
        assert isinstance(meta.load(ck), meta.ReindirModel)  # a checkpoint loads as its model


def test_training_log_and_templates_change(tmp_path, cohorts):
    log = tmp_path / "log.csv"
    t = meta.train_reptile(cohorts, "smoke", outer_steps=2, progress=False, log_path=log)
    table = pd.read_csv(log)
    assert list(table["step"]) == [0, 1] and table["seconds"].is_monotonic_increasing
    assert {"dirlab/loss_first", "dirlab/loss_adapted", "nlst/loss_adapted", "eps"} <= set(table)
    fresh = init_siren(generator=make_generator(0))
    assert not torch.equal(fresh[2], t.forward[2])
    assert t.info["outer_steps"] == 2 and t.info["sets"] == ["dirlab", "nlst"]


def test_encoder_lr_schedule_and_paper_settings():
    f = cosine_with_restarts(total=20, warmup=4, cycles=4)
    assert [round(f(i), 3) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(8) == 1.0 and f(6) < f(5) < 1.0  # restarts every 4 steps
    s = meta.TrainSettings.for_profile("paper")
    assert (s.outer_steps, s.inner_steps, s.inner_points, s.inner_lr, s.encoder_lr, s.warmup_steps, s.cycles) == (
        22750, 10, 5000, 1e-4, 1e-5, 250, 4)


def test_bad_input_is_a_clear_error(tmp_path, cohorts):
    with pytest.raises(ValueError, match="cohort"):
        meta.train_reptile({"a": []}, "smoke", progress=False)
    with pytest.raises(FileNotFoundError):
        meta.load(tmp_path / "missing.pt")
    torch.save({"kind": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="x.pt"):
        meta.load(tmp_path / "x.pt")


def test_train_folds_writes_one_model_per_fold(tmp_path, cohorts):
    pairs = [p for ps in cohorts.values() for p in ps]
    paths = meta.train_folds(pairs, tmp_path, kind="reptile", k=2, profile="smoke", outer_steps=1, progress=False)
    assert sorted(paths) == [0, 1] and all(p.name == f"reptile_fold{i}.pt" for i, p in paths.items())
    folds = pd.read_csv(tmp_path / "folds.csv")
    assert sorted(folds["pair"]) == sorted(p.name for p in pairs)
    assert all(folds.groupby("fold")["dataset"].nunique() == 2)  # stratified: both sets in each fold
    methods, fold_of = rn.evaluate.load_models(tmp_path)
    assert set(methods["Reptile"]) == {0, 1} and fold_of == dict(zip(folds["pair"], folds["fold"]))
    warm = meta.train_folds(pairs, tmp_path, kind="reindir", k=2, profile="smoke", outer_steps=1,
                            progress=False)  # the smoke recipe's warm start: fold i from reptile_fold{i}.pt
    for i, path in warm.items():
        started, reptile = meta.load(path).template, meta.load(paths[i])
        assert all(torch.equal(a, b) for a, b in zip(started.forward, reptile.forward))


def test_reindir_warm_start_from_a_reptile_template(tmp_path, cohorts):
    """``start=``: the templates begin as a copy of the Reptile template (never modified in place);
    with eps = 0 they stay there while the encoder trains; a non-template start is a clear error."""
    template = meta.train_reptile(cohorts, "smoke", outer_steps=1, progress=False)
    before = [p.clone() for p in template.forward + template.backward]
    model = meta.train_reindir(cohorts, "smoke", outer_steps=2, progress=False, start=template.save(tmp_path / "t.pt"), eps=0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.template.forward + model.template.backward))
    assert model.info["start"]["outer_steps"] == 1
    moved = meta.train_reindir(cohorts, "smoke", outer_steps=1, progress=False, start=template, warm_start=False)
    assert not torch.equal(moved.template.forward[2], template.forward[2])
    assert all(torch.equal(a, b) for a, b in zip(before, template.forward + template.backward))
    with pytest.raises(ValueError, match="Reptile template"):
        meta.train_reindir(cohorts, "smoke", outer_steps=1, progress=False, start=model)
