"""Multi-process training under ``torchrun``: the process group, one start, averaged gradients.

``torchrun --nproc_per_node N train.py ...`` starts N copies of the same command; each reads its
place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Without those variables (a plain ``python train.py``) nothing
here does anything: :class:`Distributed` ``()`` is the single-process case and every method is
a no-op, so single-process runs are unchanged bit for bit.

Why no ``DistributedDataParallel`` wrapper: the critic step calls D three times and takes a
double backward (``autograd.grad(create_graph=True)``) for the gradient penalty, growth changes
which parameters are used (the old from-RGB layer only during a fade), and the compiled step
runs G and D through ``torch.compile``. DDP's reducer hooks fire per backward and per use,
need ``find_unused_parameters`` and a rebuild at every growth, and do not support the
penalty's double backward. Instead every rank starts from rank 0's weights
(:meth:`Distributed.broadcast_`), and after each backward :meth:`Distributed.sync_grads`
averages the gradients that exist (the same set on every rank: every rank trains the same
resolution and fade) in a few flattened buckets before the optimizer steps. Identical
gradients, identical Adam steps, identical weights on every rank by construction; the EMA of G
stays identical because its update is deterministic. The price against DDP: the all-reduce
does not overlap the backward pass.

Minibatch-stddev groups stay within each rank's batch (the authors' multi-GPU semantics), so a
2-rank step equals one process averaging the losses of the two halves computed separately,
not one process on the concatenated batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# Gradients are averaged in flat buckets of at most this many bytes: few enough collectives to
# keep the launch cost small, small enough that the concatenated copy stays modest.
BUCKET_BYTES = 32 << 20
# How long a collective waits for the slowest rank. Rank 0 alone writes grids and checkpoints
# (and evaluates metrics) while the others wait in the next collective; torch's default (10
# minutes for NCCL) is too short for a metric at a large resolution. A rank that dies is
# noticed by torchrun, which stops the others, so a long timeout does not hide crashes.
TIMEOUT = timedelta(minutes=60)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s latent generator: ``seed`` itself on rank 0 (so a
    single-process run is unchanged), an unrelated stream per other rank."""
    if rank == 0:
        return seed
    s = np.random.SeedSequence([seed & (2**63 - 1), rank]).generate_state(1, np.uint64)
    return int(s[0] >> np.uint64(1))


def _buckets(grads: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Consecutive runs of ``grads`` of one dtype and device holding at most ``limit`` bytes
    (a single larger tensor gets its own bucket)."""
    out: list[list[torch.Tensor]] = []
    size = 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        if (not out or size + nbytes > limit or out[-1][0].dtype != g.dtype
                or out[-1][0].device != g.device):
            out.append([])
            size = 0
        out[-1].append(g)
        size += nbytes
    return out


def param_digest(state_dicts: Iterable[dict[str, torch.Tensor]]) -> str:
    """SHA-256 (hex) of the names and bytes of every tensor of the state dicts, in order:
    equal digests mean bitwise-equal weights (used to check that the ranks agree)."""
    h = hashlib.sha256()
    for sd in state_dicts:
        for name, t in sd.items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Distributed:
    """This process's place in a run of ``world_size`` processes (default: the only one).

    Collectives (every method but :meth:`device`) must be called by every rank at the same
    point of the program; the training loop does so because every rank runs the same schedule.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join the process group torchrun describes in the environment, or the single-process
        :class:`Distributed` when there is none (``WORLD_SIZE`` unset or 1).

        ``device`` ``"cuda"``: NCCL for CUDA tensors, this process on GPU ``LOCAL_RANK``, and
        gloo for the small CPU collectives (stop flag, checkpoint bookkeeping), so those never
        wait for the GPU. ``"cpu"``: gloo for everything.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            if device == "cuda":
                torch.cuda.set_device(local)
                dist.init_process_group("cpu:gloo,cuda:nccl", timeout=TIMEOUT,
                                        device_id=torch.device("cuda", local))
            else:
                dist.init_process_group("gloo", timeout=TIMEOUT)
        return cls(rank, world, local)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    def local_batch(self, batch: int) -> int:
        """This process's share of a global minibatch of ``batch`` images (``--batch`` is
        global, as in the authors' code and stylegan2-ada-pytorch); ``ValueError`` unless it
        divides evenly over the processes."""
        if batch % self.world_size:
            raise ValueError(f"--batch {batch} does not divide over {self.world_size} processes "
                             f"(--batch is the global minibatch, split evenly over them)")
        return batch // self.world_size

    def check_batches(self, batch: dict[int, int], resolution: int) -> None:
        """:meth:`local_batch` of every resolution a run up to ``resolution`` trains."""
        for res, size in sorted(batch.items()):
            if res <= resolution:
                try:
                    self.local_batch(size)
                except ValueError as e:
                    raise ValueError(f"{e}; at {res} px") from None

    def device(self, device: str) -> torch.device:
        """This rank's device for the run's ``device`` (``"cuda"`` -> ``cuda:LOCAL_RANK``)."""
        if device == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return torch.device(device)

    def close(self) -> None:
        """Leave the process group (if this object joined one)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    # --- collectives -------------------------------------------------------------------------
    @torch.no_grad()
    def broadcast_(self, *modules: nn.Module) -> None:
        """Overwrite every parameter and buffer of ``modules`` with rank 0's, in place."""
        if not self.enabled:
            return
        for m in modules:
            for t in [*m.parameters(), *m.buffers()]:
                dist.broadcast(t.data, src=0)

    @torch.no_grad()
    def sync_grads(self, module: nn.Module) -> None:
        """Average ``module``'s existing gradients over the ranks, in place (no host sync).

        Parameters without a gradient (``None``: unused at this resolution) are skipped; every
        rank has the same set, so the buckets line up.
        """
        if not self.enabled:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        for bucket in _buckets(grads, BUCKET_BYTES):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)  # SUM: gloo has no AVG
            flat.div_(self.world_size)
            views = flat.split([g.numel() for g in bucket])
            torch._foreach_copy_(bucket, [v.view_as(g) for v, g in zip(views, bucket)])

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` averaged over the ranks, in place (for the logged statistics)."""
        if self.enabled:
            dist.all_reduce(t)
            t.div_(self.world_size)
        return t

    def all_gather_bytes(self, data: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``uint8 [n]`` CPU tensor (``n`` equal on all ranks), in rank order."""
        if not self.enabled:
            return [data]
        out = [torch.empty_like(data) for _ in range(self.world_size)]
        dist.all_gather(out, data.contiguous())
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


class StopVote:
    """Agree on stopping (a signal number, 0 for none) without stalling a step.

    Each call starts a background max-reduction of this rank's vote over the ranks (a CPU
    collective: it never waits for the GPU) and returns the result of the previous call's, so
    every rank learns of a signal on any rank one step later, at the same step. Single
    process: the vote itself, at once.
    """

    def __init__(self, dist: Distributed) -> None:
        self.dist = dist
        self._vote: torch.Tensor | None = None
        self._work = None

    def __call__(self, vote: int) -> int:
        if not self.dist.enabled:
            return vote
        agreed = self.settle()
        self._vote = torch.tensor([vote], dtype=torch.int64)
        self._work = dist.all_reduce(self._vote, op=dist.ReduceOp.MAX, async_op=True)
        return agreed

    def settle(self) -> int:
        """Wait for the vote in flight, if any; its result (0 when none)."""
        if self._work is None:
            return 0
        self._work.wait()
        self._work = None
        return int(self._vote[0])
