"""The ``train`` command: flags, validation before anything is written, then the run.

Every check that can fail (flags, data path, out folder, checkpoint) runs before the first
write; a failure is a :class:`~fastpggan.flags.UsageError` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from fastpggan.data import DataError, load_data, open_source
from fastpggan.flags import (
    UsageError,
    check_metric_setup,
    check_positive,
    check_swd_resolution,
    check_writable,
    parse_metrics,
    resolve_device,
)
from fastpggan.networks import check_resolution
from fastpggan.training.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint
from fastpggan.training.config import ARCH_KEYS, DEFAULT_BATCH, TrainConfig, parse_batch
from fastpggan.training.distributed import Distributed
from fastpggan.training.loop import Trainer


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` flags (each help text names its default)."""
    d = TrainConfig()
    batch = ",".join(f"{r}:{b}" for r, b in DEFAULT_BATCH.items())
    a = p.add_argument
    a("--res", type=int, default=d.resolution, metavar="R",
      help="final resolution, a power of two from 8 to 1024 (default: %(default)s)")
    a("--data", default=None, metavar="PATH",
      help="image folder (searched recursively) or .zip of images (default: the built-in "
           "procedural anime faces)")
    a("--num-faces", type=int, default=d.num_faces, metavar="N",
      help="how many built-in faces when --data is not given (default: %(default)s)")
    a("--out", default=None, metavar="DIR",
      help="run folder for config, checkpoints, grids, logs (default: runs/<data name>-<R>)")
    a("--kimg-per-phase", type=float, default=d.kimg_per_phase, metavar="K",
      help="thousands of images per resolution phase: the first half fades the new block in, "
           "the second half trains it stable; 4x4 gets only the stable half (default: %(default)s)")
    a("--final-kimg", type=float, default=d.final_kimg, metavar="F",
      help="extra thousands of images at the final resolution after its phase (default: %(default)s)")
    a("--batch", default=None, metavar="SPEC",
      help=f"minibatch per resolution (per process under torchrun): one size for all, or RES:SIZE overrides "
           f"(default, fits an 8 GB card: {batch})")
    a("--lr", type=float, default=d.lr, help="Adam learning rate for G and D (default: %(default)s)")
    a("--seed", type=int, default=d.seed, help="seed of weights, latents and batch order (default: %(default)s)")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"),
      help="where to train; auto picks cuda when available (default: %(default)s)")
    a("--latent-dim", type=int, default=d.latent_dim, metavar="N", help="latent size (default: %(default)s)")
    a("--fmap-base", type=int, default=d.fmap_base, metavar="N",
      help="feature maps of stage s are min(fmap_base / 2**s, fmap_max) (default: %(default)s)")
    a("--fmap-max", type=int, default=d.fmap_max, metavar="N",
      help="most feature maps in any layer (default: %(default)s)")
    a("--no-mirror", dest="mirror", action="store_false",
      help="turn off random horizontal flips of the reals (default: flips on)")
    a("--ema-beta", type=float, default=d.ema_beta, metavar="B",
      help="per-step decay of the generator average used for samples (default: %(default)s)")
    a("--tick-kimg", type=float, default=d.tick_kimg, metavar="T",
      help="thousands of images per tick: a sample grid and a console line (default: %(default)s)")
    a("--ckpt-ticks", type=int, default=d.ckpt_ticks, metavar="N",
      help="checkpoint every N ticks, and always at phase ends and on Ctrl-C/SIGTERM "
           "(default: %(default)s)")
    a("--keep-ckpts", type=int, default=d.keep_ckpts, metavar="N",
      help="keep the newest N checkpoints (default: %(default)s)")
    a("--log-kimg", type=float, default=d.log_kimg, metavar="L",
      help="thousands of images between scalar records in log.jsonl/TensorBoard (default: %(default)s)")
    a("--grid", type=int, default=d.grid, metavar="N", help="sample grids are N x N (default: %(default)s)")
    a("--workers", type=int, default=None, metavar="N",
      help="processes decoding images and feeding large resolutions (default: min(8, CPUs) = "
           f"{default_workers()} here)")
    a("--cache-dir", default=None, metavar="DIR",
      help="where decoded per-resolution image arrays are kept, keyed by the source files "
           "(default: <out>/cache)")
    a("--no-tensorboard", dest="tensorboard", action="store_false",
      help="do not write TensorBoard events (default: written when tensorboard is installed)")
    a("--impl", default=d.impl, choices=("auto", "triton", "reference"),
      help="fused ops: Triton kernels, the PyTorch reference, or auto = Triton on CUDA GPUs of "
           "compute capability 7.0+, the reference elsewhere (default: %(default)s)")
    a("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
      help="run G and D through torch.compile (default: on for CUDA GPUs of compute capability "
           "7.0+, off on the CPU, where it measured no faster, and on older GPUs, where "
           "inductor cannot run)")
    a("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
      help="arithmetic of the G and D passes; the gradient penalty is always fp32. auto = fp32 "
           "(Pascal GPUs run fp16 at 1/64 rate; lower precision is not yet measured to train as "
           "well elsewhere) (default: %(default)s)")
    a("--gp-every", type=int, default=d.gp_every, metavar="K",
      help="take the gradient penalty every K-th D step, scaled by K (lazy regularisation; "
           "1 = every step, the authors' recipe) (default: %(default)s)")
    a("--metric-every", type=float, default=d.metric_every, metavar="K",
      help="measure G_ema every K thousand images and at each phase end, logged as 'metric' "
           "records; each measurement pauses training (default: %(default)s = never)")
    a("--metric", default=",".join(d.metrics), metavar="LIST",
      help="metrics for --metric-every: swd, fid or swd,fid; SWD is skipped below 16 px "
           "(default: %(default)s)")
    a("--metric-n", type=int, default=d.metric_n, metavar="N",
      help="generated images per measurement, against as many reals (default: %(default)s)")
    a("--inception-weights", default=None, metavar="PATH",
      help="FID's Inception weights file, for machines without network (default: torch's hub "
           "cache, else downloaded before training starts)")
    a("--resume", default=None, metavar="auto|PATH",
      help="continue a run: 'auto' takes the newest checkpoint in --out (starts fresh if none), "
           "or give a checkpoint file (default: start fresh; refuses an --out holding checkpoints)")


