"""PGGAN's layers: equalized learning rate conv and dense, pixel norm, minibatch stddev.

Equalized learning rate: weights are stored as N(0, 1) samples and multiplied at run time by
``gain / sqrt(fan_in)``, so Adam sees every layer at the same scale. The scale multiplies the
weight tensor (small) rather than the activations (large). Biases start at zero.

``act`` selects the epilogue fused after the linear part: ``"linear"`` (bias only),
``"lrelu"`` (bias, LeakyReLU 0.2: the discriminator's) or ``"lrelu_pixelnorm"`` (bias,
LeakyReLU 0.2, pixel norm: the generator's). Epilogues run through :mod:`fastpggan.ops`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fastpggan import ops
from fastpggan.ops import Impl

Act = Literal["linear", "lrelu", "lrelu_pixelnorm"]
ACTS: tuple[str, ...] = ("linear", "lrelu", "lrelu_pixelnorm")
SQRT2 = math.sqrt(2.0)


def _epilogue(x: torch.Tensor, bias: torch.Tensor | None, act: str, impl: Impl) -> torch.Tensor:
    if bias is None:
        return x
    if act == "lrelu":
        return ops.bias_lrelu(x, bias, impl=impl)
    if act == "lrelu_pixelnorm":
        return ops.bias_lrelu_pixelnorm(x, bias, impl=impl)
    return x + bias.view(1, -1, *([1] * (x.dim() - 2)))


class _Equalized(nn.Module):
    """Shared state of the equalized-LR layers: N(0,1) weight, zero bias, runtime scale."""

    def __init__(
        self, weight_shape: tuple[int, ...], gain: float, act: Act, impl: Impl, bias: bool = True
    ) -> None:
        super().__init__()
        if act not in ACTS:
            raise ValueError(f"act must be one of {ACTS}, got {act!r}")
        if not bias and act != "linear":
            raise ValueError(f"a layer without bias must be linear, got act={act!r}")
        ops.check_impl(impl)
        fan_in = math.prod(weight_shape[1:])
        self.weight = nn.Parameter(torch.randn(weight_shape))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        self.scale = gain / math.sqrt(fan_in)
        self.gain = gain
        self.act = act
        self.impl: Impl = impl

    def extra_repr(self) -> str:
        o, i = self.weight.shape[:2]
        no_bias = "" if self.bias is not None else ", bias=False"
        return f"{i}, {o}, gain={self.gain:.4g}, act={self.act}{no_bias}, impl={self.impl}"


class EqualizedConv2d(_Equalized):
    """Square conv, stride 1, 'same' padding: ``[N, in, H, W]`` -> ``[N, out, H, W]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        gain: float = SQRT2,
        act: Act = "linear",
        impl: Impl = "auto",
    ) -> None:
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), gain, act, impl)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight * self.scale, padding=self.padding)
        return _epilogue(y, self.bias, self.act, self.impl)


def fused_upscale_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 stride-2 transposed-conv kernel equal to nearest 2x upsampling then ``weight``.

    ``weight`` ``[out, in, 3, 3]`` (a 'same' cross-correlation) -> ``[in, out, 4, 4]``
    (``conv_transpose2d``'s layout, padding 1), same dtype. In one dimension, output pixel
    ``2j`` of the pair sees ``k0 x[j-1] + (k1 + k2) x[j]`` and pixel ``2j+1`` sees
    ``(k0 + k1) x[j] + k2 x[j+1]``; a transposed conv puts tap ``s`` of its kernel on output
    ``2i + s - 1``, so its taps are ``[k2, k1 + k2, k0 + k1, k0]``: the kernel flipped, padded
    by one and summed with itself shifted by one. Two dimensions: the four 2-D shifts.
    """
    w = F.pad(weight.flip(2, 3), (1, 1, 1, 1))
    w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
    return w.transpose(0, 1)


class EqualizedUpConv2d(EqualizedConv2d):
    """Nearest 2x upsampling then a 3x3 'same' conv: ``[N, in, H, W]`` -> ``[N, out, 2H, 2W]``.

    The first conv of a generator block. ``fused`` (set by the network per resolution): one
    4x4 transposed conv of stride 2 instead (:func:`fused_upscale_kernel`), equal up to
    rounding; it does 16/36 of the multiply-adds and keeps no upsampled activation for
    backward. The parameters are the 3x3 layer's either way, so checkpoints do not depend on it.
    """

    def __init__(
        self, in_channels: int, out_channels: int, gain: float = SQRT2, act: Act = "linear",
        impl: Impl = "auto", fused: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, 3, gain, act, impl)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        if self.fused:
            y = F.conv_transpose2d(x, fused_upscale_kernel(w), stride=2, padding=1)
        else:
            y = F.conv2d(upsample2x(x), w, padding=1)
        return _epilogue(y, self.bias, self.act, self.impl)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, upscale 2x first, fused={self.fused}"


class EqualizedLinear(_Equalized):
    """Dense layer: ``[N, in]`` -> ``[N, out]`` (``bias=False``: no bias, linear only)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        gain: float = SQRT2,
        act: Act = "linear",
        impl: Impl = "auto",
        bias: bool = True,
    ) -> None:
        super().__init__((out_features, in_features), gain, act, impl, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.scale)
        return _epilogue(y, self.bias, self.act, self.impl)


class PixelNorm(nn.Module):
    """``x / sqrt(mean over channels of x**2 + 1e-8)``; ``[N, C, *]`` -> same shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.pixel_norm(x)


class MinibatchStddev(nn.Module):
    """Append the minibatch-stddev map: ``[N, C, H, W]`` -> ``[N, C + 1, H, W]``."""

    def __init__(self, group_size: int = 4, impl: Impl = "auto") -> None:
        super().__init__()
        ops.check_impl(impl)
        self.group_size = group_size
        self.impl: Impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.minibatch_stddev(x, self.group_size, impl=self.impl)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2: ``[N, C, H, W]`` -> ``[N, C, 2H, 2W]``."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling: ``[N, C, H, W]`` -> ``[N, C, H/2, W/2]``."""
    return F.avg_pool2d(x, 2)
