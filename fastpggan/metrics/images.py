"""Image plumbing shared by the metrics: dtype conversion, box downscaling, batching.

Both metrics work on uint8 images ``[N, 3, H, W]`` in ``[0, 255]``, as the authors' evaluation
does (their generator output is mapped by ``x * 127.5 + 127.5``, rounded and clipped to uint8
before any metric sees it). Float inputs are taken to be in the generator's range ``[-1, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from fastpggan.layers import downsample2x

ImageSource = torch.Tensor | Iterable


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` as is; float in ``[-1, 1]`` -> ``round(x * 127.5 + 127.5)`` clipped."""
    check_images(images)
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return (images.float() * 127.5 + 127.5).round_().clamp_(0, 255).to(torch.uint8)


def check_images(images: torch.Tensor, resolution: int | None = None) -> None:
    """``ValueError`` unless ``images`` is ``[N, 3, H, W]`` (square, ``H == resolution`` if given)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a [N, 3, H, W] tensor, got {shape}")
    h, w = images.shape[-2:]
    if h != w or (resolution is not None and h != resolution):
        want = f"{resolution}x{resolution}" if resolution is not None else "square"
        raise ValueError(f"images must be {want}, got {h}x{w}")


def downscale_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 ``[N, 3, H, H]`` -> uint8 ``[N, 3, R, R]`` by repeated 2x2 box filtering.

    The authors' ``downscale_minibatch``: average in float32 for every halving, round once at
    the end. Reals at a lower training resolution are made the same way D sees them.
    """
    check_images(images)
    size = images.shape[-1]
    if size == resolution:
        return images
    if resolution > size or size % resolution or (size // resolution) & (size // resolution - 1):
        raise ValueError(f"cannot box-downscale {size}x{size} images to {resolution}x{resolution}")
    x = images.float()
    while x.shape[-1] > resolution:
        x = downsample2x(x)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def iterate_batches(
    source: ImageSource, num_images: int, resolution: int, batch_size: int = 64
) -> Iterator[torch.Tensor]:
    """Yield uint8 ``[B, 3, R, R]`` batches holding the first ``num_images`` of ``source``.

    ``source`` is a tensor ``[N, 3, H, W]`` or an iterable of tensors: batches ``[B, 3, H, W]``,
    single images ``[3, H, W]`` (a map-style dataset), or tuples whose first item is either
    (a ``DataLoader`` yielding ``(images, labels)``). ``H >= R``; larger images are box-filtered
    down. ``ValueError`` if the source runs dry before ``num_images``.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if isinstance(source, torch.Tensor) and source.shape[0] < num_images:
        raise ValueError(f"asked for {num_images} images, the tensor holds {source.shape[0]}")
    items = source.split(batch_size) if isinstance(source, torch.Tensor) else source
    pending: list[torch.Tensor] = []
    have = 0
    done = 0
    for item in items:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"image source yielded {type(item).__name__}, expected a tensor")
        batch = item.unsqueeze(0) if item.ndim == 3 else item
        pending.append(downscale_uint8(to_uint8(batch), resolution))
        have += batch.shape[0]
        while have >= batch_size or (have and done + have >= num_images):
            merged = torch.cat(pending)
            take = min(batch_size, num_images - done)
            yield merged[:take]
            done += take
            if done >= num_images:
                return
            pending, have = [merged[take:]], merged.shape[0] - take
    raise ValueError(f"the image source ran out after {done + have} of {num_images} images")
