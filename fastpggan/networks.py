"""PGGAN generator and discriminator (Karras et al. 2017, Table 2), growable from 4x4 to R.

Both networks are built once for a target resolution ``R`` and run at any current resolution
``4 <= res <= R`` (a power of two) with a ``fade`` in ``[0, 1]``: 0 is exactly the previous
resolution's path (upsampled in G, on downsampled input in D), 1 is the new block alone.
``fade`` may be a float or a 0-d tensor (a tensor lets a compiled graph keep one shape while
the fade moves every step).

Conditional networks (``label_size`` classes > 0, the authors' AC-GAN ``G_paper``/``D_paper``):
G concatenates the one-hot label to the latent and pixel-normalises the concatenation before its
first dense layer; D's last dense layer has ``1 + label_size`` outputs, the score and then the
label logits. ``label_size`` 0 is the unconditional network, parameter for parameter.

Block ``i`` works at resolution ``2**(i + 2)`` with ``nf(i + 1)`` feature maps, where
``nf(stage) = min(fmap_base / 2**stage, fmap_max)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fastpggan import ops
from fastpggan.layers import (
    SQRT2,
    EqualizedConv2d,
    EqualizedLinear,
    EqualizedUpConv2d,
    MinibatchStddev,
    PixelNorm,
    downsample2x,
    upsample2x,
)
from fastpggan.ops import Impl

MIN_RESOLUTION = 8
MAX_RESOLUTION = 1024


def nf(stage: int, fmap_base: int = 8192, fmap_max: int = 512) -> int:
    """Feature maps at ``stage``: ``min(fmap_base / 2**stage, fmap_max)``, at least 1."""
    return max(1, min(int(fmap_base / 2.0**stage), fmap_max))


def check_resolution(resolution: int, low: int = MIN_RESOLUTION, high: int = MAX_RESOLUTION) -> int:
    """Return ``log2(resolution)``; ``ValueError`` unless a power of two in ``[low, high]``."""
    if (
        not isinstance(resolution, int)
        or resolution < low
        or resolution > high
        or resolution & (resolution - 1)
    ):
        raise ValueError(
            f"resolution must be a power of two from {low} to {high}, got {resolution!r}"
        )
    return int(math.log2(resolution))


def one_hot(labels: torch.Tensor, label_size: int, dtype: torch.dtype) -> torch.Tensor:
    """int64 ``[N]`` class indices -> ``dtype`` ``[N, label_size]`` one-hot rows. A comparison
    with ``arange`` rather than ``F.one_hot``: no data-dependent check, so it traces into one
    compiled graph."""
    classes = torch.arange(label_size, device=labels.device)
    return (labels.unsqueeze(1) == classes).to(dtype)


def _is_one(fade: float | torch.Tensor) -> bool:
    # A Python 1.0 skips the old path; a tensor always takes it, so the graph never changes.
    return not isinstance(fade, torch.Tensor) and float(fade) == 1.0


class _Growable(nn.Module):
    """What G and D share: the target resolution, channel rule and implementation switch."""

    def __init__(self, resolution: int, fmap_base: int, fmap_max: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.num_blocks = check_resolution(resolution) - 1  # block 0 is 4x4
        self.fmap_base = fmap_base
        self.fmap_max = fmap_max

    def nf(self, stage: int) -> int:
        return nf(stage, self.fmap_base, self.fmap_max)

    def block_index(self, res: int) -> int:
        """Index of the block that works at ``res``; ``ValueError`` if the net cannot run it."""
        check_resolution(res, 4, self.resolution)
        return int(math.log2(res)) - 2

    def set_impl(self, impl: Impl) -> None:
        """Switch every fused op in the network to ``impl``."""
        ops.check_impl(impl)
        for m in self.modules():
            if hasattr(m, "impl"):
                m.impl = impl


class Generator(_Growable):
    """Latent ``z`` ``[N, latent_dim]`` (and, with ``label_size`` > 0, class labels int64 ``[N]``)
    -> image ``[N, 3, res, res]``, linear output (~[-1, 1])."""

    def __init__(
        self,
        resolution: int,
        latent_dim: int = 512,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        impl: Impl = "auto",
        label_size: int = 0,
    ) -> None:
        super().__init__(resolution, fmap_base, fmap_max)
        if label_size < 0:
            raise ValueError(f"label_size must be >= 0, got {label_size}")
        self.latent_dim = latent_dim
        self.label_size = label_size
        self.impl: Impl = impl
        c0 = self.nf(1)
        self.normalize_latent = PixelNorm()
        # Gain sqrt(2)/4 on the first dense layer follows the authors' code (it matched their
        # earlier Theano version); pixel norm right after makes the output scale-free anyway.
        # As theirs, the dense layer has no bias of its own: one bias per channel (not per
        # channel and pixel) is added after the reshape to 4x4.
        # With labels the dense layer sees [z, one-hot] (its fan-in counts both, as theirs).
        self.dense = EqualizedLinear(latent_dim + label_size, c0 * 16, gain=SQRT2 / 4, act="linear", impl=impl, bias=False)
        self.dense_bias = nn.Parameter(torch.zeros(c0))
        self.conv4 = EqualizedConv2d(c0, c0, 3, act="lrelu_pixelnorm", impl=impl)
        self.blocks = nn.ModuleList([nn.Identity()])  # index 0 is the 4x4 block above
        for i in range(1, self.num_blocks):
            cin, cout = self.nf(i), self.nf(i + 1)
            self.blocks.append(
                nn.Sequential(
                    EqualizedUpConv2d(cin, cout, act="lrelu_pixelnorm", impl=impl),
                    EqualizedConv2d(cout, cout, 3, act="lrelu_pixelnorm", impl=impl),
                )
            )
        self.to_rgb = nn.ModuleList(
            EqualizedConv2d(self.nf(i + 1), 3, 1, gain=1.0, impl=impl)
            for i in range(self.num_blocks)
        )

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i == 0:
            x = self.dense(self.normalize_latent(x)).view(x.shape[0], -1, 4, 4)
            x = ops.bias_lrelu_pixelnorm(x, self.dense_bias, impl=self.dense.impl)
            return self.conv4(x)
        return self.blocks[i](x)  # its first conv upsamples

    def set_fused_scale(self, from_res: int) -> None:
        """Run the upsample-conv of the blocks at ``from_res`` px and above as one transposed
        conv (:class:`~fastpggan.layers.EqualizedUpConv2d`; above ``self.resolution``: none).
        The result is the same up to rounding, so this may change at any time."""
        for i in range(1, self.num_blocks):
            self.blocks[i][0].fused = 2 ** (i + 2) >= from_res

    def forward(
        self, z: torch.Tensor, res: int | None = None, fade: float | torch.Tensor = 1.0,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``z`` ``[N, latent_dim]`` -> ``[N, 3, res, res]`` (``res`` defaults to the target).

        ``labels``: int64 ``[N]`` in ``[0, label_size)``, required exactly when ``label_size``
        > 0; the pixel norm of the first block is then taken over ``[z, one_hot(labels)]``."""
        k = self.block_index(self.resolution if res is None else res)
        if (labels is None) != (self.label_size == 0):
            raise ValueError(
                f"this generator has {self.label_size} classes: "
                + ("pass labels" if labels is None else "it takes no labels")
            )
        x = z if labels is None else torch.cat([z, one_hot(labels, self.label_size, z.dtype)], 1)
        for i in range(k):
            x = self._block(i, x)
        prev = x
        x = self._block(k, x)
        img = self.to_rgb[k](x)
        if k == 0 or _is_one(fade):
            return img
        old = upsample2x(self.to_rgb[k - 1](prev))
        return torch.lerp(old, img, torch.as_tensor(fade, dtype=img.dtype, device=img.device))


