"""Sample sheets: bounded size whatever n, placement, latents independent of n."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastpggan.sampling import MAX_SHEET_SIDE, Canvas, cells_per_side, latents, layout, sheet_paths


def test_layout_is_near_square_until_a_sheet_is_full():
    lay = layout(16, 32)
    assert (lay.cols, lay.rows, lay.scale, lay.sheets) == (4, 4, 2, 1)
    big = layout(100_000, 8)
    assert big.cols == big.rows == cells_per_side(8) == MAX_SHEET_SIDE // 64
    assert big.sheets == -(-100_000 // big.per_sheet)
    w, h = big.sheet_size(big.per_sheet)
    assert w <= MAX_SHEET_SIDE + big.cols and h <= MAX_SHEET_SIDE + big.rows
    assert layout(64, 1024).sheets == 1 and layout(65, 1024).sheets == 2
    assert layout(5, 4, cols=5).cols == 5 and layout(1, 256).sheet_size(1) == (256, 256)


def test_canvas_places_cells_with_gaps_and_upscale():
    lay = layout(3, 4, min_cell=8)  # scale 2, 2 columns
    c = Canvas(lay, 3)
    cells = [np.full((4, 4, 3), 10 * (i + 1), np.uint8) for i in range(3)]
    for i, a in enumerate(cells):
        c.put(i, a)
    img = np.asarray(c.image())
    assert img.shape == (17, 17, 3)
    assert (img[:8, :8] == 10).all() and (img[:8, 9:] == 20).all() and (img[9:, :8] == 30).all()
    assert (img[8] == 0).all() and (img[:, 8] == 0).all() and (img[9:, 9:] == 0).all()


def test_latents_do_not_depend_on_n():
    a = torch.cat(list(latents(100, 7, seed=3)))
    b = torch.cat(list(latents(150, 7, seed=3)))
    assert a.shape == (100, 7) and torch.equal(a, b[:100])
    assert all(z.shape[0] <= 64 for z in latents(150, 7, seed=3))


def test_sheet_paths():
    assert sheet_paths(Path("s.png"), 1) == [Path("s.png")]
    assert [p.name for p in sheet_paths(Path("d/s.png"), 3)] == ["s-001.png", "s-002.png", "s-003.png"]