def resolve_compile(flag: bool | None, device: str) -> bool:
    """``--compile`` resolved: ``None`` (not given) is on for CUDA GPUs that inductor supports.

    Asking for it where inductor cannot run (a GPU below compute capability 7.0) warns once and
    trains eagerly instead of failing.
    """
    capable = device != "cuda" or torch.cuda.get_device_capability() >= (7, 0)
    if flag is None:
        return device == "cuda" and capable
    if flag and not capable:
        major, minor = torch.cuda.get_device_capability()
        warnings.warn(
            f"--compile: torch.compile needs a GPU of compute capability 7.0+, this one is "
            f"{major}.{minor}; training without it", RuntimeWarning, stacklevel=2,
        )
        return False
    return flag


def resolve(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any] | None, Path | None]:
    """Validate the flags: the config, the checkpoint to resume and its path. Writes nothing."""
    try:
        check_resolution(args.res)
    except ValueError as e:
        raise UsageError(f"--res: {e}") from None
    check_positive("--kimg-per-phase", args.kimg_per_phase)
    check_positive("--final-kimg", args.final_kimg, zero_ok=True)
    check_positive("--lr", args.lr)
    for name in ("latent_dim", "fmap_base", "fmap_max", "num_faces", "ckpt_ticks", "keep_ckpts", "grid"):
        check_positive("--" + name.replace("_", "-"), getattr(args, name))
    check_positive("--tick-kimg", args.tick_kimg)
    check_positive("--log-kimg", args.log_kimg)
    if not 0 <= args.ema_beta < 1:
        raise UsageError(f"--ema-beta must be in [0, 1), got {args.ema_beta}")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    try:
        batch = parse_batch(args.batch)
    except ValueError as e:
        raise UsageError(str(e)) from None
    device = resolve_device(args.device)
    check_positive("--gp-every", args.gp_every)
    compile_on = resolve_compile(args.compile, device)
    check_positive("--metric-every", args.metric_every, zero_ok=True)
    try:
        metrics = list(parse_metrics(args.metric))
        if args.metric_every > 0:
            check_swd_resolution(metrics, args.res, "--res")
            check_metric_setup(metrics, args.inception_weights)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.metric_n < 2:
        raise UsageError(f"--metric-n must be at least 2, got {args.metric_n}")
    try:
        source = open_source(args.data, args.num_faces)
    except DataError as e:
        raise UsageError(str(e)) from None
    name = "faces" if source.kind == "faces" else Path(source.path).stem
    out = Path(args.out if args.out is not None else f"runs/{name}-{args.res}")
    check_writable(out)
    cfg = TrainConfig(
        resolution=args.res, data=source.path or None, num_faces=args.num_faces, out=str(out),
        kimg_per_phase=args.kimg_per_phase, final_kimg=args.final_kimg, batch=batch, lr=args.lr,
        seed=args.seed, device=device, latent_dim=args.latent_dim, fmap_base=args.fmap_base,
        fmap_max=args.fmap_max, mirror=args.mirror, ema_beta=args.ema_beta, tick_kimg=args.tick_kimg,
        ckpt_ticks=args.ckpt_ticks, keep_ckpts=args.keep_ckpts, log_kimg=args.log_kimg, grid=args.grid,
        workers=default_workers() if args.workers is None else args.workers,
        cache_dir=args.cache_dir or str(out / "cache"), tensorboard=args.tensorboard,
        progress=sys.stderr.isatty(), impl=args.impl, compile=compile_on,
        precision="fp32" if args.precision == "auto" else args.precision, gp_every=args.gp_every,
        metric_every=args.metric_every, metrics=metrics, metric_n=args.metric_n,
        inception_weights=args.inception_weights,
    )
    state, path = None, None
    if args.resume is None:
        if list_checkpoints(out):
            raise UsageError(
                f"--out {str(out)!r} already holds a run: pass --resume auto to continue it, "
                "or choose another --out"
            )
    else:
        path = latest_checkpoint(out) if args.resume == "auto" else Path(args.resume)
        if path is not None:
            try:
                state = load_checkpoint(path)
            except CheckpointError as e:
                raise UsageError(str(e)) from None
            theirs = {k: state["config"].get(k) for k in ARCH_KEYS}
            if theirs != cfg.arch():
                diff = ", ".join(f"{k} {theirs[k]} (asked {getattr(cfg, k)})" for k in ARCH_KEYS if theirs[k] != getattr(cfg, k))
                raise UsageError(f"checkpoint {str(path)!r} is for another model: {diff}")
    return cfg, state, path


