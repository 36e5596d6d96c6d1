"""One training iteration, every fast variant side by side: images/s and peak memory.

One iteration is what the trainer does per step: a critic step with the gradient penalty, a
generator step and the G average update, with the fade active (the new block and the previous
resolution's path both run). Same models (same seed), same resolution and batch, one variant at
a time in this process, in this order (a time-out keeps the variants already measured):

- ``eager reference``: the pure-PyTorch ops, no compile (what runs where nothing else can);
- ``eager fused``: ``impl="auto"`` (the Triton kernels on a GPU) without compile;
- ``cudagraphs fused``: the Triton kernels under ``torch.compile(backend="cudagraphs")``: what a
  GTX 1080 can run (no inductor there; that backend does not depend on the card's age);
- ``compiled fused``: the Triton kernels under ``torch.compile`` with inductor: train.py's
  default on recent GPUs;
- ``compiled reference``: the reference ops under inductor;
- then the fastest of those again with ``--precision bf16`` (autocast; penalty in fp32);
- the fastest again with G's upsample-convs the other way (``G unfused`` where
  ``--fused-scale-from`` fuses a block at this resolution, else ``G fused from 8 px``);
- the fastest again with TF32 convolutions and matmuls (``--tf32``), on GPUs that have TF32
  (compute capability 8.0+; ``--tf32-variant on`` runs it anywhere: a CPU plumbing check).

Every variant but the TF32 one runs in IEEE fp32 (``set_tf32(False)``), as ``train`` does by
default, whatever torch's own default.

    python -m bench.train_throughput [--res 256] [--batch 16] [--json FILE] [--variants LIST]
        [--fused-scale-from RES] [--tf32-variant auto|on|off]
    python -m bench.train_throughput --dry-run --device cpu --res 8 --batch 4 --fmap-base 32 ...

Peak memory is ``torch.cuda.max_memory_allocated`` from building the variant's models to its
last timed iteration (weights, Adam state, compile-time allocations included), less what was
allocated before it started (``baseline_bytes``: what earlier variants left; ``null`` on a
CPU). With ``--json`` the file is rewritten after every variant: ``{"device", "res", "batch",
"config", "dry_run", "variants": [{"name", "impl", "resolved_impl", "compile", "backend",
"precision", "fused_scale_from", "tf32", "img_s", "iters", "warmup_s", "peak_bytes",
"baseline_bytes"}]}`` (``fused_scale_from`` as resolved: ``null`` = G unfused); a variant that
raised has ``error`` (one line) instead of numbers. ``--dry-run`` (CPU, CI): inductor is
replaced by ``aot_eager``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from fastpggan import Discriminator, Generator
from fastpggan.ops import resolve_impl
from fastpggan.training import TrainSteps, ema_update
from fastpggan.training.config import TrainConfig
from fastpggan.training.steps import TF32_MIN_CAPABILITY, set_tf32


@dataclass(frozen=True)
class Variant:
    name: str
    impl: str  # "reference" | "auto"
    compile: bool
    backend: str = "inductor"  # torch.compile backend when compile is on
    precision: str = "fp32"
    # G's blocks from this resolution up fused; None: none (parse_args sets --fused-scale-from)
    fused_scale_from: int | None = None
    tf32: bool = False


# Those that compile little first: a time-out should cost as few variants as possible.
VARIANTS: tuple[Variant, ...] = (
    Variant("eager reference", "reference", False),
    Variant("eager fused", "auto", False),
    Variant("cudagraphs fused", "auto", True, "cudagraphs"),
    Variant("compiled fused", "auto", True),
    Variant("compiled reference", "reference", True),
)


def make_steps(variant: Variant, target: int, args: argparse.Namespace, device: torch.device
               ) -> tuple[TrainSteps, Generator]:
    """Models, optimizers and :class:`TrainSteps` of one variant (same seed: same weights)."""
    torch.manual_seed(0)
    G = Generator(target, args.latent_dim, args.fmap_base, args.fmap_max, impl=variant.impl)
    G.set_fused_scale(variant.fused_scale_from or UNFUSED)
    G.to(device)
    D = Discriminator(target, args.fmap_base, args.fmap_max, impl=variant.impl).to(device)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    adam = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    steps = TrainSteps(G, D, opt_g, opt_d, compile=variant.compile,
                       compile_backend=variant.backend, precision=variant.precision)
    return steps, G_ema


UNFUSED = 1 << 30  # a --fused-scale-from above every resolution


def fusion_flipped(variant: Variant, res: int) -> Variant:
    """``variant`` with G's upsample-convs the other way at ``res``: unfused where it fuses a
    block up to ``res``, else fused from 8 px (every block)."""
    assert variant.fused_scale_from is not None
    if variant.fused_scale_from <= res:
        return replace(variant, name=f"{variant.name}, G unfused", fused_scale_from=None)
    return replace(variant, name=f"{variant.name}, G fused from 8 px", fused_scale_from=8)


def has_tf32(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= TF32_MIN_CAPABILITY


class Batch:
    """One batch of random reals and latents on the device, reused by every iteration (data
    loading is not timed)."""

    def __init__(self, res: int, batch: int, latent: int, device: torch.device) -> None:
        g = torch.Generator(device).manual_seed(1)
        self.real = torch.rand(batch, 3, res, res, device=device, generator=g) * 2 - 1
        self.z_d = torch.randn(batch, latent, device=device, generator=g)
        self.z_g = torch.randn(batch, latent, device=device, generator=g)
        self.alpha = torch.rand(batch, 1, 1, 1, device=device, generator=g)
        self.fade = torch.tensor(0.5, device=device)
        self.res = res


def iterate(steps: TrainSteps, G_ema: Generator, b: Batch) -> None:
    """One training iteration at ``b.res``, fade active."""
    steps.d_step(b.real, b.z_d, b.alpha, b.res, b.fade)
    steps.g_step(b.z_g, b.res, b.fade)
    ema_update(G_ema, steps.G, 0.999)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variant: Variant, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build ``variant``, warm it up (compiles), time it: img/s, iterations, peak memory."""
    cuda = device.type == "cuda"
    if cuda:  # what an earlier variant left allocated is not this one's
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    steps, G_ema = make_steps(variant, max(8, args.res), args, device)
    b = Batch(args.res, args.batch, args.latent_dim, device)
    resolved = resolve_impl(variant.impl, b.real)
    for _ in range(args.warmup):  # compiles, allocates the Adam state
        iterate(steps, G_ema, b)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    # one synchronised iteration sizes the timed loop, which syncs only at its end (a sync
    # per iteration would hide the overlap of host and device that training has)
    t1 = time.perf_counter()
    iterate(steps, G_ema, b)
    _sync(device)
    once = time.perf_counter() - t1
    iters = max(args.min_iters, math.ceil(args.min_time / max(once, 1e-6)))
    start = time.perf_counter()
    for _ in range(iters):
        iterate(steps, G_ema, b)
    _sync(device)
    seconds = time.perf_counter() - start
    return dict(resolved_impl=resolved, img_s=args.batch * iters / seconds, iters=iters,
                warmup_s=round(warmup_s, 2),
                peak_bytes=torch.cuda.max_memory_allocated(device) - baseline if cuda else None,
                baseline_bytes=baseline if cuda else None)


