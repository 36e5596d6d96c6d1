"""The Triton kernels (run by Triton's CPU interpreter) against the float64 references.

Every allocation of the ops is poisoned with NaN (``poison`` fixture), so an element a kernel
fails to write shows up as a mismatch. Shapes are small and awkward: channel counts that are not
powers of two, odd H x W, 1x1 maps, dense ``[N, C]`` inputs, NCHW and channels_last.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fastpggan import Discriminator, Generator, gradient_penalty
from fastpggan import ops
from fastpggan.ops import reference as ref
from fastpggan.ops import triton_ops as T

# Tolerances against the float64 reference: the kernels compute in float32 (float64 for float64
# inputs); low-precision results carry one rounding of their own dtype.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}
EPILOGUE_SHAPES = [(3, 5, 7, 3), (4, 3), (2, 17, 1, 5), (1, 600, 1, 3)]


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch.empty / empty_strided / empty_like return NaN-filled floating tensors."""
    for name in ("empty", "empty_strided", "empty_like"):
        original = getattr(torch, name)

        def poisoned(*args, _original=original, **kwargs):
            t = _original(*args, **kwargs)
            if t.is_floating_point():
                t.fill_(float("nan"))
            return t

        monkeypatch.setattr(torch, name, poisoned)


def test_poison_fixture_poisons(poison) -> None:
    assert torch.empty(3).isnan().all() and torch.empty_strided((2,), (1,)).isnan().all()
    assert torch.empty_like(torch.zeros(2, 2)).isnan().all()


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.to(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t


def _epilogue(pixnorm: bool):
    return (ops.bias_lrelu_pixelnorm, ref.bias_lrelu_pixelnorm) if pixnorm else (
        ops.bias_lrelu, ref.bias_lrelu)


@pytest.mark.parametrize("pixnorm", [False, True], ids=["D", "G"])
@pytest.mark.parametrize("shape", EPILOGUE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=str)
def test_epilogue_matches_reference(poison, pixnorm, shape, dtype) -> None:
    op, reference = _epilogue(pixnorm)
    channels_last = len(shape) == 4 and shape[0] != 1  # alternate layouts across shapes
    x64 = torch.randn(shape, dtype=torch.float64)
    b64 = torch.randn(shape[1], dtype=torch.float64)
    dy64 = torch.randn(shape, dtype=torch.float64)
    scale = 0.37
    x = _layout(x64.to(dtype), channels_last).requires_grad_(True)
    b = b64.to(torch.float32 if dtype != torch.float64 else dtype).requires_grad_(True)
    y = op(x, b, scale, impl="triton")
    assert y.dtype == dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == (
        channels_last and x.dim() == 4 and x.shape[1] > 1)
    dx, db = torch.autograd.grad(y, (x, b), dy64.to(dtype))  # dy NCHW while y may not be
    # float64 reference on the very same (rounded) inputs
    xr = x.detach().double().requires_grad_(True)
    br = b.detach().double().requires_grad_(True)
    yr = reference(xr, br, scale)
    dxr, dbr = torch.autograd.grad(yr, (xr, br), dy64.to(dtype).double())
    tol = TOL[dtype]
    torch.testing.assert_close(y.double(), yr, **tol)
    torch.testing.assert_close(dx.double(), dxr, **tol)
    n_sum = max(1, dy64.numel() // shape[1])  # bias grad sums this many rounded terms
    torch.testing.assert_close(db.double(), dbr, rtol=tol["rtol"], atol=tol["atol"] * n_sum)


@pytest.mark.parametrize("pixnorm", [False, True], ids=["D", "G"])
@pytest.mark.parametrize("scale", [1.0, -0.5, 0.0])
def test_epilogue_out_scale_sign(poison, pixnorm, scale) -> None:
    # backward reads LeakyReLU's mask from the saved output: negative and zero scales too
    op, reference = _epilogue(pixnorm)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    y = op(x, b, scale, impl="triton")
    yr = reference(x, b, scale)
    torch.testing.assert_close(y, yr, **TOL[torch.float64])
    for g, gr in zip(torch.autograd.grad(y, (x, b), dy), torch.autograd.grad(yr, (x, b), dy)):
        torch.testing.assert_close(g, gr, **TOL[torch.float64])


def test_d_epilogue_double_backward(poison) -> None:
    x = torch.randn(3, 5, 3, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 5, 3, 1, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, 3, 1, dtype=torch.float64)
    results = []
    for impl in ("triton", "reference"):
        y = ops.bias_lrelu(x, b, 0.8, impl=impl)
        dx, db = torch.autograd.grad(y, (x, b), dy, create_graph=True)
        loss = (dx * w).sum() + (db * w[0, :, 0, 0]).sum()
        results.append(torch.autograd.grad(loss, (x, b, dy), allow_unused=True))
    for g, gr in zip(*results):
        if gr is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, gr, **TOL[torch.float64])
    xs = x[:2, :3, :2].detach().clone().requires_grad_(True)
    bs = b[:3].detach().clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x, b: ops.bias_lrelu(x, b, 1.3, impl="triton"),
                                        (xs, bs))


MBSTD_SHAPES = [(4, 3, 3, 3), (8, 5, 4, 4), (6, 7, 1, 3), (5, 2, 3, 3), (1, 3, 2, 2)]


