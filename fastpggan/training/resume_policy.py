"""What may change when a run is resumed: one table, keyed by :class:`TrainConfig` field names.

Three rules:

- ``FIXED``: must equal the checkpoint's value, else the resume is refused (what differs, what
  to do) before anything is written. The networks' shapes, the images, the seed (which fixes the
  batch order and the latents) and the minibatch-stddev group.
- ``SCHEDULE``: may change when the checkpoint's place in the schedule (resolution, fading or
  stable, fade amount) stays where it is and the new schedule has not already ended there: so
  ``total_kimg`` may grow (or shrink to any point still ahead), but a change that would send
  the run back to a lower resolution, skip ahead, or finish at once is refused.
- ``MAY_CHANGE``: takes effect from the first resumed step (learning rate and Adam settings are
  written into the restored optimizers; tick, log and metric intervals restart from the current
  image count).

Every setting that changed and was allowed is recorded in the ``resume`` event of ``log.jsonl``
as ``{"field": [old, new]}``, and in ``config.json`` and the next checkpoint. Fields of a
checkpoint that this version does not know (removed settings) are ignored; a setting a
checkpoint predates counts as changed from ``null``. Every field of :class:`TrainConfig` must
have a row (a test checks): a new setting cannot slip past the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastpggan.training.config import TrainConfig, format_per_res
from fastpggan.training.schedule import Position, Schedule

FIXED, SCHEDULE, MAY_CHANGE = "fixed", "schedule", "may change"


@dataclass(frozen=True)
class Rule:
    kind: str
    why: str = ""  # for FIXED: what the setting decides (said when a resume is refused)
    # When the setting matters at all, given the new config (as a dict); None: always.
    applies: Callable[[dict[str, Any]], bool] | None = None


_SHAPE = Rule(FIXED, "it sets the networks' shapes")

RESUME_POLICY: dict[str, Rule] = {
    # the model and the data: a different one is a different run
    "resolution": _SHAPE,
    "latent_dim": _SHAPE,
    "fmap_base": _SHAPE,
    "fmap_max": _SHAPE,
    "mbstd_group_size": Rule(FIXED, "it sets what D computes"),
    "data": Rule(FIXED, "the run learns these images"),
    "num_faces": Rule(FIXED, "the run learns these images", applies=lambda c: c.get("data") is None),
    "seed": Rule(FIXED, "it fixes the run's batch order and latents"),
    # the schedule: only where the run's current place in it stays the same
    "fade_kimg": Rule(SCHEDULE),
    "stable_kimg": Rule(SCHEDULE),
    "total_kimg": Rule(SCHEDULE),
    # optimisation: take effect at once
    "batch": Rule(MAY_CHANGE),
    "lr": Rule(MAY_CHANGE),
    "betas": Rule(MAY_CHANGE),
    "adam_eps": Rule(MAY_CHANGE),
    "ema_beta": Rule(MAY_CHANGE),
    "gp_lambda": Rule(MAY_CHANGE),
    "drift": Rule(MAY_CHANGE),
    "gp_every": Rule(MAY_CHANGE),
    "gp_resolution": Rule(MAY_CHANGE),
    "mirror": Rule(MAY_CHANGE),
    # how and where it runs, what it writes and measures
    "out": Rule(MAY_CHANGE),
    "device": Rule(MAY_CHANGE),
    "impl": Rule(MAY_CHANGE),
    "compile": Rule(MAY_CHANGE),
    "compile_backend": Rule(MAY_CHANGE),
    "precision": Rule(MAY_CHANGE),
    "workers": Rule(MAY_CHANGE),
    "cache_dir": Rule(MAY_CHANGE),
    "tick_kimg": Rule(MAY_CHANGE),
    "ckpt_ticks": Rule(MAY_CHANGE),
    "keep_ckpts": Rule(MAY_CHANGE),
    "log_kimg": Rule(MAY_CHANGE),
    "grid": Rule(MAY_CHANGE),
    "tensorboard": Rule(MAY_CHANGE),
    "progress": Rule(MAY_CHANGE),
    "metric_every": Rule(MAY_CHANGE),
    "metrics": Rule(MAY_CHANGE),
    "metric_n": Rule(MAY_CHANGE),
    "inception_weights": Rule(MAY_CHANGE),
    "diversity": Rule(MAY_CHANGE),
    "diversity_threshold": Rule(MAY_CHANGE),
}

# Flags named otherwise than "--" + field with dashes; settings no flag sets.
_FLAGS = {"resolution": "--res", "metrics": "--metric", "mirror": "--no-mirror",
          "tensorboard": "--no-tensorboard"}
_NO_FLAG = {"mbstd_group_size", "betas", "adam_eps", "gp_lambda", "drift", "progress"}


class ResumeRefused(ValueError):
    """A resume with settings the policy refuses; one-line message."""


def flag_name(field: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field (the field's name if none)."""
    if field in _NO_FLAG:
        return field
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def schedule_of(cfg: TrainConfig) -> Schedule:
    """The schedule ``cfg`` trains on."""
    return cfg.schedule()


