"""G's fused upscale-conv (one 4x4 transposed conv of stride 2) against the unfused pair
(nearest 2x upsampling, then the 3x3 conv): float64, forward, backward and double backward,
the layer alone and the whole generator at every resolution and during fades."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from fastpggan.layers import EqualizedUpConv2d, fused_upscale_kernel, upsample2x
from fastpggan.networks import Generator

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-11)


def _call(layer: EqualizedUpConv2d, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in layer.named_parameters()]
    return torch.func.functional_call(layer, dict(zip(names, params)), (x,))


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (1, 2, 1, 1), (3, 4, 4, 6)])
def test_fused_kernel_equals_upsample_then_conv(shape) -> None:
    n, cin, h, w = shape
    x = torch.randn(shape, dtype=F64)
    weight = torch.randn(5, cin, 3, 3, dtype=F64)
    want = F.conv2d(upsample2x(x), weight, padding=1)
    got = F.conv_transpose2d(x, fused_upscale_kernel(weight), stride=2, padding=1)
    assert got.shape == (n, 5, 2 * h, 2 * w)
    torch.testing.assert_close(got, want, **TOL)


def test_fused_kernel_one_tap_at_a_time() -> None:
    # Weight 1 at one 3x3 tap: the 4x4 kernel holds the four 1-pixel shifts of the flipped tap.
    for a in range(3):
        for b in range(3):
            k = torch.zeros(1, 1, 3, 3, dtype=F64)
            k[0, 0, a, b] = 1.0
            want = torch.zeros(4, 4, dtype=F64)
            want[2 - a:4 - a, 2 - b:4 - b] = 1.0
            assert torch.equal(fused_upscale_kernel(k)[0, 0], want)


@pytest.mark.parametrize("act", ["lrelu_pixelnorm", "linear"])
def test_layer_fused_equals_unfused_with_gradients(act) -> None:
    layer = EqualizedUpConv2d(3, 4, act=act, impl="reference").double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 3, 5, dtype=F64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    inputs = (x, *params)
    outs, firsts, seconds = [], [], []
    for fused in (False, True):
        layer.fused = fused
        y = _call(layer, *inputs)
        probe = torch.linspace(-1.0, 1.0, y.numel(), dtype=F64).view_as(y)
        g = torch.autograd.grad((y * probe + y.square()).sum(), inputs, create_graph=True)
        gg = torch.autograd.grad(sum(t.square().sum() for t in g), inputs)
        outs.append(y)
        firsts.append(g)
        seconds.append(gg)
    torch.testing.assert_close(outs[1], outs[0], **TOL)
    for a, b in zip(firsts[1] + seconds[1], firsts[0] + seconds[0]):
        torch.testing.assert_close(a, b, **TOL)


def test_fused_layer_gradcheck_and_gradgradcheck() -> None:
    layer = EqualizedUpConv2d(2, 3, act="lrelu_pixelnorm", impl="reference", fused=True).double()
    x = torch.randn(2, 2, 3, 2, dtype=F64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert gradcheck(lambda *t: _call(layer, *t), (x, *params))
    assert gradgradcheck(lambda *t: _call(layer, *t), (x, *params))


def _generators(resolution: int) -> tuple[Generator, Generator]:
    plain = Generator(resolution, latent_dim=6, fmap_base=24, fmap_max=5, impl="reference").double()
    with torch.no_grad():
        for p in plain.parameters():  # nonzero biases, so the epilogue's bias is tested too
            p.add_(0.1 * torch.randn_like(p))
    fused = copy.deepcopy(plain)
    plain.set_fused_scale(2 * resolution)  # above the target: none fused
    fused.set_fused_scale(8)
    assert not any(b[0].fused for b in list(plain.blocks)[1:])
    assert all(b[0].fused for b in list(fused.blocks)[1:])
    return plain, fused


def test_generator_fused_equals_unfused_every_resolution_and_fade() -> None:
    plain, fused = _generators(32)
    z = torch.randn(3, 6, dtype=F64)
    for res in (4, 8, 16, 32):
        for fade in (0.0, 0.4, 1.0, torch.tensor(0.7, dtype=F64)):
            outs, grads = [], []
            for g in (plain, fused):
                img = g(z, res, fade)
                probe = torch.cos(torch.arange(img.numel(), dtype=F64)).view_as(img)
                outs.append(img)
                grads.append(torch.autograd.grad((img * probe).sum(), list(g.parameters()), materialize_grads=True))
            torch.testing.assert_close(outs[1], outs[0], **TOL)
            for (name, _), a, b in zip(plain.named_parameters(), grads[1], grads[0]):
                torch.testing.assert_close(a, b, **TOL, msg=f"{name} at {res} px, fade {fade}")


def test_generator_double_backward_through_fused_blocks() -> None:
    # A penalty on G's input gradient (what a path-length style term needs): its weight
    # gradients take second derivatives through the transposed convs.
    plain, fused = _generators(16)
    z = torch.randn(4, 6, dtype=F64, requires_grad=True)
    grads = []
    for g in (plain, fused):
        img = g(z, 16, 0.5)
        (dz,) = torch.autograd.grad(img.sin().sum(), z, create_graph=True)
        grads.append(torch.autograd.grad(dz.square().sum(), list(g.parameters()), materialize_grads=True))
    for (name, _), a, b in zip(plain.named_parameters(), grads[1], grads[0]):
        torch.testing.assert_close(a, b, **TOL, msg=name)


def test_fusing_keeps_parameters_and_checkpoints() -> None:
    # Same names, shapes and count: an unfused generator's state loads into a fused one and
    # draws the same images.
    plain, fused = _generators(16)
    state = plain.state_dict()
    assert {k: v.shape for k, v in fused.state_dict().items()} == {k: v.shape for k, v in state.items()}
    fresh = Generator(16, latent_dim=6, fmap_base=24, fmap_max=5, impl="reference").double()
    fresh.set_fused_scale(8)
    fresh.load_state_dict(state)
    z = torch.randn(2, 6, dtype=F64)
    torch.testing.assert_close(fresh(z), plain(z), **TOL)


def test_fused_from_picks_blocks_by_resolution() -> None:
    g = Generator(64, latent_dim=4, fmap_base=16, fmap_max=4, impl="reference")
    for from_res, want in ((8, [8, 16, 32, 64]), (17, [32, 64]), (64, [64]), (128, [])):
        g.set_fused_scale(from_res)
        assert [2 ** (i + 2) for i in range(1, g.num_blocks) if g.blocks[i][0].fused] == want