class Discriminator(_Growable):
    """Image ``[N, 3, res, res]`` -> score ``[N]`` (a WGAN critic: unbounded, higher = real);
    with ``label_size`` > 0 also label logits ``[N, label_size]`` when asked (``logits=True``)."""

    def __init__(
        self,
        resolution: int,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        mbstd_group_size: int = 4,
        impl: Impl = "auto",
        label_size: int = 0,
    ) -> None:
        super().__init__(resolution, fmap_base, fmap_max)
        if label_size < 0:
            raise ValueError(f"label_size must be >= 0, got {label_size}")
        self.label_size = label_size
        self.impl: Impl = impl
        self.from_rgb = nn.ModuleList(
            EqualizedConv2d(3, self.nf(i + 1), 1, act="lrelu", impl=impl)
            for i in range(self.num_blocks)
        )
        self.blocks = nn.ModuleList([nn.Identity()])  # index 0 is the 4x4 head below
        for i in range(1, self.num_blocks):
            cin, cout = self.nf(i + 1), self.nf(i)
            self.blocks.append(
                nn.Sequential(
                    EqualizedConv2d(cin, cin, 3, act="lrelu", impl=impl),
                    EqualizedConv2d(cin, cout, 3, act="lrelu", impl=impl),
                )
            )
        c0 = self.nf(1)
        self.mbstd = MinibatchStddev(mbstd_group_size, impl=impl)
        self.conv4 = EqualizedConv2d(c0 + 1, c0, 3, act="lrelu", impl=impl)
        self.dense = EqualizedLinear(c0 * 16, self.nf(0), act="lrelu", impl=impl)
        self.out = EqualizedLinear(self.nf(0), 1 + label_size, gain=1.0, act="linear", impl=impl)

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i == 0:
            x = self.conv4(self.mbstd(x))
            x = self.dense(x.flatten(1))
            x = self.out(x)  # [N, 1 + label_size]
            return x if self.label_size else x.squeeze(1)
        return downsample2x(self.blocks[i](x))

    def forward(
        self, img: torch.Tensor, fade: float | torch.Tensor = 1.0, logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``img`` ``[N, 3, res, res]`` with ``4 <= res <= resolution`` -> scores ``[N]``, or with
        ``logits`` (conditional D only) ``(scores [N], label logits [N, label_size])``."""
        if logits and self.label_size == 0:
            raise ValueError("an unconditional discriminator has no label logits")
        if img.dim() != 4 or img.shape[1] != 3 or img.shape[2] != img.shape[3]:
            raise ValueError(f"expected images [N, 3, res, res], got {tuple(img.shape)}")
        k = self.block_index(img.shape[-1])
        x = self.from_rgb[k](img)
        if k > 0:
            x = self._block(k, x)
            if not _is_one(fade):
                old = self.from_rgb[k - 1](downsample2x(img))
                x = torch.lerp(old, x, torch.as_tensor(fade, dtype=x.dtype, device=x.device))
            k -= 1
        for i in range(k, -1, -1):
            x = self._block(i, x)
        if not self.label_size:
            return x
        return (x[:, 0], x[:, 1:]) if logits else x[:, 0]
