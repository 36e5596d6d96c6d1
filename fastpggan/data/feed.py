"""Real minibatches for the training loop, one per step, reproducible from ``(seed, step)``.

The images of step ``k`` are drawn (with replacement) by a generator seeded from
``(seed, k)`` alone, so a resumed run sees exactly the batches it would have seen, whatever was
prefetched before the stop. The mirror flags of the step come from the same generator.
In a run of ``world_size`` processes the step draws one global batch of ``world_size * B`` and
rank ``r`` takes the ``r``-th slice of ``B``: different images on every rank, and a
single-process run (rank 0 of 1) sees exactly what it always did.

A resolution's whole ``uint8`` array is moved to the device once when it fits ``device_bytes``
(every low resolution: no decoding, no host-to-device traffic per step). Larger arrays are
gathered by DataLoader workers from the (memory-mapped) cache into pinned memory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import torch

DEVICE_BYTES = 1 << 30  # keep a resolution's images on the device when they take less than this


def step_batch(
    seed: int, step: int, n: int, batch: int, rank: int = 0, world_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image indices ``int64 [batch]`` in ``[0, n)`` and mirror flags ``bool [batch]`` (CPU):
    rank ``rank``'s slice of the step's global draw of ``world_size * batch``."""
    s = np.random.SeedSequence([seed, step]).generate_state(2, np.uint64)
    g = torch.Generator().manual_seed(int(s[0] >> np.uint64(1)))
    total = batch * world_size
    idx = torch.randint(n, (total,), generator=g)
    flip = torch.rand(total, generator=g) < 0.5
    part = slice(rank * batch, (rank + 1) * batch)
    return idx[part], flip[part]


class _StepBatches(torch.utils.data.Dataset):
    """Item ``k``: the ``uint8 [B, r, r, 3]`` images and ``bool [B]`` flags of step ``k``."""

    def __init__(self, images: np.ndarray, batch: int, seed: int, rank: int, world_size: int) -> None:
        self.images, self.batch, self.seed = images, batch, seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, flip = step_batch(self.seed, step, self.images.shape[0], self.batch, self.rank, self.world_size)
        return torch.from_numpy(np.ascontiguousarray(self.images[idx.numpy()])), flip


class RealBatches:
    """Iterator over steps ``start, start + 1, ...`` of ``(uint8 [B, r, r, 3], bool [B])``.

    ``images``: ``uint8 [N, r, r, 3]`` (memory-mapped or in memory). Tensors arrive on ``device``.
    ``rank``/``world_size``: this process's share of each step's global batch (see
    :func:`step_batch`).
    """

    def __init__(
        self,
        images: np.ndarray,
        batch: int,
        seed: int,
        start_step: int,
        device: torch.device,
        workers: int = 0,
        device_bytes: int = DEVICE_BYTES,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.batch, self.seed, self.step = images.shape[0], batch, seed, start_step
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.on_device = images.nbytes <= device_bytes
        self._it: Iterator | None = None
        if self.on_device:
            self.images = torch.from_numpy(np.array(images)).to(self.device)  # a writable copy
        else:
            loader = torch.utils.data.DataLoader(
                _StepBatches(images, batch, seed, rank, world_size),
                batch_size=None,
                sampler=range(start_step, sys.maxsize),
                num_workers=workers,
                pin_memory=self.pin,
                prefetch_factor=4 if workers > 0 else None,
            )
            self._it = iter(loader)

    def __iter__(self) -> RealBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is not None:
            x, flip = next(self._it)
        else:
            idx, flip = step_batch(self.seed, self.step, self.n, self.batch, self.rank, self.world_size)
            if self.pin:  # pinned: the copy is asynchronous, no host sync in the step
                idx, flip = idx.pin_memory(), flip.pin_memory()
            x = self.images[idx.to(self.device, non_blocking=True)]
        self.step += 1
        return x.to(self.device, non_blocking=True), flip.to(self.device, non_blocking=True)
