"""The ``train`` command: flags, validation before anything is written, then the run.

Every check that can fail (flags, data path, out folder, checkpoint, resume policy) runs before
the first write; a failure is a :class:`~fastpggan.errors.UsageError` (one line, exit code 2).
The one write before them is the run folder's lock (:mod:`fastpggan.training.runlock`): taken
before a checkpoint is chosen, so two processes never pick the same run; a run that then fails
its checks leaves no folder it created. A run that stops on a fault it reports (non-finite losses,
a full disk) raises :class:`~fastpggan.errors.RunStopped` (one line, exit code 1).
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

from fastpggan.atomic import DiskFullError, clean_temp_files, write_text_atomic
from fastpggan.commands.common import (
    check_metric_setup,
    check_swd_resolution,
    check_writable,
    parse_metrics,
    resolve_device,
)
from fastpggan.console import printable
from fastpggan.data import DataError, load_data, open_source
from fastpggan.errors import RunStopped, UsageError
from fastpggan.networks import check_resolution
from fastpggan.ops import check_ops, describe_impl, impl_problem
from fastpggan.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_newest_good
from fastpggan.training.config import (
    DEFAULT_BATCH,
    DEFAULT_LR,
    GP_RESOLUTIONS,
    TrainConfig,
    format_per_res,
    parse_batch,
    parse_lr,
)
from fastpggan.training.distributed import Distributed
from fastpggan.training.limits import check_config_numbers
from fastpggan.training.loop import Trainer
from fastpggan.training.resume_policy import ResumeRefused, policy_summary, resume_changes
from fastpggan.training.runlock import RunLock, RunLocked
from fastpggan.training.steps import COMPILE_BACKENDS, resolve_compile


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
    a("--fade-kimg", type=float, default=d.fade_kimg, metavar="K",
      help="thousands of real images over which each new resolution fades in (default: %(default)g, "
           "the authors')")
    a("--stable-kimg", type=float, default=d.stable_kimg, metavar="K",
      help="thousands of real images each resolution then trains stable before the next fades in; "
           "4x4 gets only this (default: %(default)g, the authors')")
    a("--total-kimg", type=float, default=d.total_kimg, metavar="K",
      help="thousands of real images in the whole run: the final resolution trains on until "
           "then; must reach it (default: %(default)g, the authors')")
    a("--batch", default=None, metavar="SPEC",
      help=f"minibatch per resolution (per process under torchrun): one size for all, or RES:SIZE overrides "
           f"(default, fits an 8 GB card: {batch})")
    a("--lr", default=None, metavar="SPEC",
      help=f"Adam learning rate of G and D per resolution: one rate, RES:RATE overrides, or both "
           f"(e.g. 0.002,1024:0.003) (default, the authors' one-GPU preset: {format_per_res(DEFAULT_LR)})")
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
           "compute capability 6.0+ (GTX 1080 included) whose architecture Triton's ptxas builds "
           "for, each op checked against the reference on first use (a failing op falls back "
           "to it with a warning; FASTPGGAN_SELF_CHECK=0 skips the check), the reference "
           "elsewhere (default: %(default)s)")
    a("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
      help="run G and D through torch.compile (default: on for CUDA GPUs of compute capability "
           "7.0+; off on the CPU, where it measured no faster, and on older GPUs such as the GTX "
           "1080, where no GPU measurement shows it faster yet)")
    a("--compile-backend", default="auto", choices=("auto", *COMPILE_BACKENDS),
      help="torch.compile backend: inductor (generated code; CPU or CUDA GPUs of compute "
           "capability 7.0+) or cudagraphs (CUDA graphs, no generated code; any CUDA GPU, "
           "the GTX 1080 included). auto = inductor, cudagraphs on GPUs below 7.0. Naming one "
           "turns --compile on (default: %(default)s)")
    a("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
      help="arithmetic of the G and D passes; the gradient penalty is always fp32. auto = fp32 "
           "(Pascal GPUs run fp16 at 1/64 rate; lower precision is not yet measured to train as "
           "well elsewhere) (default: %(default)s)")
    a("--gp-resolution", default=d.gp_resolution, choices=GP_RESOLUTIONS,
      help="where the gradient penalty's norm is taken: full = w.r.t. the full-resolution image "
           "the authors' networks see (computed at the current resolution), current = w.r.t. the "
           "current-resolution image (the seed article's form) (default: %(default)s)")
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
    a("--diversity", dest="diversity", action=argparse.BooleanOptionalAction, default=d.diversity,
      help="the collapse watch: at every tick, G_ema's colour and structure variety against the "
           "reals' ('diversity' records, the tick line) and a warning when it stays low "
           "(default: on)")
    a("--diversity-threshold", type=float, default=d.diversity_threshold, metavar="R",
      help="warn when a diversity ratio (samples' variety over the reals') stays below R for 3 "
           "ticks, in (0, 1] (default: %(default)s)")
    a("--resume", default=None, metavar="auto|PATH",
      help="continue a run: 'auto' takes the newest checkpoint in --out that loads (starts fresh "
           "if none; a damaged one is renamed *.damaged, with a warning), or give a checkpoint "
           "file (default: start fresh; refuses an --out holding checkpoints). "
           + policy_summary().replace("%", "%%"))


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Validate the flags into the run's settings. Writes nothing; reads no checkpoint (that
    is :func:`pick_checkpoint`, once the run folder is locked)."""
    try:
        check_resolution(args.res)
    except ValueError as e:
        raise UsageError(f"--res: {e}") from None
    try:
        batch = parse_batch(args.batch)
        lr = parse_lr(args.lr)
    except ValueError as e:
        raise UsageError(str(e)) from None
    device = resolve_device(args.device)
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    try:
        compile_on, compile_backend = resolve_compile(
            args.compile, args.compile_backend, device, capability)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if (problem := impl_problem(args.impl, device)) is not None:
        raise UsageError(f"--impl {args.impl}: {problem}")
    try:  # the ops' self-checks now, so that a failing one stops --impl triton before any work
        check_ops(args.impl, device)
    except RuntimeError as e:
        raise UsageError(f"--impl {args.impl}: {e}") from None
    try:
        metrics = list(parse_metrics(args.metric))
        if args.metric_every > 0:
            check_swd_resolution(metrics, args.res, "--res")
            check_metric_setup(metrics, args.inception_weights)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        source = open_source(args.data, args.num_faces)
    except DataError as e:
        raise UsageError(str(e)) from None
    name = "faces" if source.kind == "faces" else Path(source.path).stem
    out = Path(args.out if args.out is not None else f"runs/{name}-{args.res}")
    check_writable(out)
    cfg = TrainConfig(
        resolution=args.res, data=source.path or None, num_faces=args.num_faces, out=str(out),
        fade_kimg=args.fade_kimg, stable_kimg=args.stable_kimg, total_kimg=args.total_kimg,
        batch=batch, lr=lr, gp_resolution=args.gp_resolution,
        seed=args.seed, device=device, latent_dim=args.latent_dim, fmap_base=args.fmap_base,
        fmap_max=args.fmap_max, mirror=args.mirror, ema_beta=args.ema_beta, tick_kimg=args.tick_kimg,
        ckpt_ticks=args.ckpt_ticks, keep_ckpts=args.keep_ckpts, log_kimg=args.log_kimg, grid=args.grid,
        workers=default_workers() if args.workers is None else args.workers,
        cache_dir=args.cache_dir or str(out / "cache"), tensorboard=args.tensorboard,
        progress=sys.stderr.isatty(), impl=args.impl, compile=compile_on,
        compile_backend=compile_backend,
        precision="fp32" if args.precision == "auto" else args.precision, gp_every=args.gp_every,
        metric_every=args.metric_every, metrics=metrics, metric_n=args.metric_n,
        inception_weights=args.inception_weights, diversity=args.diversity,
        diversity_threshold=args.diversity_threshold,
    )
    try:  # every number in range (limits.py): nothing above used one for work
        check_config_numbers(cfg)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:  # the three lengths must make a schedule (e.g. a total past the last fade)
        cfg.schedule()
    except ValueError as e:
        raise UsageError(f"--fade-kimg/--stable-kimg/--total-kimg: {e}") from None
    if args.resume is None and list_checkpoints(out):
        raise UsageError(
            f"--out {str(out)!r} already holds a run: pass --resume auto to continue it, "
            "or choose another --out"
        )
    if args.resume not in (None, "auto") and not Path(args.resume).is_file():
        raise UsageError(f"checkpoint {printable(args.resume)!r} does not exist")
    return cfg


