"""The reference PGGAN: layers against hand-computed values, gradients in float64, networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import fastpggan
from fastpggan import Discriminator, Generator, ops
from fastpggan.layers import EqualizedConv2d, EqualizedLinear, downsample2x, upsample2x
from fastpggan.loss import critic_terms, d_loss_wgan_gp, g_loss_wgan, gradient_penalty
from fastpggan.ops import reference

F64 = torch.float64


def tiny_nets(resolution: int = 16, dtype: torch.dtype = torch.float32):
    kw = dict(fmap_base=32, fmap_max=8)
    G = Generator(resolution, latent_dim=8, impl="reference", **kw).to(dtype)
    D = Discriminator(resolution, impl="reference", **kw).to(dtype)
    return G, D


# ---------------------------------------------------------------- layers, by hand


def test_equalized_conv_by_hand() -> None:
    conv = EqualizedConv2d(2, 1, 1, gain=math.sqrt(2))
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(2))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))
        conv.bias.fill_(0.5)
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    assert conv(x).item() == pytest.approx(3 + 8 + 0.5)


def test_equalized_conv3x3_scale_and_padding() -> None:
    conv = EqualizedConv2d(3, 5, 3, gain=2.0, act="lrelu")
    assert conv.scale == pytest.approx(2.0 / math.sqrt(3 * 3 * 3))
    x = torch.randn(2, 3, 7, 5)
    want = torch.nn.functional.conv2d(x, conv.weight * conv.scale, padding=1)
    want = torch.where(want >= 0, want, 0.2 * want)
    torch.testing.assert_close(conv(x), want)


def test_equalized_init() -> None:
    torch.manual_seed(1)
    lin = EqualizedLinear(256, 512, gain=1.0)
    assert torch.all(lin.bias == 0)
    assert lin.weight.mean().abs() < 0.01 and (lin.weight.std() - 1).abs() < 0.01
    assert lin.scale == pytest.approx(1 / 16)
    x = torch.tensor([[1.0] * 256])
    torch.testing.assert_close(lin(x), (lin.weight.sum(dim=1) / 16).view(1, -1))


def test_pixel_norm_by_hand() -> None:
    x = torch.tensor([3.0, 4.0], dtype=F64).view(1, 2, 1, 1)
    want = torch.tensor([3.0, 4.0], dtype=F64) / math.sqrt(12.5 + 1e-8)
    torch.testing.assert_close(ops.pixel_norm(x).flatten(), want, rtol=0, atol=1e-15)
    assert torch.all(ops.pixel_norm(torch.zeros(2, 3, 2, 2)) == 0)


def test_bias_lrelu_by_hand() -> None:
    x = torch.tensor([[-1.0, 1.0], [2.0, -3.0]])
    b = torch.tensor([0.5, -0.5])
    want = torch.tensor([[-0.1, 0.5], [2.5, -0.7]])
    torch.testing.assert_close(ops.bias_lrelu(x, b, impl="reference"), want)
    torch.testing.assert_close(ops.bias_lrelu(x, b, 3.0, impl="reference"), 3 * want)


def test_bias_lrelu_pixelnorm_by_hand() -> None:
    x = torch.tensor([-5.0, 3.0], dtype=F64).view(1, 2, 1, 1)
    b = torch.tensor([0.0, 1.0], dtype=F64)
    a = torch.tensor([-1.0, 4.0], dtype=F64)  # leaky relu of x + b
    want = a / math.sqrt((1 + 16) / 2 + 1e-8) * 2.0
    got = ops.bias_lrelu_pixelnorm(x, b, 2.0, impl="reference").flatten()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)


# ---------------------------------------------------------------- minibatch stddev


@pytest.mark.parametrize(
    ("n", "group"), [(1, 1), (2, 2), (3, 3), (4, 4), (5, 1), (6, 3), (8, 4), (12, 4)]
)
def test_mbstd_group_size_rule(n: int, group: int) -> None:
    assert ops.mbstd_group_size(n) == group


def test_mbstd_by_hand_n4() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64).view(4, 1, 1, 1)
    y = ops.minibatch_stddev(x, impl="reference")
    assert y.shape == (4, 2, 1, 1)
    torch.testing.assert_close(y[:, 0], x[:, 0])
    std = math.sqrt(1.25 + 1e-8)  # population variance of 1..4 is 1.25
    torch.testing.assert_close(y[:, 1].flatten(), torch.full((4,), std, dtype=F64))


def test_mbstd_groups_are_strided_n8() -> None:
    # Sample n is in group n % 2: even samples are identical, odd ones spread out.
    x = torch.zeros(8, 2, 3, 3, dtype=F64)
    x[1::2] = torch.tensor([0.0, 2.0, 4.0, 6.0], dtype=F64).view(4, 1, 1, 1)
    y = ops.minibatch_stddev(x, impl="reference")[:, 2, 0, 0]
    even, odd = math.sqrt(1e-8), math.sqrt(5.0 + 1e-8)
    want = torch.tensor([even, odd] * 4, dtype=F64)
    torch.testing.assert_close(y, want)
    assert torch.all(ops.minibatch_stddev(x, impl="reference")[:, 2] == y.view(8, 1, 1))


def test_mbstd_n3_one_group_mean_over_chw() -> None:
    x = torch.randn(3, 4, 5, 6, dtype=F64)
    want = torch.sqrt(x.var(dim=0, unbiased=False) + 1e-8).mean()
    y = ops.minibatch_stddev(x, impl="reference")
    torch.testing.assert_close(y[:, 4], want.expand(3, 5, 6))


def test_mbstd_n1_is_finite() -> None:
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    y = ops.minibatch_stddev(x, impl="reference")
    assert torch.all(torch.isfinite(y))
    torch.testing.assert_close(y[0, 3], torch.full((4, 4), 1e-4))
    y.sum().backward()
    assert torch.all(torch.isfinite(x.grad))


# ---------------------------------------------------------------- gradients in float64


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, requires_grad=True)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, b: reference.pixel_norm(x),
        lambda x, b: reference.bias_lrelu(x, b, 1.7),
        lambda x, b: reference.bias_lrelu_pixelnorm(x, b, 0.6),
    ],
    ids=["pixel_norm", "bias_lrelu", "bias_lrelu_pixelnorm"],
)
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 5)])
def test_epilogue_gradients(fn, shape) -> None:
    x, b = _rand(*shape), _rand(shape[1])
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("n", [1, 3, 4, 8])
def test_mbstd_gradients(n: int) -> None:
    x = _rand(n, 3, 2, 3)
    assert gradcheck(reference.minibatch_stddev, (x,))
    assert gradgradcheck(reference.minibatch_stddev, (x,))


def test_equalized_layer_gradients() -> None:
    conv = EqualizedConv2d(3, 4, 3, act="lrelu_pixelnorm").double()
    lin = EqualizedLinear(5, 3, act="lrelu").double()
    no_bias = EqualizedLinear(5, 6, bias=False).double()
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"]
    with pytest.raises(ValueError, match="without bias must be linear"):
        EqualizedLinear(5, 3, act="lrelu", bias=False)
    for layer, x in ((conv, _rand(2, 3, 4, 5)), (lin, _rand(4, 5)), (no_bias, _rand(4, 5))):
        params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
        names = [n for n, _ in layer.named_parameters()]

        def f(inp, *ps, layer=layer, names=names):
            return torch.func.functional_call(layer, dict(zip(names, ps)), (inp,))

        assert gradcheck(f, (x, *params))
        assert gradgradcheck(f, (x, *params))


def test_tiny_discriminator_penalty_gradcheck() -> None:
    D = Discriminator(8, fmap_base=8, fmap_max=3, impl="reference").double()
    names = [n for n, _ in D.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in D.parameters())
    real, fake = torch.randn(4, 3, 8, 8, dtype=F64), torch.randn(4, 3, 8, 8, dtype=F64)
    alpha = torch.rand(4, 1, 1, 1, dtype=F64)

    def penalty(*ps):
        def critic(x, fade):
            return torch.func.functional_call(D, dict(zip(names, ps)), (x, fade))

        return gradient_penalty(critic, real, fake, 0.4, alpha=alpha).sum()

    # Gradients of the penalty with respect to D's weights need D's second derivatives.
    assert gradcheck(penalty, params, atol=1e-6)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("net,want", [("G", 23_079_115), ("D", 23_087_249)])
def test_parameter_count_at_1024_matches_authors(net: str, want: int) -> None:
    # The authors' networks at 1024 (paper Table 2: about 23.1M each). G's first dense layer
    # has no bias of its own, only one per channel after the reshape to 4x4.
    model = Generator(1024) if net == "G" else Discriminator(1024)
    assert sum(p.numel() for p in model.parameters()) == want
    if net == "G":
        assert model.dense.bias is None and model.dense_bias.shape == (512,)


def test_channel_rule() -> None:
    assert [fastpggan.nf(s) for s in range(10)] == [512, 512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert fastpggan.nf(3, fmap_base=64, fmap_max=16) == 8


def test_shapes_at_every_resolution() -> None:
    G, D = tiny_nets(32)
    z = torch.randn(3, 8)
    for res in (4, 8, 16, 32):
        for fade in (0.0, 0.5, 1.0, torch.tensor(0.25)):
            img = G(z, res, fade)
            assert img.shape == (3, 3, res, res)
            assert D(img, fade).shape == (3,)
    assert G(z).shape == (3, 3, 32, 32)


def test_generator_fade_zero_is_previous_resolution_exactly() -> None:
    G, _ = tiny_nets(16)
    z = torch.randn(4, 8)
    for res in (8, 16):
        low = G(z, res // 2)
        assert torch.equal(G(z, res, 0.0), upsample2x(low))
        assert torch.equal(G(z, res, torch.tensor(0.0)), upsample2x(low))


def test_generator_fade_one_is_new_block_exactly() -> None:
    G, _ = tiny_nets(16)
    z = torch.randn(4, 8)
    new = G.to_rgb[2](G._block(2, G._block(1, G._block(0, z))))
    assert torch.equal(G(z, 16, 1.0), new)
    assert torch.equal(G(z, 16, torch.tensor(1.0)), new)


def test_discriminator_fade_ends_exact() -> None:
    _, D = tiny_nets(16)
    img = torch.randn(4, 3, 16, 16)
    assert torch.equal(D(img, 0.0), D(downsample2x(img)))
    assert torch.equal(D(img, torch.tensor(0.0)), D(downsample2x(img)))
    new = D._block(0, D._block(1, D._block(2, D.from_rgb[2](img))))
    assert torch.equal(D(img, 1.0), new)
    assert torch.equal(D(img, torch.tensor(1.0)), new)


def test_fade_midway_is_linear_blend() -> None:
    G, _ = tiny_nets(8)
    z = torch.randn(2, 8)
    a, b = G(z, 8, 0.0), G(z, 8, 1.0)
    torch.testing.assert_close(G(z, 8, 0.3), a + 0.3 * (b - a))


@pytest.mark.parametrize("bad", [2, 4, 12, 2048, 8.0])
def test_bad_target_resolution(bad) -> None:
    with pytest.raises(ValueError, match="power of two"):
        Generator(bad)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(bad)


def test_run_above_target_resolution_refused() -> None:
    G, D = tiny_nets(16)
    with pytest.raises(ValueError):
        G(torch.randn(1, 8), 32)
    with pytest.raises(ValueError):
        D(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError):
        D(torch.randn(1, 3, 16, 8))


def test_float64_networks_and_unknown_impl() -> None:
    G, D = tiny_nets(8, F64)
    assert D(G(torch.randn(2, 8, dtype=F64))).dtype == F64
    with pytest.raises(ValueError, match="impl"):
        Generator(8, impl="cuda")
    with pytest.raises(ValueError, match="impl"):
        G.set_impl("fast")


# ---------------------------------------------------------------- the loss


class LinearCritic(torch.nn.Module):
    """D(x) = sum(w * x): its input gradient is w for every sample."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x: torch.Tensor, fade=1.0) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3))


