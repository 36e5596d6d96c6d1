"""The ``generate`` command: sample grids (PNG) and latent walks (GIF) from a checkpoint.

``python -m fastpggan generate --ckpt PATH --n N --out FILE.png [--seed S]`` writes a grid of
``N`` samples from the checkpoint's ``G_ema`` at the resolution and fade it had reached;
``--interpolate STEPS --out FILE.gif`` writes a looping walk through random latents instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastpggan.flags import UsageError, check_writable, resolve_device
from fastpggan.networks import Generator
from fastpggan.sampling import make_grid, sample, slerp
from fastpggan.training.checkpoint import load_generator


def write_grid(G: Generator, res: int, fade: float, n: int, seed: int, out: Path, device: torch.device) -> None:
    """PNG grid of ``n`` samples from latents drawn with ``seed``."""
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    make_grid(sample(G, z, res, fade)).save(out)


def write_walk(
    G: Generator, res: int, fade: float, n: int, seed: int, steps: int, out: Path, device: torch.device,
    keyframes: int = 4, frame_ms: int = 60,
) -> None:
    """Looping GIF: ``n`` walks (as a grid) through ``keyframes`` random latents, ``steps`` frames each."""
    g = torch.Generator().manual_seed(seed)
    keys = [torch.randn(n, G.latent_dim, generator=g) for _ in range(keyframes)]
    frames = []
    for k in range(keyframes):
        a, b = keys[k], keys[(k + 1) % keyframes]
        for s in range(steps):
            z = slerp(a, b, s / steps).to(device)
            frames.append(make_grid(sample(G, z, res, fade)))
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    """The ``generate`` flags."""
    a = p.add_argument
    a("--ckpt", required=True, metavar="PATH", help="checkpoint file (ckpt-*.pt in a run folder)")
    a("--n", type=int, default=16, metavar="N", help="how many samples (default: %(default)s)")
    a("--out", required=True, metavar="FILE", help="FILE.png for a grid, FILE.gif with --interpolate")
    a("--seed", type=int, default=0, help="seed of the latents (default: %(default)s)")
    a("--interpolate", type=int, default=None, metavar="STEPS",
      help="write a looping latent walk GIF with STEPS frames between random keyframes")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"),
      help="where to run G; auto picks cuda when available (default: %(default)s)")


def run_generate(args: argparse.Namespace) -> int:
    """``generate`` command: validates, then writes the PNG or GIF; returns the exit code."""
    out = Path(args.out)
    want = ".gif" if args.interpolate is not None else ".png"
    if out.suffix.lower() != want:
        raise UsageError(f"--out must end in {want}" + (" with --interpolate" if want == ".gif" else ""))
    if args.n < 1:
        raise UsageError(f"--n must be positive, got {args.n}")
    if args.interpolate is not None and args.interpolate < 1:
        raise UsageError(f"--interpolate must be positive, got {args.interpolate}")
    device = torch.device(resolve_device(args.device))
    check_writable(out.parent if str(out.parent) else Path("."))
    G, res, fade = load_generator(args.ckpt, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.interpolate is None:
        write_grid(G, res, fade, args.n, args.seed, out, device)
    else:
        write_walk(G, res, fade, args.n, args.seed, args.interpolate, out, device)
    print(f"wrote {out} ({args.n} samples at {res}px)")
    return 0