def pick_checkpoint(
    args: argparse.Namespace, cfg: TrainConfig
) -> tuple[dict[str, Any] | None, Path | None, list[tuple[Path, str]]]:
    """The checkpoint ``--resume`` asks for, loaded and checked against ``cfg`` by the resume
    policy: ``(state, path, damaged)``, ``damaged`` the newer checkpoints ``auto`` passed over
    as unreadable. ``(None, None, [])`` for a fresh start. ``UsageError`` (one line) else."""
    if args.resume is None:
        return None, None, []
    out = Path(cfg.out)
    try:
        if args.resume == "auto":
            state, path, damaged = load_newest_good(out)
            if state is None and damaged:
                raise UsageError(
                    f"no checkpoint in {printable(str(out))!r} can be used ({len(damaged)} found; the "
                    f"newest: {damaged[0][1]}); pass --resume PATH or start a new run in another --out"
                )
        else:
            path, damaged = Path(args.resume), []
            state = load_checkpoint(path)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    if state is not None:
        try:
            resume_changes(state["config"], cfg, state["progress"]["images"])
        except ResumeRefused as e:
            raise UsageError(f"{e} (checkpoint {printable(str(path))})") from None
    return state, path, damaged


def _lock(out: Path, dist: Distributed) -> tuple[RunLock | None, str | None]:
    """Rank 0 locks the run folder for the whole run (one lock however many processes); every
    rank learns whether it could. ``UsageError`` naming the holder when another run has it."""
    lock, note, failure = None, None, ""
    if dist.is_main:
        lock = RunLock(out)
        try:
            note = lock.acquire()
        except RunLocked as e:
            failure = str(e)
    if dist.enabled:
        flag = torch.tensor([1 if failure else 0], dtype=torch.uint8)
        if int(dist.all_gather_bytes(flag)[0][0]) and not failure:
            failure = f"run folder {printable(str(out))} is in use by another run (rank 0 names it)"
    if failure:
        raise UsageError(failure)
    return lock, note


