"""Images from a generator: sample grids (PNG) and latent walks (GIF).

``python -m fastpggan generate --ckpt PATH --n N --out FILE.png [--seed S]`` writes a grid of
``N`` samples from the checkpoint's ``G_ema`` at the resolution and fade it had reached;
``--interpolate STEPS --out FILE.gif`` writes a looping walk through random latents instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastpggan.networks import Generator

MIN_CELL = 64  # grid cells smaller than this are upscaled by nearest neighbour


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``float [N, 3, h, w]`` in ~[-1, 1] -> ``uint8 [N, h, w, 3]`` (clamped, rounded)."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: torch.Tensor, cols: int | None = None, min_cell: int = MIN_CELL) -> Image.Image:
    """``[N, 3, h, w]`` -> one RGB image, ``cols`` per row (default: near square), 1 px gaps.

    Cells smaller than ``min_cell`` pixels are upscaled by an integer factor, nearest neighbour.
    """
    a = to_uint8(images)
    n, h, w, _ = a.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    k = max(1, math.ceil(min_cell / h))
    a = a.repeat(k, axis=1).repeat(k, axis=2)
    h, w = h * k, w * k
    grid = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = a[i]
    return Image.fromarray(grid)


@torch.no_grad()
def sample(
    G: Generator, z: torch.Tensor, res: int, fade: float, chunk: int = 64
) -> torch.Tensor:
    """``G(z, res, fade)`` in chunks of ``chunk`` latents: ``float [N, 3, res, res]`` on z's device."""
    return torch.cat([G(part, res, fade) for part in z.split(chunk)])


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between latent batches ``[N, D]`` (Gaussian latents keep their norm)."""
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Generator, int, float]:
    """``G_ema`` of a checkpoint (eval mode, on ``device``) and the resolution and fade it reached."""
    from fastpggan.training.checkpoint import load_checkpoint
    from fastpggan.training.config import TrainConfig
    from fastpggan.training.schedule import Schedule

    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    G = Generator(cfg.resolution, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, impl=cfg.impl)
    G.load_state_dict(state["G_ema"])
    G.to(device).eval().requires_grad_(False)
    pos = Schedule(cfg.resolution, cfg.kimg_per_phase, cfg.final_kimg).at(state["progress"]["images"])
    return G, pos.phase.res, pos.fade


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


def add_generate_arguments(p) -> None:
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


def run_generate(args) -> int:
    """``generate`` command: validates, then writes the PNG or GIF; returns the exit code."""
    from fastpggan.training.cli import UsageError, check_writable

    out = Path(args.out)
    want = ".gif" if args.interpolate is not None else ".png"
    if out.suffix.lower() != want:
        raise UsageError(f"--out must end in {want}" + (" with --interpolate" if want == ".gif" else ""))
    if args.n < 1:
        raise UsageError(f"--n must be positive, got {args.n}")
    if args.interpolate is not None and args.interpolate < 1:
        raise UsageError(f"--interpolate must be positive, got {args.interpolate}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    check_writable(out.parent if str(out.parent) else Path("."))
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    G, res, fade = load_generator(args.ckpt, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.interpolate is None:
        write_grid(G, res, fade, args.n, args.seed, out, device)
    else:
        write_walk(G, res, fade, args.n, args.seed, args.interpolate, out, device)
    print(f"wrote {out} ({args.n} samples at {res}px)")
    return 0
