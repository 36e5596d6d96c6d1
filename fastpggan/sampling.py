"""Images from a generator: sampling in chunks, latent interpolation, sample grids.

Used by the trainer (its tick grids) and by the ``generate`` command; imports no command.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from fastpggan.networks import Generator

MIN_CELL = 64  # grid cells smaller than this are upscaled by nearest neighbour


def to_hwc_uint8(images: torch.Tensor) -> np.ndarray:
    """``float [N, 3, h, w]`` in ~[-1, 1] -> ``uint8 [N, h, w, 3]`` numpy (clamped, rounded), for
    image files. (The metrics' :func:`fastpggan.metrics.images.to_uint8` keeps ``[N, 3, h, w]``
    tensors on their device.)"""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: torch.Tensor, cols: int | None = None, min_cell: int = MIN_CELL) -> Image.Image:
    """``[N, 3, h, w]`` -> one RGB image, ``cols`` per row (default: near square), 1 px gaps.

    Cells smaller than ``min_cell`` pixels are upscaled by an integer factor, nearest neighbour.
    """
    a = to_hwc_uint8(images)
    n, h, w, _ = a.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    k = max(1, math.ceil(min_cell / h))
    a = a.repeat(k, axis=1).repeat(k, axis=2)
    h, w = h * k, w * k
    grid = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = a[i]
    return Image.fromarray(grid)


@torch.no_grad()
def sample(
    G: Generator, z: torch.Tensor, res: int, fade: float, chunk: int = 64
) -> torch.Tensor:
    """``G(z, res, fade)`` in chunks of ``chunk`` latents: ``float [N, 3, res, res]`` on z's device."""
    return torch.cat([G(part, res, fade) for part in z.split(chunk)])


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between latent batches ``[N, D]`` (Gaussian latents keep their norm)."""
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
