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
from fastpggan.commands.setting_flags import add_setting_flags, flag_values
from fastpggan.console import printable
from fastpggan.data import DataError, Source, load_data, open_source
from fastpggan.errors import RunStopped, UsageError, usage_errors
from fastpggan.ops import check_ops, describe_impl, impl_problem
from fastpggan.training.ada import aug_suggestion
from fastpggan.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_newest_good
from fastpggan.training.config import TrainConfig
from fastpggan.training.distributed import Distributed
from fastpggan.training.limits import check_config_numbers
from fastpggan.training.loop import Trainer
from fastpggan.training.resume_policy import ResumeRefused, policy_summary, resume_changes
from fastpggan.training.runlock import RunLock, RunLocked
from fastpggan.training.steps import resolve_compile


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` flags: one per declared setting (:mod:`fastpggan.training.config`), then
    ``--resume`` (each help text names its default)."""
    add_setting_flags(p, TrainConfig)
    p.add_argument(
        "--resume", default=None, metavar="auto|PATH",
        help="continue a run: 'auto' takes the newest checkpoint in --out that loads (starts fresh "
             "if none; a damaged one is renamed *.damaged, with a warning), or give a checkpoint "
             "file (default: start fresh; refuses an --out holding checkpoints). "
             + policy_summary().replace("%", "%%"))


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Validate the flags into the run's settings: every declared flag through its parse, then
    the settings whose value depends on more than their flag, one hook each, then the checks of
    the whole config and of ``--resume``. Writes nothing; reads no checkpoint (that is
    :func:`pick_checkpoint`, once the run folder is locked)."""
    v = flag_values(args, TrainConfig)
    v["device"] = resolve_device(v["device"])
    v["compile"], v["compile_backend"] = _compile(v["compile"], v["compile_backend"], v["device"])
    _check_impl(v["impl"], v["device"])
    v["metrics"] = _metrics(v)
    source = _source(v["data"], v["num_faces"])
    v["data"] = source.path or None
    v["out"] = _out(v["out"], source, v["resolution"])
    v["cache_dir"] = v["cache_dir"] or str(Path(v["out"]) / "cache")
    v["progress"] = sys.stderr.isatty()
    cfg = TrainConfig(**v)
    _check_config(cfg)
    _check_resume_flag(args.resume, Path(cfg.out))
    return cfg


def _compile(flag: bool | None, backend: str, device: str) -> tuple[bool, str]:
    """``--compile``/``--compile-backend`` -> (on, backend) for ``device`` (:func:`resolve_compile`)."""
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    with usage_errors():
        return resolve_compile(flag, backend, device, capability)


def _check_impl(impl: str, device: str) -> None:
    """``--impl`` can run on ``device``, and the ops' self-checks pass now, so that a failing one
    stops ``--impl triton`` before any work."""
    if (problem := impl_problem(impl, device)) is not None:
        raise UsageError(f"--impl {impl}: {problem}")
    with usage_errors(RuntimeError, prefix=f"--impl {impl}: "):
        check_ops(impl, device)


def _metrics(v: dict[str, Any]) -> list[str]:
    """``--metric``'s list; with ``--metric-every`` on, each metric must be able to run."""
    with usage_errors():
        metrics = list(parse_metrics(v["metrics"]))
        if v["metric_every"] > 0:
            check_swd_resolution(metrics, v["resolution"], "--res")
            check_metric_setup(metrics, v["inception_weights"])
    return metrics


def _source(data: str | None, num_faces: int) -> Source:
    """``--data`` (or the built-in faces) opened: ``UsageError`` when it cannot be read."""
    with usage_errors(DataError):
        return open_source(data, num_faces)


def _out(out: str | None, source: Source, res: int) -> str:
    """``--out``, by default ``runs/<data name>-<R>``; ``UsageError`` unless writable."""
    name = "faces" if source.kind == "faces" else Path(source.path).stem
    path = Path(out if out is not None else f"runs/{name}-{res}")
    check_writable(path)
    return str(path)


def _check_config(cfg: TrainConfig) -> None:
    """Every number in range (:mod:`fastpggan.training.limits`: nothing before this used one
    for work), and the three schedule lengths make a schedule (e.g. a total past the last
    fade)."""
    with usage_errors():
        check_config_numbers(cfg)
    with usage_errors(prefix="--fade-kimg/--stable-kimg/--total-kimg: "):
        cfg.schedule()


def _check_resume_flag(resume: str | None, out: Path) -> None:
    """A fresh start needs an ``--out`` without checkpoints; ``--resume PATH`` a file."""
    if resume is None and list_checkpoints(out):
        raise UsageError(
            f"--out {str(out)!r} already holds a run: pass --resume auto to continue it, "
            "or choose another --out"
        )
    if resume not in (None, "auto") and not Path(resume).is_file():
        raise UsageError(f"checkpoint {printable(resume)!r} does not exist")


def pick_checkpoint(
    args: argparse.Namespace, cfg: TrainConfig
) -> tuple[dict[str, Any] | None, Path | None, list[tuple[Path, str]]]:
    """The checkpoint ``--resume`` asks for, loaded and checked against ``cfg`` by the resume
    policy: ``(state, path, damaged)``, ``damaged`` the newer checkpoints ``auto`` passed over
    as unreadable. ``(None, None, [])`` for a fresh start. ``UsageError`` (one line) else."""
    if args.resume is None:
        return None, None, []
    out = Path(cfg.out)
    with usage_errors(CheckpointError):
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
    if state is not None:
        try:
            resume_changes(state["config"], cfg, state["progress"]["images"])
        except ResumeRefused as e:  # the checkpoint's name after the reason
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
        with usage_errors():
            dist.check_batches(cfg.batch, cfg.resolution)
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
        with usage_errors(DataError):
            data = load_data(source, cfg.resolution, cfg.cache_dir, cfg.workers)
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
    if (suggestion := aug_suggestion(data.count, cfg.aug)) is not None:
        echo(suggestion)
    echo(describe_impl(cfg.impl, cfg.device))
    if dist.is_main:
        write_text_atomic(out / "config.json", cfg.to_json() + "\n", "config.json")
    trainer = Trainer(cfg, data, state, dist=dist)
    where = cfg.device if not dist.enabled else (
        f"{dist.world_size} {cfg.device} processes (--batch is global, split evenly over them)"
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
