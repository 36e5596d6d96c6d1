"""The first-call self-check of the Triton ops against their PyTorch references.

The kernels are tested on the CPU (interpreter) and compiled ahead of time for every target, but
not every GPU they may run on (no GTX 1080, compute capability 6.1, has run them), so the Triton
path guards itself: the first time an op runs on a device in a dtype,
:mod:`fastpggan.ops.dispatch` calls :func:`self_check`, which runs the op on the small random
inputs its declaration gives (:class:`~fastpggan.ops.registry.SelfCheck`; awkward shapes: odd
channel counts and sizes, a dense ``[N, C]`` input for the epilogues, an uneven group for
minibatch stddev) and compares the output, its gradients and, for the two ops that WGAN-GP
differentiates twice, the gradients of those gradients with the float64 reference. Any
exception or mismatch makes that op use the reference on that device (or, with
``impl="triton"``, an error). It costs a few small launches once per (op, device, dtype), runs
eagerly (under ``torch.compile`` it runs while the graph is traced, never inside it), and draws
its inputs from its own generator, so the run's random stream is untouched.

``FASTPGGAN_SELF_CHECK=0`` in the environment skips it (:func:`enabled`).
``python -m fastpggan.ops.selfcheck`` runs every check on demand, for a bug report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType

import torch

from fastpggan.ops import registry

ENV = "FASTPGGAN_SELF_CHECK"
# Largest error allowed, relative to max(1, largest reference value) of each compared tensor.
# The kernels compute in float32 (float64 for float64 tensors); a wrong kernel is off by far more.
TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 2e-2,
    torch.bfloat16: 6e-2,
}
_SEED = 20260611


def enabled() -> bool:
    """Whether the self-check runs (``FASTPGGAN_SELF_CHECK`` unset or not ``"0"``)."""
    return os.environ.get(ENV, "1").strip() != "0"


def _results(fn: Callable, inputs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
             second: bool) -> list[torch.Tensor]:
    """Output, gradients of ``sum(y**2 * u)`` and, if ``second``, of ``sum(grads * w)``."""
    leaves = [t.detach().requires_grad_() for t in inputs]
    y = fn(*leaves)
    u = weights[0].to(y.dtype)
    grads = torch.autograd.grad((y * y * u).sum(), leaves, create_graph=second)
    out = [y, *grads]
    if second:
        second_loss = sum((g * w.to(g.dtype)).sum() for g, w in zip(grads, weights[1:]))
        out += torch.autograd.grad(second_loss, leaves)
    return out


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    err = (got.detach().to(torch.float64) - want.detach()).abs().max()
    return float(err / max(1.0, float(want.detach().abs().max())))


def self_check(op: str, triton_ops: ModuleType, device: torch.device, dtype: torch.dtype
               ) -> str | None:
    """``None`` when the Triton ``op`` matches the reference on ``device`` in ``dtype``, else a
    one-line account of the exception or the largest mismatch.

    ``triton_ops`` is :mod:`fastpggan.ops.triton_ops` (tests pass a broken stand-in).
    """
    fused = registry.get(op)
    check = fused.check
    second = check.twice_differentiable

    def triton_fn(*inputs: torch.Tensor) -> torch.Tensor:
        return fused.triton(triton_ops, *inputs, *check.args)

    def reference_fn(*inputs: torch.Tensor) -> torch.Tensor:
        return fused.reference(*inputs, *check.args)

    tol = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
    gen = torch.Generator().manual_seed(_SEED)
    try:
        # whatever the caller's mode (no_grad sampling, inference_mode, autocast), check the op
        # as training runs it: with autograd, in the asked dtype
        with torch.inference_mode(False), torch.enable_grad(), \
                torch.autocast(device.type, enabled=False):
            for shape in check.shapes:
                inputs = check.inputs(shape, gen)
                out_shape = reference_fn(*inputs).shape
                weights = [torch.randn(out_shape, generator=gen, dtype=torch.float64)]
                weights += [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in inputs]
                want = _results(reference_fn, inputs, weights, second)
                got = _results(triton_fn, [t.to(device, dtype) for t in inputs],
                               [w.to(device) for w in weights], second)
                wrt = fused.tensor_inputs
                names = ["output", *(f"gradient w.r.t. {n}" for n in wrt)]
                names += [f"second-order gradient w.r.t. {n}" for n in wrt] if second else []
                for name, g, w in zip(names, got, want):
                    if g.shape != w.shape:
                        return f"{name} has shape {tuple(g.shape)}, expected {tuple(w.shape)}"
                    err = _relative_error(g.cpu(), w)
                    if not err <= tol:  # NaN fails too
                        return (f"{name} differs from the reference by {err:.3g} (relative; "
                                f"allowed {tol:g}) on input {shape}")
    except Exception as e:  # a compile error, a ptxas that refuses the card, a launch failure...
        return f"{type(e).__name__}: {e}".strip().splitlines()[0]
    return None