def test_penalty_linear_critic_by_hand() -> None:
    w = torch.full((1, 3, 2, 2), 0.5, dtype=F64)  # ||w|| = sqrt(12 * 0.25) = sqrt(3)
    D = LinearCritic(w)
    real, fake = torch.randn(5, 3, 2, 2, dtype=F64), torch.randn(5, 3, 2, 2, dtype=F64)
    gp = gradient_penalty(D, real, fake)
    torch.testing.assert_close(gp, torch.full((5,), (math.sqrt(3) - 1) ** 2, dtype=F64))
    # Second order: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||, through create_graph.
    gp.mean().backward()
    torch.testing.assert_close(D.w.grad, 2 * (math.sqrt(3) - 1) * w / math.sqrt(3))


def test_penalty_quadratic_critic_uses_alpha_and_target() -> None:
    # D(x) = 0.5 ||x||^2 per sample, so grad = x_hat and the norm is ||x_hat||.
    def D(x, fade=1.0):
        return 0.5 * x.square().sum(dim=(1, 2, 3))

    real, fake = torch.randn(3, 3, 4, 4, dtype=F64), torch.randn(3, 3, 4, 4, dtype=F64)
    alpha = torch.tensor([0.0, 0.25, 1.0], dtype=F64).view(3, 1, 1, 1)
    mixed = real + alpha * (fake - real)
    norms = mixed.flatten(1).norm(dim=1)
    gp = gradient_penalty(D, real, fake, alpha=alpha, target=2.0)
    torch.testing.assert_close(gp, (norms - 2.0) ** 2 / 4.0)


