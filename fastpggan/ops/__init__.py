"""PGGAN's fused ops: one public function each, dispatching between implementations.

Each op has a pure-PyTorch reference in :mod:`fastpggan.ops.reference` with the same signature;
``impl`` picks the implementation (see :mod:`fastpggan.ops.dispatch`).
"""

from __future__ import annotations

import torch

from fastpggan.ops import reference
from fastpggan.ops.dispatch import IMPLS, Impl, check_impl, resolve_impl
from fastpggan.ops.reference import mbstd_group_size, pixel_norm

__all__ = [
    "IMPLS",
    "Impl",
    "bias_lrelu",
    "bias_lrelu_pixelnorm",
    "check_impl",
    "mbstd_group_size",
    "minibatch_stddev",
    "pixel_norm",
    "reference",
    "resolve_impl",
]


def bias_lrelu(
    x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0, impl: Impl = "auto"
) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) * out_scale``; ``x`` ``[N, C, *]``, ``bias`` ``[C]``."""
    resolve_impl(impl, x)
    return reference.bias_lrelu(x, bias, out_scale)


def bias_lrelu_pixelnorm(
    x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0, impl: Impl = "auto"
) -> torch.Tensor:
    """``pixel_norm(leaky_relu(x + bias, 0.2)) * out_scale``; ``x`` ``[N, C, *]``."""
    resolve_impl(impl, x)
    return reference.bias_lrelu_pixelnorm(x, bias, out_scale)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, impl: Impl = "auto") -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C + 1, H, W]``; see :func:`reference.minibatch_stddev`."""
    resolve_impl(impl, x)
    return reference.minibatch_stddev(x, group_size)
