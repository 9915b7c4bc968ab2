"""LKU-Net encoder: Table 1 structure, large-kernel block arithmetic, 1x1x1 output for every profile."""

import pytest
import torch
from torch import nn

from reindir_nb.meta.encoder import Encoder, LargeKernelBlock, bottleneck_plan, encoder_output_size
from reindir_nb.core.profiles import PROFILES


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_output_is_one_voxel_with_embedding_channels(name):
    """Analytic shapes AND a real forward: on the CPU for smoke/demo, on the ``meta`` device (shapes
    only, nothing allocated) for the paper's 336x288x366 patch."""
    prof = PROFILES[name]
    assert encoder_output_size(prof.patch_size) == [1, 1, 1]
    if name == "paper":
        with torch.device("meta"):
            enc = Encoder(prof.patch_size, width=prof.encoder_width, embedding_length=prof.embedding_length)
            out = enc(torch.empty(1, 2, *prof.patch_size))
    else:
        enc = Encoder(prof.patch_size, width=2, embedding_length=prof.embedding_length)
        out = enc(torch.zeros(2, 2, *prof.patch_size))
    assert out.shape == ((1 if name == "paper" else 2), prof.embedding_length)


def test_paper_bottleneck_is_table_1():
    plan = bottleneck_plan((336, 288, 366))
    assert plan["stage_size"] == [21, 18, 23]          # four stride-2 stages
    assert plan["layer11_strided"] and plan["layer11_size"] == [7, 6, 7]  # k3 stride 3, unpadded
    assert plan["layer12_kernel"] == [3, 2, 3] and plan["layer13_kernel"] == 5
    with torch.device("meta"):
        enc = Encoder((336, 288, 366))
    convs = [m for m in enc.bottleneck if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [96, 96, 1025]
    assert [c.kernel_size for c in convs] == [(3, 3, 3), (3, 2, 3), (5, 5, 5)]
    assert [c.stride for c in convs] == [(3, 3, 3), (1, 1, 1), (1, 1, 1)]
    assert all(c.padding == (0, 0, 0) for c in convs)


@pytest.mark.parametrize("size", [(16, 16, 16), (24, 40, 33), (48, 48, 48), (64, 64, 64), (112, 96, 120), (200, 180, 190)])
def test_shape_inference_matches_a_real_forward(size):
    with torch.device("meta"):
        out = Encoder(size, width=1, embedding_length=7)(torch.empty(1, 2, *size))
    assert out.shape == (1, 7) and encoder_output_size(size) == [1, 1, 1]


def test_table_1_widths_scale_with_width():
    for w in (6, 2):
        enc = Encoder((32, 32, 32), width=w, embedding_length=5)
        convs = [m for m in enc.features if isinstance(m, nn.Sequential)]
        blocks = [m for m in enc.features if isinstance(m, LargeKernelBlock)]
        assert [c[0].out_channels for c in convs] == [w, w, 2 * w, 4 * w, 8 * w, 8 * w]
        assert [c[0].stride[0] for c in convs] == [1, 1, 2, 2, 2, 2]
        assert [b.k1.out_channels for b in blocks] == [2 * w, 4 * w, 8 * w, 8 * w]
        assert all(isinstance(c[1], nn.PReLU) for c in convs)


def test_large_kernel_block_sums_three_paths_and_the_input():
    torch.manual_seed(0)
    block = LargeKernelBlock(3)
    x = torch.randn(1, 3, 7, 6, 5)
    s = x + block.k1(x) + block.k3(x) + block.k5(x)
    a = block.act.weight.view(1, 3, 1, 1, 1)
    expected = torch.where(s >= 0, s, a * s)
    torch.testing.assert_close(block(x), expected)
    assert block.k3.padding == (1, 1, 1) and block.k5.padding == (2, 2, 2) and block.k5.kernel_size == (5, 5, 5)


def test_wrong_patch_size_is_a_clear_error():
    enc = Encoder((32, 32, 32), width=1, embedding_length=3)
    with pytest.raises(ValueError, match="patch"):
        enc(torch.zeros(1, 2, 32, 32, 16))


def test_embedding_depends_on_the_image_pair():
    """Signal-preserving initialisation: the untrained encoder's embeddings of different pairs
    differ by a sizeable fraction of their norm (PyTorch's default init gave 0.06 %: every pair
    got the same embedding, so REINDIR could only learn a constant modulation)."""
    torch.manual_seed(0)
    enc = Encoder((32, 32, 32), width=2, embedding_length=65)
    gen = torch.Generator().manual_seed(1)
    base = torch.rand(1, 1, 32, 32, 32, generator=gen)
    pairs = [torch.cat([base, torch.roll(base, shifts=k, dims=4)], dim=1) for k in (1, 2, 3, 4)]
    with torch.no_grad():
        emb = torch.cat([enc(p) for p in pairs])
    variation = (emb - emb.mean(0)).norm(dim=1).mean() / emb.norm(dim=1).mean()
    assert variation > 0.02, f"pair-to-pair variation only {float(variation):.4%} of the embedding norm"
