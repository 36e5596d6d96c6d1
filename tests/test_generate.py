"""``generate``: sample grids and latent-walk GIFs from a checkpoint; grid layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import torch_threads
import torch
from PIL import Image

from fastpggan.__main__ import main
from fastpggan.sampling import make_grid, slerp
from fastpggan.training.checkpoint import load_generator
from fastpggan.training import latest_checkpoint

TINY = ["--fmap-base", "64", "--fmap-max", "16", "--latent-dim", "16", "--batch", "8",
        "--num-faces", "32", "--workers", "0", "--grid", "2", "--no-tensorboard"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "run"
    with torch_threads(1):
        assert main(["train", "--res", "8", "--out", str(out), "--fade-kimg", "0.008", "--stable-kimg", "0.008", "--total-kimg", "0.024", *TINY]) == 0
    return latest_checkpoint(out)


def test_make_grid_layout_and_upscale():
    imgs = torch.linspace(-1, 1, 5 * 3 * 8 * 8).view(5, 3, 8, 8)
    g = make_grid(imgs)  # 5 images -> 3 columns, 2 rows; 8 px cells upscaled 8x to 64
    assert g.size == (3 * 64 + 2, 2 * 64 + 1)
    big = make_grid(torch.zeros(2, 3, 128, 128), cols=2)
    assert big.size == (257, 128)
    assert make_grid(torch.full((1, 3, 4, 4), 5.0)).getpixel((0, 0)) == (255, 255, 255)  # clamped


def test_slerp_endpoints():
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)


def test_generate_png_is_deterministic(ckpt, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["generate", "--ckpt", str(ckpt), "--n", "6", "--out", str(a), "--seed", "1"]) == 0
    assert main(["generate", "--ckpt", str(ckpt), "--n", "6", "--out", str(b), "--seed", "1"]) == 0
    assert Image.open(a).size == (3 * 64 + 2, 2 * 64 + 1)
    assert a.read_bytes() == b.read_bytes()
    G, res, fade = load_generator(ckpt)
    assert res == 8 and fade == 1.0 and not G.training


def test_generate_gif_walk(ckpt, tmp_path):
    out = tmp_path / "walk.gif"
    assert main(["generate", "--ckpt", str(ckpt), "--n", "1", "--interpolate", "3", "--out", str(out)]) == 0
    gif = Image.open(out)
    assert gif.n_frames == 12 and gif.size == (64, 64)  # 4 keyframes x 3 steps, one 8px walk


@pytest.mark.parametrize("argv, expect", [
    (["--n", "4", "--out", "x.gif"], "--out must end in .png"),
    (["--n", "4", "--interpolate", "2", "--out", "x.png"], "--out must end in .gif"),
    (["--n", "0", "--out", "x.png"], "--n must be an integer in [1, "),
])
def test_generate_bad_input(ckpt, tmp_path, capsys, argv, expect, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--ckpt", str(ckpt), *argv]) == 2
    assert expect in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_generate_refuses_missing_checkpoint(tmp_path, capsys):
    assert main(["generate", "--ckpt", str(tmp_path / "no.pt"), "--out", str(tmp_path / "a.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
