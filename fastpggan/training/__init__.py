"""Progressive training: schedule, loop, checkpoints, run log.

Public names:
    TrainConfig, parse_batch, DEFAULT_BATCH        settings (``config``)
    Schedule                                       images seen -> resolution and fade (``schedule``)
    Trainer, prepare_reals                         the loop (``loop``)
    TrainSteps, ema_update, reset_adam             one step's updates, eager or compiled (``steps``)
    save_checkpoint, load_checkpoint, latest_checkpoint, CheckpointError,
    load_generator                                 checkpoints and their G_ema (``checkpoint``)
"""

from fastpggan.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_generator,
    save_checkpoint,
)
from fastpggan.training.config import DEFAULT_BATCH, TrainConfig, parse_batch
from fastpggan.training.loop import Trainer, prepare_reals
from fastpggan.training.schedule import Schedule
from fastpggan.training.steps import TrainSteps, ema_update, reset_adam

__all__ = [
    "DEFAULT_BATCH",
    "CheckpointError",
    "Schedule",
    "TrainConfig",
    "TrainSteps",
    "Trainer",
    "ema_update",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_generator",
    "parse_batch",
    "prepare_reals",
    "reset_adam",
    "save_checkpoint",
]
