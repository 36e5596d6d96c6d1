"""Pure-PyTorch references for PGGAN's fused ops.

These are the ground truth that every fast path is tested against. They run on any device, in
any floating dtype, differentiate to any order, and never synchronise with the host.

Shapes: ``x`` is ``[N, C, *spatial]`` (``[N, C]`` for dense layers, ``[N, C, H, W]`` for convs);
``bias`` is ``[C]``. Outputs have ``x``'s shape and dtype unless stated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastpggan.kernels.constants import LRELU_SLOPE, MBSTD_EPS, PIXEL_NORM_EPS


def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-channel ``[C]`` vector to broadcast over ``x`` of shape ``[N, C, *]``."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def pixel_norm(x: torch.Tensor, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """``x / sqrt(mean(x**2 over dim 1) + eps)``; ``x``: ``[N, C, *]``."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def _bias_lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # In place on the fresh ``x + bias``: autograd then keeps the activation's output, which the
    # next layer keeps anyway, instead of its input, a second full-size tensor per layer.
    return F.leaky_relu(x + _channel_view(bias, x), LRELU_SLOPE, inplace=True)


def bias_lrelu(x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0) -> torch.Tensor:
    """Discriminator epilogue: ``leaky_relu(x + bias, 0.2) * out_scale``."""
    y = _bias_lrelu(x, bias)
    return y * out_scale if out_scale != 1.0 else y


def bias_lrelu_pixelnorm(
    x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0
) -> torch.Tensor:
    """Generator epilogue: ``pixel_norm(leaky_relu(x + bias, 0.2)) * out_scale``."""
    y = pixel_norm(_bias_lrelu(x, bias))
    return y * out_scale if out_scale != 1.0 else y


def mbstd_group_size(n: int, group_size: int = 4) -> int:
    """Group size actually used for a batch of ``n`` samples.

    The authors use ``min(group_size, n)`` and require it to divide ``n``. Where it does not
    (e.g. the last, short batch of a dataset), we take the largest divisor of ``n`` that is at
    most ``min(group_size, n)``: every sample still lands in a group of equal size, and the rule
    depends only on the static shape, so no host sync. ``n`` = 1, or a prime above the group size
    (5, 7, ...), gives groups of 1, whose std is ``sqrt(0 + eps)``: finite, never NaN.
    """
    g = max(1, min(group_size, n))
    while n % g:
        g -= 1
    return g


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the minibatch standard-deviation feature map.

    ``x``: ``[N, C, H, W]`` -> ``[N, C + 1, H, W]``. Samples are grouped with stride: with
    ``G = mbstd_group_size(N)`` and ``M = N // G``, sample ``n`` belongs to group ``n % M``.
    Per group: std over the ``G`` members (population variance, ``sqrt(var + 1e-8)``), averaged
    over C, H and W to one number, which fills the extra map of every member.
    """
    n, c, h, w = x.shape
    g = mbstd_group_size(n, group_size)
    m = n // g
    y = x.reshape(g, m, c, h, w)
    y = y - y.mean(dim=0, keepdim=True)
    y = torch.sqrt(y.square().mean(dim=0) + MBSTD_EPS)  # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3))  # [M]
    y = y.repeat(g).view(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)
