"""Arithmetic of one training iteration per image, counted on the graph that actually runs.

``torch.utils.flop_counter``'s formulas count every convolution and matmul of one
iteration (critic step with the gradient penalty and its double backward, generator step; the
G average and Adam are elementwise and not counted), forward and backward, with the models on
the ``meta`` device: nothing is computed, so 256 px at the authors' widths takes seconds on a
CPU. Counted at every resolution of a ``target`` px run, stable and fading in, with G's
upsample-convs unfused and fused from ``--fused-scale-from`` up. Then the default schedule's
images at each phase over a card's peak rate: an estimate of the time, a floor no real run
reaches (it ignores everything but convolutions and matmuls at peak).

    python -m bench.model_cost [--res 256] [--fused-scale-from 32] [--tflops 8.9]
    python -m bench.model_cost --json FILE

A FLOP is a multiply or an add (a multiply-add is 2), as the counter and the recipe count.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from fastpggan import Discriminator, Generator
from fastpggan.training import TrainSteps
from fastpggan.training.config import TrainConfig
from fastpggan.training.schedule import Schedule

# mbstd groups of 4 need a batch divisible by 4; the count is per image (exactly linear in the
# batch for convolutions and matmuls).
BATCH = 4
NEVER = 1 << 30  # a --fused-scale-from above every resolution: G unfused


class CountFlops(TorchDispatchMode):
    """Sums ``flop_registry``'s formulas over the aten ops that run. (``FlopCounterMode``
    itself tracks modules with backward hooks, which ``autograd.grad`` of the penalty refuses.)"""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket not in flop_registry:
            with self:  # a composite op: count what it is made of
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        if (formula := flop_registry.get(func._overloadpacket)) is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


@dataclass(frozen=True)
class Cost:
    res: int
    fading: bool
    unfused_flop: float  # per image, one iteration
    fused_flop: float


def iteration_flop(G: Generator, D: Discriminator, res: int, fading: bool) -> float:
    """FLOP per image of one training iteration at ``res`` (fade 0.5 when ``fading``, both
    paths then run), as :class:`~fastpggan.training.TrainSteps` runs it, eager."""
    meta = torch.device("meta")
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99), foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99), foreach=False)
    steps = TrainSteps(G, D, opt_g, opt_d)
    real = torch.empty(BATCH, 3, res, res, device=meta)
    z = torch.empty(BATCH, G.latent_dim, device=meta)
    alpha = torch.empty(BATCH, 1, 1, 1, device=meta)
    fade = torch.tensor(0.5, device=meta) if fading else 1.0
    counter = CountFlops()
    with counter:
        steps.d_step(real, z, alpha, res, fade)
        steps.g_step(z, res, fade)
    return counter.total / BATCH


def costs(target: int, fused_from: int, fmap_base: int, fmap_max: int, latent: int) -> list[Cost]:
    """:class:`Cost` of every phase of a ``target`` px run (4 px: stable only)."""
    with torch.device("meta"):
        G = Generator(target, latent, fmap_base, fmap_max, impl="reference")
        D = Discriminator(target, fmap_base, fmap_max, impl="reference")
    out = []
    res = 4
    while res <= target:
        for fading in ((False,) if res == 4 else (True, False)):
            flop = {}
            for name, start in (("unfused", NEVER), ("fused", fused_from)):
                G.set_fused_scale(start)
                flop[name] = iteration_flop(G, D, res, fading)
            out.append(Cost(res, fading, flop["unfused"], flop["fused"]))
        res *= 2
    return out


def schedule_hours(rows: list[Cost], target: int, tflops: float, key: str) -> dict[int, float]:
    """Hours per resolution of the default schedule (:class:`TrainConfig`'s lengths) at
    ``tflops`` (peak), ``key`` = ``"unfused_flop"`` or ``"fused_flop"``."""
    d = TrainConfig(resolution=target)
    sched = Schedule(target, d.fade_kimg, d.stable_kimg, d.total_kimg)
    by = {(r.res, r.fading): getattr(r, key) for r in rows}
    hours = {}
    for p in sched.phases:
        images_fading = p.fade_images
        images_stable = p.end - p.start - p.fade_images
        flop = images_stable * by[(p.res, False)]
        if images_fading:
            flop += images_fading * by[(p.res, True)]
        hours[p.res] = flop / (tflops * 1e12) / 3600
    return hours


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument("--res", type=int, default=256, help="the run's target (default: %(default)s)")
    p.add_argument("--fused-scale-from", type=int, default=d.fused_scale_from,
                   help="G fused from RES px up (default: train's, %(default)s)")
    p.add_argument("--fmap-base", type=int, default=d.fmap_base)
    p.add_argument("--fmap-max", type=int, default=d.fmap_max)
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--tflops", type=float, default=8.9,
                   help="peak fp32 rate for the time estimate (default: a GTX 1080's %(default)s)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = costs(args.res, args.fused_scale_from, args.fmap_base, args.fmap_max, args.latent_dim)
    hours = {k: schedule_hours(rows, args.res, args.tflops, k) for k in ("unfused_flop", "fused_flop")}
    print(f"GFLOP per image, one iteration (D step with penalty + G step), {args.res} px run, "
          f"G fused from {args.fused_scale_from} px; img/s and hours at {args.tflops:g} TFLOPS peak")
    print("| res | phase | unfused GFLOP | fused GFLOP | fused/unfused | img/s at peak (fused) |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.res} | {'fade' if r.fading else 'stable'} | {r.unfused_flop / 1e9:.1f} | "
              f"{r.fused_flop / 1e9:.1f} | {r.fused_flop / r.unfused_flop:.3f} | "
              f"{args.tflops * 1e12 / r.fused_flop:.1f} |")
    for k, name in (("unfused_flop", "unfused"), ("fused_flop", "fused")):
        h = hours[k]
        print(f"default schedule, {name}: {sum(h.values()):.0f} h in all, "
              f"{h[args.res]:.0f} h at {args.res} px "
              f"({', '.join(f'{r}: {v:.1f}' for r, v in h.items())})")
    if args.json:
        args.json.write_text(json.dumps({
            "res": args.res, "fused_scale_from": args.fused_scale_from, "tflops": args.tflops,
            "rows": [r.__dict__ for r in rows],
            "hours": {k: {str(r): v for r, v in h.items()} for k, h in hours.items()},
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
