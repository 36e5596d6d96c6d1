"""Checkpoints: atomic writes, newest-first discovery, and refusal of pickles that run code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fastpggan.training.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


class _RunsCode:
    """Unpickling this would run a shell command (the classic malicious checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / checkpoint_name(100, 8)
    torch.save({"format": FORMAT, "G": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_save_is_atomic_and_roundtrips(tmp_path):
    state = {"format": FORMAT, "w": torch.arange(5.0), "progress": {"images": 3, "segment": [1, True]}}
    path = save_checkpoint(state, tmp_path / checkpoint_name(3, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left
    back = load_checkpoint(path)
    assert torch.equal(back["w"], state["w"]) and back["progress"] == state["progress"]


def test_failed_save_leaves_the_old_file_intact(tmp_path):
    path = save_checkpoint({"format": FORMAT, "v": torch.ones(1)}, tmp_path / "c.pt")
    with pytest.raises(Exception):
        save_checkpoint({"format": FORMAT, "bad": lambda: 0}, path)  # lambdas do not pickle
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a fastpggan checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_latest_is_by_images_seen(tmp_path):
    for images, res in ((999, 8), (10_500, 16), (2_000, 8)):
        save_checkpoint({"format": FORMAT}, tmp_path / checkpoint_name(images, res))
    (tmp_path / "ckpt-notes.pt").write_text("ignored")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt-00000.999kimg-8px.pt", "ckpt-00002.000kimg-8px.pt", "ckpt-00010.500kimg-16px.pt"]
    assert latest_checkpoint(tmp_path).name == "ckpt-00010.500kimg-16px.pt"
    assert latest_checkpoint(tmp_path / "none") is None


def test_checkpoint_with_the_old_generator_layer_is_refused_in_one_line(tmp_path, capsys):
    # Before G's first layer matched the authors' (one bias per channel), it also had a bias per
    # channel and pixel, "dense.bias". Such checkpoints cannot be converted exactly: refused.
    from fastpggan import Generator
    from fastpggan.__main__ import main

    G = Generator(8, latent_dim=8, fmap_base=32, fmap_max=8, impl="reference")
    old = {**G.state_dict(), "dense.bias": torch.zeros(16 * 8)}
    path = save_checkpoint({"format": FORMAT, "G": old, "G_ema": old, "config": {}, "progress": {"images": 0}},
                           tmp_path / checkpoint_name(0, 8))
    with pytest.raises(CheckpointError, match="bias per pixel in its first layer.*start a new run"):
        load_checkpoint(path)
    assert main(["generate", "--ckpt", str(path), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be converted exactly" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err
