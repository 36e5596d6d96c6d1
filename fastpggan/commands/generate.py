"""The ``generate`` command: sample grids (PNG) and latent walks (GIF) from a checkpoint.

``python -m fastpggan generate --ckpt PATH --n N --out FILE.png [--seed S]`` writes a grid of
``N`` samples from the checkpoint's ``G_ema`` at the resolution and fade it had reached;
``--interpolate STEPS --out FILE.gif`` writes a looping walk through random latents instead.

A conditional checkpoint (``train --cond``) makes the classes ``--class NAME|INDEX[,...]`` asks
for, sample ``i`` the ``(i mod k)``-th of the ``k`` listed (a walk stays within its class);
without ``--class``, classes drawn at the training data's frequencies (from ``--seed``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fastpggan import sampling
from fastpggan.atomic import atomic_write
from fastpggan.commands.common import add_impl_flag, check_flags, check_impl_flag, check_writable, resolve_device
from fastpggan.errors import UsageError
from fastpggan.networks import Generator
from fastpggan.ranges import Limit
from fastpggan.sampling import (
    Canvas,
    class_chunks,
    gif_bytes,
    latents,
    layout,
    make_grid,
    sample,
    sheet_paths,
    slerp,
    to_hwc_uint8,
)
from fastpggan.training.checkpoint import generator_of, load_checkpoint
from fastpggan.training.config import TrainConfig


LIMITS = {
    "--n": Limit(1, 10_000_000, integer=True),
    "--seed": Limit(0, 2**32 - 1, integer=True),
    "--interpolate": Limit(1, 100_000, integer=True),
}


Classes = tuple[list[int] | None, list[int] | None]  # (chosen classes, images per class)


def parse_classes(spec: str, names: list[str]) -> list[int]:
    """``--class NAME|INDEX[,...]`` -> class indices into ``names``; ``UsageError`` (one line,
    naming the known classes) for one that is not there."""
    chosen = []
    for part in (p.strip() for p in spec.split(",")):
        if part in names:
            chosen.append(names.index(part))
        elif part.isdigit() and int(part) < len(names):
            chosen.append(int(part))
        else:
            known = ", ".join(f"{k}:{n}" for k, n in enumerate(names))
            raise UsageError(f"--class {part!r}: no such class; the checkpoint's classes are {known}")
    return chosen


def _labels(G: Generator, n: int, seed: int, classes: Classes):
    """One int64 chunk of classes per chunk of latents (``None`` each for an unconditional G)."""
    if not G.label_size:
        while True:
            yield None
    yield from class_chunks(n, classes[0], classes[1], seed)


def write_grid(G: Generator, res: int, fade: float, n: int, seed: int, out: Path, device: torch.device,
               classes: Classes = (None, None)) -> list[Path]:
    """PNG sheets of ``n`` samples from latents drawn with ``seed``: ``out`` itself, or
    ``out-001.png``, ... when they do not fit one sheet (:mod:`fastpggan.sampling`). Memory holds
    one sheet and one chunk of samples. A conditional ``G``: ``classes`` (see
    :func:`fastpggan.sampling.class_chunks`). Returns the files written."""
    lay = layout(n, res)
    paths = sheet_paths(out, lay.sheets)
    zs = latents(n, G.latent_dim, seed)
    ys = _labels(G, n, seed, classes)
    ready = np.empty((0, res, res, 3), np.uint8)  # samples made but not yet placed
    for k, path in enumerate(paths):
        count = min(lay.per_sheet, n - k * lay.per_sheet)
        canvas = Canvas(lay, count)
        for i in range(count):
            if not len(ready):
                y = next(ys)
                ready = to_hwc_uint8(sample(G, next(zs).to(device), res, fade,
                                            labels=y.to(device) if y is not None else None))
            canvas.put(i, ready[0])
            ready = ready[1:]
        img = canvas.image()
        del canvas  # one sheet in memory at a time
        atomic_write(path, lambda f: img.save(f, format="PNG"), what="sample sheet")
        del img
    return paths


def walk_limit(n: int, res: int, steps: int, keyframes: int = 4) -> None:
    """``UsageError`` when a walk of ``n`` samples at ``res`` px, ``steps`` frames between each
    of ``keyframes`` keyframes, does not fit one sheet or needs more than the GIF limit."""
    lay = layout(n, res)
    if lay.sheets > 1:
        raise UsageError(f"--n {n}: a walk's frame holds at most {lay.per_sheet} samples at {res}px")
    frames = keyframes * steps
    need = gif_bytes(lay, frames)
    if need > sampling.MAX_GIF_BYTES:
        w, h = lay.sheet_size(n)
        raise UsageError(
            f"--interpolate {steps}: {frames} frames of {w}x{h} px need {need / 2**20:.0f} MiB until "
            f"the GIF is written, over the limit of {sampling.MAX_GIF_BYTES / 2**20:.0f} MiB; lower "
            "--interpolate or --n"
        )


def write_walk(
    G: Generator, res: int, fade: float, n: int, seed: int, steps: int, out: Path, device: torch.device,
    keyframes: int = 4, frame_ms: int = 60, classes: Classes = (None, None),
) -> None:
    """Looping GIF: ``n`` walks (as a grid) through ``keyframes`` random latents, ``steps``
    frames each; frames are made one at a time as the encoder asks (:func:`walk_limit` first).
    A conditional ``G``: each walk keeps one class (``classes``, as in :func:`write_grid`)."""
    walk_limit(n, res, steps, keyframes)
    g = torch.Generator().manual_seed(seed)
    keys = [torch.randn(n, G.latent_dim, generator=g) for _ in range(keyframes)]
    y = torch.cat(list(class_chunks(n, classes[0], classes[1], seed))).to(device) if G.label_size else None

    def frames():
        for k in range(keyframes):
            a, b = keys[k], keys[(k + 1) % keyframes]
            for s in range(steps):
                yield make_grid(sample(G, slerp(a, b, s / steps).to(device), res, fade, labels=y))

    it = frames()
    first = next(it)
    atomic_write(out, lambda f: first.save(f, format="GIF", save_all=True, append_images=it,
                                           duration=frame_ms, loop=0), what="latent walk")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    """The ``generate`` flags."""
    a = p.add_argument
    a("--ckpt", required=True, metavar="PATH", help="checkpoint file (ckpt-*.pt in a run folder)")
    a("--n", type=int, default=16, metavar="N", help="how many samples (default: %(default)s)")
    a("--out", required=True, metavar="FILE", help="FILE.png for a grid, FILE.gif with --interpolate")
    a("--seed", type=int, default=0, help="seed of the latents (default: %(default)s)")
    a("--interpolate", type=int, default=None, metavar="STEPS",
      help="write a looping latent walk GIF with STEPS frames between random keyframes")
    a("--class", dest="classes", default=None, metavar="NAME|INDEX[,...]",
      help="a conditional checkpoint's classes to make, by name or index; sample i gets the "
           "(i mod k)-th of the k listed, a walk keeps its class (default: classes drawn at the "
           "training data's frequencies)")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"),
      help="where to run G; auto picks cuda when available (default: %(default)s)")
    add_impl_flag(p)


def run_generate(args: argparse.Namespace) -> int:
    """``generate`` command: validates, then writes the PNG or GIF; returns the exit code."""
    out = Path(args.out)
    want = ".gif" if args.interpolate is not None else ".png"
    if out.suffix.lower() != want:
        raise UsageError(f"--out must end in {want}" + (" with --interpolate" if want == ".gif" else ""))
    check_flags(args, LIMITS)
    device = torch.device(resolve_device(args.device))
    check_impl_flag(args.impl, device)
    check_writable(out.parent if str(out.parent) else Path("."))
    state = load_checkpoint(args.ckpt)
    G, res, fade = generator_of(state, device, args.impl)
    classes, said = _classes(args.classes, TrainConfig.from_dict(state["config"]), G)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.interpolate is None:
        paths = write_grid(G, res, fade, args.n, args.seed, out, device, classes)
        if len(paths) > 1:
            per = layout(args.n, res).per_sheet
            print(f"wrote {len(paths)} sheets {paths[0]} .. {paths[-1].name} ({args.n} samples at {res}px, "
                  f"at most {per} per sheet)")
            return 0
    else:
        write_walk(G, res, fade, args.n, args.seed, args.interpolate, out, device, classes=classes)
    print(f"wrote {out} ({args.n} samples at {res}px{said})")
    return 0


def _classes(spec: str | None, cfg: TrainConfig, G: Generator) -> tuple[Classes, str]:
    """``--class`` against the checkpoint: ``((chosen, counts), what the last line says)``;
    ``UsageError`` for ``--class`` with an unconditional checkpoint or an unknown class."""
    if not G.label_size:
        if spec is not None:
            raise UsageError("--class: this checkpoint is unconditional (trained without --cond): it has no classes")
        return (None, None), ""
    names = list(cfg.classes or [])
    if spec is None:
        return (None, cfg.class_counts or [1] * len(names)), "; classes at the training data's frequencies"
    chosen = parse_classes(spec, names)
    return (chosen, None), ("; class " if len(chosen) == 1 else "; classes ") + ", ".join(names[k] for k in chosen)
