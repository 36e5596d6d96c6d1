"""Where a run stands: images seen, steps, the level-of-detail segment, and the image counts at
which the next tick, record and metric point fall.

Checkpoints hold it as the plain dict of :meth:`Progress.state_dict` (``state["progress"]``),
with the keys and values every checkpoint since the first has had, so files written before
this class existed resume unchanged (a key an older file lacks keeps its fresh value).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, fields
from typing import Any

from fastpggan.training.config import TrainConfig
from fastpggan.training.schedule import kimg_to_images


@dataclass(slots=True)  # slots: a misspelt counter is an error, not a new attribute
class Progress:
    """The counters of a run (all in images, global over the ranks). Every rank keeps the same.

    ``segment``: ``(phase index, stable)`` of the last step (:attr:`.schedule.Position.segment`;
    ``(-1, False)`` before the first), so a change resets Adam. ``diversity_watch``: the collapse
    watch's state after its last tick (:class:`.collapse.CollapseMonitor`), ``None`` until then.
    """

    images: int = 0
    step: int = 0
    segment: tuple[int, bool] = (-1, False)
    ticks: int = 0
    next_tick: int = 0
    next_log: int = 0
    next_metric: int = 0  # 0 with metrics off
    diversity_watch: dict[str, Any] | None = None

    @classmethod
    def start(cls, cfg: TrainConfig) -> Progress:
        """A fresh run's: nothing seen yet, each interval's first point one interval in."""
        p = cls()
        p.next_tick = p.next_multiple(cfg.tick_kimg)
        p.next_log = p.next_multiple(cfg.log_kimg)
        p.next_metric = p.next_multiple(cfg.metric_every)
        return p

    def next_multiple(self, kimg: float) -> int:
        """The first multiple of an interval of ``kimg`` thousand images past the images seen
        (0 for an interval of 0: never)."""
        every = kimg_to_images(kimg)
        return (self.images // every + 1) * every if every > 0 else 0

    def restart_intervals(self, cfg: TrainConfig, changed: Container[str]) -> None:
        """An interval changed on resume (``changed``: the settings that did) counts from the
        images seen so far."""
        if "tick_kimg" in changed:
            self.next_tick = self.next_multiple(cfg.tick_kimg)
        if "log_kimg" in changed:
            self.next_log = self.next_multiple(cfg.log_kimg)
        if "metric_every" in changed:
            self.next_metric = self.next_multiple(cfg.metric_every)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``progress`` dict: ``segment`` as a list; ``diversity_watch`` only
        once the watch has measured."""
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "diversity_watch"}
        state["segment"] = list(self.segment)
        if self.diversity_watch is not None:
            state["diversity_watch"] = self.diversity_watch
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's ``progress`` dict (keys this version does not know are ignored)."""
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])
        self.segment = tuple(self.segment)
