"""Conditional training runs: --cond prints and saves the classes, refuses labels it cannot
train on (one line, exit 2, nothing written), refuses a resume with another class set, and
resumes exactly (one process and two under torchrun)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastpggan.__main__ import main
from fastpggan.data import load_data, open_source
from fastpggan.data.faces import HAIR_NAMES
from fastpggan.training import TrainConfig, Trainer, latest_checkpoint, list_checkpoints, load_checkpoint

from test_distributed import TINY as TINY8, _final_weights, _torchrun
from test_train import _weights, tiny_config

# 48 built-in faces hold every hair colour (32 have no white: refused as an empty class)
FACES = TINY8 + ["--num-faces", "48"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _folder(top: Path, layout: dict[str, int]) -> Path:
    for k, (name, grey) in enumerate(layout.items()):
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (grey, 255 - grey, k * 7)).save(top / name)
    return top


def test_cond_on_the_built_in_faces_prints_and_saves_the_classes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--cond", "--out", str(out), "--batch", "8", *FACES]) == 0
    printed = capsys.readouterr().out
    data = load_data(open_source(None, 48), 8)
    counts = data.class_counts()
    line = "classes: 13 (" + ", ".join(f"{c} {n}" for c, n in zip(HAIR_NAMES, counts)) + ")"
    assert line in printed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["cond"] is True and cfg["classes"] == list(HAIR_NAMES) and cfg["class_counts"] == counts
    state = load_checkpoint(latest_checkpoint(out))
    assert state["config"]["classes"] == list(HAIR_NAMES)
    assert state["G_ema"]["dense.weight"].shape[1] == 16 + 13  # [z, one-hot]
    assert state["D"]["out.weight"].shape[0] == 1 + 13  # score, then the logits
    # the tick grid: one row per class, --grid 2 columns (64 px cells, 1 px gaps)
    grid = Image.open(sorted(out.glob("grid-8px-*.png"))[-1])
    assert grid.size == (2 * 65 - 1, 13 * 65 - 1)


@pytest.mark.parametrize("layout,message", [
    ({"top.png": 0, "a/x.png": 90, "b/y.png": 180}, "--cond: 1 of 3 images have no label (e.g. top.png)"),
    ({"a/x.png": 0, "a/y.png": 200}, "--cond: only one class (a): conditional training needs two or more"),
    ({"x.png": 0, "y.png": 200}, "--cond: "),  # no labels at all
])
def test_labels_that_cannot_train_are_refused_with_nothing_written(tmp_path, capsys, layout, message):
    data = _folder(tmp_path / "data", layout)
    out = tmp_path / "run"
    assert main(["train", "--cond", "--data", str(data), "--out", str(out), "--batch", "8", *TINY8]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_resuming_with_another_class_set_is_refused(tmp_path, capsys):
    data = _folder(tmp_path / "data", {"a/1.png": 0, "a/2.png": 60, "b/1.png": 120, "b/2.png": 180})
    out = tmp_path / "run"
    args = ["train", "--cond", "--data", str(data), "--out", str(out), "--batch", "4", *TINY8,
            "--total-kimg", "0.04"]
    assert main(args) == 0
    config = (out / "config.json").read_text()
    _folder(data / "c", {"1.png": 30, "2.png": 90})  # a third class
    capsys.readouterr()
    assert main(args[:-2] + ["--total-kimg", "0.048", "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classes a,b,c (checkpoint: a,b): the networks learn these classes" in err[0]
    assert (out / "config.json").read_text() == config
    # and an unconditional resume of the conditional run: --cond is fixed
    assert main(args[:1] + args[2:-2] + ["--total-kimg", "0.048", "--resume", "auto"]) == 2
    assert "--cond False (checkpoint: True)" in capsys.readouterr().err


def _cond_config(out: Path, data) -> TrainConfig:
    return tiny_config(out, cond=True, classes=list(data.class_names), class_counts=data.class_counts())


def test_conditional_resume_is_exact(tmp_path):
    data = load_data(open_source(None, 64), 16)
    total, n_steps = 8, 5  # stopped in the 8px fade
    straight = Trainer(_cond_config(tmp_path / "a", data), data)
    assert straight.G.label_size == 13 and straight.train_labels is not None
    assert straight.run(max_steps=total) == "paused"
    first = Trainer(_cond_config(tmp_path / "b", data), data)
    assert first.run(max_steps=n_steps) == "paused"
    ckpt = latest_checkpoint(tmp_path / "b")
    del first
    torch.manual_seed(321)
    resumed = Trainer(_cond_config(tmp_path / "b", data), data, resume=load_checkpoint(ckpt))
    assert resumed.run(max_steps=total - n_steps) == "paused"
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_torchrun_conditional_run_resumes_exactly(tmp_path):
    a = tmp_path / "a"
    _torchrun("--cond", "--out", str(a), "--batch", "8", *FACES, cwd=tmp_path)
    ckpts = list_checkpoints(a)
    assert load_checkpoint(ckpts[-1])["config"]["classes"] == list(HAIR_NAMES)
    b = tmp_path / "b"
    proc = _torchrun("--cond", "--out", str(b), "--batch", "8", "--resume", str(ckpts[1]), *FACES, cwd=tmp_path)
    assert "resuming from" in proc.stdout and "reseeded" not in proc.stdout
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
