"""Data: conversion of every image mode to RGB, crop/resize, the built-in faces, folder and zip
sources with bad files, the per-resolution cache, and reproducible real batches."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastpggan.data import DataError, EpochDraws, RealBatches, load_data, open_source, render_face, step_batch
from fastpggan.data.images import center_crop, halve, open_image, to_rgb, to_square_array, UnreadableImage


def _png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_cmyk_converts_to_rgb():
    img = open_image(_png_bytes(Image.new("CMYK", (6, 4), (0, 255, 255, 0)), "JPEG", quality=100))
    assert img.mode == "CMYK"
    rgb = np.asarray(to_rgb(img))
    assert rgb.shape == (4, 6, 3)
    assert rgb[..., 0].min() > 230 and rgb[..., 1:].max() < 30  # cyan 0, magenta+yellow full: red


def test_16bit_grayscale_scales_full_range():
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = open_image(_png_bytes(Image.fromarray(a)))
    assert img.mode.startswith("I")
    rgb = np.asarray(to_rgb(img))
    assert rgb.shape == (1, 3, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 128, 255])
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_palette_with_transparency_composites_on_white():
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    rgb = np.asarray(to_rgb(open_image(_png_bytes(p, transparency=1))))
    np.testing.assert_array_equal(rgb[0], [[255, 0, 0], [255, 255, 255]])


def test_rgba_and_la_composite_on_white():
    rgba = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[255, 255, 255]]]
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert abs(int(np.asarray(to_rgb(half))[0, 0, 0]) - 127) <= 1
    la = Image.new("LA", (1, 1), (10, 255))
    assert np.asarray(to_rgb(la)).tolist() == [[[10, 10, 10]]]


def test_grayscale_and_bilevel_to_rgb():
    assert np.asarray(to_rgb(Image.new("L", (1, 1), 77))).tolist() == [[[77, 77, 77]]]
    assert np.asarray(to_rgb(Image.new("1", (1, 1), 1))).tolist() == [[[255, 255, 255]]]


def test_center_crop_keeps_the_middle():
    a = np.zeros((4, 10, 3), np.uint8)
    a[:, 3:7] = 200  # the centre 4 columns
    out = np.asarray(center_crop(Image.fromarray(a)))
    assert out.shape == (4, 4, 3) and (out == 200).all()
    tall = center_crop(Image.new("RGB", (3, 9)))
    assert tall.size == (3, 3)


def test_resize_is_area_like_on_shrink_and_handles_upscale():
    # A fine checkerboard shrunk 8x must average to grey (a nearest resize would alias).
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    out = to_square_array(Image.fromarray(board), 8)
    assert out.shape == (8, 8, 3) and abs(out.astype(float).mean() - 127.5) < 3 and out.std() < 6
    assert to_square_array(Image.new("RGB", (3, 5), (9, 8, 7)), 16).shape == (16, 16, 3)


def test_halve_rounds_the_2x2_mean():
    a = np.array([[[[0] * 3, [1] * 3], [[1] * 3, [1] * 3]]], np.uint8)  # mean 0.75
    assert halve(a).shape == (1, 1, 1, 3) and halve(a)[0, 0, 0, 0] == 1


def test_unreadable_bytes_raise():
    with pytest.raises(UnreadableImage):
        open_image(b"hello, not an image")
    jpeg = _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(UnreadableImage):
        open_image(jpeg[: len(jpeg) // 2])  # truncated


def test_faces_are_deterministic_and_varied():
    a = np.asarray(render_face(3, 32, seed=0))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, np.asarray(render_face(3, 32, seed=0)))
    assert not np.array_equal(a, np.asarray(render_face(4, 32, seed=0)))
    assert not np.array_equal(a, np.asarray(render_face(3, 32, seed=1)))
    # Antialiased: many distinct colours, not a handful of flat fills.
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 100
    assert render_face(0, 8).size == (8, 8)


def _write_mixed_folder(root: Path) -> None:
    """Good images plus every kind of trouble the loader must survive."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), np.uint8)).save(root / f"good{i}.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), np.uint8), "L").save(root / "sub" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), np.uint8), "RGBA").save(root / "rgba.png")
    Image.new("RGB", (3, 3), (200, 0, 0)).save(root / "tiny.png")
    Image.new("RGB", (40, 20), (0, 200, 0)).save(root / "wide.jpg")
    jpeg = _png_bytes(Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)), "JPEG")
    (root / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored: hidden files are not data")


def test_mixed_folder_loads_good_images_and_counts_the_rest(tmp_path):
    _write_mixed_folder(tmp_path / "data")
    src = open_source(str(tmp_path / "data"))
    assert len(src) == 10  # hidden file left out
    data = load_data(src, 8, cache_dir=tmp_path / "cache")
    assert data.count == 8 and data.skipped == 2 and data.small == 1
    assert sorted(data.levels) == [4, 8]
    assert data.levels[8].shape == (8, 8, 8, 3) and data.levels[4].shape == (8, 4, 4, 3)
    np.testing.assert_array_equal(data.levels[4], halve(np.asarray(data.levels[8])))
    report = "\n".join(data.report())
    assert "skipped 2 files" in report and "corrupt.jpg" in report and "1 images are smaller" in report


def test_cache_is_reused_and_keyed_by_the_files(tmp_path, monkeypatch):
    _write_mixed_folder(tmp_path / "data")
    first = load_data(open_source(str(tmp_path / "data")), 8, cache_dir=tmp_path / "cache")
    import fastpggan.data.dataset as ds

    def no_decoding(*a, **k):
        raise AssertionError("decoded again despite a cache")

    monkeypatch.setattr(ds, "_Decode", no_decoding)
    again = load_data(open_source(str(tmp_path / "data")), 8, cache_dir=tmp_path / "cache")
    assert isinstance(again.levels[8], np.memmap) or isinstance(again.levels[8].base, np.memmap)
    np.testing.assert_array_equal(first.levels[8], again.levels[8])
    assert again.skipped == 2 and again.small == 1
    monkeypatch.undo()
    old_key = open_source(str(tmp_path / "data")).fingerprint(8)
    # another source's cache in the same --cache-dir, which must survive
    load_data(open_source(None, 3), 8, cache_dir=tmp_path / "cache")
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "new.png")  # the key changes
    newer = load_data(open_source(str(tmp_path / "data")), 8, cache_dir=tmp_path / "cache")
    assert newer.count == 9
    # the cache of the data's old state is superseded and removed, with a note
    left = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert old_key not in left and len(left) == 2
    assert any("removed 1 superseded cache" in line for line in newer.report())


