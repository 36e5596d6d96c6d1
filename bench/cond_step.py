"""The cost of conditioning: one training step (D step with penalty + G step) of an
unconditional and a conditional model (``label_size`` classes, the authors' AC-GAN) of the same
size, interleaved in one process so that both see the same machine; best of ``reps`` after a
warm-up round.

    python -m bench.cond_step --res 16 --fmap-base 128 --fmap-max 32 --latent-dim 32 --batch 32 --classes 13
"""

from __future__ import annotations

import argparse
import time

import torch

from fastpggan.networks import Discriminator, Generator
from fastpggan.training.steps import TrainSteps


def time_steps(res: int, fmap_base: int, fmap_max: int, latent: int, batch: int, classes: int,
               steps: int, reps: int) -> tuple[float, float]:
    """``(unconditional s, conditional s)`` per ``steps`` training steps at ``res`` (stable)."""
    runs = {}
    for K in (0, classes):
        torch.manual_seed(0)
        G = Generator(res, latent, fmap_base, fmap_max, impl="reference", label_size=K)
        D = Discriminator(res, fmap_base, fmap_max, impl="reference", label_size=K)
        opt = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
        runs[K] = TrainSteps(G, D, torch.optim.Adam(G.parameters(), **opt), torch.optim.Adam(D.parameters(), **opt))
    real = torch.rand(batch, 3, res, res) * 2 - 1
    labels = torch.randint(max(classes, 1), (batch,))
    best = {K: float("inf") for K in runs}
    for rep in range(reps + 1):  # round 0 warms up and is not counted
        for K, s in runs.items():
            y = labels if K else None
            t = time.perf_counter()
            for _ in range(steps):
                z = torch.randn(batch, latent)
                s.d_step(real, z, torch.rand(batch, 1, 1, 1), res, 1.0, labels=y)
                s.g_step(torch.randn(batch, latent), res, 1.0, labels=y)
            if rep:
                best[K] = min(best[K], time.perf_counter() - t)
    return best[0], best[classes]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--res", type=int, default=16)
    p.add_argument("--fmap-base", type=int, default=128)
    p.add_argument("--fmap-max", type=int, default=32)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=13)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    plain, cond = time_steps(a.res, a.fmap_base, a.fmap_max, a.latent_dim, a.batch, a.classes, a.steps, a.reps)
    print(f"{a.steps} steps at {a.res} px, batch {a.batch}: unconditional {plain:.3f} s, "
          f"conditional ({a.classes} classes) {cond:.3f} s: {cond / plain:.3f}x the time")


if __name__ == "__main__":
    main()
