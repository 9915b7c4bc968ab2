"""Spatial derivatives of the SIREN displacement ``v(x)`` at a batch of points.

``J[n, i, j] = d v_i / d x_j`` and ``H[n, i, j, k] = d^2 v_i / d x_j d x_k``, all in INR units
(multiply by the geometry's scalings for mm, see :func:`reindir_nb.losses.hessian_to_mm`).

Three implementations, selected by ``method``:

* ``"forward"`` (default): exact forward-mode *jets*. Next to every layer's values the
  network carries their derivatives along the three coordinate directions (and, for the
  Hessian, the six unique second derivatives), stacked as extra rows of ONE matrix so that
  each linear layer is a single matmul. The backward pass is written by hand
  (:class:`_SirenJet`, a ``torch.autograd.Function``) and runs over chunks of points so the
  working set stays in cache. Gradients flow to every tensor passed in ``params`` (weights
  AND biases, leaf or not: REINDIR passes modulated weights) and to ``x``.
* ``"forward-autograd"``: the same jet maths written with ordinary tensor ops, backward by
  autograd. Slower, but differentiable to any order (use it if you need a gradient of a
  gradient through the derivatives).
* ``"autograd"``: the reference, autograd double backward with ``create_graph=True`` (one
  backward per output component), as in the IDIR/ccIDIR code.

The maths of the jets (per hidden layer, ``omega`` folded into the weights: ``W' = omega W``,
``b' = omega b``, ``z = W' h + b'``, ``h_next = sin z``, ``s = sin z``, ``c = cos z``)::

    value     z          = W' h + b'                 h_next          = s
    1st order dz_j       = W' dh_j                   dh_next_j       = c dz_j
    2nd order d2z_jk     = W' d2h_jk                 d2h_next_jk     = c d2z_jk - s dz_j dz_k

with ``h = x``, ``dh_j = e_j``, ``d2h_jk = 0`` at the input, and the linear output layer
``v = W h + b``, ``J[:, j] = W dh_j``, ``H[:, j, k] = W d2h_jk``. Only the pairs
``j <= k`` (:data:`PAIRS`) are carried: 1 + 3 + 6 = 10 rows instead of the 1 + 3 + 9 (+ the 4x
redundant work) of double backward.

The forward path takes ``chunk`` (keyword-only): the points per chunk of the hand-written passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .network import Params, layer, num_layers, siren

__all__ = [
    "displacement",
    "jacobian",
    "hessian",
    "jacobian_autograd",
    "hessian_autograd",
    "jet_matmul_flops",
    "PAIRS",
    "METHODS",
    "DEFAULT_CHUNK",
]

METHODS = ("forward", "forward-autograd", "autograd")

# the six unique second-derivative directions (j, k), j <= k, in the order of the jet rows
PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
_PJ = [j for j, _ in PAIRS]
_PK = [k for _, k in PAIRS]
# SYMMETRIC[j][k] = index into PAIRS of the unordered pair {j, k}
_SYMMETRIC = [[0, 3, 4], [3, 1, 5], [4, 5, 2]]

# points per chunk of the hand-written passes on a CPU: 1024 points x 4 rows x 256 floats = 4 MB
DEFAULT_CHUNK = 1024


def _rows(order: int) -> int:
    """Rows of a jet: value (1) [+ first derivatives (3) [+ unique second derivatives (6)]]."""
    return (1, 4, 10)[order]


# --------------------------------------------------------------------------------------------
# reference: autograd double backward
# --------------------------------------------------------------------------------------------


def jacobian_autograd(params: Params, x: Tensor, omega: float = 30.0) -> tuple[Tensor, Tensor]:
    """Reference: ``(v, J)`` by autograd, one backward per output component."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = siren(params, x, omega)
        rows = [torch.autograd.grad(v[:, i].sum(), x, create_graph=True)[0] for i in range(3)]
    return v, torch.stack(rows, dim=1)


