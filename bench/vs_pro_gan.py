"""One training iteration on the CPU: this project now, this project at an earlier commit, and
``pro-gan-pth`` (the most used PGGAN package on the package index), side by side.

One iteration = a critic step with the gradient penalty, a generator step and the G average
update, fade active (alpha 0.5: both paths run), on random reals at the resolution (data
loading is not timed), eager, fp32, ``--threads`` intra-op threads. Both projects build their
networks for the measured resolution at the authors' widths (``fmap_base`` 8192, at most 512
maps, latent 512); ``pro-gan-pth`` fixes its own widths at 16384 / 2**stage (512 maps at
64 px, twice the authors' 256), so its width rule is given the authors' base for the
comparison. Its iteration is its own ``ProGAN.optimize_discriminator`` and
``optimize_generator`` (its WGAN-GP loss with drift, Adam betas (0, 0.99), its check of the
gradients for NaN) and its ``update_average``; one shim lets it run on torch 2.x (see
:func:`pro_gan_iteration`).

Every measurement is a fresh process; contenders alternate within each repetition, so a
machine that slows down costs them alike. The figure is the CPU time of the measuring process
per iteration (``time.process_time``: with one thread, what the iteration computed, little
changed by other processes sharing the machine; the wall time is kept in the JSON too), the
median of the timed iterations over all repetitions.

``pro-gan-pth`` is never a dependency of this project: install it in a separate environment
(torch, torchvision and tensorboard, which it imports, then ``pip install --no-deps
pro-gan-pth==3.4``) and name that environment's interpreter:

    python -m bench.vs_pro_gan --res 8,16,32,64 --batch 16 --threads 1 \\
        --before SRC_DIR --pro-gan-python /path/to/venv/bin/python [--json FILE]

``--before``: a checkout of an earlier commit (for example ``git worktree add DIR COMMIT``);
its ``fastpggan`` is imported from there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
FMAP_BASE, FMAP_MAX, LATENT = 8192, 512, 512


# --- in the measuring process (one contender, one resolution) ---------------------------------

def fastpggan_iteration(res: int, batch: int) -> Callable[[], None]:
    """This project's iteration, as ``bench.train_throughput`` runs it (reference ops, which
    is what ``impl="auto"`` is on a CPU), with train's default fusion where the code has it."""
    import copy

    import torch

    from fastpggan import Discriminator, Generator
    from fastpggan.training import TrainSteps, ema_update

    G = Generator(res, LATENT, FMAP_BASE, FMAP_MAX, impl="reference")
    D = Discriminator(res, FMAP_BASE, FMAP_MAX, impl="reference")
    if hasattr(G, "set_fused_scale"):  # the commits that have G's fused upsample-conv
        from fastpggan.training.config import TrainConfig

        G.set_fused_scale(TrainConfig().fused_scale_from)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    adam = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    steps = TrainSteps(G, D, torch.optim.Adam(G.parameters(), **adam),
                       torch.optim.Adam(D.parameters(), **adam))
    g = torch.Generator().manual_seed(1)
    real = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    z_d, z_g = torch.randn(batch, LATENT, generator=g), torch.randn(batch, LATENT, generator=g)
    alpha = torch.rand(batch, 1, 1, 1, generator=g)
    fade = torch.tensor(0.5)

    def iterate() -> None:
        steps.d_step(real, z_d, alpha, res, fade)
        steps.g_step(z_g, res, fade)
        ema_update(G_ema, steps.G, 0.999)

    return iterate


def pro_gan_iteration(res: int, batch: int) -> Callable[[], None]:
    """``pro-gan-pth``'s iteration (its ``ProGAN`` methods), its width rule at the authors' base."""
    import contextlib
    import io

    import torch
    from pro_gan_pytorch import networks

    # pro-gan-pth 3.4 pins torch 1.10; on torch 2.x its 4x4 transposed conv calls a private
    # torch method with that version's signature. Given no output size, the method returned
    # the layer's own output_padding then, which is what it gets here.
    from pro_gan_pytorch.custom_layers import EqualizedConvTranspose2d

    EqualizedConvTranspose2d._output_padding = lambda self, *args, **kwargs: self.output_padding
    authors_nf = networks.nf
    networks.nf = lambda stage, fmap_base=FMAP_BASE, **kw: authors_nf(stage, fmap_base=fmap_base, **kw)
    from pro_gan_pytorch.custom_layers import update_average
    from pro_gan_pytorch.gan import ProGAN
    from pro_gan_pytorch.losses import WganGP

    depth = res.bit_length() - 1
    with contextlib.redirect_stdout(io.StringIO()):  # it prints both networks
        gan = ProGAN(networks.Generator(depth, latent_size=LATENT),
                     networks.Discriminator(depth, latent_size=LATENT), torch.device("cpu"))
    adam = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    opt_g = torch.optim.Adam(gan.gen.parameters(), **adam)
    opt_d = torch.optim.Adam(gan.dis.parameters(), **adam)
    loss = WganGP()
    g = torch.Generator().manual_seed(1)
    real = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    z_d, z_g = torch.randn(batch, LATENT, generator=g), torch.randn(batch, LATENT, generator=g)

    def iterate() -> None:
        gan.optimize_discriminator(loss, opt_d, z_d, real, depth, 0.5)
        gan.optimize_generator(loss, opt_g, z_g, real, depth, 0.5)
        update_average(gan.gen_shadow, gan.gen, beta=0.999)

    return iterate


