"""Training memory estimated without a GPU: the tensors autograd keeps for backward.

    python -m bench.memory_estimate [--res 256] [--batch 16]

Runs one training iteration in the order :class:`fastpggan.training.TrainSteps` runs it on fake
tensors (``FakeTensorMode`` on the meta device: shapes only, nothing is computed, no GPU
needed), once with the reference ops and once with the fused Triton ops (their fake
implementations, which allocate what the kernels allocate and save what they save). A saved-tensor hook adds up the storage of every tensor
autograd keeps for backward (each storage counted once) until that pass's backward runs.
The estimate of the peak is the largest pass plus weights, gradients, Adam moments and G_ema.
Not counted: the allocator's rounding and fragmentation, cuDNN workspaces, and the transient
outputs of the op running at the peak, so a GPU's ``max_memory_allocated`` will be higher.
On a GPU, ``python -m bench.train_throughput`` measures the real peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from unittest import mock

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fastpggan.ops import dispatch

from fastpggan import Discriminator, Generator
from fastpggan.loss import g_loss_wgan, gradient_penalty

STATE = "weights, grads, Adam, G_ema"


class SavedBytes:
    """Bytes of the distinct storages autograd saves inside :meth:`track`."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[int] = set()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in self._seen:
            self._seen.add(key)
            self.total += t.untyped_storage().nbytes()
        return t

    @contextlib.contextmanager
    def track(self):
        self.total, self._seen = 0, set()
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self


def estimate(res: int, batch: int, impl: str, fmap_base: int = 8192, fmap_max: int = 512,
             latent: int = 512) -> dict[str, int]:
    """Bytes per part of one iteration at ``res`` (fade active) with ``impl``'s ops."""
    # Fake tensors on the meta device (autograd on fake CUDA tensors needs a CUDA context);
    # the dispatch is told Triton can run there, so the ops' fake implementations are used.
    chosen = f"{impl}|"
    with FakeTensorMode(), mock.patch.object(dispatch, "_decide", lambda *a: chosen):
        return _estimate(res, batch, impl, fmap_base, fmap_max, latent)


def _estimate(res, batch, impl, fmap_base, fmap_max, latent) -> dict[str, int]:
    dev = torch.device("meta")
    with dev:
        G = Generator(res, latent, fmap_base, fmap_max, impl=impl)
        D = Discriminator(res, fmap_base, fmap_max, impl=impl)
    fade = torch.full((), 0.5, device=dev)
    real = torch.empty(batch, 3, res, res, device=dev)
    z = torch.empty(batch, latent, device=dev)
    alpha = torch.empty(batch, 1, 1, 1, device=dev)
    saved = SavedBytes()
    parts: dict[str, int] = {}
    with torch.no_grad():
        fake = G(z, res, fade)
    with saved.track():
        D(real, fade)
    parts["D pass (reals)"] = saved.total
    with saved.track():
        gradient_penalty(D, real, fake, fade, alpha=alpha)
    parts["D penalty pass (double backward graph)"] = saved.total
    D.requires_grad_(False)
    with saved.track():
        g_loss_wgan(D, G(z, res, fade), fade)
    parts["G step (G and frozen D)"] = saved.total
    weights = sum(p.numel() * p.element_size() for m in (G, D) for p in m.parameters())
    g_weights = sum(p.numel() * p.element_size() for p in G.parameters())
    # weights + gradients + two Adam moments for G and D, plus the G average
    parts[STATE] = 4 * weights + g_weights
    return parts


def estimated_peak(parts: dict[str, int]) -> int:
    """The estimate of the peak: the largest pass plus the state (weights, grads, Adam, G_ema)."""
    passes = {k: v for k, v in parts.items() if k != STATE}
    return max(passes.values()) + parts[STATE]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--fmap-base", type=int, default=8192)
    p.add_argument("--fmap-max", type=int, default=512)
    p.add_argument("--latent-dim", type=int, default=512)
    p.add_argument("--json", type=Path, default=None,
                   help="also write {impl: {parts: {name: bytes}, estimated_peak: bytes}}")
    args = p.parse_args(argv)
    gib = 2.0**30
    print(f"{args.res}px, batch {args.batch}, fmap_base {args.fmap_base}, fmap_max "
          f"{args.fmap_max}, latent {args.latent_dim}, fp32, estimated without a GPU "
          "(GiB saved for backward per pass)")
    out = {}
    for impl in ("reference", "triton"):
        parts = estimate(args.res, args.batch, impl, args.fmap_base, args.fmap_max, args.latent_dim)
        out[impl] = {"parts": parts, "estimated_peak": estimated_peak(parts)}
        print(f"{impl}:")
        for name, nbytes in parts.items():
            print(f"  {name:42s} {nbytes / gib:6.2f} GiB")
        print(f"  {'estimated peak (largest pass + state)':42s} {estimated_peak(parts) / gib:6.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
