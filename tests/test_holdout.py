"""--holdout: which images a run keeps out of training, the no-copy view of the rest, and that
holding faces out changes nothing of what a run trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastpggan.__main__ import main
from fastpggan.data import auto_holdout, load_data, open_source, split_holdout
from fastpggan.data.holdout import FACES_HOLDOUT, Rows, check_holdout, rows
from fastpggan.training import Trainer, latest_checkpoint, load_checkpoint
from tests.test_train import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_built_in_faces_hold_out_the_extra_faces_at_the_end():
    train, held = split_holdout(30, 8, seed=5, tail=True)
    assert np.array_equal(train, np.arange(22)) and np.array_equal(held, np.arange(22, 30))
    assert train.dtype == held.dtype == np.int64


def test_a_folder_holds_out_a_seeded_draw_from_all_of_it():
    train, held = split_holdout(100, 10, seed=5, tail=False)
    assert len(held) == 10 and np.all(np.diff(held) > 0) and np.all(np.diff(train) > 0)
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(100))  # disjoint, all of them
    assert np.array_equal(split_holdout(100, 10, seed=5, tail=False)[1], held)  # the seed decides
    assert not np.array_equal(split_holdout(100, 10, seed=6, tail=False)[1], held)
    assert held[-1] - held[0] > 20  # spread over the folder, not its last (sorted by name) files
    train, held = split_holdout(7, 0, seed=5, tail=False)
    assert np.array_equal(train, np.arange(7)) and len(held) == 0
    for bad in (7, 8, -1):
        with pytest.raises(ValueError, match=f"--holdout {bad} of 7 images"):
            split_holdout(7, bad, seed=5, tail=False)
    check_holdout(7, 0)  # none held out: fine, unless --aug ada is to steer by them
    with pytest.raises(ValueError, match="--aug ada steers p by"):
        check_holdout(7, 0, "ada")


def test_auto_holdout():
    assert auto_holdout(200, faces=True) == FACES_HOLDOUT == 1000  # extra faces cost nothing
    assert [auto_holdout(n, faces=False) for n in (3, 200, 2345, 10**6)] == [1, 20, 234, 1000]


def test_rows_read_as_the_indexed_array_without_copying_it():
    base = np.random.default_rng(0).integers(0, 255, (13, 4, 4, 3), dtype=np.uint8)
    index = np.array([0, 2, 3, 7, 12])
    r = rows(base, index)
    want = base[index]
    assert isinstance(r, Rows) and r.shape == want.shape and r.dtype == want.dtype and r.nbytes == want.nbytes
    assert len(r) == 5 and np.array_equal(np.asarray(r), want)
    assert np.array_equal(np.asarray(r, dtype=np.float32), want.astype(np.float32))
    for key in (np.array([4, 0, 0, 2]), slice(1, 4), 3, (np.array([1, 3]), slice(None), 2)):
        assert np.array_equal(r[key], want[key])
    view = rows(base, np.arange(2, 9))  # one run of rows: a plain view
    assert isinstance(view, np.ndarray) and np.shares_memory(view, base) and np.array_equal(view, base[2:9])


def test_image_data_take_keeps_every_level_and_the_labels():
    data = load_data(open_source(None, 20), 8)
    index = np.array([1, 4, 5, 19])
    part = data.take(index)
    assert part.count == 4 and part.resolution == data.resolution
    for r, level in data.levels.items():
        assert np.array_equal(np.asarray(part.levels[r]), np.asarray(level)[index])
    assert list(part.labels) == [data.labels[i] for i in index]


def test_held_out_faces_leave_the_training_run_exactly_as_without_them(tmp_path):
    """The extra faces past --num-faces are scored, never trained on: with the same seed a run
    with --holdout ends with the weights of one without (augmentation off: nothing else draws)."""
    plain = Trainer(tiny_config(tmp_path / "a", num_faces=24), load_data(open_source(None, 24), 16))
    held = Trainer(tiny_config(tmp_path / "b", num_faces=24, holdout=8), load_data(open_source(None, 24 + 8), 16))
    assert held.data.count == 24 and held.heldout.count == 8 and plain.heldout is None
    assert np.array_equal(np.asarray(held.data.levels[16]), plain.data.levels[16])
    assert np.array_equal(np.asarray(held.heldout.levels[16]), load_data(open_source(None, 32), 16).levels[16][24:])
    assert plain.run(max_steps=6) == held.run(max_steps=6) == "paused"
    for p, q in zip(plain.D.parameters(), held.D.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(plain.G.parameters(), held.G.parameters()):
        assert torch.equal(p, q)


def test_a_folder_trains_on_the_images_it_does_not_hold_out(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (20 * i, 0, 255 - 20 * i)).save(folder / f"{i:02d}.png")
    data = load_data(open_source(str(folder)), 8)
    t = Trainer(tiny_config(tmp_path / "r", data=str(folder), resolution=8, holdout=3, seed=4), data)
    train, held = split_holdout(12, 3, seed=4, tail=False)
    assert t.data.count == 9 and t.heldout.count == 3
    assert np.array_equal(np.asarray(t.heldout.levels[8]), data.levels[8][held])
    assert np.array_equal(np.asarray(t.data.levels[8]), data.levels[8][train])


TINY = ["train", "--res", "8", "--fade-kimg", "0.008", "--stable-kimg", "0.008", "--total-kimg", "0.016",
        "--fmap-base", "64", "--fmap-max", "16", "--latent-dim", "16", "--batch", "8", "--workers", "0",
        "--grid", "2", "--no-tensorboard"]


def test_aug_ada_without_held_out_images_is_refused_in_one_line(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path / "r"), "--aug", "ada", "--holdout", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--aug ada" in err[0] and "--holdout must be 1 or more" in err[0]
    assert not (tmp_path / "r").exists()


def test_a_folder_holdout_takes_a_tenth_and_must_leave_images_to_train_on(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(folder / f"{i:02d}.png")
    assert main([*TINY, "--data", str(folder), "--out", str(tmp_path / "bad"), "--holdout", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--holdout 10 of 10 images leaves none to train on" in err[0]
    # 500 images shown: 56 passes over the 9 it trains on (the warning counts those)
    assert main([*TINY, "--data", str(folder), "--out", str(tmp_path / "r"), "--aug", "ada", "--total-kimg", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "holdout: 1 of these images are kept out of training" in out
    assert out.count("warning: --holdout 1: r_v from fewer than 100 held-out images is too noisy") == 1
    assert "warning: the run shows each of its 9 training images about 56 times" in out
    state = load_checkpoint(latest_checkpoint(tmp_path / "r"))
    assert state["config"]["holdout"] == 1 and 0.0 <= state["augment"]["p"].item() <= 1.0
