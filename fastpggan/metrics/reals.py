"""Real images for the metrics, taken from the training data pipeline (``fastpggan.data``).

The reals of an evaluation are the first ``num_images`` of one fixed permutation of the
dataset (drawn with ``REAL_ORDER_SEED``, whatever the evaluation's seed), so the real side, and
the FID statistics cached from it, depend on the dataset, resolution and image count alone,
and training-time and ``evaluate`` results share one statistics cache. A dataset smaller than
``num_images`` is gone through again in the same order (repeated reals: see ``repeats``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastpggan.data import ImageData

REAL_ORDER_SEED = 0


def real_batches(images: np.ndarray, num_images: int, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """One level of :class:`ImageData` (``uint8 [N, r, r, 3]``, possibly memory-mapped) ->
    uint8 ``[B, 3, r, r]`` CPU batches holding ``num_images`` images in the fixed order.

    Only the rows of one batch are read at a time, so memory stays bounded for any ``N``.
    """
    if num_images < 1 or batch_size < 1:
        raise ValueError(f"num_images and batch_size must be positive, got {num_images}, {batch_size}")
    order = np.resize(np.random.default_rng(REAL_ORDER_SEED).permutation(images.shape[0]), num_images)
    for start in range(0, num_images, batch_size):
        rows = np.asarray(images[order[start : start + batch_size]])
        yield torch.from_numpy(rows).permute(0, 3, 1, 2)


def repeats(data: ImageData, num_images: int) -> bool:
    """Whether ``num_images`` reals take some images of ``data`` more than once."""
    return num_images > data.count


def data_identity(data: ImageData) -> str:
    """FID statistics cache key of a decoded dataset: the data cache's own fingerprint
    (source files' names, sizes and times, or the built-in faces' count and seed)."""
    return f"fastpggan-data:{data.source.fingerprint(data.resolution)}"
