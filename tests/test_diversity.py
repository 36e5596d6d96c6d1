"""Diversity measurement and collapse watch (fastpggan.metrics.diversity).

Ground truth comes from the built-in faces: ``render_face(..., hair=k)`` draws a face exactly
as usual except for its hair colour, so a one-hair-colour set is a perfectly realistic
"collapsed generator" that lost exactly the variety the seed article complained about.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastpggan.data.faces import HAIR_NAMES, hair_class, hair_palette, render_face
from fastpggan.metrics.diversity import (
    DEFAULT_PATIENCE,
    DEFAULT_THRESHOLD,
    RATIO_NAMES,
    CollapseWatch,
    compare_diversity,
    diversity_stats,
    diversity_latents,
    hair_classes,
    real_diversity,
)

N = 256


def faces(indices, res: int, hair: int | None = None) -> torch.Tensor:
    """uint8 [N, 3, res, res] built-in faces."""
    a = np.stack([np.asarray(render_face(i, res, hair=hair)) for i in indices])
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def reals16() -> torch.Tensor:
    return faces(range(N), 16)


@pytest.fixture(scope="module")
def ref16(reals16):
    return diversity_stats(reals16, hair=True)


def ratios(d: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if k in RATIO_NAMES or k == "hair_coverage"}


def test_hair_palette_matches_the_drawing():
    assert len(hair_palette()) == len(HAIR_NAMES) == 13
    for i in range(6):  # hair_class is the class render_face draws
        own = np.asarray(render_face(i, 16))
        assert np.array_equal(own, np.asarray(render_face(i, 16, hair=hair_class(i))))
        assert not np.array_equal(own, np.asarray(render_face(i, 16, hair=(hair_class(i) + 1) % 13)))


@pytest.mark.parametrize("res", [16, 32])
def test_hair_classes_recover_the_drawn_hair_colour(res):
    idx = range(1000, 1200)
    truth = torch.tensor([hair_class(i) for i in idx])
    got = hair_classes(faces(idx, res))
    assert got.dtype == torch.int64 and got.shape == (200,)
    # measured 99.5% on 400 faces at 16-64 px; the misses are silver taken for white
    assert (got == truth).float().mean() >= 0.97
    float_in = faces(idx, res).float().div(127.5).sub(1)  # generator range [-1, 1]
    assert torch.equal(hair_classes(float_in), got)


def test_hair_classes_need_16px_and_reject_off_palette_colours():
    with pytest.raises(ValueError, match="16px"):
        hair_classes(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    green_screen = torch.zeros(3, 3, 16, 16, dtype=torch.uint8)
    green_screen[:, 1] = 255  # pure green: far from every hair colour
    assert hair_classes(green_screen).tolist() == [-1, -1, -1]


def test_reals_against_themselves_score_as_no_collapse(reals16, ref16):
    same = ratios(compare_diversity(ref16, ref16))
    assert same == {k: 1.0 for k in same} and set(same) == {*RATIO_NAMES, "hair_coverage"}
    other = ratios(compare_diversity(diversity_stats(faces(range(N, 2 * N), 16), hair=True), ref16))
    # measured on disjoint sets of 256: ratios 0.98 to 1.03, hair coverage 0.90
    for k in RATIO_NAMES:
        assert 0.9 <= other[k] <= 1.1, (k, other[k])
    assert other["hair_coverage"] >= 0.85
    watch = CollapseWatch()
    assert all(watch.update(other) is None for _ in range(20))


def test_values_and_ranges_by_hand():
    # two images, one black one white: mean colours 0 and 1 -> spread 0.5 (the maximum)
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    x[1] = 255
    s = diversity_stats(x)
    assert s.colour.item() == pytest.approx(0.5)
    assert s.structure.item() == 0 and s.nearest.item() == 0  # both flat: no shape at all
    # a left-right edge and its mirror: standardised shapes +-1, mean image 0 -> spread 1,
    # and each is 2 * sqrt(P) from the other -> nearest 2 (both maxima)
    y = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    y[0, :, :, :2] = 255
    y[1, :, :, 2:] = 255
    s = diversity_stats(y)
    assert s.colour.item() == 0
    assert s.structure.item() == pytest.approx(1.0)
    assert s.nearest.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 2"):
        diversity_stats(x[:1])
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        diversity_stats(torch.zeros(4, 1, 8, 8))


def test_a_constant_generator_scores_zero_and_triggers_the_warning(reals16, ref16):
    const = reals16[:1].expand(N, -1, -1, -1)
    r = ratios(compare_diversity(diversity_stats(const, hair=True), ref16))
    assert all(r[k] < 1e-6 for k in RATIO_NAMES)
    assert r["hair_coverage"] <= 0.15  # one face's hair class: its share of the reals
    watch = CollapseWatch()
    lines = [watch.update(r) for _ in range(watch.arm_ticks + DEFAULT_PATIENCE)]
    warned = [i for i, line in enumerate(lines) if line]
    assert warned == [watch.arm_ticks + DEFAULT_PATIENCE - 2]  # once, when armed + patience
    assert "--batch" in lines[warned[0]] and "--lr" in lines[warned[0]] and "--resume" in lines[warned[0]]


@pytest.mark.parametrize("hair", [0, 2, 8, 12])  # dark, light, grey, darkest-blue hair
def test_one_hair_colour_triggers_the_warning(reals16, ref16, hair):
    one = faces(range(N, 2 * N), 16, hair=hair)
    r = ratios(compare_diversity(diversity_stats(one, hair=True), ref16))
    # measured at 4 to 64 px: colour 0.56 to 0.69 of the reals' spread
    assert r["colour_ratio"] < DEFAULT_THRESHOLD
    assert r["hair_coverage"] < 0.2
    healthy = ratios(compare_diversity(diversity_stats(faces(range(N, 2 * N), 16), hair=True), ref16))
    watch = CollapseWatch()
    assert [watch.update(healthy) for _ in range(DEFAULT_PATIENCE)] == [None] * DEFAULT_PATIENCE
    lines = [watch.update(r) for _ in range(DEFAULT_PATIENCE)]
    assert lines[:-1] == [None] * (DEFAULT_PATIENCE - 1)
    assert lines[-1] is not None and "colour" in lines[-1]


def _tick(v: float) -> dict[str, float]:
    return {k: v for k in RATIO_NAMES}


def test_watch_warns_once_then_only_when_it_worsens():
    w = CollapseWatch(threshold=0.7, patience=2, worsen=0.1, arm_ticks=100)
    assert w.update(_tick(0.9)) is None and w.update(_tick(0.9)) is None  # variety: armed
    assert w.update(_tick(0.5)) is None  # one low tick: not yet
    assert w.update(_tick(0.5)) is not None
    assert w.update(_tick(0.45)) is None  # lower, but by less than 0.1
    assert w.update(_tick(0.5)) is None
    line = w.update(_tick(0.39))
    assert line is not None and "even more" in line
    assert w.update(_tick(0.39)) is None
    # back above for `patience` ticks re-arms: a later drop warns afresh
    assert w.update(_tick(0.8)) is None and w.update(_tick(0.8)) is None
    assert w.update(_tick(0.6)) is None
    line = w.update(_tick(0.6))
    assert line is not None and "even more" not in line


def test_watch_ignores_a_young_generator_and_short_dips():
    w = CollapseWatch(threshold=0.7, patience=3, arm_ticks=6)
    # low from the start: not watched before tick 6, then patience 3 -> warns at tick 8
    assert [w.update(_tick(0.3)) is not None for _ in range(8)] == [False] * 7 + [True]
    # one good tick does not arm it (a run that is still learning): needs `patience` in a row
    w = CollapseWatch(threshold=0.7, patience=3, arm_ticks=100)
    assert all(w.update(_tick(v)) is None for v in [0.75, 0.3, 0.3, 0.3, 0.8, 0.8, 0.2, 0.2, 0.2])
    # armed, then dips of at most patience - 1 ticks
    w = CollapseWatch(threshold=0.7, patience=3, arm_ticks=100)
    assert all(w.update(_tick(v)) is None for v in [0.8, 0.8, 0.8, 0.5, 0.6, 0.75, 0.5, 0.5, 0.9])
    # only the low ratio is named
    w = CollapseWatch(threshold=0.7, patience=1, arm_ticks=0)
    line = w.update({"colour_ratio": 0.2, "structure_ratio": 0.9, "nearest_ratio": 1.1})
    assert "colour 0.20" in line and "structure" not in line


def test_watch_state_round_trips_through_json():
    import json

    w = CollapseWatch(threshold=0.7, patience=3, arm_ticks=100)
    for v in (0.9, 0.9, 0.9, 0.5, 0.5):
        w.update(_tick(v))
    w2 = CollapseWatch(threshold=0.7, patience=3, arm_ticks=100)
    w2.load_state_dict(json.loads(json.dumps(w.state_dict())))
    assert w2.update(_tick(0.5)) is not None and w.update(_tick(0.5)) is not None


def test_latents_and_real_side_are_fixed():
    grid, extra = diversity_latents(4, 8, run_seed=3, n=10)
    assert grid.shape == (4, 8) and extra.shape == (6, 8)
    # the grid's latents are the ones runs have always drawn for their sample grids
    assert torch.equal(grid, torch.randn(4, 8, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(extra, diversity_latents(4, 8, run_seed=3, n=10)[1])
    assert not torch.equal(extra, diversity_latents(4, 8, run_seed=4, n=10)[1])
    assert diversity_latents(4, 8, 0, n=3)[1].shape == (0, 8)
    level = np.stack([np.asarray(render_face(i, 16)) for i in range(40)])  # ImageData level layout
    s = real_diversity(level, hair=True, n=32)
    assert s.hair is not None and s.hair.sum().item() == pytest.approx(1.0)
    assert s.colour.item() == real_diversity(level, hair=True, n=32).colour.item()
    assert real_diversity(level[:, ::2, ::2], hair=True, n=32).hair is None  # 8 px: no hair


def test_features_reduced_chunk_by_chunk_give_the_same_numbers(reals16):
    from fastpggan.metrics.diversity import DiversityFeatures, diversity_features

    whole = diversity_stats(reals16[:100], hair=True)
    parts = DiversityFeatures.cat([diversity_features(c, hair=True) for c in reals16[:100].split(33)])
    chunked = diversity_stats(parts)
    for name in ("colour", "structure", "nearest", "hair"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), rtol=1e-6, atol=1e-7)
