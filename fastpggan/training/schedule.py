"""The progressive schedule: which resolution and fade a given number of images seen maps to.

The authors' ``TrainingSchedule`` (progressive_growing_of_gans, ``train.py``), in images:
4x4 trains stable for ``stable_kimg``; every later resolution fades in over ``fade_kimg``, then
trains stable for ``stable_kimg``; the final resolution then trains on until ``total_kimg``
(defaults 600 / 600 / 12,000: their code and one-GPU preset).

Their level of detail is ``lod = log2(R) - 2 - phase - max(phase_kimg - stable, 0) / fade`` with
``phase = floor(kimg / (stable + fade))``, clamped at 0, and the resolution trained is
``2 ** (log2(R) - floor(lod))``. So a step taken when exactly ``stable`` kimg have been seen
still trains the old resolution (lod is an integer there), and a fade's first step already
has a fade above 0. Phases here are therefore left-open intervals of images seen: phase ``i``
covers ``(start, end]`` (phase 0 also holds 0), fading while ``start < images < start + fade``.
(With ``fade_kimg = 0`` their formula makes the intervals ``[start, end)`` instead.)
"""

from __future__ import annotations

from dataclasses import dataclass

from fastpggan.networks import check_resolution

FADE_KIMG = 600.0
STABLE_KIMG = 600.0
TOTAL_KIMG = 12000.0


@dataclass(frozen=True)
class Phase:
    """One resolution: images seen in ``(start, start + fade_images)`` fade in, then stable
    up to and including ``end``."""

    index: int
    res: int
    start: int
    fade_images: int
    end: int


@dataclass(frozen=True)
class Position:
    """Where a step taken after ``images`` seen falls: its phase, fade in ``(0, 1]``, stable
    or not, and the authors' level of detail ``lod`` (0 = final resolution, stable)."""

    phase: Phase
    fade: float
    stable: bool
    lod: float

    @property
    def segment(self) -> tuple[int, bool]:
        """Changes exactly when the level of detail changes (start and end of each fade)."""
        return self.phase.index, self.stable


def kimg_to_images(kimg: float) -> int:
    return round(kimg * 1000)


class Schedule:
    """Phases from 4x4 to ``resolution`` (see the module doc); ``total_images`` ends the run.

    ``ValueError`` (one line) when a length is negative, fade and stable are both 0, or the
    total ends before the final resolution has faded in.
    """

    def __init__(
        self,
        resolution: int,
        fade_kimg: float = FADE_KIMG,
        stable_kimg: float = STABLE_KIMG,
        total_kimg: float = TOTAL_KIMG,
    ) -> None:
        if fade_kimg < 0 or stable_kimg < 0:
            raise ValueError(f"fade and stable kimg must be >= 0, got {fade_kimg} and {stable_kimg}")
        fade, stable = kimg_to_images(fade_kimg), kimg_to_images(stable_kimg)
        if fade + stable == 0:
            raise ValueError("fade and stable kimg cannot both be 0")
        top = check_resolution(resolution)
        self.resolution = resolution
        self.fade_images, self.stable_images = fade, stable
        self.total_images = kimg_to_images(total_kimg)
        # Images after which the final resolution is fully faded in.
        self.reach_images = (top - 2) * (fade + stable)
        if self.total_images < self.reach_images:
            raise ValueError(
                f"total kimg {total_kimg:g} ends before {resolution}px is reached: it is fully "
                f"faded in after {self.reach_images / 1000:g} kimg (with fade {fade_kimg:g} and "
                f"stable {stable_kimg:g} kimg per resolution)"
            )
        self.phases: list[Phase] = []
        start = 0
        for k in range(2, top + 1):
            f = 0 if k == 2 else fade
            end = self.total_images if k == top else start + f + stable
            self.phases.append(Phase(k - 2, 2**k, start, f, end))
            start = end

    def at(self, images: int) -> Position:
        """Position of the step taken after ``images`` images (past the end: the last phase)."""
        # Without a fade their formula switches resolution at the boundary itself.
        inside = (lambda p: images < p.end) if self.fade_images == 0 else (lambda p: images <= p.end)
        for p in self.phases:
            if inside(p):
                break
        rel = images - p.start
        lod = float(len(self.phases) - 1 - p.index)
        if 0 < rel < p.fade_images:
            fade = rel / p.fade_images
            return Position(p, fade, False, lod + 1.0 - fade)
        return Position(p, 1.0, True, lod)

    def describe(self) -> str:
        """One line: the phases' lengths and the total, for the run's opening lines."""
        return (
            f"{len(self.phases)} resolutions, {self.fade_images / 1000:g} kimg fade + "
            f"{self.stable_images / 1000:g} kimg stable each, {self.resolution}px reached at "
            f"{self.reach_images / 1000:g} kimg, {self.total_images / 1000:g} kimg in all"
        )
