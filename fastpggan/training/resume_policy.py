"""What may change when a run is resumed: one rule per :class:`TrainConfig` field, declared with
the field (:mod:`.settings`) and collected here as :data:`RESUME_POLICY`.

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
checkpoint predates counts as changed from ``null``. A field cannot be declared without a rule:
a new setting cannot slip past the policy.
"""

from __future__ import annotations

from typing import Any

from fastpggan.training.config import TrainConfig
from fastpggan.training.per_resolution import format_per_res
from fastpggan.training.schedule import Position, Schedule
from fastpggan.training.settings import FIXED, MAY_CHANGE, SCHEDULE, Rule, declared, flag_name, rules

RESUME_POLICY: dict[str, Rule] = rules(TrainConfig)


class ResumeRefused(ValueError):
    """A resume with settings the policy refuses; one-line message."""


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
        rule = RESUME_POLICY[name]
        if name not in old:  # the checkpoint predates this setting
            if rule.kind == MAY_CHANGE:
                changes[name] = [None, value]
            continue
        was = known[name]
        if was == value or (rule.applies is not None and not rule.applies(mine)):
            continue
        if rule.kind == FIXED:
            refused.append(f"{flag_name(TrainConfig, name)} {show_value(value)} (checkpoint: {show_value(was)}): {rule.why}")
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
        what = ", ".join(f"{flag_name(TrainConfig, k)} {show_value(v[0])} -> {show_value(v[1])}" for k, v in changes.items()
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
    """One sentence per rule, naming the flags (for ``--help``); the fixed ones grouped by what
    they decide."""
    flagged = {name: s for name, s in declared(TrainConfig).items() if s.flag is not None}

    def flags(kind: str) -> str:
        names = [name for name, s in flagged.items() if s.rule.kind == kind]
        whys = list(dict.fromkeys(flagged[name].rule.why for name in names))
        names.sort(key=lambda name: whys.index(flagged[name].rule.why))  # stable: field order within
        return ", ".join(flagged[name].flag.name for name in names)
    return (
        f"On resume these must equal the checkpoint's: {flags(FIXED)}. These may change if the "
        f"run stays at the same place in the schedule: {flags(SCHEDULE)}. All others may change "
        "and take effect (recorded in log.jsonl as a 'resume' event)."
    )