def child(contender: str, res: int, batch: int, threads: int, warmup: int, iters: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    build = pro_gan_iteration if contender == "pro-gan-pth" else fastpggan_iteration
    iterate = build(res, batch)
    for _ in range(warmup):
        iterate()
    times, wall = [], []
    for _ in range(iters):
        t, w = time.process_time(), time.perf_counter()
        iterate()
        times.append(time.process_time() - t)
        wall.append(time.perf_counter() - w)
    print(json.dumps({"times": times, "wall": wall, "torch": torch.__version__}))


# --- the parent: contenders side by side ----------------------------------------------------

def contenders(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (interpreter, environment) of each contender's measuring process."""
    def env(src: Path) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}

    out = {"this project": (sys.executable, env(ROOT))}
    if args.before:
        out["before"] = (sys.executable, env(args.before))
    if args.pro_gan_python:
        out["pro-gan-pth"] = (args.pro_gan_python, {**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="8,16,32,64", help="comma-separated (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=2, help="processes per contender and resolution")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per process")
    p.add_argument("--iters", type=int, default=2, help="timed iterations per process")
    p.add_argument("--before", type=Path, default=None, help="source tree of an earlier commit")
    p.add_argument("--pro-gan-python", default=None, help="interpreter with pro-gan-pth installed")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    resolutions = [int(r) for r in args.res.split(",")]
    if args.child:
        child(args.child, resolutions[0], args.batch, args.threads, args.warmup, args.iters)
        return 0
    runners = contenders(args)
    times: dict[str, dict[int, list[float]]] = {name: {r: [] for r in resolutions} for name in runners}
    wall: dict[str, dict[int, list[float]]] = {name: {r: [] for r in resolutions} for name in runners}
    versions: dict[str, str] = {}
    for rep in range(args.reps):
        for res in resolutions:
            for name, (python, env) in runners.items():
                cmd = [python, str(HERE), "--child", name, "--res", str(res), "--batch",
                       str(args.batch), "--threads", str(args.threads), "--warmup",
                       str(args.warmup), "--iters", str(args.iters)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")
                if proc.returncode != 0:
                    print(f"{name} at {res} px failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    return 1
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                times[name][res] += got["times"]
                wall[name][res] += got["wall"]
                versions[name] = got["torch"]
                print(f"rep {rep + 1}, {res} px, {name}: CPU "
                      f"{', '.join(f'{t:.3f}' for t in got['times'])} s, wall "
                      f"{', '.join(f'{t:.3f}' for t in got['wall'])} s", flush=True)
    median = {n: {r: statistics.median(ts) for r, ts in by.items()} for n, by in times.items()}
    names = list(runners)
    print(f"\nCPU seconds per iteration (median), batch {args.batch}, {args.threads} thread(s), "
          f"torch {versions.get('this project')}")
    print("| res | " + " | ".join(names) + " | this project / pro-gan-pth | this project / before |")
    print("|---:|" + "---:|" * (len(names) + 2))
    for r in resolutions:
        m = median
        vs_pg = (f"{m['pro-gan-pth'][r] / m['this project'][r]:.2f}x" if "pro-gan-pth" in m else "")
        vs_before = (f"{m['before'][r] / m['this project'][r]:.2f}x" if "before" in m else "")
        print(f"| {r} | " + " | ".join(f"{m[n][r]:.3f}" for n in names) + f" | {vs_pg} | {vs_before} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "versions": versions, "cpu_times": times, "wall": wall,
                                         "median": median}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
