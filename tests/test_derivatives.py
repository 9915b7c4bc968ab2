"""Spatial derivatives of the SIREN: the fast forward-mode path against the autograd reference,
finite differences and gradcheck, including the hand-written backward's weight gradients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reindir_nb import derivatives, inr, losses
from reindir_nb.core.device import make_generator
from reindir_nb.inr.objective import Objective, Problem

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


def params(seed: int = 0, dtype: torch.dtype = F64, hidden: int = 256) -> list[torch.Tensor]:
    return inr.init_siren(inr.SirenConfig(hidden=hidden), make_generator(seed), dtype=dtype)


def points(n: int, seed: int = 1, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.rand(n, 3, dtype=dtype, generator=make_generator(seed)) * 2 - 1


def random_weights_loss(outputs, seed: int = 3) -> torch.Tensor:
    """A loss touching every output entry with its own random weight (a generic upstream gradient)."""
    gen = make_generator(seed)
    return sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outputs)


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("method", ["forward", "forward-autograd"])
def test_jacobian_matches_autograd_and_finite_differences(method):
    p, x = params(), points(150)
    v, jac = derivatives.jacobian(p, x, method=method)
    v_ref, jac_ref = derivatives.jacobian(p, x, method="autograd")
    assert jac.shape == (150, 3, 3) and v.shape == (150, 3)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(jac, jac_ref, rtol=1e-10, atol=1e-12)
    h = 1e-6
    for j in range(3):
        e = torch.zeros(3, dtype=F64)
        e[j] = h
        fd = (inr.siren(p, x + e) - inr.siren(p, x - e)) / (2 * h)   # column j: dv/dx_j
        torch.testing.assert_close(jac[:, :, j], fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["forward", "forward-autograd"])
def test_hessian_matches_autograd_and_finite_differences(method):
    p, x = params(), points(100)
    v, jac, hess = derivatives.hessian(p, x, method=method)
    _, jac_ref, hess_ref = derivatives.hessian(p, x, method="autograd")
    assert hess.shape == (100, 3, 3, 3)
    torch.testing.assert_close(jac, jac_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hess, hess_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hess, hess.transpose(2, 3))            # symmetric in (j, k)
    h = 1e-5
    for k in range(3):
        e = torch.zeros(3, dtype=F64)
        e[k] = h
        fd = (derivatives.jacobian(p, x + e, method="autograd")[1] - derivatives.jacobian(p, x - e, method="autograd")[1]) / (2 * h)
        torch.testing.assert_close(hess[..., k], fd, rtol=1e-5, atol=1e-5)


def test_float32_forward_agrees_with_autograd_to_1e5_relative():
    p32, x32 = params(dtype=torch.float32), points(500, dtype=torch.float32)
    _, jac, hess = derivatives.hessian(p32, x32)
    _, jac_a, hess_a = derivatives.hessian(p32, x32, method="autograd")
    # exact values for the same (fp32-rounded) weights and points
    _, jac_64, hess_64 = derivatives.hessian([t.double() for t in p32], x32.double(), method="autograd")
    for fast, ref, exact in ((jac, jac_a, jac_64), (hess, hess_a, hess_64)):
        scale = exact.abs().max()
        assert (fast.double() - ref.double()).abs().max() / scale < 1e-5
        assert (fast.double() - exact).abs().max() / scale < 1e-5


def test_chunking_and_inference_path_give_identical_values():
    p, x = params(), points(300)
    _, jac_a, hess_a = derivatives.hessian(p, x, chunk=300)
    _, jac_b, hess_b = derivatives.hessian(p, x, chunk=7)              # last chunk is partial
    torch.testing.assert_close(hess_a, hess_b, rtol=1e-12, atol=1e-12)
    leaves = [t.clone().requires_grad_(True) for t in p]
    with torch.no_grad():                                               # O(chunk)-memory path
        _, jac_c = derivatives.jacobian(leaves, x, chunk=64)
    _, jac_d = derivatives.jacobian(leaves, x, chunk=64)                # autograd.Function path
    assert jac_d.requires_grad and not jac_c.requires_grad
    torch.testing.assert_close(jac_c, jac_a, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(jac_d.detach(), jac_a, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ gradients of the fast path


def test_displacement_fast_path_equals_siren_with_gradients():
    """Order-0 jets (the cycle term's second network): the same values, weight gradients and
    point gradients as autograd through inr.siren, also with a partial last chunk."""
    p, x = params(), points(130)
    ref_leaves = [t.clone().requires_grad_(True) for t in p]
    fast_leaves = [t.clone().requires_grad_(True) for t in p]
    x_ref, x_fast = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    v_ref = inr.siren(ref_leaves, x_ref)
    v_fast = derivatives.displacement(fast_leaves, x_fast, chunk=50)
    torch.testing.assert_close(v_fast, v_ref, rtol=1e-12, atol=1e-13)
    g_ref = torch.autograd.grad(random_weights_loss([v_ref]), [x_ref, *ref_leaves])
    g_fast = torch.autograd.grad(random_weights_loss([v_fast]), [x_fast, *fast_leaves])
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for method in ("autograd", "forward-autograd"):
        torch.testing.assert_close(derivatives.displacement(p, x, method=method), v_ref.detach())


@pytest.mark.parametrize("order", [0, 1, 2])
def test_gradcheck_hand_written_backward(order):
    """Finite-difference check of the custom backward w.r.t. x and every weight and bias."""
    p = [t.requires_grad_(True) for t in params(hidden=5)]
    x = points(3).requires_grad_(True)

    def jet(x_, *ps):
        return derivatives._jet_fast(list(ps), x_, 30.0, order, chunk=2)

    assert torch.autograd.gradcheck(jet, (x, *p), eps=1e-6, atol=1e-6, rtol=1e-5)


def _grads(method: str, loss_fn, p, x, **kw):
    leaves = [t.clone().requires_grad_(True) for t in p]
    loss = loss_fn(leaves, x, method, **kw)
    return torch.autograd.grad(loss, leaves)


def _jacobian_loss(ps, x, method, **kw):
    v, jac = derivatives.jacobian(ps, x, method=method, **kw)
    return losses.symmetric_jacobian_loss(jac) + v.pow(2).mean()


def _bending_loss(ps, x, method, **kw):
    v, _, hess = derivatives.hessian(ps, x, method=method, **kw)
    to_mm = torch.diag(torch.tensor([60.0, 45.0, 80.0], dtype=x.dtype))
    return losses.bending_energy(losses.hessian_to_mm(hess, to_mm)) + v.pow(2).mean()


@pytest.mark.parametrize("loss_fn", [_jacobian_loss, _bending_loss], ids=["jacobian", "bending"])
def test_weight_gradients_match_autograd_reference(loss_fn):
    p, x = params(), points(130)
    fast = _grads("forward", loss_fn, p, x, chunk=50)
    ref = _grads("autograd", loss_fn, p, x)
    assert len(fast) == 8                                               # 4 weights AND 4 biases
    for i, (g_fast, g_ref) in enumerate(zip(fast, ref)):
        assert g_ref.abs().max() > 0, f"param {i}: reference gradient is zero, test would be vacuous"
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-11 * float(g_ref.abs().max()))


def test_gradients_flow_through_non_leaf_modulated_weights():
    """REINDIR passes weights that are functions of an encoder output: the gradient must reach it."""
    p, x = params(), points(40)
    gen = make_generator(5)
    gain = {i: (0.1 * torch.randn(p[2 * i].shape[0], dtype=F64, generator=gen)).requires_grad_(True) for i in (1, 2)}
    shift = {i: (0.1 * torch.randn(p[2 * i].shape[0], dtype=F64, generator=gen)).requires_grad_(True) for i in (1, 2)}

    def modulated() -> list[torch.Tensor]:
        out = list(p)
        for i in (1, 2):
            out[2 * i] = p[2 * i] * (1 + gain[i])[:, None]
            out[2 * i + 1] = p[2 * i + 1] + shift[i]
        return out

    leaves = [gain[1], shift[1], gain[2], shift[2]]
    for loss_fn in (_jacobian_loss, _bending_loss):
        fast = torch.autograd.grad(loss_fn(modulated(), x, "forward", chunk=40), leaves)
        ref = torch.autograd.grad(loss_fn(modulated(), x, "autograd"), leaves)
        for g_fast, g_ref in zip(fast, ref):
            assert g_ref.abs().max() > 0
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-12)


def test_gradient_with_respect_to_points():
    p, x = params(), points(60)
    grads = []
    for method in ("forward", "forward-autograd"):
        xx = x.clone().requires_grad_(True)
        loss = random_weights_loss(derivatives.hessian(p, xx, method=method))
        grads.append(torch.autograd.grad(loss, xx)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


def test_objective_terms_same_with_every_derivative_method():
    z, y, xg = torch.meshgrid(*(torch.arange(16.0),) * 3, indexing="ij")
    blob = lambda c: torch.exp(-((xg - c) ** 2 + (y - 8) ** 2 + (z - 8) ** 2) / 12.0).numpy()  # noqa: E731
    from reindir_nb.core.pair import Pair
    from reindir_nb.core.volume import Volume
    pair = Pair(Volume.from_array(blob(7.0), spacing=(2, 2, 2)), Volume.from_array(blob(8.5), spacing=(2, 2, 2)))
    prob = Problem.from_pair(pair, dtype=F64)
    fwd, bwd = params(0), params(1)
    g = make_generator(0)
    xf, xb = prob.sample_points(64, g, "fixed"), prob.sample_points(64, g, "moving")
    for reg in ("jacobian", "bending"):
        results = {}
        for method in ("forward", "autograd"):
            leaves = [t.clone().requires_grad_(True) for t in fwd + bwd]
            terms = Objective(regulariser=reg, derivative_method=method).terms(leaves[:8], leaves[8:], prob, xf, xb, 30.0)
            results[method] = (terms["total"].detach(), torch.autograd.grad(terms["total"], leaves))
        torch.testing.assert_close(results["forward"][0], results["autograd"][0], rtol=1e-10, atol=0)
        for a, b in zip(results["forward"][1], results["autograd"][1]):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * float(b.abs().max()))


# ------------------------------------------------------------------ options and errors


def test_bad_arguments_raise():
    p, x = params(), points(4)
    with pytest.raises(ValueError, match="unknown derivative method"):
        derivatives.jacobian(p, x, method="double")
    with pytest.raises(ValueError, match="unknown derivative method"):
        derivatives.hessian(p, x, method="fd")
    with pytest.raises(ValueError, match="chunk"):
        derivatives.jacobian(p, x, chunk=0)


def test_matmul_flops_by_hand():
    # one point through 3-256-256-256-3: layer 0 (1 row) + two 256x256 and one 256x3 layer with R rows
    for order, rows in ((0, 1), (1, 4), (2, 10)):
        forward = 2 * 3 * 256 + rows * 2 * (256 * 256 * 2 + 256 * 3)
        assert derivatives.jet_matmul_flops(1, order=order) == 3 * forward
        assert derivatives.jet_matmul_flops(10, order=order, backward=False) == 10 * forward


def test_step_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--points", "128", "--rounds", "1", "--image-size", "24",
           "--skip", "ccidir-bending", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "faster than double backward" in proc.stdout
    data = json.loads(out.read_text())
    assert data["fp32_peak_gflops"] > 0
    for kind in ("ccidir-jacobian", "bending"):
        methods = data["steps"][kind]["methods"]
        assert set(methods) == {"forward", "autograd"}
        assert methods["forward"]["speedup_vs_autograd"] > 0 and methods["forward"]["xsol_median"] > 0
