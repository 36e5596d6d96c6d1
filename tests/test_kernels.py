"""The Triton kernels against the float64 references.

On CPU (CI) the kernels run in Triton's interpreter; with ``TRITON_INTERPRET=0`` on a machine with
CUDA the ``kernel_device`` fixture puts every tensor on the GPU, so the kernels are compiled and
run for real (inputs are drawn on the CPU first: the same values on either device).
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
from fastpggan.ops import registry, verify
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


def test_poison_fixture_poisons(poison, kernel_device) -> None:
    dev = kernel_device
    assert torch.empty(3, device=dev).isnan().all()
    assert torch.empty_strided((2,), (1,), device=dev).isnan().all()
    assert torch.empty_like(torch.zeros(2, 2, device=dev)).isnan().all()


@pytest.mark.parametrize("op", list(registry.OPS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=str)
def test_every_registered_op_passes_its_self_check(poison, kernel_device, op, dtype) -> None:
    # each op as declared (its inputs, and second order where it is twice differentiable),
    # here with every allocation poisoned and, under TRITON_INTERPRET=0, on the GPU
    assert verify.self_check(op, T, kernel_device, dtype) is None


def _randn(*shape: int, device: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal values drawn on the CPU (the same on every device), then moved."""
    return torch.randn(shape, dtype=dtype).to(device)


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.to(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t


def _epilogue(pixnorm: bool):
    return (ops.bias_lrelu_pixelnorm, ref.bias_lrelu_pixelnorm) if pixnorm else (
        ops.bias_lrelu, ref.bias_lrelu)


@pytest.mark.parametrize("pixnorm", [False, True], ids=["D", "G"])
@pytest.mark.parametrize("shape", EPILOGUE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=str)
def test_epilogue_matches_reference(poison, kernel_device, pixnorm, shape, dtype) -> None:
    op, reference = _epilogue(pixnorm)
    channels_last = len(shape) == 4 and shape[0] != 1  # alternate layouts across shapes
    x64 = _randn(*shape, device=kernel_device)
    b64 = _randn(shape[1], device=kernel_device)
    dy64 = _randn(*shape, device=kernel_device)
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
def test_epilogue_out_scale_sign(poison, kernel_device, pixnorm, scale) -> None:
    # backward reads LeakyReLU's mask from the saved output: negative and zero scales too
    op, reference = _epilogue(pixnorm)
    x = _randn(2, 6, 3, 3, device=kernel_device).requires_grad_(True)
    b = _randn(6, device=kernel_device).requires_grad_(True)
    dy = _randn(2, 6, 3, 3, device=kernel_device)
    y = op(x, b, scale, impl="triton")
    yr = reference(x, b, scale)
    torch.testing.assert_close(y, yr, **TOL[torch.float64])
    for g, gr in zip(torch.autograd.grad(y, (x, b), dy), torch.autograd.grad(yr, (x, b), dy)):
        torch.testing.assert_close(g, gr, **TOL[torch.float64])


def test_d_epilogue_double_backward(poison, kernel_device) -> None:
    x = _randn(3, 5, 3, 1, device=kernel_device).requires_grad_(True)
    b = _randn(5, device=kernel_device).requires_grad_(True)
    dy = _randn(3, 5, 3, 1, device=kernel_device).requires_grad_(True)
    w = _randn(3, 5, 3, 1, device=kernel_device)
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
def test_mbstd_matches_reference(poison, kernel_device, shape, dtype) -> None:
    channels_last = shape[0] % 2 == 0
    x = _layout(_randn(*shape, device=kernel_device).to(dtype), channels_last)
    x.requires_grad_(True)
    y = ops.minibatch_stddev(x, 4, impl="triton")
    assert y.shape == (shape[0], shape[1] + 1, *shape[2:]) and y.dtype == dtype
    assert torch.isfinite(y).all()
    dy = _randn(*y.shape, device=kernel_device).to(dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().double().requires_grad_(True)
    yr = ref.minibatch_stddev(xr, 4)
    (dxr,) = torch.autograd.grad(yr, xr, dy.double())
    tol = TOL[dtype]
    torch.testing.assert_close(y.double(), yr, **tol)
    torch.testing.assert_close(dx.double(), dxr, **tol)


@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (6, 2, 1, 3), (1, 2, 2, 2)])
def test_mbstd_double_backward(poison, kernel_device, shape) -> None:
    x = _randn(*shape, device=kernel_device).requires_grad_(True)
    w = _randn(*shape, device=kernel_device)
    dy = _randn(shape[0], shape[1] + 1, *shape[2:], device=kernel_device).requires_grad_(True)
    results = []
    for impl in ("triton", "reference"):
        y = ops.minibatch_stddev(x, 4, impl=impl)
        (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
        results.append(torch.autograd.grad((dx * w).sum(), (x, dy)))
    for g, gr in zip(*results):
        torch.testing.assert_close(g, gr, **TOL[torch.float64])


def test_mbstd_gradgradcheck(kernel_device) -> None:
    x = _randn(4, 1, 1, 2, device=kernel_device).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda t: ops.minibatch_stddev(t, 2, impl="triton"), (x,))


def _opcheck_cases(device: torch.device) -> list[tuple[object, tuple]]:
    x = _randn(2, 5, 3, 3, device=device, dtype=torch.float32).requires_grad_(True)
    b = _randn(5, device=device, dtype=torch.float32).requires_grad_(True)
    y = T.bias_lrelu(x, b, 1.3).detach()
    yg, r = (t.detach() for t in T.bias_lrelu_pixelnorm(x, b, 0.7))
    xm = _randn(4, 5, 3, 3, device=device, dtype=torch.float32).requires_grad_(True)
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
        (T.minibatch_stddev_grad2,
         (_randn(4, 5, 3, 3, device=device, dtype=torch.float32), dout.detach(), out.detach(), 2)),
    ]