def run_train(args: argparse.Namespace) -> int:
    """``train`` command: returns the exit code (0 done, 130/143 when stopped by a signal).

    Under ``torchrun`` every process runs this; rank 0 alone writes and prints (see
    :mod:`fastpggan.training.distributed`).
    """
    cfg = resolve(args)
    dist = Distributed.from_env(cfg.device)
    try:
        out = Path(cfg.out)
        created = not out.exists()
        lock, note = _lock(out, dist)
        try:
            return _train(args, cfg, dist, created, note)
        finally:
            if lock is not None:
                lock.release()
                if created and not any(out.iterdir()):  # a run that never started: no trace
                    out.rmdir()
    finally:
        dist.close()


def _train(args: argparse.Namespace, cfg: TrainConfig, dist: Distributed, created: bool, note: str | None) -> int:
    out = Path(cfg.out)
    echo = (lambda line: print(printable(line))) if dist.is_main else (lambda line: None)
    if not dist.is_main:  # rank 0 says it once
        warnings.simplefilter("ignore")
    if note:
        echo(note)
    if dist.is_main:
        removed = clean_temp_files(out, owned=True)
        if removed:
            echo(f"note: removed {len(removed)} leftover temp files of interrupted writes in {printable(str(out))}")
    try:
        state, path, damaged = pick_checkpoint(args, cfg)
        source = open_source(cfg.data, cfg.num_faces)
        if not dist.is_main:
            dist.barrier()  # rank 0 decodes and caches the images first; the others open its cache
        try:
            data = load_data(source, cfg.resolution, cfg.cache_dir, cfg.workers)
        except DataError as e:
            raise UsageError(str(e)) from None
    except (UsageError, DiskFullError):
        if created and dist.is_main:  # leave no trace of a run that never started
            for p in out.iterdir():
                if p.name != ".lock":
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    if dist.is_main:
        dist.barrier()
        for p, why in damaged:
            p.rename(p.with_name(p.name + ".damaged"))
            echo(f"warning: {why}; renamed it to {printable(p.name)}.damaged, resuming from the newest good one")
    if state is not None:
        echo(f"resuming from {printable(str(path))} at {state['progress']['images'] / 1000:.1f} kimg")
    for line in data.report():
        echo(line)
    echo(describe_impl(cfg.impl, cfg.device))
    if dist.is_main:
        write_text_atomic(out / "config.json", cfg.to_json() + "\n", "config.json")
    trainer = Trainer(cfg, data, state, dist=dist)
    where = cfg.device if not dist.enabled else (
        f"{dist.world_size} {cfg.device} processes (global batch = {dist.world_size} x --batch)"
    )
    echo(
        f"training {cfg.resolution}px on {where}: {trainer.schedule.describe()}; run folder {out}"
    )
    result = trainer.run()
    if result == "interrupted":
        return 128 + int(trainer.stopped_by or 2)
    if result in ("diverged", "disk_full"):
        raise RunStopped(trainer.stop_message or result)
    echo(f"done: samples and checkpoints in {out}")
    return 0
