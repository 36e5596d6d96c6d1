"""Images from a generator: sampling in chunks, latent interpolation, sample grids.

Used by the trainer (its tick grids) and by the ``generate`` command; imports no command.

A grid image (a *sheet*) of :func:`layout` holds at most :data:`MAX_SHEET_SIDE` pixels of samples on each side
(8 x 8 samples at 1024 px, 32 x 32 at 256 px, 128 x 128 at 64 px and below): more samples than
fit go on further sheets, ``NAME-001.png``, ``NAME-002.png``, ... . Samples are generated,
placed and dropped a chunk at a time, so memory holds one sheet and one chunk, never all the
samples. Latents come in fixed chunks of :data:`LATENT_CHUNK` rows from one seeded generator, so
sample ``i`` is the same whatever ``n``: a larger ``--n`` extends a smaller one.

A latent walk (GIF) keeps every frame until it is written (the GIF encoder compares each with
the previous one), so its size is refused beyond :data:`MAX_GIF_BYTES` with the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastpggan.networks import Generator

MIN_CELL = 64  # grid cells smaller than this are upscaled by nearest neighbour


def to_hwc_uint8(images: torch.Tensor) -> np.ndarray:
    """``float [N, 3, h, w]`` in ~[-1, 1] -> ``uint8 [N, h, w, 3]`` numpy (clamped, rounded), for
    image files. (The metrics' :func:`fastpggan.metrics.images.to_uint8` keeps ``[N, 3, h, w]``
    tensors on their device.)"""
    return hwc_uint8(images.detach()).cpu().numpy()


def hwc_uint8(images: torch.Tensor) -> torch.Tensor:
    """``float [N, 3, h, w]`` in ~[-1, 1] -> ``uint8 [N, h, w, 3]`` tensor on the same device:
    clamped to [-1, 1], mapped to [0, 255], rounded half to even. What image files get
    (:func:`to_hwc_uint8`), and what ``export --uint8`` bakes into the exported program."""
    x = images.float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1)


def make_grid(images: torch.Tensor, cols: int | None = None, min_cell: int = MIN_CELL) -> Image.Image:
    """``[N, 3, h, w]`` -> one RGB image, ``cols`` per row (default: near square), 1 px gaps.

    Cells smaller than ``min_cell`` pixels are upscaled by an integer factor, nearest neighbour.
    One image whatever ``N`` (the caller bounds it: the trainer's ``--grid``); for any number
    of samples, :func:`layout` spreads them over sheets.
    """
    a = to_hwc_uint8(images)
    n, h = a.shape[0], a.shape[1]
    cols = cols or math.ceil(math.sqrt(n))
    lay = Layout(n, h, max(1, math.ceil(min_cell / h)), cols, math.ceil(n / cols))
    canvas = Canvas(lay, n)
    for i in range(n):
        canvas.put(i, a[i])
    return canvas.image()


@torch.no_grad()
def sample(
    G: Generator, z: torch.Tensor, res: int, fade: float, chunk: int = 64, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """``G(z, res, fade)`` in chunks of ``chunk`` latents: ``float [N, 3, res, res]`` on z's device.
    ``labels``: a conditional G's classes, int64 ``[N]`` on z's device."""
    if labels is None:
        return torch.cat([G(part, res, fade) for part in z.split(chunk)])
    return torch.cat([G(part, res, fade, y) for part, y in zip(z.split(chunk), labels.split(chunk))])


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between latent batches ``[N, D]`` (Gaussian latents keep their norm)."""
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b

MAX_SHEET_SIDE = 8192  # pixels of samples per side of a sheet (plus the 1 px gaps): ~200 MiB
LATENT_CHUNK = 64  # latents drawn and samples generated this many at a time
MAX_GIF_BYTES = 1 << 30  # the frames of a walk, one byte per pixel, kept until written


@dataclass(frozen=True)
class Layout:
    """``n`` samples of ``cell`` x ``cell`` pixels (after upscaling by ``scale``) on sheets of
    ``cols`` columns and at most ``rows`` rows, 1 px gaps."""

    n: int
    res: int
    scale: int
    cols: int
    rows: int

    @property
    def cell(self) -> int:
        return self.res * self.scale

    @property
    def per_sheet(self) -> int:
        return self.cols * self.rows

    @property
    def sheets(self) -> int:
        return math.ceil(self.n / self.per_sheet)

    def sheet_size(self, count: int) -> tuple[int, int]:
        """``(width, height)`` of a sheet of ``count`` samples."""
        rows = math.ceil(count / self.cols)
        return self.cols * (self.cell + 1) - 1, rows * (self.cell + 1) - 1


def cells_per_side(res: int, min_cell: int = MIN_CELL, max_side: int | None = None) -> int:
    """How many samples of ``res`` pixels fit along one side of a sheet (of ``max_side``
    pixels of samples, default :data:`MAX_SHEET_SIDE`)."""
    side = MAX_SHEET_SIDE if max_side is None else max_side
    return max(1, side // (res * max(1, math.ceil(min_cell / res))))


def layout(n: int, res: int, cols: int | None = None, min_cell: int = MIN_CELL,
           max_side: int | None = None) -> Layout:
    """Near-square sheets (``cols`` per row when given) within ``max_side`` pixels."""
    scale = max(1, math.ceil(min_cell / res))
    fit = cells_per_side(res, min_cell, max_side)
    if cols is None:
        cols = min(math.ceil(math.sqrt(n)), fit)
    cols = max(1, min(cols, fit, n))
    rows = min(math.ceil(n / cols), fit)
    return Layout(n, res, scale, cols, rows)


class Canvas:
    """One sheet being filled: ``put(i, uint8 [res, res, 3])`` places sample ``i`` of it."""

    def __init__(self, lay: Layout, count: int) -> None:
        self.lay = lay
        w, h = lay.sheet_size(count)
        self.pixels = np.zeros((h, w, 3), np.uint8)

    def put(self, i: int, a: np.ndarray) -> None:
        k, c = self.lay.scale, self.lay.cell
        if k > 1:
            a = a.repeat(k, axis=0).repeat(k, axis=1)
        r, col = divmod(i, self.lay.cols)
        self.pixels[r * (c + 1): r * (c + 1) + c, col * (c + 1): col * (c + 1) + c] = a

    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


def latents(n: int, dim: int, seed: int) -> Iterator[torch.Tensor]:
    """``n`` latents ``float32 [<=LATENT_CHUNK, dim]`` in chunks (see module doc)."""
    g = torch.Generator().manual_seed(seed)
    left = n
    while left > 0:
        z = torch.randn(LATENT_CHUNK, dim, generator=g)
        yield z[: min(left, LATENT_CHUNK)]
        left -= LATENT_CHUNK


def class_chunks(n: int, chosen: list[int] | None, counts: list[int] | None, seed: int) -> Iterator[torch.Tensor]:
    """A conditional G's classes for ``n`` samples, int64 ``[<=LATENT_CHUNK]`` chunks beside
    :func:`latents`': sample ``i`` gets ``chosen[i % len(chosen)]``, or without ``chosen`` a class
    drawn at the frequencies ``counts`` (images per class) from its own generator seeded from
    ``seed``. Chunked like the latents, so sample ``i``'s class is the same whatever ``n``."""
    g = torch.Generator().manual_seed(seed + 1_000_003)  # not the latents' stream
    weights = torch.tensor(counts, dtype=torch.float64) if counts else None
    done = 0
    while done < n:
        if chosen:
            y = torch.tensor([chosen[i % len(chosen)] for i in range(done, done + LATENT_CHUNK)])
        else:
            assert weights is not None
            y = torch.multinomial(weights, LATENT_CHUNK, replacement=True, generator=g)
        yield y[: min(n - done, LATENT_CHUNK)]
        done += LATENT_CHUNK


def sheet_paths(out: Path, sheets: int) -> list[Path]:
    """``out`` itself for one sheet; ``out-001.png`` ... for several."""
    if sheets == 1:
        return [out]
    width = max(3, len(str(sheets)))
    return [out.with_name(f"{out.stem}-{k:0{width}d}{out.suffix}") for k in range(1, sheets + 1)]


def gif_bytes(lay: Layout, frames: int) -> int:
    """What the frames of a walk on one sheet of ``lay`` hold until written."""
    w, h = lay.sheet_size(lay.n)
    return frames * w * h
