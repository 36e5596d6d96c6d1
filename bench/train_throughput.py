"""Training throughput per resolution: eager reference against the fast path, same run.

One training iteration is what the trainer does per step: a critic step with the gradient
penalty, a generator step and the G average update, with the fade phase active (both the new
block and the previous resolution's path run). Variants, same models, same batches:

- ``reference``: ``impl="reference"``, eager;
- ``fast``: ``impl="auto"`` (Triton on capable GPUs) under ``torch.compile``.

    python -m bench.train_throughput [--device cuda] [--res 4,8,...,256] [--json FILE]
    python -m bench.train_throughput --dry-run       # tiny model, CPU: the plumbing only

With ``--json`` the results are rewritten after every row (a time-out keeps what was measured):
``{"device", "config", "rows": [{"res", "batch", "reference_img_s", "fast_img_s", "ratio",
"peak_mem_reference", "peak_mem_fast"}], "memory_256_b16": {"peak_bytes", "impl", "compiled"}}``.
Peak memory is ``torch.cuda.max_memory_allocated`` over the timed iterations (``null`` on CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from fastpggan import Discriminator, Generator
from fastpggan.training import DEFAULT_BATCH, TrainSteps, ema_update


def build(target: int, args: argparse.Namespace, device: torch.device, impl: str, compile: bool):
    """Models, optimizers and :class:`TrainSteps` of one variant (same seed: same weights)."""
    torch.manual_seed(0)
    G = Generator(target, args.latent_dim, args.fmap_base, args.fmap_max, impl=impl).to(device)
    D = Discriminator(target, args.fmap_base, args.fmap_max, impl=impl).to(device)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    adam = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    return TrainSteps(G, D, opt_g, opt_d, compile=compile), G_ema


def iterate(steps: TrainSteps, G_ema, res: int, batch: int, latent: int, device, fade) -> None:
    """One training iteration at ``res`` on random reals (data loading is not timed)."""
    real = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    z_d = torch.randn(batch, latent, device=device)
    alpha = torch.rand(batch, 1, 1, 1, device=device)
    z_g = torch.randn(batch, latent, device=device)
    steps.d_step(real, z_d, alpha, res, fade)
    steps.g_step(z_g, res, fade)
    ema_update(G_ema, steps.G, 0.999)


def measure(variant, res: int, batch: int, args, device) -> tuple[float, int | None]:
    """Images per second over at least ``--min-time`` seconds, and the peak memory (CUDA)."""
    steps, G_ema = variant
    fade = torch.tensor(0.5, device=device)
    cuda = device.type == "cuda"
    for _ in range(args.warmup):  # compiles, autotunes, allocates
        iterate(steps, G_ema, res, batch, args.latent_dim, device, fade)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    iters, start = 0, time.perf_counter()
    while iters < args.min_iters or time.perf_counter() - start < args.min_time:
        iterate(steps, G_ema, res, batch, args.latent_dim, device, fade)
        iters += 1
        if cuda:
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    return batch * iters / seconds, peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", default="4,8,16,32,64,128,256", help="resolutions (default: %(default)s)")
    p.add_argument("--batch", default=None, help="one batch size for all (default: the training schedule's)")
    p.add_argument("--fmap-base", type=int, default=8192)
    p.add_argument("--fmap-max", type=int, default=512)
    p.add_argument("--latent-dim", type=int, default=512)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds timed per row (default: %(default)s)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="fast path without torch.compile (fused ops only)")
    p.add_argument("--memory-batch", type=int, default=16, help="batch of the 256px memory check")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true", help="tiny model, 1 timed iteration: plumbing only")
    args = p.parse_args(argv)
    if args.dry_run:
        args.fmap_base, args.fmap_max, args.latent_dim = 32, 8, 8
        args.warmup, args.min_iters, args.min_time, args.memory_batch = 1, 1, 0.0, 2
    device = torch.device(args.device)
    resolutions = [int(r) for r in args.res.split(",")]
    batches = {r: (int(args.batch) if args.batch else DEFAULT_BATCH[r]) for r in resolutions}
    if args.dry_run:
        batches = {r: 4 for r in resolutions}
    target = max(8, *resolutions)
    warnings.filterwarnings("ignore", message=".*impl='auto' runs the PyTorch reference.*")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result: dict[str, Any] = {
        "device": name,
        "config": {k: getattr(args, k) for k in ("fmap_base", "fmap_max", "latent_dim", "compile")},
        "rows": [],
        "memory_256_b16": None,
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")

    reference = build(target, args, device, "reference", False)
    fast = build(target, args, device, "auto", args.compile)
    print(f"{name}: eager reference against fast path (impl auto, compile {args.compile})")
    for res in resolutions:
        ref_ips, ref_mem = measure(reference, res, batches[res], args, device)
        fast_ips, fast_mem = measure(fast, res, batches[res], args, device)
        row = dict(res=res, batch=batches[res], reference_img_s=ref_ips, fast_img_s=fast_ips,
                   ratio=fast_ips / ref_ips, peak_mem_reference=ref_mem, peak_mem_fast=fast_mem)
        result["rows"].append(row)
        save()
        print(f"{res:4d}px batch {batches[res]:3d}: reference {ref_ips:8.1f} img/s, "
              f"fast {fast_ips:8.1f} img/s, {fast_ips / ref_ips:.2f}x")
    del reference, fast
    if device.type == "cuda":
        # The memory budget of the brief: one 256x256 iteration of the default model at batch 16
        # must fit a GTX 1080 (8 GB).
        torch.cuda.empty_cache()
        steps, G_ema = build(256, args, device, "auto", args.compile)
        _, peak = measure((steps, G_ema), 256, args.memory_batch, argparse.Namespace(
            **{**vars(args), "min_iters": 1, "min_time": 0.0}), device)
        result["memory_256_b16"] = {"peak_bytes": peak, "impl": "auto", "compiled": args.compile,
                                    "batch": args.memory_batch}
        save()
        print(f"peak memory, 256px batch {args.memory_batch}: {peak / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