def hessian_autograd(params: Params, x: Tensor, omega: float = 30.0) -> tuple[Tensor, Tensor, Tensor]:
    """Reference: ``(v, J, H)`` by autograd (double backward of every Jacobian entry)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = siren(params, x, omega)
        rows = [torch.autograd.grad(v[:, i].sum(), x, create_graph=True)[0] for i in range(3)]
        jac = torch.stack(rows, dim=1)
        hess = torch.stack(
            [
                torch.stack([torch.autograd.grad(jac[:, i, j].sum(), x, create_graph=True)[0] for j in range(3)], dim=1)
                for i in range(3)
            ],
            dim=1,
        )
    return v, jac, hess


# --------------------------------------------------------------------------------------------
# forward-mode jets with autograd backward (readable maths, any-order differentiable)
# --------------------------------------------------------------------------------------------


def _jet_autograd(params: Params, x: Tensor, omega: float, order: int) -> Tensor:
    """Output jet ``(N, rows, 3)`` (value, dv/dx_j, d2v/dx_j dx_k for PAIRS) with plain ops."""
    n = num_layers(params)
    w, b = layer(params, 0)
    z = omega * torch.addmm(b, x, w.t())                         # (N, H)
    dz = (omega * w.t()).unsqueeze(0).expand(x.shape[0], 3, -1)  # (N, 3, H): dz_j = W'[:, j]
    d2z = z.new_zeros(x.shape[0], 6, z.shape[1]) if order == 2 else None
    for i in range(1, n):
        s, c = torch.sin(z), torch.cos(z)
        h, dh = s, c.unsqueeze(1) * dz
        d2h = c.unsqueeze(1) * d2z - s.unsqueeze(1) * dz[:, _PJ] * dz[:, _PK] if order == 2 else None
        w, b = layer(params, i)
        scale = omega if i < n - 1 else 1.0                      # output layer is linear
        z = scale * torch.addmm(b, h, w.t())
        dz = scale * (dh @ w.t())
        d2z = scale * (d2h @ w.t()) if order == 2 else None
    parts = [z.unsqueeze(1), dz] + ([d2z] if order == 2 else [])
    return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------------------------
# forward-mode jets with a hand-written, chunked backward (the fast path)
# --------------------------------------------------------------------------------------------


def _sine_jet(z: Tensor, dz: Tensor, d2z: Tensor | None, out: Tensor, cos_out: Tensor, order: int) -> None:
    """Apply ``sin`` to a pre-activation jet; write the output jet to ``out`` (chunk, rows, H)
    and ``cos z`` to ``cos_out`` (chunk, H).

    ``z`` (chunk, H), ``dz`` (chunk or 1, 3, H), ``d2z`` (chunk, 6, H) or None for zero.
    ``h = s``, ``dh_j = c dz_j``, ``d2h_jk = c d2z_jk - s dz_j dz_k`` (``s, c = sin z, cos z``).
    """
    torch.sin(z, out=out[:, 0])
    torch.cos(z, out=cos_out)
    if order == 0:
        return
    c = cos_out.unsqueeze(1)
    torch.mul(c, dz, out=out[:, 1:4])
    if order == 2:
        d2h = out[:, 4:]
        torch.mul(out[:, :1], dz[:, _PJ] * dz[:, _PK], out=d2h)              # s dz_j dz_k
        if d2z is None:
            d2h.neg_()
        else:
            d2h.neg_().addcmul_(c, d2z)


def _sine_jet_backward(
    grad: Tensor, dz: Tensor, d2z: Tensor | None, sin_z: Tensor, cos_z: Tensor, order: int, out: Tensor | None = None
) -> Tensor:
    """Vector-Jacobian product of :func:`_sine_jet`: the gradient w.r.t. the pre-activation
    jet (chunk, rows, H) from ``grad``, the gradient w.r.t. its output jet (written to ``out``
    when given, a buffer of that shape not aliasing ``grad``).

    zeroth order: ``g_z = c g_h``. First order::

        g_dz_j = c g_dh_j
        g_z    = c g_h - s sum_j g_dh_j dz_j

    second order (``p`` runs over PAIRS, ``(j, k) = p``)::

        g_d2z_p = c g_d2h_p
        g_dz_j  = c g_dh_j - s sum_k g_d2h_{jk} dz_k (1 + [k = j])
        g_z     = c (g_h - sum_p g_d2h_p dz_j dz_k) - s (sum_j g_dh_j dz_j + sum_p g_d2h_p d2z_p)
    """
    g_pre = torch.empty_like(grad) if out is None else out
    if order == 0:                                                        # g_z = c g_h
        torch.mul(cos_z, grad[:, 0], out=g_pre[:, 0])
        return g_pre
    c, s = cos_z.unsqueeze(1), sin_z.unsqueeze(1)
    g_h, g_dh = grad[:, 0], grad[:, 1:4]
    torch.mul(c, g_dh, out=g_pre[:, 1:4])
    s_part = g_dh[:, 0] * dz[:, 0]                                        # sum_j g_dh_j dz_j, without
    s_part.addcmul_(g_dh[:, 1], dz[:, 1]).addcmul_(g_dh[:, 2], dz[:, 2])  # a (chunk, 3, H) temporary
    c_part = g_h
    if order == 2:
        g_d2h = grad[:, 4:]
        torch.mul(c, g_d2h, out=g_pre[:, 4:])
        if d2z is not None:
            s_part += (g_d2h * d2z).sum(dim=1)
        c_part = g_h - (g_d2h * dz[:, _PJ] * dz[:, _PK]).sum(dim=1)
        t = s * g_d2h                                                     # s g_d2h_p
        for j in range(3):
            pull = t[:, j] * dz[:, j]                                     # the diagonal counts twice
            for k in range(3):
                pull = pull + t[:, _SYMMETRIC[j][k]] * dz[:, k]
            g_pre[:, 1 + j] -= pull
    torch.mul(cos_z, c_part, out=g_pre[:, 0])
    g_pre[:, 0].addcmul_(sin_z, s_part, value=-1.0)
    return g_pre


def _scaled_layers(params: Sequence[Tensor], omega: float) -> tuple[list[float], list[Tensor], list[Tensor]]:
    """``omega`` folded into the hidden layers: ``W' = omega W``, ``b' = omega b`` (the output
    layer is linear and keeps scale 1). Returns (scales, weights, biases)."""
    n_lin = len(params) // 2
    scales = [float(omega)] * (n_lin - 1) + [1.0]
    ws = [params[2 * i] * scales[i] for i in range(n_lin)]
    bs = [params[2 * i + 1] * scales[i] for i in range(n_lin)]
    return scales, ws, bs


def _chunk_forward(
    x: Tensor, ws: list[Tensor], bs: list[Tensor], order: int, out: Tensor,
    buffers: list[Tensor] | None = None,
) -> list[Tensor]:
    """Forward of the jet network on one chunk of points ``x`` (c, 3); writes the output jet to
    ``out`` (c, rows, 3).

    Returns what the backward needs, as one flat list (c points, R rows, H width):
    ``[A_1 .. A_{L-1}, P_1 .. P_{L-2}, C_0 .. C_{L-2}]`` with ``A_l`` (c, R, H) the input jet of
    matmul ``l`` (row 0 of ``A_{l+1}`` is ``sin z_l``), ``P_l`` the pre-activation jet of layer
    ``l >= 1`` and ``C_l = cos z_l`` (c, H). Pass the list of a previous chunk of the same
    size as ``buffers`` to reuse its memory (inference). Per-chunk buffers (a few MB) stay
    in cache and are recycled by the allocator, unlike one (N, R, H) array per layer."""
    n_lin, rows, c = len(ws), _rows(order), x.shape[0]
    if buffers is None:
        acts = [x.new_empty(c, rows, w.shape[1]) for w in ws[1:]]
        pres = [x.new_empty(c, rows, w.shape[0]) for w in ws[1:-1]]
        coss = [x.new_empty(c, w.shape[0]) for w in ws[:-1]]
    else:
        acts, pres, coss = buffers[:n_lin - 1], buffers[n_lin - 1:2 * n_lin - 3], buffers[2 * n_lin - 3:]
    z0 = torch.addmm(bs[0], x, ws[0].t())
    _sine_jet(z0, ws[0].t().unsqueeze(0), None, acts[0], coss[0], order)    # dz_j = W'[:, j] for all points
    for i in range(1, n_lin):
        a = acts[i - 1]
        target = pres[i - 1] if i < n_lin - 1 else out
        torch.mm(a.view(-1, a.shape[-1]), ws[i].t(), out=target.view(-1, target.shape[-1]))  # W' (h, dh_j, d2h_p)
        target[:, 0] += bs[i]
        if i < n_lin - 1:
            d2z = target[:, 4:] if order == 2 else None
            _sine_jet(target[:, 0], target[:, 1:4], d2z, acts[i], coss[i], order)
    return acts + pres + coss


def _chunk_backward(
    grad_out: Tensor, x: Tensor, ws: list[Tensor], saved: list[Tensor], order: int,
    g_ws: list[Tensor], g_bs: list[Tensor], scratch: list[Tensor] | None = None,
) -> Tensor:
    """Backward of :func:`_chunk_forward` on one chunk: adds the chunk's contribution to the
    gradients ``g_ws``, ``g_bs`` w.r.t. the omega-scaled weights and biases and returns the
    gradient w.r.t. ``x`` (c, 3). Per layer, from the output back::

        output layer   g_W += g_out^T A,  g_b += sum_n g_v,  g_A = g_out W
        sine           g_pre = _sine_jet_backward(g_A, ...)
        hidden layer   g_W' += g_pre^T A, g_b' += sum_n g_z, g_A = g_pre W'
        layer 0        g_W' += g_z^T x, g_W'[:, j] += sum_n g_dz_j, g_b' += sum_n g_z, g_x = g_z W'

    ``scratch``: two (>= c, rows, H) buffers for ``g_A`` and ``g_pre``, reused over the chunks
    (fresh multi-MB allocations each chunk cost page faults).
    """
    n_lin = len(ws)
    acts, pres, coss = saved[:n_lin - 1], saved[n_lin - 1:2 * n_lin - 3], saved[2 * n_lin - 3:]
    g = grad_out                                                            # gradient w.r.t. the jet leaving layer i
    for i in range(n_lin - 1, 0, -1):
        a = acts[i - 1]
        a_flat, g_flat = a.view(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
        g_ws[i].addmm_(g_flat.t(), a_flat)
        g_bs[i] += g[:, 0].sum(dim=0)
        if scratch is not None and scratch[0].shape[1:] == a.shape[1:]:
            buf_a, buf_pre = scratch[0][:a.shape[0]], scratch[1][:a.shape[0]]
        else:
            buf_a, buf_pre = torch.empty_like(a), None
        g_a = torch.mm(g_flat, ws[i], out=buf_a.view(-1, a.shape[-1])).view(a.shape)  # gradient w.r.t. A_i
        if i >= 2:                                                          # pre-activation jet of layer i - 1
            pre = pres[i - 2]
            dz, d2z = pre[:, 1:4], (pre[:, 4:] if order == 2 else None)
        else:
            dz, d2z = ws[0].t().unsqueeze(0), None
        g = _sine_jet_backward(g_a, dz, d2z, a[:, 0], coss[i - 1], order, out=buf_pre)
    g_ws[0].addmm_(g[:, 0].t(), x)
    if order >= 1:
        g_ws[0] += g[:, 1:4].sum(dim=0).t()
    g_bs[0] += g[:, 0].sum(dim=0)
    return g[:, 0] @ ws[0]


def _chunks(npts: int, chunk: int) -> list[slice]:
    return [slice(lo, min(lo + chunk, npts)) for lo in range(0, npts, chunk)]


class _SirenJet(torch.autograd.Function):
    """Output jet (N, rows, 3) of the SIREN at points x (N, 3), with a hand-written backward.

    Inputs ``x, omega, order, chunk, *params``. Forward and backward run ``chunk``
    points at a time (:func:`_chunk_forward`, :func:`_chunk_backward`); the weight gradients
    are accumulated over the chunks, then ``g_W = omega g_W'``, ``g_b = omega g_b'`` for the
    omega-scaled hidden layers.
    """

    @staticmethod
    def forward(ctx, x: Tensor, omega: float, order: int, chunk: int, *params: Tensor) -> Tensor:  # type: ignore[override]
        scales, ws, bs = _scaled_layers(params, omega)
        out = x.new_empty(x.shape[0], _rows(order), ws[-1].shape[0])
        saved = [t for sl in _chunks(x.shape[0], chunk) for t in _chunk_forward(x[sl], ws, bs, order, out[sl])]
        ctx.save_for_backward(x, *ws, *saved)
        ctx.meta = (scales, order, chunk)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        scales, order, chunk = ctx.meta
        n_lin = len(scales)
        x, *rest = ctx.saved_tensors
        ws, saved = rest[:n_lin], rest[n_lin:]
        per_chunk = 3 * n_lin - 4                                           # A, P and C tensors per chunk
        g_ws = [torch.zeros_like(w) for w in ws]
        g_bs = [w.new_zeros(w.shape[0]) for w in ws]
        g_x = torch.empty_like(x)
        grad_out = grad_out.contiguous()
        first_act = saved[0]                                                # A_1 of the first (largest) chunk
        scratch = [torch.empty_like(first_act), torch.empty_like(first_act)]
        for k, sl in enumerate(_chunks(x.shape[0], chunk)):
            chunk_saved = saved[k * per_chunk:(k + 1) * per_chunk]
            g_x[sl] = _chunk_backward(grad_out[sl], x[sl], ws, chunk_saved, order, g_ws, g_bs, scratch)
        grads: list[Tensor] = []
        for g_w, g_b, scale in zip(g_ws, g_bs, scales):
            grads += [g_w.mul_(scale), g_b.mul_(scale)] if scale != 1.0 else [g_w, g_b]
        return (g_x if ctx.needs_input_grad[0] else None, None, None, None, *grads)


def _jet_fast(params: Params, x: Tensor, omega: float, order: int, chunk: int | None) -> Tensor:
    if chunk is None:
        chunk = DEFAULT_CHUNK if x.device.type == "cpu" else max(1, x.shape[0])
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of points, got {chunk}")
    x = x.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _SirenJet.apply(x, float(omega), order, int(chunk), *params)
    with torch.no_grad():                                                   # inference: O(chunk) memory
        _, ws, bs = _scaled_layers(params, omega)
        out = x.new_empty(x.shape[0], _rows(order), ws[-1].shape[0])
        buffers = None
        for sl in _chunks(x.shape[0], chunk):
            reuse = buffers if buffers is not None and sl.stop - sl.start == chunk else None
            buffers = _chunk_forward(x[sl], ws, bs, order, out[sl], reuse)
        return out


# --------------------------------------------------------------------------------------------
# splitting a jet into (v, J, H)
# --------------------------------------------------------------------------------------------


def _split_jacobian(out: Tensor) -> tuple[Tensor, Tensor]:
    """(N, rows, 3) jet -> ``v`` (N, 3), ``J`` (N, 3, 3) with ``J[n, i, j] = out[n, 1 + j, i]``."""
    return out[:, 0], out[:, 1:4].transpose(1, 2)


def _split_hessian(out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, 10, 3) jet -> ``v``, ``J``, ``H`` (N, 3, 3, 3), ``H[n, i, j, k] = out[n, 4 + pair(j, k), i]``."""
    v, jac = _split_jacobian(out)
    index = torch.tensor([4 + p for row in _SYMMETRIC for p in row], device=out.device)
    hess = out.index_select(1, index).view(out.shape[0], 3, 3, out.shape[2]).permute(0, 3, 1, 2)
    return v, jac, hess


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown derivative method {method!r} (use one of {', '.join(map(repr, METHODS))})")


