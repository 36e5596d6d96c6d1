"""Real minibatches for the training loop, drawn epoch by epoch, reproducible from ``(seed, images)``.

Training streams the dataset as the authors do: pass (epoch) ``e`` visits every image once, in
an order shuffled by a generator seeded from ``(seed, e)`` alone, and each visit carries its own
mirror flag. Draw ``j`` of the run (counting every real image any step has taken) is entry
``j mod N`` of epoch ``j div N``'s order. A step that starts after ``images`` draws takes draws
``images, images + 1, ...``: a pure function of the seed and the images seen, so a resumed run
sees exactly the batches it would have seen, whatever was prefetched before the stop. In a run
of ``world_size`` processes a step takes ``world_size * B`` draws and rank ``r`` the ``r``-th
run of ``B`` of them: different images on every rank, and a single-process run (rank 0 of 1)
sees exactly what it always did. (Epochs span resolutions: every resolution holds the same
images, in the same order.)

A resolution's whole ``uint8`` array is moved to the device once when it fits ``device_bytes``
(every low resolution: no decoding, no host-to-device traffic per step). Larger arrays are
gathered by DataLoader workers from the (memory-mapped) cache into pinned memory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import torch

from fastpggan.errors import ignore_stop_signals, stop_signals_blocked

DEVICE_BYTES = 1 << 30  # keep a resolution's images on the device when they take less than this


class EpochDraws:
    """The run's stream of draws over ``n`` images for ``seed`` (see the module doc)."""

    def __init__(self, seed: int, n: int) -> None:
        if n < 1:
            raise ValueError(f"need at least one image, got {n}")
        self.seed, self.n = seed, n
        self._orders: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Epoch ``epoch``'s image order ``int64 [n]`` (a permutation) and mirror flags ``bool [n]``."""
        if epoch not in self._orders:
            s = np.random.SeedSequence([self.seed, epoch]).generate_state(2, np.uint64)
            g = torch.Generator().manual_seed(int(s[0] >> np.uint64(1)))
            perm = torch.randperm(self.n, generator=g)
            flip = torch.rand(self.n, generator=g) < 0.5
            if len(self._orders) >= 2:  # a batch spans at most two epochs; older ones are done
                del self._orders[min(self._orders)]
            self._orders[epoch] = (perm, flip)
        return self._orders[epoch]

    def take(self, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws ``first .. first + count - 1``: image indices ``int64 [count]`` in ``[0, n)``
        and mirror flags ``bool [count]`` (CPU)."""
        idx, flip = [], []
        j, end = first, first + count
        while j < end:
            epoch, offset = divmod(j, self.n)
            stop = min(end - j, self.n - offset)
            perm, flips = self.order(epoch)
            idx.append(perm[offset : offset + stop])
            flip.append(flips[offset : offset + stop])
            j += stop
        return torch.cat(idx), torch.cat(flip)

    def step(self, images: int, batch: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank ``rank``'s ``batch`` draws of the step taken after ``images`` draws in all."""
        return self.take(images + rank * batch, batch)


def step_batch(seed: int, images: int, n: int, batch: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image indices ``int64 [batch]`` in ``[0, n)`` and mirror flags ``bool [batch]`` (CPU) of
    the step taken after ``images`` draws: rank ``rank``'s ``batch`` of its draws."""
    return EpochDraws(seed, n).step(images, batch, rank)


class _StepBatches(torch.utils.data.Dataset):
    """Item ``k``: the ``uint8 [B, r, r, 3]`` images and ``bool [B]`` flags of the ``k``-th step
    after ``start_images`` draws."""

    def __init__(self, images: np.ndarray, batch: int, seed: int, start_images: int, rank: int,
                 world_size: int, labels: np.ndarray | None = None) -> None:
        self.images, self.batch, self.start, self.labels = images, batch, start_images, labels
        self.rank, self.world_size = rank, world_size
        self.draws = EpochDraws(seed, images.shape[0])

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        first = self.start + k * self.batch * self.world_size
        idx, flip = self.draws.step(first, self.batch, self.rank)
        x = torch.from_numpy(np.ascontiguousarray(self.images[idx.numpy()]))
        if self.labels is None:
            return x, flip
        return x, flip, torch.from_numpy(np.asarray(self.labels)[idx.numpy()])


class RealBatches:
    """Iterator over the steps after ``start_images`` draws: ``(uint8 [B, r, r, 3], bool [B])``,
    and with ``labels`` (int64 ``[N]``, the images' classes) a third item, their int64 ``[B]``.

    ``images``: ``uint8 [N, r, r, 3]`` (memory-mapped or in memory). Tensors arrive on ``device``.
    ``rank``/``world_size``: this process's share of each step's draws (see :class:`EpochDraws`);
    each step advances the draws by ``world_size * batch``.
    """

    def __init__(
        self,
        images: np.ndarray,
        batch: int,
        seed: int,
        start_images: int,
        device: torch.device,
        workers: int = 0,
        device_bytes: int = DEVICE_BYTES,
        rank: int = 0,
        world_size: int = 1,
        labels: np.ndarray | None = None,
    ) -> None:
        self.n, self.batch, self.images_drawn = images.shape[0], batch, start_images
        self.rank, self.world_size = rank, world_size
        self.draws = EpochDraws(seed, self.n)
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.on_device = images.nbytes <= device_bytes
        self._it: Iterator | None = None
        self.labels = torch.from_numpy(np.array(labels)).to(self.device) if labels is not None else None
        if self.on_device:
            self.images = torch.from_numpy(np.array(images)).to(self.device)  # a writable copy
        else:
            loader = torch.utils.data.DataLoader(
                _StepBatches(images, batch, seed, start_images, rank, world_size, labels),
                batch_size=None,
                sampler=range(sys.maxsize),
                num_workers=workers,
                pin_memory=self.pin,
                prefetch_factor=4 if workers > 0 else None,
                worker_init_fn=ignore_stop_signals,
            )
            with stop_signals_blocked():  # the workers start ignoring them (ignore_stop_signals)
                self._it = iter(loader)

    def __iter__(self) -> RealBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        if self._it is not None:
            x, flip, *y = next(self._it)
        else:
            idx, flip = self.draws.step(self.images_drawn, self.batch, self.rank)
            if self.pin:  # pinned: the copy is asynchronous, no host sync in the step
                idx, flip = idx.pin_memory(), flip.pin_memory()
            idx = idx.to(self.device, non_blocking=True)
            x = self.images[idx]
            y = [self.labels[idx]] if self.labels is not None else []
        self.images_drawn += self.batch * self.world_size
        return (x.to(self.device, non_blocking=True), flip.to(self.device, non_blocking=True),
                *(t.to(self.device, non_blocking=True) for t in y))
