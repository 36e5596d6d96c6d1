"""Checkpoints: atomic writes, newest-first discovery, and refusal of pickles that run code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fastpggan import atomic
from fastpggan.atomic import DiskFullError, clean_temp_files, temp_path
from fastpggan.training.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_newest_good,
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
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
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


def _state(v: float = 1.0) -> dict:
    return {"format": FORMAT, "w": torch.full((300,), v), "h": torch.arange(7, dtype=torch.bfloat16),
            "flag": torch.tensor(True), "progress": {"images": 5, "segment": [0, False]}, "t": (1, "x")}


def test_one_flipped_bit_on_disk_is_refused(tmp_path):
    path = save_checkpoint(_state(0.25), tmp_path / checkpoint_name(5, 4))
    data = bytearray(path.read_bytes())
    at = data.find(torch.full((1,), 0.25).numpy().tobytes())
    assert at > 0
    data[at] ^= 1  # one float of w changed, the zip structure intact
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: its contents do not match the checksum"):
        load_checkpoint(path)


def test_checksum_covers_non_tensor_values(tmp_path):
    from fastpggan.training.checkpoint import state_digest

    a = _state()
    b = _state()
    b["progress"]["images"] = 6
    assert state_digest(a) != state_digest(b)
    assert state_digest(a) == state_digest(_state())


def test_unclear_errors_become_one_clear_line(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "notes.pt").write_text("some notes, not weights\n")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    whole = save_checkpoint(_state(), tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="is damaged or truncated") as e:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(e.value)


def test_resume_auto_falls_back_to_the_newest_good(tmp_path):
    save_checkpoint(_state(1.0), tmp_path / checkpoint_name(1000, 4))
    save_checkpoint(_state(2.0), tmp_path / checkpoint_name(2000, 4))
    (tmp_path / checkpoint_name(3000, 4)).write_bytes(b"")  # an empty newest file
    state, path, damaged = load_newest_good(tmp_path)
    assert path.name == checkpoint_name(2000, 4) and torch.equal(state["w"], torch.full((300,), 2.0))
    assert [p.name for p, _ in damaged] == [checkpoint_name(3000, 4)] and "empty" in damaged[0][1]
    assert load_newest_good(tmp_path / "nothing") == (None, None, [])


class _FullDisk:
    """A file on a disk that fills up after ``room`` bytes (the OS's ENOSPC)."""

    def __init__(self, path, room):
        self.f = open(path, "wb")
        self.room = room

    def write(self, data):
        n = len(memoryview(data).cast("B"))
        if n > self.room:
            self.f.write(bytes(memoryview(data).cast("B")[: self.room]))
            self.room = 0
            raise OSError(28, "No space left on device")
        self.room -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("fill", [0.0, 0.05, 0.5, 0.99])
def test_disk_full_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, fill):
    good = save_checkpoint(_state(1.0), tmp_path / checkpoint_name(1000, 4))
    room = int(good.stat().st_size * fill)  # the disk fills up this far into the write
    monkeypatch.setattr(atomic, "_open_temp", lambda p: _FullDisk(p, room))
    with pytest.raises(DiskFullError) as e:
        save_checkpoint(_state(2.0), tmp_path / checkpoint_name(2000, 4))
    msg = str(e.value)
    assert msg.startswith("disk full: could not write checkpoint") and str(tmp_path) in msg and "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no partial file, no temp
    assert torch.equal(load_checkpoint(good)["w"], torch.full((300,), 1.0))


def test_leftover_temp_files_are_cleaned(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    keep = tmp_path / "notes.tmp"
    keep.write_text("a user's file")
    mine = temp_path(tmp_path / "ckpt-00001.000kimg-4px.pt")
    old_style = tmp_path / f".ckpt-00002.000kimg-4px.pt.tmp-{dead}"
    cache_dead = tmp_path / f".0123456789abcdef0123.tmp-{atomic.HOST}-{dead}"
    cache_live = tmp_path / f".0123456789abcdef0123.tmp-{atomic.HOST}-{os.getpid()}"
    cache_other_host = tmp_path / f".0123456789abcdef0123.tmp-elsewhere-{dead}"
    for p in (mine, old_style):
        p.write_bytes(b"partial")
    for p in (cache_dead, cache_live, cache_other_host):
        p.mkdir()
    # a shared cache folder: only temps of dead processes of this machine go
    assert set(clean_temp_files(tmp_path, owned=False)) == {old_style, cache_dead}
    # a locked run folder: every temp is a leftover
    assert set(clean_temp_files(tmp_path, owned=True)) == {mine, cache_live, cache_other_host}
    assert [p.name for p in tmp_path.iterdir()] == ["notes.tmp"]


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
