"""Fused ops at PGGAN's real shapes: eager reference, torch.compile(reference), Triton.

Every registered op (:data:`fastpggan.ops.registry.OPS`) is timed through its public function,
with its self-check's arguments. Groups are ``{label}-{mode}-{shape}``; modes are ``fwd``,
``fwdbwd`` and, for the ops whose backward WGAN-GP differentiates again (declared twice
differentiable), ``dblbwd``. Triton runs on CUDA only: the interpreter's timings mean nothing.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from bench.conftest import bench_device, bench_resolutions
from bench.shapes import DEFAULT_BATCH, OpShape, op_shapes
from fastpggan import ops
from fastpggan.ops.registry import OPS, FusedOp

VARIANTS = ("reference", "compiled", "triton")


def _op_fn(op: FusedOp) -> Callable:
    """``fn(x, b, impl)``: the public op on ``x`` (and the bias ``b`` if it takes one)."""
    public = getattr(ops, op.name)
    tensors = len(op.tensor_inputs)
    return lambda x, b, impl: public(*(x, b)[:tensors], *op.check.args, impl=impl)


def _modes(op: FusedOp) -> tuple[str, ...]:
    return ("fwd", "fwdbwd", "dblbwd") if op.check.twice_differentiable else ("fwd", "fwdbwd")


def _shapes_for(op: FusedOp, resolutions: list[int]) -> list[OpShape]:
    if op.name != "minibatch_stddev":
        return op_shapes(resolutions)
    # Minibatch stddev only runs in D's 4x4 block, at the batch of the current resolution
    # (several resolutions share a batch: one case each).
    return list(dict.fromkeys(OpShape(4, DEFAULT_BATCH[r], 512) for r in resolutions))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    resolutions = bench_resolutions(metafunc.config)
    cases = [
        (op, mode, shape, variant)
        for op in OPS.values()
        for shape in _shapes_for(op, resolutions)
        for mode in _modes(op)
        for variant in VARIANTS
    ]
    metafunc.parametrize(
        "case", cases, ids=[f"{o.label}-{m}-{s.id}-{v}" for o, m, s, v in cases]
    )


def _make_call(op: FusedOp, mode: str, variant: str, x, b, gy, v) -> Callable[[], tuple]:
    impl = "triton" if variant == "triton" else "reference"
    fn = _op_fn(op)

    def fwd():
        return (fn(x, b, impl),)

    def fwdbwd():
        y = fn(x, b, impl)
        return (y, *torch.autograd.grad(y, (x, b), gy, allow_unused=True))

    def dblbwd():
        # WGAN-GP's pattern: the input gradient is itself differentiated (w.r.t. x and gy).
        y = fn(x, b, impl)
        (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
        return (y, gx, *torch.autograd.grad(gx, (x, gy), v, allow_unused=True))

    def dblbwd_func():
        # torch.compile cannot run autograd.grad(create_graph=True) (donated buffers): the same
        # second derivative through torch.func.vjp compiles.
        def grad_x(xx, gg):
            return torch.func.vjp(lambda x_: fn(x_, b, impl), xx)[1](gg)[0]

        y = fn(x, b, impl)
        gx, vjp = torch.func.vjp(grad_x, x, gy)
        return (y, gx, *vjp(v))

    if variant != "compiled":
        return {"fwd": fwd, "fwdbwd": fwdbwd, "dblbwd": dblbwd}[mode]
    # Static shapes per case: without a reset, dynamo would turn shapes dynamic after the first
    # resolution and time a different kind of kernel.
    torch._dynamo.reset()
    return torch.compile({"fwd": fwd, "fwdbwd": fwdbwd, "dblbwd": dblbwd_func}[mode], dynamic=False)


def _traffic(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def test_op(benchmark, case, device: torch.device, pytestconfig: pytest.Config) -> None:
    op, mode, shape, variant = case
    if variant == "triton" and device.type != "cuda":
        pytest.skip("Triton is timed on CUDA only: the CPU interpreter's timings mean nothing")
    x = torch.randn(shape.shape, device=device, requires_grad=True)
    b = torch.randn(shape.channels, device=device, requires_grad=True)
    with torch.no_grad():
        y0 = _op_fn(op)(x, b, "reference")
    gy = torch.randn_like(y0).requires_grad_(mode == "dblbwd")
    v = torch.randn_like(x)
    call = _make_call(op, mode, variant, x, b, gy, v)
    outputs = call()  # warm-up: compiles, autotunes, allocates
    # A benchmark of a wrong result means nothing: check against the eager reference first.
    expected = _make_call(op, mode, "reference", x, b, gy, v)()
    for got, want in zip(outputs, expected, strict=True):
        if want is None or got is None:
            assert got is None or not got.any()
            assert want is None or not want.any()
            continue
        # Relative error of the whole tensor: the bias gradient sums up to ~10^5 terms, whose
        # float32 rounding depends on the reduction order, so elementwise rtol misjudges it.
        err = (got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)
        assert err < 1e-5, f"{variant} differs from the reference: relative error {err:.2e}"
    inputs = {"fwd": (x, b), "fwdbwd": (x, b, gy), "dblbwd": (x, b, gy, v)}[mode]

    def timed():
        result = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    benchmark.group = f"{op.label}-{mode}-{shape.id}"
    benchmark.extra_info.update(variant=variant, bytes=_traffic((*inputs, *outputs)))
    if device.type == "cpu":
        benchmark.pedantic(timed, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(timed)
