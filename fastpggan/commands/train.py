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
import dataclasses
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from fastpggan.atomic import DiskFullError, clean_temp_files, is_disk_full, write_text_atomic
from fastpggan.commands.common import (
    check_impl_flag,
    check_metric_setup,
    check_swd_resolution,
    check_writable,
    parse_metrics,
    resolve_device,
)
from fastpggan.commands.setting_flags import add_setting_flags, flag_values
from fastpggan.console import printable
from fastpggan.data import DataError, ImageData, Source, auto_holdout, check_labels, load_data, open_source
from fastpggan.data.holdout import STEADY_HOLDOUT, check_holdout
from fastpggan.errors import Interrupted, RunStopped, UsageError, stop_signals, usage_errors
from fastpggan.ops import describe_impl
from fastpggan.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_newest_good
from fastpggan.training.config import TrainConfig
from fastpggan.training.distributed import Distributed
from fastpggan.training.limits import check_config_numbers
from fastpggan.training.loop import Trainer
from fastpggan.training.resume_policy import ResumeRefused, policy_summary, resume_changes
from fastpggan.training.runlock import RunLock, RunLocked
from fastpggan.training.steps import resolve_compile, tf32_note


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
    check_impl_flag(v["impl"], v["device"])
    v["metrics"] = _metrics(v)
    source = _source(v["data"], v["num_faces"])
    v["holdout"] = _holdout(v["holdout"], v["aug"], source)
    v["data"] = source.path or None
    v["out"] = _out(v["out"], source, v["resolution"])
    if v["cache_dir"]:
        check_writable(Path(v["cache_dir"]).expanduser(), "--cache-dir")
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


