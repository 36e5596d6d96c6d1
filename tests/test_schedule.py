"""The schedule against the authors' TrainingSchedule (progressive_growing_of_gans, train.py).

``authors_lod`` restates their formula in exact rational arithmetic (their code uses floats;
exact fractions keep the comparison honest at the boundaries, where a float could land on
either side): ``phase = floor(kimg / (training + transition))``, ``lod = log2(R) - 2 - phase -
max(phase_kimg - training, 0) / transition``, clamped at 0; resolution ``2 ** (log2 R -
floor(lod))``; minibatch and learning rate looked up by that resolution; Adam reset whenever
``floor(lod)`` or ``ceil(lod)`` changes between evaluations; training runs while
``images < total``. Their loop re-evaluates the schedule every 4 minibatches
(``minibatch_repeats``); the walks here evaluate it every minibatch (their ``-norepeat`` mode),
as fastpggan does.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from fastpggan.training.per_resolution import DEFAULT_BATCH, DEFAULT_LR
from fastpggan.training.schedule import Schedule

# Authors' one-GPU v2 preset (config.py): minibatch_base 4 with overrides, lr 1e-3 with 1024: 1.5e-3.
AUTHORS_MINIBATCH = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}
AUTHORS_MINIBATCH_BASE = 4
AUTHORS_LR = {1024: 0.0015}
AUTHORS_LR_BASE = 0.001


def authors_lod(images: int, R: int, training_kimg, transition_kimg) -> Fraction:
    kimg = Fraction(images, 1000)
    training, transition = Fraction(training_kimg), Fraction(transition_kimg)
    dur = training + transition
    phase = math.floor(kimg / dur) if dur > 0 else 0
    phase_kimg = kimg - phase * dur
    lod = Fraction(int(math.log2(R)) - 2 - phase)
    if transition > 0:
        lod -= max(phase_kimg - training, 0) / transition
    return max(lod, Fraction(0))


def authors_resolution(lod: Fraction, R: int) -> int:
    return 2 ** (int(math.log2(R)) - math.floor(lod))


def check_point(s: Schedule, images: int, R: int, training, transition) -> None:
    lod = authors_lod(images, R, training, transition)
    res = authors_resolution(lod, R)
    pos = s.at(images)
    assert pos.phase.res == res, images
    assert pos.lod == pytest.approx(float(lod), abs=1e-12), images
    assert pos.stable == (lod.denominator == 1), images
    # Their blend weight of the new resolution is 1 - frac(lod) (lerp(..., lod_in - lod)).
    assert pos.fade == pytest.approx(float(1 - (lod - math.floor(lod))) if lod.denominator != 1 else 1.0,
                                     abs=1e-12), images
    assert DEFAULT_BATCH[pos.phase.res] == AUTHORS_MINIBATCH.get(res, AUTHORS_MINIBATCH_BASE)
    assert DEFAULT_LR[pos.phase.res] == AUTHORS_LR.get(res, AUTHORS_LR_BASE)


CONFIGS = [  # (R, fade kimg, stable kimg, total kimg)
    (256, 600, 600, 12000),  # the defaults
    (1024, 600, 600, 12000),
    (1024, 800, 800, 19000),  # the paper's CelebA-HQ lengths
    (8, 0.6, 0.6, 3),
    (32, 0.5, 0.3, 5),
    (16, 0, 1, 4),  # no fade: the resolution switches at once
    (16, 1, 0, 5),  # no stable phase: always fading
    (64, 0.128, 0.064, 0.9),
]


@pytest.mark.parametrize("R,fade,stable,total", CONFIGS)
def test_schedule_matches_authors_formula_at_many_points(R, fade, stable, total):
    s = Schedule(R, fade, stable, total)
    assert s.total_images == round(total * 1000)
    points = {0, 1, s.total_images - 1, s.total_images, s.total_images + 5}
    for p in s.phases:  # every boundary and its neighbours
        for edge in (p.start, p.start + p.fade_images, p.end):
            points.update(edge + d for d in (-129, -8, -1, 0, 1, 8, 129))
    rng = random.Random(R * 7 + int(total))
    points.update(rng.randrange(0, s.total_images) for _ in range(3000))
    for images in sorted(pt for pt in points if pt >= 0):
        check_point(s, images, R, Fraction(str(stable)), Fraction(str(fade)))


def walk(s: Schedule, R, training, transition, batch):
    """Steps of a run, ours and theirs side by side: (images at each Adam reset), steps, end."""
    ours, theirs = [], []
    images, steps, prev_lod, prev_segment = 0, 0, Fraction(-1), None
    while images < s.total_images:
        lod = authors_lod(images, R, training, transition)
        if math.floor(lod) != math.floor(prev_lod) or math.ceil(lod) != math.ceil(prev_lod):
            theirs.append(images)
        prev_lod = lod
        pos = s.at(images)
        if pos.segment != prev_segment:
            ours.append(images)
        prev_segment = pos.segment
        assert pos.phase.res == authors_resolution(lod, R)
        images += batch[pos.phase.res]
        steps += 1
    return ours, theirs, steps, images


@pytest.mark.parametrize("R,fade,stable,total,batch", [
    (256, 6, 6, 120, DEFAULT_BATCH),  # the defaults scaled down 100x: 6k is no multiple of 128
    (32, 0.6, 0.6, 6, DEFAULT_BATCH),
    (16, 0.064, 0.064, 0.5, {4: 8, 8: 8, 16: 8}),
    (16, 0.05, 0.03, 0.4, {4: 7, 8: 5, 16: 3}),
])
def test_adam_resets_and_end_of_training_match_authors(R, fade, stable, total, batch):
    s = Schedule(R, fade, stable, total)
    ours, theirs, steps, end = walk(s, R, Fraction(str(stable)), Fraction(str(fade)), batch)
    assert ours == theirs
    # A reset at the start, then at the start and at the end of every fade.
    assert len(ours) == 1 + 2 * (len(s.phases) - 1)
    assert s.total_images <= end < s.total_images + batch[R]


def test_default_lengths_at_256():
    s = Schedule(256)
    assert [(p.res, p.fade_images, p.end - p.start - p.fade_images) for p in s.phases] == [
        (4, 0, 600_000)] + [(r, 600_000, 600_000) for r in (8, 16, 32, 64, 128)] + [(256, 600_000, 4_800_000)]
    assert s.reach_images == 7_200_000 and s.total_images == 12_000_000
    assert "12000 kimg in all" in s.describe()


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="both be 0"):
        Schedule(16, 0, 0, 10)
    with pytest.raises(ValueError, match=">= 0"):
        Schedule(16, -1, 1, 10)
    with pytest.raises(ValueError, match="ends before 256px is reached"):
        Schedule(256, 600, 600, 7000)
    Schedule(256, 600, 600, 7200)  # ending the moment it is reached is allowed
