"""Modulatable SIREN: the implicit neural representation of a displacement field.

The network maps INR coordinates ``x`` in ``[-1, 1]^3`` (order ``(x, y, z)``, see
:mod:`reindir_nb.geometry`) to a displacement ``v(x)`` in the same units, so that
``phi(x) = x + v(x)``. Layers: ``3 -> 256 -> 256 -> 256 -> 3``; hidden layers are
``sin(omega * (W h + b))``, the output layer is linear.

Weights are plain tensors in a list ``[W0, b0, W1, b1, W2, b2, W3, b3]`` (``W`` of shape
``(out, in)``) so that they can be supplied functionally: Reptile averages them, REINDIR
modulates the two hidden->hidden layers (``MODULATED_LAYERS``) per image pair, and the fast
derivative code in :mod:`reindir_nb.derivatives` walks them layer by layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import require_float, require_int

__all__ = ["SirenConfig", "init_siren", "siren", "phi", "MODULATED_LAYERS", "num_layers", "layer", "clone_params", "Params"]

# indices of the linear layers whose weights/biases REINDIR modulates (hidden -> hidden)
MODULATED_LAYERS: tuple[int, ...] = (1, 2)

Params = list[Tensor]


@dataclass(frozen=True)
class SirenConfig:
    """Architecture and initialisation of one SIREN.

    ``output_scale`` multiplies the Sitzmann-initialised output layer: 1.0 is the standard
    random start (a random displacement of a few mm), 0.0 starts at exactly zero
    displacement (identity transform; the hidden layers still learn because the output
    weights receive gradient on the first step).
    """

    hidden: int = 256
    hidden_layers: int = 3
    omega: float = 30.0
    output_scale: float = 1.0

    def __post_init__(self) -> None:
        require_int(self.hidden, "SirenConfig.hidden", 1)
        require_int(self.hidden_layers, "SirenConfig.hidden_layers", 1)
        require_float(self.omega, "SirenConfig.omega", positive=True)
        require_float(self.output_scale, "SirenConfig.output_scale", minimum=0.0)


def num_layers(params: Params) -> int:
    return len(params) // 2


def layer(params: Params, index: int) -> tuple[Tensor, Tensor]:
    """``(W, b)`` of linear layer ``index``."""
    return params[2 * index], params[2 * index + 1]


def init_siren(
    config: SirenConfig = SirenConfig(),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Sitzmann initialisation: first layer ``U(-1/in, 1/in)``, later layers
    ``U(-sqrt(6/in)/omega, +sqrt(6/in)/omega)``; biases ``U(-1/sqrt(in), 1/sqrt(in))``
    (PyTorch's Linear default, as in SIREN/IDIR). Drawn on the CPU from ``generator`` so the
    same seed gives the same weights on every device."""
    sizes = [3] + [config.hidden] * config.hidden_layers + [3]
    params: Params = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / config.omega
        w = (torch.rand(fan_out, fan_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        bb = 1.0 / math.sqrt(fan_in)
        b = (torch.rand(fan_out, generator=generator, dtype=torch.float64) * 2 - 1) * bb
        if i == len(sizes) - 2:
            w = w * config.output_scale
            b = b * config.output_scale
        params += [w.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)]
    return params


def siren(params: Params, x: Tensor, omega: float = 30.0) -> Tensor:
    """Displacement ``v(x)`` (N, 3) in INR units at INR coordinates ``x`` (N, 3)."""
    h = x
    n = num_layers(params)
    for i in range(n - 1):
        w, b = layer(params, i)
        h = torch.sin(omega * torch.addmm(b, h, w.t()))
    w, b = layer(params, n - 1)
    return torch.addmm(b, h, w.t())


def phi(params: Params, x: Tensor, omega: float = 30.0) -> Tensor:
    """Transformed INR coordinates ``phi(x) = x + v(x)``."""
    return x + siren(params, x, omega)


def clone_params(params: Params, requires_grad: bool = False) -> Params:
    """Detached copies (optionally leaf tensors that require grad)."""
    return [p.detach().clone().requires_grad_(requires_grad) for p in params]
