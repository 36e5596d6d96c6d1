"""PGGAN's fused ops: one public function each, dispatching between implementations.

Each op has a pure-PyTorch reference in :mod:`fastpggan.ops.reference` with the same signature;
``impl`` picks the implementation (see :mod:`fastpggan.ops.dispatch`). The Triton versions are
the ``torch.library`` ops of :mod:`fastpggan.ops.triton_ops` (imported lazily: a machine without
Triton still imports this package), each checked against its reference on first use
(:mod:`fastpggan.ops.verify`). :func:`describe_impl` says in one line which one a device gets.
"""

from __future__ import annotations

import torch

from fastpggan.ops import dispatch, reference
from fastpggan.ops.dispatch import (
    IMPLS,
    Impl,
    check_impl,
    check_ops,
    describe_impl,
    impl_problem,
    load_triton_ops,
    resolve_impl,
)
from fastpggan.ops.reference import mbstd_group_size, pixel_norm

__all__ = [
    "IMPLS",
    "Impl",
    "bias_lrelu",
    "bias_lrelu_pixelnorm",
    "check_impl",
    "check_ops",
    "describe_impl",
    "impl_problem",
    "mbstd_group_size",
    "minibatch_stddev",
    "pixel_norm",
    "reference",
    "resolve_impl",
]


def bias_lrelu(
    x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0, impl: Impl = "auto"
) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) * out_scale``; ``x`` ``[N, C, *]``, ``bias`` ``[C]``.

    Any float dtype; differentiable to any order (the Triton version: its backward is itself a
    differentiable op, so WGAN-GP's double backward works).
    """
    if resolve_impl(impl, x, "bias_lrelu") == "triton":
        return dispatch.load_triton_ops().bias_lrelu(x, bias, float(out_scale))
    return reference.bias_lrelu(x, bias, out_scale)


def bias_lrelu_pixelnorm(
    x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0, impl: Impl = "auto"
) -> torch.Tensor:
    """``pixel_norm(leaky_relu(x + bias, 0.2)) * out_scale``; ``x`` ``[N, C, *]``.

    The Triton version is differentiable once (the generator is never differentiated twice).
    """
    if resolve_impl(impl, x, "bias_lrelu_pixelnorm") == "triton":
        return dispatch.load_triton_ops().bias_lrelu_pixelnorm(x, bias, float(out_scale))[0]
    return reference.bias_lrelu_pixelnorm(x, bias, out_scale)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, impl: Impl = "auto") -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C + 1, H, W]``; see :func:`reference.minibatch_stddev`."""
    if resolve_impl(impl, x, "minibatch_stddev") == "triton":
        return dispatch.load_triton_ops().minibatch_stddev(x, mbstd_group_size(x.shape[0], group_size))
    return reference.minibatch_stddev(x, group_size)