def test_zip_source_matches_folder(tmp_path):
    _write_mixed_folder(tmp_path / "data")
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        for p in sorted((tmp_path / "data").rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(tmp_path / "data").as_posix())
    a = load_data(open_source(str(tmp_path / "data")), 8)
    b = load_data(open_source(str(tmp_path / "d.zip")), 8, workers=2)  # workers reopen the zip
    np.testing.assert_array_equal(a.levels[8], b.levels[8])
    assert b.skipped == 2


def test_bad_sources_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no readable images"):
        load_data(open_source(str(tmp_path / "junk")), 8, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    (tmp_path / "bad.zip").write_bytes(b"PK nonsense")
    with pytest.raises(DataError, match="cannot be read"):
        open_source(str(tmp_path / "bad.zip"))
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="neither a folder nor a .zip"):
        open_source(str(tmp_path / "x.png"))


def test_builtin_faces_source_levels():
    data = load_data(open_source(None, num_faces=6), 16)
    assert data.count == 6 and sorted(data.levels) == [4, 8, 16]
    np.testing.assert_array_equal(data.levels[16][2], np.asarray(render_face(2, 16)))


def test_real_batches_depend_only_on_seed_and_images_seen():
    images = np.random.default_rng(0).integers(0, 255, (10, 4, 4, 3), np.uint8)
    on_device = RealBatches(images, 4, seed=5, start_images=12, device="cpu")
    loader = RealBatches(images, 4, seed=5, start_images=12, device="cpu", workers=1, device_bytes=0)
    assert on_device.on_device and not loader.on_device
    for first in range(12, 24, 4):
        (x1, f1), (x2, f2) = next(on_device), next(loader)
        idx, flip = step_batch(5, first, 10, 4)
        assert torch.equal(x1, x2) and torch.equal(f1, f2) and torch.equal(f1, flip)
        assert torch.equal(x1, torch.from_numpy(images[idx.numpy()]))
    assert not torch.equal(step_batch(5, 0, 10, 4)[0], step_batch(6, 0, 10, 4)[0])


def test_broken_links_and_loops_are_skipped_and_counted(tmp_path):
    root = tmp_path / "data"
    _write_mixed_folder(root)
    (root / "nowhere.png").symlink_to(root / "missing.png")  # points nowhere
    (root / "a.png").symlink_to(root / "b.png")  # a file-link loop
    (root / "b.png").symlink_to(root / "a.png")
    (root / "sub" / "up").symlink_to(root)  # a folder loop
    (root / "same").symlink_to(root / "sub")  # a second link to one folder
    src = open_source(str(root))
    assert len(src) == 10  # the same usable files as without the links
    reasons = dict(src.broken)
    assert reasons["nowhere.png"].startswith("link to nothing") and reasons["a.png"] == "link loop"
    assert "folder already listed" in reasons["sub/up"] and "folder already listed" in reasons["same"]
    assert "sub/gray.png" in src.names  # the real path, not the link's
    data = load_data(src, 8, cache_dir=tmp_path / "cache")
    assert len(src.broken) == 5 and data.count == 8 and data.skipped == 2 + 5
    assert "skipped 7 files" in "\n".join(data.report())