def displacement(
    params: Params, x: Tensor, omega: float = 30.0, method: str = "forward", *, chunk: int | None = None
) -> Tensor:
    """``v`` (N, 3), INR units: the SIREN itself (no derivatives). ``"forward"`` runs the
    chunked hand-written pass with omega folded into the weights (the cycle term's second
    network evaluation: ~2x faster than autograd through :func:`reindir_nb.inr.siren` on a CPU);
    the other methods use :func:`reindir_nb.inr.siren`."""
    check_method(method)
    if method == "forward":
        return _jet_fast(params, x, omega, 0, chunk)[:, 0]
    return siren(params, x, omega)


def _dispatch(order: int, params: Params, x: Tensor, omega: float, method: str, chunk: int | None):
    check_method(method)
    if method == "forward":
        out = _jet_fast(params, x, omega, order, chunk)
    elif method == "forward-autograd":
        out = _jet_autograd(params, x, omega, order)
    else:
        return (jacobian_autograd if order == 1 else hessian_autograd)(params, x, omega)
    return _split_jacobian(out) if order == 1 else _split_hessian(out)


def jacobian(
    params: Params, x: Tensor, omega: float = 30.0, method: str = "forward", *, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """``(v, J)``: displacement (N, 3) and ``J[n, i, j] = dv_i/dx_j`` (N, 3, 3), INR units.

    ``chunk`` tunes the ``"forward"`` path only (see the module docstring).
    """
    return _dispatch(1, params, x, omega, method, chunk)


def hessian(
    params: Params, x: Tensor, omega: float = 30.0, method: str = "forward", *, chunk: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(v, J, H)`` with ``H[n, i, j, k] = d^2 v_i / dx_j dx_k`` (N, 3, 3, 3), INR units."""
    return _dispatch(2, params, x, omega, method, chunk)


def jet_matmul_flops(points: int, sizes: tuple[int, ...] = (3, 256, 256, 256, 3), order: int = 0, backward: bool = True) -> float:
    """Matmul FLOPs of one SIREN pass over ``points`` carrying a jet of the given ``order``
    (0: values only, 1: + Jacobian, 2: + Hessian), forward and (if ``backward``) the backward
    (gradients w.r.t. inputs and weights: twice the forward). Layer 0 counts one row (its
    tangents are constants), later layers all ``1 / 4 / 10`` rows. The "speed of light" of a
    step is its FLOPs divided by the measured matmul peak."""
    rows = {0: 1, 1: 4, 2: 10}[order]
    fwd = 2.0 * points * sizes[0] * sizes[1]
    fwd += sum(2.0 * points * rows * a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    return fwd * (3.0 if backward else 1.0)