@pytest.mark.parametrize("shape", MBSTD_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=str)
def test_mbstd_matches_reference(poison, shape, dtype) -> None:
    channels_last = shape[0] % 2 == 0
    x = _layout(torch.randn(shape, dtype=torch.float64).to(dtype), channels_last)
    x.requires_grad_(True)
    y = ops.minibatch_stddev(x, 4, impl="triton")
    assert y.shape == (shape[0], shape[1] + 1, *shape[2:]) and y.dtype == dtype
    assert torch.isfinite(y).all()
    dy = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().double().requires_grad_(True)
    yr = ref.minibatch_stddev(xr, 4)
    (dxr,) = torch.autograd.grad(yr, xr, dy.double())
    tol = TOL[dtype]
    torch.testing.assert_close(y.double(), yr, **tol)
    torch.testing.assert_close(dx.double(), dxr, **tol)


@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (6, 2, 1, 3), (1, 2, 2, 2)])
def test_mbstd_double_backward(poison, shape) -> None:
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape, dtype=torch.float64)
    dy = torch.randn(shape[0], shape[1] + 1, *shape[2:], dtype=torch.float64, requires_grad=True)
    results = []
    for impl in ("triton", "reference"):
        y = ops.minibatch_stddev(x, 4, impl=impl)
        (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
        results.append(torch.autograd.grad((dx * w).sum(), (x, dy)))
    for g, gr in zip(*results):
        torch.testing.assert_close(g, gr, **TOL[torch.float64])


def test_mbstd_gradgradcheck() -> None:
    x = torch.randn(4, 1, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: ops.minibatch_stddev(t, 2, impl="triton"), (x,))


def _opcheck_cases() -> list[tuple[object, tuple]]:
    x = torch.randn(2, 5, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    y = T.bias_lrelu(x, b, 1.3).detach()
    yg, r = (t.detach() for t in T.bias_lrelu_pixelnorm(x, b, 0.7))
    xm = torch.randn(4, 5, 3, 3, requires_grad=True)
    out = T.minibatch_stddev(xm, 2).detach()
    dout = torch.randn_like(out)
    return [
        (T.bias_lrelu, (x, b, 1.3)),
        (T.bias_lrelu_grad, (torch.randn_like(y).requires_grad_(), y.requires_grad_(), 1.3)),
        (T.bias_lrelu_bwd, (torch.randn_like(y), y.detach(), 1.3)),
        (T.bias_lrelu_pixelnorm, (x, b, 0.7)),
        (T.bias_lrelu_pixelnorm_bwd, (torch.randn_like(yg), yg, r, 0.7)),
        (T.minibatch_stddev, (xm, 2)),
        (T.minibatch_stddev_grad, (dout.requires_grad_(), out.requires_grad_(), 2)),
        (T.minibatch_stddev_grad2, (torch.randn(4, 5, 3, 3), dout.detach(), out.detach(), 2)),
    ]


def test_opcheck_every_op() -> None:
    # test_aot_dispatch_dynamic needs a real GPU: on CPU the interpreter runs instead of a traced
    # kernel (torch.compile cannot trace Triton on CPU), so only the other checks apply here.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    cases = _opcheck_cases()
    assert len(cases) == 8
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=utils)


def _tiny_d() -> Discriminator:
    d = Discriminator(8, fmap_base=32, fmap_max=6, impl="reference").double()
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases exercise the bias paths
    return d


def test_wgan_gp_penalty_d_weight_grads_match(poison) -> None:
    d_ref = _tiny_d()
    d_tri = copy.deepcopy(d_ref)
    d_tri.set_impl("triton")
    real = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    fake = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    alpha = torch.rand(4, 1, 1, 1, dtype=torch.float64)
    grads = []
    for d in (d_tri, d_ref):
        gp = gradient_penalty(d, real, fake, fade=0.3, alpha=alpha)
        scores = d(real, 0.3)
        loss = (10.0 * gp + scores + 1e-3 * scores.square()).mean()
        grads.append(torch.autograd.grad(loss, list(d.parameters())))
    for (name, _), g, gr in zip(d_ref.named_parameters(), *grads):
        torch.testing.assert_close(g, gr, **TOL[torch.float64], msg=name)


def test_generator_same_results_either_impl(poison) -> None:
    g_ref = Generator(8, latent_dim=7, fmap_base=32, fmap_max=6, impl="reference").double()
    g_tri = copy.deepcopy(g_ref)
    g_tri.set_impl("triton")
    z = torch.randn(3, 7, dtype=torch.float64)
    out = [g(z, 8, 0.6) for g in (g_tri, g_ref)]
    torch.testing.assert_close(out[0], out[1], **TOL[torch.float64])
    w = torch.randn_like(out[1])
    grads = [torch.autograd.grad((o * w).sum(), list(g.parameters()))
             for o, g in zip(out, (g_tri, g_ref))]
    for g, gr in zip(*grads):
        torch.testing.assert_close(g, gr, **TOL[torch.float64])


def test_g_epilogue_double_backward_is_refused() -> None:
    x = torch.randn(2, 3, 2, 2, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    y = ops.bias_lrelu_pixelnorm(x, b, impl="triton")
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)