def run_train(args: argparse.Namespace) -> int:
    """``train`` command: returns the exit code (0 done, 130/143 when stopped by a signal).

    Under ``torchrun`` every process runs this; rank 0 alone writes and prints (see
    :mod:`.distributed`).
    """
    cfg, state, path = resolve(args)
    dist = Distributed.from_env(cfg.device)
    try:
        return _train(cfg, state, path, dist)
    finally:
        dist.close()


def _train(cfg: TrainConfig, state: dict[str, Any] | None, path: Path | None, dist: Distributed) -> int:
    out = Path(cfg.out)
    created = not out.exists()
    echo = print if dist.is_main else (lambda line: None)
    if not dist.is_main:  # rank 0 says it once
        warnings.simplefilter("ignore")
    if state is not None:
        echo(f"resuming from {path} at {state['progress']['images'] / 1000:.1f} kimg")
    source = open_source(cfg.data, cfg.num_faces)
    if not dist.is_main:
        dist.barrier()  # rank 0 decodes and caches the images first; the others open its cache
    try:
        data = load_data(source, cfg.resolution, cfg.cache_dir, cfg.workers)
    except DataError as e:
        if created and dist.is_main:  # leave no trace of a run that never started
            shutil.rmtree(out, ignore_errors=True)
        raise UsageError(str(e)) from None
    if dist.is_main:
        dist.barrier()
    for line in data.report():
        echo(line)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".config.json.tmp"
        tmp.write_text(cfg.to_json() + "\n")
        os.replace(tmp, out / "config.json")
    trainer = Trainer(cfg, data, state, dist=dist)
    total = trainer.schedule.total_images
    where = cfg.device if not dist.enabled else (
        f"{dist.world_size} {cfg.device} processes (global batch = {dist.world_size} x --batch)"
    )
    echo(
        f"training {cfg.resolution}px on {where}: {len(trainer.schedule.phases)} phases, "
        f"{total / 1000:g} kimg, run folder {out}"
    )
    result = trainer.run()
    if result == "interrupted":
        return 128 + int(trainer.stopped_by or 2)
    echo(f"done: samples and checkpoints in {out}")
    return 0