def test_undecodable_names_print_on_a_strict_terminal(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    root = tmp_path / "data"
    _write_mixed_folder(root)
    bad = os.fsencode(str(root)) + b"/caf\xe9-\xff.png"  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as f:
        f.write(b"not an image")
    code = (
        "import sys; from fastpggan.data import load_data, open_source\n"
        "d = load_data(open_source(sys.argv[1]), 8, cache_dir=sys.argv[2])\n"
        "print('\\n'.join(d.report()))\n"
    )
    env = {**os.environ, "PYTHONIOENCODING": "ascii:strict", "LC_ALL": "C",
           "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for _ in range(2):  # the second run replays the report from the cache
        r = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "cache")],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert "caf\\xe9-\\xff.png" in r.stdout and "skipped 3 files" in r.stdout


def test_disk_full_while_caching_leaves_nothing_partial(tmp_path, monkeypatch):
    import errno
    import os

    from fastpggan.atomic import DiskFullError

    def full(fd, offset, length):  # the OS: no room for the cache's arrays
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFullError, match="disk full: could not write the image cache") as e:
        load_data(open_source(None, 8), 8, cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value) and str(tmp_path / "cache") in str(e.value)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("n,batch", [(10, 4), (7, 3), (5, 8), (1, 2)])
def test_reals_are_drawn_epoch_by_epoch_without_replacement(n, batch):
    # Concatenating the steps' draws gives epoch after epoch, each a permutation of the images,
    # each in its own order; a step may straddle two epochs (and, with batch > n, more).
    draws = EpochDraws(seed=3, n=n)
    steps = [step_batch(3, k * batch, n, batch) for k in range(6 * n // batch + 2)]
    idx = torch.cat([i for i, _ in steps])
    flip = torch.cat([f for _, f in steps])
    epochs = idx.numel() // n
    assert epochs >= 3
    for e in range(epochs):
        chunk = idx[e * n:(e + 1) * n]
        assert sorted(chunk.tolist()) == list(range(n))  # every image once per epoch
        perm, flips = draws.order(e)
        assert torch.equal(chunk, perm) and torch.equal(flip[e * n:(e + 1) * n], flips)
    if n >= 5:
        assert not torch.equal(draws.order(0)[0], draws.order(1)[0])  # reshuffled every epoch
        assert 0 < int(flip.sum()) < flip.numel()
    # Ranks take consecutive runs of one step's draws.
    two = [step_batch(3, 2 * batch, n, batch, rank=r)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(two), draws.take(2 * batch, 2 * batch)[0])


def test_epoch_draws_need_images():
    with pytest.raises(ValueError, match="at least one image"):
        EpochDraws(0, 0)


# --- EXIF orientation ---------------------------------------------------------------------------
def _stored_as(upright: np.ndarray, orientation: int) -> np.ndarray:
    """How a camera stores ``upright`` [H, W, 3] when it tags it with EXIF ``orientation``: the
    tag says where the stored row 0 and column 0 belong (TIFF/EXIF 2.3, tag 0x0112)."""
    u = upright
    return {
        1: u,                        # row 0 top, column 0 left
        2: u[:, ::-1],               # top, right
        3: u[::-1, ::-1],            # bottom, right
        4: u[::-1],                  # bottom, left
        5: u.transpose(1, 0, 2),     # left, top
        6: np.rot90(u, 1),           # right, top (the phone held upright, the usual case)
        7: u[::-1, ::-1].transpose(1, 0, 2),  # right, bottom
        8: np.rot90(u, -1),          # left, bottom
    }[orientation]


def test_every_exif_orientation_is_decoded_upright(tmp_path):
    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # no symmetry: any wrong turn shows
    folder = tmp_path / "photos"
    folder.mkdir()
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        img = Image.fromarray(np.ascontiguousarray(_stored_as(upright, o)))
        img.save(folder / f"o{o}.png", exif=exif.tobytes())
        assert np.array_equal(np.asarray(open_image((folder / f"o{o}.png").read_bytes())), upright), o
    data = load_data(open_source(str(folder)), 8)
    assert data.count == 8 and all(np.array_equal(data.levels[8][i], upright) for i in range(8))
    # a rotated photo that is not square: the crop is taken from the upright image
    tall = rng.integers(0, 256, (12, 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    png = _png_bytes(Image.fromarray(np.ascontiguousarray(_stored_as(tall, 6))), "PNG", exif=exif.tobytes())
    assert open_image(png).size == (8, 12)
    assert np.array_equal(to_square_array(open_image(png), 8), tall[2:10])
