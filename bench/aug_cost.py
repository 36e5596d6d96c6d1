"""Cost of --aug: one D step + G step without augmentation, with the bgc augmentation at p = 0.5
(--aug fixed), and with it plus the critic's no-grad score of a batch of held-out reals (--aug
ada's signal), on CPU or GPU, interleaved rounds, best of each. Prints img/s and the ratios.

    OMP_NUM_THREADS=1 PYTHONPATH=. python -m bench.aug_cost --res 16 --batch 32
"""

from __future__ import annotations

import argparse
import time

import torch

from fastpggan import Discriminator, Generator
from fastpggan.augment import Augment
from fastpggan.training import TrainSteps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--fmap-base", type=int, default=256)
    ap.add_argument("--fmap-max", type=int, default=64)
    ap.add_argument("--latent-dim", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    runs = {}
    for name in ("off", "bgc", "ada"):
        G = Generator(a.res, a.latent_dim, a.fmap_base, a.fmap_max, impl="reference").to(dev)
        D = Discriminator(a.res, a.fmap_base, a.fmap_max, impl="reference").to(dev)
        aug = Augment("bgc", torch.tensor(0.5, device=dev), torch.Generator(dev).manual_seed(0)) if name != "off" else None
        runs[name] = TrainSteps(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()), augment=aug)
    real = torch.randn(a.batch, 3, a.res, a.res, device=dev)
    z = torch.randn(a.batch, a.latent_dim, device=dev)
    alpha = torch.rand(a.batch, 1, 1, 1, device=dev)
    held = torch.randn(a.batch, 3, a.res, a.res, device=dev)
    best = dict.fromkeys(runs, float("inf"))
    for r in range(a.rounds + 1):
        for name, steps in runs.items():
            t = time.perf_counter()
            for _ in range(a.iters):
                steps.d_step(real, z, alpha, a.res, 1.0, heldout=held if name == "ada" else None)
                steps.g_step(z, a.res, 1.0).item()
            if r:  # round 0 warms up
                best[name] = min(best[name], time.perf_counter() - t)
    ips = {k: a.iters * a.batch / v for k, v in best.items()}
    print(f"res {a.res} batch {a.batch}: off {ips['off']:.1f} img/s, bgc p=0.5 {ips['bgc']:.1f} img/s "
          f"(ratio {ips['bgc'] / ips['off']:.2f}), bgc + held-out score {ips['ada']:.1f} img/s "
          f"(ratio {ips['ada'] / ips['off']:.2f})")


if __name__ == "__main__":
    main()
