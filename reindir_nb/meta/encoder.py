"""LKU-Net-style image-pair encoder of REINDIR (paper Table 1), widths scaled by ``width``.

Input: fixed and moving patches concatenated, ``(B, 2, D, H, W)`` (or 3 channels with a
difference channel, :data:`ENCODER_INPUTS`). Layers 1-10: conv(k3)+PReLU
and large-kernel blocks (parallel 1x1x1, 3x3x3, 5x5x5 convolutions summed with the input, then
PReLU) with widths w, w, 2w, 2w, 4w, 4w, 8w, 8w, 8w, 8w (w = 6 in the paper); four stride-2
stages. The bottleneck (layers 11-13) adapts to the patch size so the output is always a 1x1x1
map with ``embedding_length`` channels: for the paper's 336x288x366 patch it is exactly Table 1
(k3 stride 3 -> 7x6x7, kernel [3,2,3] -> 5x5x5, k5 -> 1x1x1, all unpadded).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LargeKernelBlock", "Encoder", "bottleneck_plan", "encoder_output_size", "ENCODER_INPUTS",
           "DIFFERENCE_GAIN", "encoder_channels"]

# What the encoder reads (channels built by :func:`encoder_channels`):
#   "pair": the fixed and moving intensities on [0, 1] (the paper);
#   "pair+difference": both minus the fixed patch's mean, and DIFFERENCE_GAIN * (fixed - moving):
#     the motion is a small part of the intensities, so the difference gets its own, louder channel.
ENCODER_INPUTS = {"pair": 2, "pair+difference": 3}
DIFFERENCE_GAIN = 10.0


def encoder_channels(fixed: Tensor, moving: Tensor, mode: str = "pair") -> Tensor:
    """``(B, C, D, H, W)`` encoder input from fixed and moving ``(B, 1, D, H, W)`` patches."""
    if mode == "pair":
        return torch.cat([fixed, moving], dim=1)
    if mode not in ENCODER_INPUTS:
        raise ValueError(f"encoder input must be one of {sorted(ENCODER_INPUTS)}, got {mode!r}")
    mean = fixed.mean(dim=(1, 2, 3, 4), keepdim=True)
    return torch.cat([fixed - mean, moving - mean, DIFFERENCE_GAIN * (fixed - moving)], dim=1)


class LargeKernelBlock(nn.Module):
    """LKU-Net block: ``PReLU(x + conv1(x) + conv3(x) + conv5(x))`` (same channels, same size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.k1 = nn.Conv3d(channels, channels, 1)
        self.k3 = nn.Conv3d(channels, channels, 3, padding=1)
        self.k5 = nn.Conv3d(channels, channels, 5, padding=2)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.k1(x) + self.k3(x) + self.k5(x))


# PReLU's initial negative slope; the He initialisation below is computed for it
PRELU_SLOPE = 0.25
# std factor of each large-kernel branch (on top of He init): x + 3 branches, then PReLU, keeps
# the second moment of the signal about constant through a block
BRANCH_GAIN = 0.4


