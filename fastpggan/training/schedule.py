"""The progressive schedule: which resolution and fade a given number of images seen maps to.

Phase 0 trains 4x4 for ``K/2`` kimg. Each later phase doubles the resolution: it fades the new
block in over the first ``K/2`` kimg and trains it stable for the next ``K/2`` (the authors'
600/600 split is ``K = 1200``; their 4x4 phase, too, is the stable half alone). The last phase
adds ``final_kimg`` of stable training at the target resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastpggan.networks import check_resolution


@dataclass(frozen=True)
class Phase:
    """One resolution: ``[start, start + fade_images)`` fades in, then stable until ``end``."""

    index: int
    res: int
    start: int
    fade_images: int
    end: int


@dataclass(frozen=True)
class Position:
    """Where ``images`` seen falls: phase, its resolution, fade in ``[0, 1]``, stable or not."""

    phase: Phase
    fade: float
    stable: bool

    @property
    def segment(self) -> tuple[int, bool]:
        """Changes exactly when the level of detail changes (start and end of each fade)."""
        return self.phase.index, self.stable


class Schedule:
    """Phases from 4x4 to ``resolution`` for ``kimg_per_phase`` (see module doc)."""

    def __init__(self, resolution: int, kimg_per_phase: float, final_kimg: float = 0.0) -> None:
        if kimg_per_phase <= 0:
            raise ValueError(f"kimg per phase must be positive, got {kimg_per_phase}")
        if final_kimg < 0:
            raise ValueError(f"final kimg must be >= 0, got {final_kimg}")
        top = check_resolution(resolution)
        half = max(1, round(kimg_per_phase * 500))  # images in each half of a phase
        self.phases: list[Phase] = []
        start = 0
        for k in range(2, top + 1):
            fade = 0 if k == 2 else half
            end = start + fade + half + (round(final_kimg * 1000) if k == top else 0)
            self.phases.append(Phase(k - 2, 2**k, start, fade, end))
            start = end
        self.total_images = start

    def at(self, images: int) -> Position:
        """Position after ``images`` images (clamped to the last phase's end)."""
        for p in self.phases:
            if images < p.end:
                break
        rel = images - p.start
        if rel < p.fade_images:
            return Position(p, rel / p.fade_images, False)
        return Position(p, 1.0, True)