def test_d_loss_total_by_hand() -> None:
    w = torch.randn(1, 3, 2, 2, dtype=F64)
    D = LinearCritic(w)
    real, fake = torch.randn(6, 3, 2, 2, dtype=F64), torch.randn(6, 3, 2, 2, dtype=F64)
    loss, stats = d_loss_wgan_gp(D, real, fake)
    sr, sf = (real * w).sum(dim=(1, 2, 3)), (fake * w).sum(dim=(1, 2, 3))
    gp = (w.norm() - 1) ** 2
    want = (sf - sr + 10 * gp + 0.001 * sr**2).mean()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(stats["gp"], gp)
    torch.testing.assert_close(stats["d_real"], sr.mean())
    assert all(not v.requires_grad for v in stats.values())
    torch.testing.assert_close(g_loss_wgan(D, fake), -sf.mean())


def test_critic_terms_are_the_loss_and_its_statistics() -> None:
    # One critic loss: the terms the training step backpropagates pass by pass sum to the loss,
    # and the statistics are read off the same terms (with and without the penalty).
    sr, sf = torch.randn(5, dtype=F64), torch.randn(5, dtype=F64)
    gp = torch.rand(5, dtype=F64)
    terms = critic_terms(sr, sf, gp, gp_lambda=3.0, drift=0.01)
    torch.testing.assert_close(terms.real, (0.01 * sr**2 - sr).mean())
    torch.testing.assert_close(terms.fake, sf.mean())
    torch.testing.assert_close(terms.penalty, 3.0 * gp.mean())
    want = (sf - sr + 3.0 * gp + 0.01 * sr**2).mean()
    torch.testing.assert_close(terms.loss(), want)
    stats = terms.stats(sr, sf, gp)
    assert set(stats) == {"d_loss", "d_real", "d_fake", "gp"}
    torch.testing.assert_close(stats["d_loss"], want)
    torch.testing.assert_close(stats["gp"], gp.mean())
    no_gp = critic_terms(sr, sf, None, gp_lambda=3.0, drift=0.01)
    assert no_gp.penalty is None
    torch.testing.assert_close(no_gp.loss(), (sf - sr + 0.01 * sr**2).mean())
    assert set(no_gp.stats(sr, sf, None)) == {"d_loss", "d_real", "d_fake"}


def test_penalty_reaches_discriminator_weights() -> None:
    _, D = tiny_nets(8)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    gradient_penalty(D, real, fake, 0.5).mean().backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    # The critic's last bias has no effect on its input gradient, so no penalty gradient.
    assert D.out.bias.grad is None or torch.all(D.out.bias.grad == 0)


def test_d_loss_does_not_train_generator() -> None:
    G, D = tiny_nets(8)
    fake = G(torch.randn(4, 8), 8, 0.5)
    loss, _ = d_loss_wgan_gp(D, torch.randn(4, 3, 8, 8), fake, 0.5)
    loss.backward()
    assert all(p.grad is None for p in G.parameters())