def _init_signal_preserving(module: nn.Module) -> None:
    """He (fan-in) initialisation for PReLU slope 0.25 with zero biases, branches of the
    large-kernel blocks scaled by :data:`BRANCH_GAIN`, the last (linear) layer with gain 1.

    PyTorch's default conv initialisation shrinks the signal's second moment ~5x per conv+PReLU
    layer and adds random biases; through the 13 layers of this encoder the image-dependent part
    of the embedding ended at 0.06 % of its norm (measured on demo phantom pairs), so every pair
    got the same embedding and REINDIR could not differ from a template. With this initialisation
    the pair-to-pair variation is a sizeable fraction of the norm (tested)."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv3d)]
    branches = {id(c) for m in module.modules() if isinstance(m, LargeKernelBlock) for c in (m.k1, m.k3, m.k5)}
    for conv in convs:
        last = conv is convs[-1]
        nn.init.kaiming_normal_(conv.weight, a=0.0 if last else PRELU_SLOPE, mode="fan_in",
                                nonlinearity="linear" if last else "leaky_relu")
        if id(conv) in branches:
            conv.weight.data.mul_(BRANCH_GAIN)
        nn.init.zeros_(conv.bias)


def _after_stride2(size: int) -> int:
    return (size - 1) // 2 + 1  # k3, stride 2, padding 1


def bottleneck_plan(patch_size: tuple[int, int, int]) -> dict:
    """Sizes and kernels of layers 11-13 for a patch ``(z, y, x)``.

    After the four stride-2 stages the map has size S. Layer 11 is k3 stride 3 unpadded when
    every S >= 7 (else k3 stride 1 padded); layer 12's kernel is ``S11 - 4`` per axis when
    every S11 >= 5 (output 5) else ``S11`` (output 1); layer 13's kernel is 5 or 1.
    """
    s = [int(v) for v in patch_size]
    for _ in range(4):
        s = [_after_stride2(v) for v in s]
    stage = list(s)
    strided = min(s) >= 7
    s11 = [(v - 3) // 3 + 1 for v in s] if strided else s
    big = min(s11) >= 5
    k12 = [v - 4 for v in s11] if big else s11
    k13 = 5 if big else 1
    return {"stage_size": stage, "layer11_strided": strided, "layer11_size": s11, "layer12_kernel": k12, "layer13_kernel": k13}


def encoder_output_size(patch_size: tuple[int, int, int]) -> list[int]:
    """Spatial size of the encoder output for a patch (always [1, 1, 1])."""
    plan = bottleneck_plan(patch_size)
    s12 = [a - k + 1 for a, k in zip(plan["layer11_size"], plan["layer12_kernel"])]
    return [v - plan["layer13_kernel"] + 1 for v in s12]


class Encoder(nn.Module):
    """Image-pair encoder -> embedding ``(B, embedding_length)``."""

    def __init__(self, patch_size: tuple[int, int, int], width: int = 6, embedding_length: int = 1025,
                 in_channels: int = 2):
        super().__init__()
        w = int(width)
        self.in_channels = int(in_channels)
        self.patch_size = tuple(int(v) for v in patch_size)
        self.embedding_length = int(embedding_length)
        self.width = w  # start width (paper Table 1: 6); checkpoints record it

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.PReLU(cout))

        self.features = nn.Sequential(
            conv(self.in_channels, w), conv(w, w),                    # layers 1-2
            conv(w, 2 * w, 2), LargeKernelBlock(2 * w),               # 3-4
            conv(2 * w, 4 * w, 2), LargeKernelBlock(4 * w),           # 5-6
            conv(4 * w, 8 * w, 2), LargeKernelBlock(8 * w),           # 7-8
            conv(8 * w, 8 * w, 2), LargeKernelBlock(8 * w),           # 9-10
        )
        plan = bottleneck_plan(self.patch_size)
        self.plan = plan
        layer11 = (nn.Conv3d(8 * w, 16 * w, 3, stride=3) if plan["layer11_strided"]
                   else nn.Conv3d(8 * w, 16 * w, 3, padding=1))
        self.bottleneck = nn.Sequential(
            layer11, nn.PReLU(16 * w),
            nn.Conv3d(16 * w, 16 * w, tuple(plan["layer12_kernel"])), nn.PReLU(16 * w),
            nn.Conv3d(16 * w, self.embedding_length, plan["layer13_kernel"]),
        )
        _init_signal_preserving(self)

    def forward(self, pair_patches: Tensor) -> Tensor:
        if tuple(pair_patches.shape[2:]) != self.patch_size:
            raise ValueError(f"encoder built for patch {self.patch_size}, got {tuple(pair_patches.shape[2:])}")
        out = self.bottleneck(self.features(pair_patches))
        if out.shape[2:] != (1, 1, 1):
            raise RuntimeError(f"encoder output map is {tuple(out.shape[2:])}, expected 1x1x1")
        return out.flatten(1)
