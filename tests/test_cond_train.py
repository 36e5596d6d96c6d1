"""Conditional training runs: --cond prints and saves the classes, refuses labels it cannot
train on (one line, exit 2, nothing written), refuses a resume with another class set, and
resumes exactly (one process and two under torchrun)."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastpggan.__main__ import main
from fastpggan.data import load_data, open_source
from fastpggan.data.faces import HAIR_NAMES
from fastpggan.networks import Generator
from fastpggan.training import TrainConfig, Trainer, latest_checkpoint, list_checkpoints, load_checkpoint
from fastpggan.training.checkpoint import save_checkpoint

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


# --- the collapse watch within each class, class accuracy at ticks ---------------------------
def _face_maker(collapsed: int):
    """A stand-in conditional G_ema: a fresh built-in face of the asked hair colour for every
    latent, except class ``collapsed``, which always gets the same face (no variety within it)."""
    from fastpggan.data.faces import render_face

    def forward(z, res, fade, labels):
        out = []
        for zi, y in zip(z, labels.tolist()):
            index = 0 if y == collapsed else 1000 + int(abs(float(zi[0])) * 1e6) % 100_000
            out.append(torch.from_numpy(np.array(render_face(index, res, hair=y))).permute(2, 0, 1))
        return torch.stack(out).float() / 127.5 - 1
    return forward


def test_a_class_that_lost_its_variety_is_named_and_class_accuracy_is_measured(tmp_path, monkeypatch):
    from test_collapse_train import records
    from fastpggan.metrics.diversity import RATIO_NAMES, CollapseWatch
    from fastpggan.training import collapse as collapse_mod

    monkeypatch.setattr(collapse_mod, "CollapseWatch", functools.partial(CollapseWatch, patience=2, arm_ticks=0))
    data = load_data(open_source(None, 600), 16, tmp_path / "cache")  # 36+ reals per class
    cfg = _cond_config(tmp_path / "run", data)
    cfg = dataclasses.replace(cfg, num_faces=600, tick_kimg=0.048, log_kimg=0.048)
    lines: list[str] = []
    trainer = Trainer(cfg, data, echo=lines.append)
    trainer.G_ema.forward = _face_maker(collapsed=3)  # red
    assert trainer.run() == "done"
    div = [r for r in records(Path(cfg.out), "diversity") if r["res"] == 16]
    assert div and all(r["class_accuracy"] > 0.97 for r in div)  # the faces have the asked hair
    assert all(r[f"red.{k}"] < 0.3 for r in div for k in ("colour_ratio", "nearest_ratio"))
    warnings = [line for line in lines if "losing" in line]
    assert len(warnings) == 1 and "samples of class 'red' are losing variety" in warnings[0], warnings
    assert any("lowest class red" in line for line in lines)
    state = trainer.collapse.state_dict()
    assert state["classes"]["red"]["low"]["colour_ratio"] >= 2  # kept in checkpoints


# --- generate --class ----------------------------------------------------------------------
def _fitted_checkpoint(tmp_path: Path) -> Path:
    """A tiny conditional 16 px run's checkpoint whose G_ema is then fitted, by regression, to
    draw one built-in face per hair colour: a generator that certainly makes the asked class,
    so the test checks generate's handling of --class, not how fast a GAN learns."""
    from fastpggan.data.faces import render_face

    out = tmp_path / "run"
    assert main(["train", "--cond", "--res", "16", "--out", str(out), "--fade-kimg", "0.016", "--stable-kimg",
                 "0.016", "--total-kimg", "0.08", *FACES[FACES.index("--fmap-base"):], "--batch", "8"]) == 0
    path = latest_checkpoint(out)
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    G = Generator(16, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, impl="reference", label_size=13)
    G.load_state_dict(state["G_ema"])
    # the latent's weights held at 0 (the pixel norm, the LeakyReLU and the next pixel norm
    # then leave the label alone to decide the image), so a few hundred steps fit the 13 faces
    with torch.no_grad():
        G.dense.weight[:, : cfg.latent_dim] = 0
    G.dense.weight.register_hook(lambda grad: torch.cat([torch.zeros_like(grad[:, : cfg.latent_dim]),
                                                         grad[:, cfg.latent_dim:]], 1))
    target = torch.stack([torch.from_numpy(np.array(render_face(5, 16, hair=c))).permute(2, 0, 1)
                          for c in range(13)]).float() / 127.5 - 1
    opt = torch.optim.Adam(G.parameters(), lr=0.01)
    G.train()
    labels = torch.arange(13)
    g = torch.Generator().manual_seed(0)
    for _ in range(700):
        z = torch.randn(len(labels), cfg.latent_dim, generator=g)
        loss = (G(z, 16, 1.0, labels) - target[labels]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.03, loss.item()
    state["G_ema"] = G.state_dict()
    save_checkpoint({k: v for k, v in state.items() if k != "sha256"}, path)
    return path


def test_generate_class_gives_the_asked_class(tmp_path, capsys):
    from fastpggan.metrics.diversity import hair_classes

    ckpt = _fitted_checkpoint(tmp_path)
    for spec, want in (("red", [3] * 6), ("7,blonde", [7, 2] * 3)):
        png = tmp_path / f"{spec}.png"
        assert main(["generate", "--ckpt", str(ckpt), "--n", "6", "--class", spec, "--out", str(png)]) == 0
        sheet = np.asarray(Image.open(png))  # 3 x 2 cells of 64 px (16 px upscaled 4x), 1 px gaps
        cells = [sheet[r * 65: r * 65 + 64: 4, c * 65: c * 65 + 64: 4] for r in range(2) for c in range(3)]
        read = hair_classes(torch.from_numpy(np.stack(cells)).permute(0, 3, 1, 2).contiguous())
        assert read.tolist() == want
    assert "class red" in capsys.readouterr().out
    # a walk stays in its class
    gif = tmp_path / "walk.gif"
    assert main(["generate", "--ckpt", str(ckpt), "--n", "1", "--class", "blue", "--interpolate", "2",
                 "--out", str(gif)]) == 0
    frames = Image.open(gif)
    for k in range(frames.n_frames):
        frames.seek(k)
        cell = np.array(frames.convert("RGB"))[::4, ::4]
        assert hair_classes(torch.from_numpy(cell).permute(2, 0, 1)[None].contiguous()).tolist() == [5]
    # refusals: one line each, nothing written
    capsys.readouterr()
    assert main(["generate", "--ckpt", str(ckpt), "--class", "mauve", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--class 'mauve': no such class; the checkpoint's classes are 0:black-brown, 1:brown" in err
    assert "\n" not in err and not (tmp_path / "x.png").exists()


def test_class_on_an_unconditional_checkpoint_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--batch", "8", *TINY8]) == 0
    capsys.readouterr()
    png = tmp_path / "x.png"
    assert main(["generate", "--ckpt", str(latest_checkpoint(out)), "--class", "red", "--out", str(png)]) == 2
    assert "--class: this checkpoint is unconditional (trained without --cond)" in capsys.readouterr().err
    assert not png.exists()


def test_metric_points_of_a_conditional_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--cond", "--res", "16", "--out", str(out), "--fade-kimg", "0.016", "--stable-kimg", "0.016",
                 "--total-kimg", "0.08", *FACES[FACES.index("--fmap-base"):], "--batch", "8",
                 "--metric-every", "0.04", "--metric-n", "16"]) == 0
    metrics = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"metric"' in line]
    assert any("swd_x1e3_avg" in r for r in metrics)


def test_several_classes_losing_variety_make_one_line(tmp_path):
    from fastpggan.training.collapse import CollapseMonitor

    data = load_data(open_source(None, 64), 16)
    z = torch.zeros(40, 16)
    monitor = CollapseMonitor(data, z, 0.75, torch.zeros(40, dtype=torch.int64), torch.arange(13))
    monitor.class_watches = [type(w)(0.75, patience=1, arm_ticks=0, who=w.who) for w in monitor.class_watches]
    values = {f"{n}.colour_ratio": (0.5 if n in ("red", "blue") else 1.0) for n in HAIR_NAMES}
    line = monitor.check(values)
    assert line is not None and "\n" not in line
    assert line.startswith("warning: samples of 2 classes are losing variety") and "red colour 0.50; blue colour 0.50" in line
    values["blue.colour_ratio"] = 1.0
    values["red.colour_ratio"] = 0.3  # worse: warns again, for red alone
    assert monitor.check(values).startswith("warning: samples of class 'red' are losing even more variety")


def test_evaluate_a_conditional_checkpoint_per_class(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--cond", "--res", "16", "--out", str(out), "--fade-kimg", "0.016", "--stable-kimg", "0.016",
                 "--total-kimg", "0.064", *FACES[FACES.index("--fmap-base"):], "--batch", "8"]) == 0
    capsys.readouterr()
    res_json = tmp_path / "e.json"
    assert main(["evaluate", "--ckpt", str(latest_checkpoint(out)), "--n", "26", "--metric", "swd,diversity",
                 "--out", str(res_json)]) == 0
    r = json.loads(res_json.read_text())["results"]
    assert set(r["per_class"]) == set(HAIR_NAMES) and 0 <= r["class_accuracy"] <= 1
    assert all(0 <= v["class_accuracy"] <= 1 for v in r["per_class"].values())
    # each class's SWD on its own reals (n: at most the class's images); white has 1 of the 48
    # faces, too few for a measure
    counts = dict(zip(HAIR_NAMES, load_data(open_source(None, 48), 8).class_counts()))
    for name, v in r["per_class"].items():
        assert ("swd_x1e3_avg" in v) == (counts[name] >= 2) and v.get("n", counts[name]) == min(26, counts[name])
    assert "watch_class_accuracy" in r and "red.colour_ratio" in r


def test_a_zip_with_a_labels_file_trains(tmp_path, capsys):
    import zipfile

    images = _folder(tmp_path / "imgs", {f"{k}.png": 30 * k for k in range(6)})
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for k in range(6):
            z.write(images / f"{k}.png", f"{k}.png")
        z.writestr("dataset.json", json.dumps({"labels": [[f"{k}.png", k % 2] for k in range(6)],
                                               "class_names": ["even", "odd"]}))
    out = tmp_path / "run"
    assert main(["train", "--cond", "--data", str(zpath), "--out", str(out), "--batch", "2", *TINY8,
                 "--total-kimg", "0.04"]) == 0
    assert "classes: 2 (even 3, odd 3)" in capsys.readouterr().out
    assert load_checkpoint(latest_checkpoint(out))["config"]["classes"] == ["even", "odd"]