def _holdout(holdout: int | None, aug: str, source: Source) -> int:
    """``--holdout``: as given, or when not given :func:`fastpggan.data.auto_holdout` for
    ``--aug ada`` (which steers by them) and none otherwise. ``UsageError`` for ``--aug ada``
    with none, or a folder it would empty (:func:`fastpggan.data.holdout.check_holdout`; the
    built-in faces' are extra ones)."""
    faces = source.kind == "faces"
    if holdout is None:
        holdout = auto_holdout(len(source), faces) if aug == "ada" else 0
    with usage_errors():
        check_holdout(len(source) + (holdout if faces else 0), holdout, aug)
    return holdout


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
    if resume not in (None, "auto") and Path(resume).is_dir():
        raise UsageError(
            f"--resume {printable(resume)!r} is a folder, not a checkpoint file: to continue the "
            f"newest checkpoint of a run folder pass --resume auto --out {printable(resume)}"
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


def _with_classes(cfg: TrainConfig, data: ImageData, state: dict[str, Any] | None, path: Path | None) -> TrainConfig:
    """``--cond``: the data's classes and image counts in the config; ``UsageError`` (one line)
    when its labels cannot train (:func:`fastpggan.data.check_labels`) or a resumed run learnt
    other classes. Nothing is written."""
    with usage_errors(DataError, prefix="--cond: "):
        check_labels(data)
    cfg = dataclasses.replace(cfg, classes=list(data.class_names), class_counts=data.class_counts())
    if state is not None:
        try:
            resume_changes(state["config"], cfg, state["progress"]["images"])
        except ResumeRefused as e:
            raise UsageError(f"{e} (checkpoint {printable(str(path))})") from None
    return cfg


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
        except OSError as e:  # a full disk, a read-only or vanished folder: RunLock left nothing
            failure = f"cannot take the lock of run folder {printable(str(out))}: {_os_problem(e, out)}"
    if dist.enabled:
        flag = torch.tensor([1 if failure else 0], dtype=torch.uint8)
        if int(dist.all_gather_bytes(flag)[0][0]) and not failure:
            failure = f"run folder {printable(str(out))} is in use by another run (rank 0 names it)"
    if failure:
        raise UsageError(failure)
    return lock, note


def _os_problem(e: OSError, where: Path) -> str:
    """An ``OSError`` of writing in ``where`` in plain words, with the free space when full."""
    if is_disk_full(e):
        try:
            free = f", {shutil.disk_usage(_existing(where)).free / 2**20:.0f} MiB free"
        except OSError:
            free = ""
        return f"no space left on the disk{free}; free space or choose another --out"
    return f"{e.strerror or type(e).__name__} ({printable(str(e.filename or where))})"


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _remove_created(out: Path, top: Path) -> None:
    """Remove ``out`` and its parents up to ``top`` (the highest folder this run created) where
    they are empty: a run that never started leaves no folder behind."""
    p = out
    while True:
        try:
            p.rmdir()
        except OSError:
            return
        if p == top or p == p.parent:
            return
        p = p.parent


def run_train(args: argparse.Namespace) -> int:
    """``train`` command: returns the exit code (0 done, ``128 + signum`` when stopped by one of
    :data:`fastpggan.errors.STOP_SIGNALS`: 129 SIGHUP, 130 Ctrl-C, 143 SIGTERM, ...).

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
        top = out  # the highest folder of out's path that this run creates
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        # A stop signal before training starts (the images are decoded: minutes on a large
        # folder) ends the command with one line (Interrupted); the cache build removes its
        # partial folder on the way out. Training installs its own handlers (a checkpoint).
        with stop_signals(_interrupt_preparation):
            try:
                lock, note = _lock(out, dist)
            except UsageError:
                if created and dist.is_main:
                    _remove_created(out, top)
                raise
            try:
                return _train(args, cfg, dist, created, note)
            finally:
                if lock is not None:
                    lock.release()
                    if created:  # a run that never started: no trace
                        _remove_created(out, top)
    finally:
        dist.close()


# Past this many passes over the training images the critic overfits them measurably: with
# 200 built-in faces its r_v (held-out against training reals) was 0.04 by 60 passes and 0.13
# by 300, with 10,000 faces it stayed within 0.007 of 0 through 6 (bench/RESULTS.md, small
# datasets: 16 px, a small model). Provisional: nothing was measured between 6 and 60 passes,
# and a larger critic may memorise sooner.
MANY_EPOCHS = 50


def _few_images(count: int, first_batch: int, total_images: int, aug: str) -> str | None:
    """The one-line warning for training images too few for the run, else ``None``: fewer than
    one 4 px minibatch, or a schedule (``total_images``) that shows each more than
    :data:`MANY_EPOCHS` times. Without ``--aug`` it names the augmentation meant for this."""
    hint = "; augmenting what the critic sees may help: --aug ada (README, Small datasets)" if aug == "off" else ""
    if count < first_batch:
        return (f"warning: the data holds {count} images, fewer than one minibatch at 4px ({first_batch}): "
                f"every step shows some of them more than once{hint}")
    if (epochs := total_images / count) > MANY_EPOCHS:
        return (f"warning: the run shows each of its {count} training images about {epochs:.0f} times; "
                f"past {MANY_EPOCHS} the critic overfitted in our measurement{hint}")
    return None


def _slow_average(cfg: TrainConfig) -> str | None:
    """The one-line warning when ``--ema-beta`` averages G over more steps than the whole run
    takes, so ``G_ema`` (the samples) never moves far from the initial weights. The average is
    updated once per step (``G_ema <- beta G_ema + (1 - beta) G``): its time constant is
    ``1 / (1 - beta)`` steps."""
    schedule = cfg.schedule()
    steps = sum(-(-(p.end - p.start) // cfg.batch[p.res]) for p in schedule.phases)
    tau = 1.0 / (1.0 - cfg.ema_beta)
    if tau <= steps:
        return None
    return (f"warning: --ema-beta {cfg.ema_beta} averages the generator over about {tau:.3g} steps "
            f"(1 / (1 - beta)), more than the {steps} steps of the whole run: the samples will stay "
            "close to the initial weights; lower it (default 0.999)")


def _interrupt_preparation(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


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
        # the built-in faces' held-out ones come after the --num-faces training faces
        source = open_source(cfg.data, cfg.num_faces + (cfg.holdout if cfg.data is None else 0))
        if not dist.is_main:
            dist.barrier()  # rank 0 decodes and caches the images first; the others open its cache
        with usage_errors(DataError):
            # rank 0 verified the cache's contents (or built it) before the others open it
            data = load_data(source, cfg.resolution, cfg.cache_dir, cfg.workers,
                             verify_contents=dist.is_main)
        with usage_errors():  # a folder's unreadable files are known only now
            check_holdout(data.count, cfg.holdout, cfg.aug)
        if cfg.cond:
            cfg = _with_classes(cfg, data, state, path)
    except (UsageError, DiskFullError, Interrupted):
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
    if cfg.holdout:
        echo(f"holdout: {cfg.holdout} of these images are kept out of training, for the critic's overfitting "
             f"signal r_v" + (" (built-in faces past --num-faces)" if cfg.data is None else ""))
    if cfg.aug == "ada" and cfg.holdout < STEADY_HOLDOUT:
        echo(f"warning: --holdout {cfg.holdout}: r_v from fewer than {STEADY_HOLDOUT} held-out images is "
             f"too noisy to steer p by (README, Small datasets); hold out more or use --aug fixed")
    if (few := _few_images(data.count - cfg.holdout, cfg.batch[4], cfg.schedule().total_images, cfg.aug)) is not None:
        echo(few)
    if (slow := _slow_average(cfg)) is not None:
        echo(slow)
    if cfg.cond:
        shown = ", ".join(f"{printable(c)} {n}" for c, n in zip(cfg.classes or [], cfg.class_counts or []))
        echo(f"classes: {cfg.label_size} ({shown})")
    echo(describe_impl(cfg.impl, cfg.device))
    device_type = torch.device(cfg.device).type
    capability = torch.cuda.get_device_capability() if device_type == "cuda" else None
    if (line := tf32_note(cfg.tf32, device_type, capability)) is not None:
        echo(line)
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