def release() -> None:
    """Forget every compiled graph and free the memory of the variant just measured."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def inductor_as_aot_eager() -> Iterator[None]:
    """Dry run on a CPU: ``torch.compile``'s inductor replaced by ``aot_eager`` (dynamo and AOT
    autograd trace the same graphs; inductor's C++ code generation would take minutes)."""
    real = torch.compile

    def compile(model=None, *, backend="inductor", **kwargs):
        return real(model, backend="aot_eager" if backend == "inductor" else backend, **kwargs)

    torch.compile = compile
    try:
        yield
    finally:
        torch.compile = real


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, default=256, help="resolution (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default: %(default)s)")
    p.add_argument("--fmap-base", type=int, default=8192)
    p.add_argument("--fmap-max", type=int, default=512)
    p.add_argument("--latent-dim", type=int, default=512)
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations (default: %(default)s)")
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds timed per variant (default: %(default)s)")
    p.add_argument("--variants", default=None,
                   help="comma-separated names to run (default: all, then bf16 of the fastest)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16 variant")
    p.add_argument("--fused-scale-from", type=int, default=TrainConfig().fused_scale_from,
                   metavar="RES", help="G fused from RES px up, as train's flag (default: %(default)s)")
    p.add_argument("--no-fusion-variant", dest="fusion_variant", action="store_false",
                   help="skip the fastest variant with G's fusion flipped")
    p.add_argument("--tf32-variant", choices=("auto", "on", "off"), default="auto",
                   help="the fastest variant with TF32: auto = on GPUs of compute capability "
                        "8.0+ (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true",
                   help="CPU plumbing check: compiled variants use aot_eager instead of inductor")
    args = p.parse_args(argv)
    names = [v.name for v in VARIANTS]
    chosen = names if args.variants is None else [s.strip() for s in args.variants.split(",")]
    if unknown := [n for n in chosen if n not in names]:
        p.error(f"--variants takes names from {', '.join(names)}; got {unknown}")
    args.variants = [replace(v, fused_scale_from=args.fused_scale_from)
                     for v in VARIANTS if v.name in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", message=".*impl='auto' runs the PyTorch reference.*")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result: dict[str, Any] = {
        "device": name, "res": args.res, "batch": args.batch, "dry_run": args.dry_run,
        "config": {k: getattr(args, k) for k in ("fmap_base", "fmap_max", "latent_dim")},
        "variants": [],
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")

    def run(variant: Variant) -> dict[str, Any]:
        row: dict[str, Any] = asdict(variant)
        if args.dry_run and variant.compile and variant.backend == "inductor":
            row["backend"] = "aot_eager"  # see inductor_as_aot_eager
        try:
            set_tf32(variant.tf32)
            row.update(measure(variant, args, device))
            print(f"{variant.name:28s} {row['img_s']:9.1f} img/s  peak "
                  f"{(row['peak_bytes'] or 0) / 2**30:6.2f} GiB  ({row['resolved_impl']} ops, "
                  f"warm-up {row['warmup_s']:.1f} s)", flush=True)
        except Exception as e:  # one variant failing must not cost the others
            traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        finally:
            set_tf32(False)
        release()
        result["variants"].append(row)
        save()
        return row

    save()
    print(f"{name}: {args.res} px, batch {args.batch}", flush=True)
    with inductor_as_aot_eager() if args.dry_run else contextlib.nullcontext():
        rows = [run(v) for v in args.variants]
        measured = [(r, v) for r, v in zip(rows, args.variants) if "img_s" in r]
        fastest = max(measured, key=lambda rv: rv[0]["img_s"])[1] if measured else None
        if args.bf16 and fastest is not None:
            row = run(replace(fastest, name=f"{fastest.name}, bf16", precision="bf16"))
            row["bf16_of"] = fastest.name
            save()
        if args.fusion_variant and fastest is not None:
            row = run(fusion_flipped(fastest, args.res))
            row["fusion_of"] = fastest.name
            save()
        tf32 = args.tf32_variant == "on" or (args.tf32_variant == "auto" and has_tf32(device))
        if tf32 and fastest is not None:
            row = run(replace(fastest, name=f"{fastest.name}, TF32", tf32=True))
            row["tf32_of"] = fastest.name
            save()
    return 1 if any("error" in r for r in result["variants"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