def test_opcheck_every_op(kernel_device) -> None:
    # test_aot_dispatch_dynamic needs a real GPU: on CPU the interpreter runs instead of a traced
    # kernel (torch.compile cannot trace Triton on CPU), so only the other checks apply there.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if kernel_device.type == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    cases = _opcheck_cases(kernel_device)
    assert len(cases) == 8
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=utils)


def _tiny_d(device: torch.device) -> Discriminator:
    d = Discriminator(8, fmap_base=32, fmap_max=6, impl="reference").double()
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases exercise the bias paths
    return d.to(device)


def test_wgan_gp_penalty_d_weight_grads_match(poison, kernel_device) -> None:
    d_ref = _tiny_d(kernel_device)
    d_tri = copy.deepcopy(d_ref)
    d_tri.set_impl("triton")
    real = _randn(4, 3, 8, 8, device=kernel_device)
    fake = _randn(4, 3, 8, 8, device=kernel_device)
    alpha = torch.rand(4, 1, 1, 1, dtype=torch.float64).to(kernel_device)
    grads = []
    for d in (d_tri, d_ref):
        gp = gradient_penalty(d, real, fake, fade=0.3, alpha=alpha)
        scores = d(real, 0.3)
        loss = (10.0 * gp + scores + 1e-3 * scores.square()).mean()
        grads.append(torch.autograd.grad(loss, list(d.parameters())))
    for (name, _), g, gr in zip(d_ref.named_parameters(), *grads):
        torch.testing.assert_close(g, gr, **TOL[torch.float64], msg=name)


@pytest.mark.parametrize("fused_from", [8, 16])  # 16: above the target, so no block fused
def test_generator_same_results_either_impl(poison, kernel_device, fused_from) -> None:
    g_ref = Generator(8, latent_dim=7, fmap_base=32, fmap_max=6, impl="reference").double()
    g_ref.set_fused_scale(fused_from)  # the Triton epilogue also follows the transposed conv
    g_ref = g_ref.to(kernel_device)
    g_tri = copy.deepcopy(g_ref)
    g_tri.set_impl("triton")
    z = _randn(3, 7, device=kernel_device)
    out = [g(z, 8, 0.6) for g in (g_tri, g_ref)]
    torch.testing.assert_close(out[0], out[1], **TOL[torch.float64])
    w = _randn(*out[1].shape, device=kernel_device)
    grads = [torch.autograd.grad((o * w).sum(), list(g.parameters()))
             for o, g in zip(out, (g_tri, g_ref))]
    for g, gr in zip(*grads):
        torch.testing.assert_close(g, gr, **TOL[torch.float64])


def test_g_epilogue_double_backward_is_refused(kernel_device) -> None:
    x = _randn(2, 3, 2, 2, device=kernel_device, dtype=torch.float32).requires_grad_(True)
    b = torch.zeros(3, device=kernel_device, requires_grad=True)
    y = ops.bias_lrelu_pixelnorm(x, b, impl="triton")
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)


@pytest.mark.parametrize("impl", ["triton", "auto"])
def test_public_ops_compile_into_one_graph(kernel_device, impl) -> None:
    """torch.compile(fullgraph=True) traces every public op into the Triton kernels, no break."""
    if kernel_device.type != "cuda":
        pytest.skip("torch.compile traces Triton kernels only on a GPU (TRITON_INTERPRET=0 + CUDA)")
    from torch._inductor.compile_fx import compile_fx

    graphs: list[torch.fx.GraphModule] = []

    def recording_inductor(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    def layer_outputs(x, b, xm, impl):
        return (ops.bias_lrelu(x, b, 1.3, impl=impl),
                ops.bias_lrelu_pixelnorm(x, b, 0.7, impl=impl),
                ops.minibatch_stddev(xm, 4, impl=impl))

    torch._dynamo.reset()
    compiled = torch.compile(layer_outputs, backend=recording_inductor, fullgraph=True)
    x = _randn(8, 24, 5, 6, device=kernel_device, dtype=torch.float32).requires_grad_(True)
    b = _randn(24, device=kernel_device, dtype=torch.float32).requires_grad_(True)
    xm = _randn(8, 24, 4, 4, device=kernel_device, dtype=torch.float32).requires_grad_(True)
    outs = compiled(x, b, xm, impl)
    assert len(graphs) == 1, f"{len(graphs)} graphs: torch.compile broke the graph"
    called = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"}
    for name in ("bias_lrelu", "bias_lrelu_pixelnorm", "minibatch_stddev"):
        assert f"fastpggan.{name}.default" in called, (name, called)
    # forward and backward of the compiled graph against the float64 reference
    weights = [_randn(*o.shape, device=kernel_device, dtype=torch.float32) for o in outs]
    grads = torch.autograd.grad(outs, (x, b, xm), weights)
    leaves = [t.detach().double().requires_grad_(True) for t in (x, b, xm)]
    want = layer_outputs(*leaves, "reference")
    want_grads = torch.autograd.grad(want, leaves, [w.double() for w in weights])
    tol = TOL[torch.float32]
    for got, exp in zip((*outs, grads[0], grads[2]), (*want, want_grads[0], want_grads[2]),
                        strict=True):
        torch.testing.assert_close(got.double(), exp, **tol)
    n_sum = 2 * x.numel() // x.shape[1]  # the bias grad sums this many rounded terms
    torch.testing.assert_close(grads[1].double(), want_grads[1], rtol=tol["rtol"],
                               atol=tol["atol"] * n_sum)
