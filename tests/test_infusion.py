"""Repeated embedding infusion: tiling by hand, modulation arithmetic, zero heads == template (bitwise)."""

import torch

from reindir_nb.meta.infusion import InfusionHeads, modulate, repeat_to_matrix
from reindir_nb.inr.network import MODULATED_LAYERS, init_siren, siren
from reindir_nb.core.device import make_generator


def test_repeat_tiles_row_major_by_hand():
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    expected = torch.tensor([[1.0, 2, 3, 4], [5, 1, 2, 3], [4, 5, 1, 2]])
    assert torch.equal(repeat_to_matrix(g, (3, 4)), expected)


def test_repeat_1025_gives_shifted_copies_in_256x256():
    g = torch.arange(1025.0)
    m = repeat_to_matrix(g, (256, 256))
    assert torch.equal(m[0], g[:256]) and torch.equal(m[3], g[768:1024])
    assert torch.equal(m[4], torch.cat([g[1024:], g[:255]]))  # wraps: row 4 starts with the last entry
    # row r of the matrix is entry (256 r + c) mod 1025
    r, c = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    assert torch.equal(m, ((256 * r + c) % 1025).float())


def test_modulate_by_hand():
    params = init_siren(generator=make_generator(1))
    gamma = torch.linspace(-0.5, 0.5, 1025)
    delta = torch.linspace(1.0, 2.0, 256)
    out = modulate(params, {1: gamma}, {1: delta})
    w, b = params[2], params[3]
    idx = torch.arange(256 * 256).view(256, 256) % 1025
    torch.testing.assert_close(out[2], w * (1 + gamma[idx]), rtol=0, atol=0)
    torch.testing.assert_close(out[3], b + delta, rtol=0, atol=0)
    assert all(out[i] is params[i] for i in (0, 1, 4, 5, 6, 7))  # only layer 1 touched


def test_zero_heads_equal_template_bitwise():
    fwd, bwd = init_siren(generator=make_generator(2)), init_siren(generator=make_generator(3))
    heads = InfusionHeads(65)
    assert all(torch.count_nonzero(p) == 0 for p in heads.parameters())
    f2, b2 = heads.infuse(torch.randn(65) * 10, fwd, bwd)
    for a, b in zip(f2 + b2, fwd + bwd):
        assert torch.equal(a, b)
    x = torch.rand(500, 3) * 2 - 1
    assert torch.equal(siren(f2, x), siren(fwd, x)) and torch.equal(siren(b2, x), siren(bwd, x))


def test_heads_modulate_only_hidden_layers_of_both_nets():
    fwd, bwd = init_siren(generator=make_generator(4)), init_siren(generator=make_generator(5))
    heads = InfusionHeads(33)
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.01)
    assert heads.layers == MODULATED_LAYERS == (1, 2)
    e = torch.randn(33)
    f2, b2 = heads.infuse(e, fwd, bwd)
    for new, old, net in ((f2, fwd, "forward"), (b2, bwd, "backward")):
        for i in (0, 1, 6, 7):  # input and output layers unchanged
            assert torch.equal(new[i], old[i])
        for l in (1, 2):
            gamma = heads.gamma[f"{net}{l}"](e / 33 ** 0.5)  # the heads read e / sqrt(E)
            delta = heads.delta[f"{net}{l}"](e / 33 ** 0.5)
            assert gamma.shape == (33,) and delta.shape == (256,)
            torch.testing.assert_close(new[2 * l], old[2 * l] * (1 + repeat_to_matrix(gamma, (256, 256))))
            torch.testing.assert_close(new[2 * l + 1], old[2 * l + 1] + delta)


def test_zero_heads_still_receive_gradient():
    """The gamma/delta heads start at zero but the loss has a gradient with respect to them."""
    fwd, bwd = init_siren(generator=make_generator(6)), init_siren(generator=make_generator(7))
    heads = InfusionHeads(9)
    e = torch.randn(9)
    f2, _ = heads.infuse(e, fwd, bwd)
    siren(f2, torch.rand(64, 3) * 2 - 1).pow(2).sum().backward()
    assert heads.gamma["forward1"].weight.grad.abs().sum() > 0 and heads.delta["forward2"].bias.grad.abs().sum() > 0
    assert heads.gamma["backward1"].weight.grad is None or heads.gamma["backward1"].weight.grad.abs().sum() == 0


def test_heads_keep_nn_module_apply():
    """``nn.Module.apply`` recurses into the heads (a method of that name on the heads would break it)."""
    heads = InfusionHeads(65, 256)
    seen = []
    heads.apply(lambda m: seen.append(type(m).__name__))
    assert "Linear" in seen and seen[-1] == "InfusionHeads"
