"""fastpggan: Progressive Growing of GANs (Karras et al. 2017) in PyTorch.

Public names:
    Generator, Discriminator        the networks (``fastpggan.networks``)
    EqualizedConv2d, EqualizedLinear, PixelNorm, MinibatchStddev   layers (``fastpggan.layers``)
    d_loss_wgan_gp, g_loss_wgan, gradient_penalty   the loss (``fastpggan.loss``)
    ops                             the fused-op dispatch point (``fastpggan.ops``)
"""

from fastpggan._kernels_path import ensure_kernels_package

ensure_kernels_package()

from fastpggan import ops  # noqa: E402
from fastpggan.layers import (  # noqa: E402
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStddev,
    PixelNorm,
    downsample2x,
    upsample2x,
)
from fastpggan.loss import d_loss_wgan_gp, g_loss_wgan, gradient_penalty  # noqa: E402
from fastpggan.networks import Discriminator, Generator, nf  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Discriminator",
    "EqualizedConv2d",
    "EqualizedLinear",
    "Generator",
    "MinibatchStddev",
    "PixelNorm",
    "d_loss_wgan_gp",
    "downsample2x",
    "g_loss_wgan",
    "gradient_penalty",
    "nf",
    "ops",
    "upsample2x",
]
