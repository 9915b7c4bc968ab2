"""INR, derivative reference paths and the ccIDIR objective on a tiny synthetic pair."""

import numpy as np
import torch

from reindir_nb import derivatives, inr, losses
from reindir_nb.core.device import make_generator
from reindir_nb.inr.objective import Objective, Problem
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume


def params(seed=0, dtype=torch.float64):
    return inr.init_siren(inr.SirenConfig(), make_generator(seed), dtype=dtype)


def test_zero_output_scale_is_identity():
    p = inr.init_siren(inr.SirenConfig(output_scale=0.0), make_generator(0))
    x = torch.rand(10, 3) * 2 - 1
    assert torch.equal(inr.phi(p, x), x)


def test_forward_jacobian_matches_autograd_and_fd():
    p = params()
    x = torch.rand(64, 3, dtype=torch.float64, generator=make_generator(1)) * 2 - 1
    v1, j1 = derivatives.jacobian(p, x, method="forward")
    v2, j2 = derivatives.jacobian(p, x, method="autograd")
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(j1, j2, rtol=1e-9, atol=1e-12)
    h = 1e-6
    for j in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[j] = h
        fd = (inr.siren(p, x + e) - inr.siren(p, x - e)) / (2 * h)
        torch.testing.assert_close(j1[:, :, j], fd, rtol=1e-5, atol=1e-7)


def test_symmetric_jacobian_penalty_restores_folds():
    d = torch.tensor([-0.5, 0.0, 0.05, 0.5, 1.0, 2.0], requires_grad=True)
    pen = losses.symmetric_jacobian_penalty(d)
    assert pen[4].item() == 0.0
    pen.sum().backward()
    assert torch.all(d.grad[:4] < 0), "gradient must push folded/compressed points toward d = 1"
    assert torch.all(torch.isfinite(d.grad))


def _blob_pair(shift_vox=2.0):
    z, y, x = np.meshgrid(np.arange(24), np.arange(24), np.arange(24), indexing="ij")
    def blob(cx):
        return np.exp(-(((x - cx) ** 2 + (y - 12) ** 2 + (z - 12) ** 2) / 20.0)).astype(np.float32)
    f = Volume.from_array(blob(11), spacing=(2, 2, 2))
    m = Volume.from_array(blob(11 + shift_vox), spacing=(2, 2, 2))
    return Pair(f, m, name="blob")


def test_objective_terms_and_gradients():
    pair = _blob_pair()
    prob = Problem.from_pair(pair)
    fwd = inr.init_siren(generator=make_generator(0))
    bwd = inr.init_siren(generator=make_generator(1))
    for p in fwd + bwd:
        p.requires_grad_(True)
    g = make_generator(0)
    xf, xb = prob.sample_points(500, g, "fixed"), prob.sample_points(500, g, "moving")
    assert xf.abs().max() <= 1.0
    for reg in ("jacobian", "bending"):
        terms = Objective(regulariser=reg).terms(fwd, bwd, prob, xf, xb, inr.SirenConfig().omega)
        assert set(terms) >= {"ncc_f", "ncc_b", "reg_f", "reg_b", "cycle_f", "cycle_b", "total"}
        grads = torch.autograd.grad(terms["total"], fwd + bwd)
        assert all(torch.isfinite(gr).all() for gr in grads)


def test_identity_cycle_is_zero():
    pair = _blob_pair()
    prob = Problem.from_pair(pair)
    zero = inr.init_siren(inr.SirenConfig(output_scale=0.0))
    x = prob.sample_points(100, make_generator(0))
    terms = Objective().terms(zero, zero, prob, x, x, inr.SirenConfig().omega)
    assert terms["cycle_f"].item() < 1e-10 and terms["reg_f"].item() < 1e-10