def _where(pos: Position) -> str:
    if pos.stable:
        return f"{pos.phase.res}px stable"
    return f"{pos.phase.res}px fading in ({pos.fade:.2f})"


def _same_place(a: Position, b: Position) -> bool:
    return (a.phase.index, a.stable, a.fade) == (b.phase.index, b.stable, b.fade)


def show_value(v: Any) -> str:
    """A setting as its flag takes it (per-resolution dicts as a ``--batch``/``--lr`` spec)."""
    if isinstance(v, dict):
        return format_per_res({int(k): x for k, x in v.items()})
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def _normal(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict as :meth:`TrainConfig.to_dict` writes it (JSON's string keys undone)."""
    return TrainConfig.from_dict(d).to_dict()


def resume_changes(old: dict[str, Any], new: TrainConfig, images: int) -> dict[str, list[Any]]:
    """Check resuming a checkpoint of config ``old`` (as stored), ``images`` images in, with
    ``new``. Returns the allowed changes ``{field: [old, new]}``; :class:`ResumeRefused`
    listing every refused difference and what to do."""
    known = _normal(old)
    mine = new.to_dict()
    changes: dict[str, list[Any]] = {}
    refused: list[str] = []
    schedule_moved = False
    for name, value in mine.items():
        rule = RESUME_POLICY.get(name)
        if rule is None:
            raise KeyError(f"TrainConfig field {name!r} has no row in RESUME_POLICY")
        if name not in old:  # the checkpoint predates this setting
            if rule.kind == MAY_CHANGE:
                changes[name] = [None, value]
            continue
        was = known[name]
        if was == value or (rule.applies is not None and not rule.applies(mine)):
            continue
        if rule.kind == FIXED:
            refused.append(f"{flag_name(name)} {show_value(value)} (checkpoint: {show_value(was)}): {rule.why}")
        else:
            changes[name] = [was, value]
            schedule_moved |= rule.kind == SCHEDULE
    if refused:
        raise ResumeRefused(
            "cannot resume with these settings: " + "; ".join(refused)
            + ". Resume with the checkpoint's values, or start a new run with another --out"
        )
    if schedule_moved:
        then = schedule_of(TrainConfig.from_dict(old))
        now = schedule_of(new)
        a, b = then.at(images), now.at(images)
        what = ", ".join(f"{flag_name(k)} {show_value(v[0])} -> {show_value(v[1])}" for k, v in changes.items()
                         if RESUME_POLICY[k].kind == SCHEDULE)
        if images >= now.total_images:
            raise ResumeRefused(
                f"cannot resume with {what}: the checkpoint has seen {images / 1000:g} kimg, the new "
                f"schedule ends at {now.total_images / 1000:g}. Lengthen the schedule, or keep the "
                "checkpoint's values"
            )
        if not _same_place(a, b):
            raise ResumeRefused(
                f"cannot resume with {what}: at {images / 1000:g} kimg the run is at {_where(a)}, the "
                f"new schedule would put it at {_where(b)}. Keep the checkpoint's schedule values "
                "(to train longer, raise only what comes after the current phase)"
            )
    return changes


def policy_summary() -> str:
    """One sentence per rule, naming the flags (for ``--help``)."""
    def flags(kind: str) -> str:
        return ", ".join(flag_name(k) for k, r in RESUME_POLICY.items()
                         if r.kind == kind and k in TrainConfig.__dataclass_fields__ and k not in _NO_FLAG)
    return (
        f"On resume these must equal the checkpoint's: {flags(FIXED)}. These may change if the "
        f"run stays at the same place in the schedule: {flags(SCHEDULE)}. All others may change "
        "and take effect (recorded in log.jsonl as a 'resume' event)."
    )
