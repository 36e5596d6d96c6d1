"""Progressive training: schedule, loop, checkpoints, run log.

Public names:
    TrainConfig, parse_batch, DEFAULT_BATCH        settings (``config``)
    Schedule                                       images seen -> resolution and fade (``schedule``)
    Trainer, d_step, g_step, ema_update, prepare_reals   the loop (``loop``)
    save_checkpoint, load_checkpoint, latest_checkpoint, CheckpointError   (``checkpoint``)
"""

from fastpggan.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from fastpggan.training.config import DEFAULT_BATCH, TrainConfig, parse_batch
from fastpggan.training.loop import Trainer, d_step, ema_update, g_step, prepare_reals
from fastpggan.training.schedule import Schedule

__all__ = [
    "DEFAULT_BATCH",
    "CheckpointError",
    "Schedule",
    "TrainConfig",
    "Trainer",
    "d_step",
    "ema_update",
    "g_step",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "parse_batch",
    "prepare_reals",
    "save_checkpoint",
]
