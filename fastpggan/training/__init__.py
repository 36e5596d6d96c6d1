"""Progressive training: schedule, loop, checkpoints, run log.

Public names:
    TrainConfig                                    settings, each declared once (``config``, ``settings``)
    parse_batch, parse_lr, DEFAULT_BATCH, DEFAULT_LR   per-resolution settings (``per_resolution``)
    Schedule                                       images seen -> resolution and fade (``schedule``)
    Trainer                                        models, optimizers, checkpoints; run() (``loop``)
    prepare_reals                                  one run's steps and events (``run``)
    TrainSteps, ema_update, reset_adam             one step's updates, eager or compiled (``steps``)
    save_checkpoint, load_checkpoint, latest_checkpoint, CheckpointError,
    load_generator, load_newest_good               checkpoints and their G_ema (``checkpoint``)
    RunLock, RunLocked                             one run per run folder (``runlock``)
    RESUME_POLICY, resume_changes, ResumeRefused   what may change on resume (``resume_policy``)
    check_config_numbers, LIMITS                   the range of every numeric setting (``limits``)
"""

from fastpggan.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_generator,
    load_newest_good,
    save_checkpoint,
)
from fastpggan.training.config import TrainConfig
from fastpggan.training.limits import LIMITS, check_config_numbers
from fastpggan.training.loop import Trainer
from fastpggan.training.per_resolution import DEFAULT_BATCH, DEFAULT_LR, parse_batch, parse_lr
from fastpggan.training.resume_policy import RESUME_POLICY, ResumeRefused, resume_changes
from fastpggan.training.run import prepare_reals
from fastpggan.training.runlock import RunLock, RunLocked
from fastpggan.training.schedule import Schedule
from fastpggan.training.steps import TrainSteps, ema_update, reset_adam

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_LR",
    "LIMITS",
    "RESUME_POLICY",
    "CheckpointError",
    "ResumeRefused",
    "RunLock",
    "RunLocked",
    "Schedule",
    "TrainConfig",
    "TrainSteps",
    "Trainer",
    "check_config_numbers",
    "ema_update",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_generator",
    "load_newest_good",
    "parse_batch",
    "parse_lr",
    "prepare_reals",
    "reset_adam",
    "resume_changes",
    "save_checkpoint",
]
