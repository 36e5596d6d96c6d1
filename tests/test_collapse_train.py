"""The collapse watch in training and in ``evaluate --metric diversity``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from fastpggan.__main__ import main
from fastpggan.data import load_data, open_source
from fastpggan.metrics.diversity import RATIO_NAMES, CollapseWatch
from fastpggan.training import TrainConfig, Trainer
from fastpggan.training import collapse as collapse_mod

pytestmark = pytest.mark.usefixtures("one_thread")

# res 16 = 4 px for 32 images, 8 and 16 px 32 fading + 32 stable each (batch 8; a phase ends one
# step after its images are used up: at 40 and 104); ticks every 48 images: at 48 (8 px fade),
# 96 (8 px stable) and 144 (16 px, stable, not a phase end).
TINY = ["--res", "16", "--fade-kimg", "0.032", "--stable-kimg", "0.032", "--total-kimg", "0.16",
        "--tick-kimg", "0.048", "--log-kimg", "0.048",
        "--fmap-base", "64", "--fmap-max", "16", "--latent-dim", "16", "--batch", "8",
        "--num-faces", "64", "--workers", "0", "--grid", "2", "--no-tensorboard"]


def records(out: Path, kind: str) -> list[dict]:
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == kind]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("collapse") / "run"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        assert main(["train", "--out", str(out), "--ckpt-ticks", "1", "--keep-ckpts", "10", *TINY]) == 0
    return out, buf.getvalue()


def test_every_tick_writes_a_diversity_record_and_shows_it(run):
    out, console = run
    div = records(out, "diversity")
    ticks = records(out, "tick") + records(out, "phase_end")
    assert sorted(r["kimg"] for r in div) == sorted(r["kimg"] for r in ticks)
    for r in div:
        for name in ("colour", "structure", "nearest"):
            assert {name, f"{name}_real", f"{name}_ratio"} <= set(r)
            assert r[f"{name}_ratio"] >= 0 and r[f"{name}_real"] > 0
        assert r["seconds"] >= 0 and r["res"] in (4, 8, 16)
        assert ("hair_coverage" in r) == (r["res"] >= 16)  # the built-in faces, from 16 px
    assert console.count(" div colour ") == len(ticks)
    # the watch's state travels in checkpoints, so a resumed run goes on counting
    from fastpggan.training import load_checkpoint

    watch = load_checkpoint(out / "ckpt-00000.144kimg-16px.pt")["progress"]["diversity_watch"]
    assert watch["ticks"] == len([r for r in div if r["kimg"] <= 0.144])
    resumed = CollapseWatch()
    resumed.load_state_dict(watch)
    assert resumed.state_dict() == watch
    assert json.loads((out / "config.json").read_text())["diversity_threshold"] == 0.75


def test_evaluate_gives_the_training_numbers(run, tmp_path, capsys):
    out, _ = run
    (rec,) = [r for r in records(out, "diversity") if r["kimg"] == 0.144]  # 16 px, stable
    ckpt = out / "ckpt-00000.144kimg-16px.pt"
    res_json = tmp_path / "d.json"
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(ckpt), "--metric", "diversity", "--out", str(res_json),
                 "--device", "cpu"]) == 0
    results = json.loads(res_json.read_text())["results"]
    want = {k: v for k, v in rec.items() if k.startswith(("colour", "structure", "nearest", "hair"))}
    assert want and {k: results[k] for k in want} == want


def test_no_diversity_turns_it_off_and_a_bad_threshold_is_refused(tmp_path, capsys):
    out = tmp_path / "off"
    assert main(["train", "--out", str(out), "--no-diversity", *TINY]) == 0
    assert records(out, "diversity") == [] and " div " not in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["diversity"] is False
    for bad in ("0", "-1", "nan"):
        assert main(["train", "--out", str(tmp_path / "bad"), "--diversity-threshold", bad, *TINY]) == 2
        assert "--diversity-threshold" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_collapsed_generator_warns_once_during_training(tmp_path, monkeypatch):
    # watch from the first tick, warn after 2 low ones: the tiny run has 3 ticks
    monkeypatch.setattr(collapse_mod, "CollapseWatch", functools.partial(CollapseWatch, patience=2, arm_ticks=0))
    cfg = TrainConfig(
        resolution=16, num_faces=64, out=str(tmp_path / "run"), fade_kimg=0.032, stable_kimg=0.032, total_kimg=0.16,
        batch={r: 8 for r in (4, 8, 16)}, latent_dim=16, fmap_base=64, fmap_max=16, grid=2,
        tick_kimg=0.048, log_kimg=0.048, tensorboard=False, progress=False,
    )
    data = load_data(open_source(None, 64), 16, tmp_path / "cache")
    lines: list[str] = []
    trainer = Trainer(cfg, data, echo=lines.append)
    # a generator that always draws the same grey image: no variety at all
    trainer.G_ema.forward = lambda z, res, fade: torch.zeros(z.shape[0], 3, res, res)
    assert trainer.run() == "done"
    div = records(Path(cfg.out), "diversity")
    assert all(r[k] == 0 for r in div for k in RATIO_NAMES)
    warnings = [line for line in lines if "losing" in line]
    assert len(warnings) == 1, lines
    assert all(s in warnings[0] for s in ("--batch", "--lr", "--resume"))
    events = [r for r in records(Path(cfg.out), "event") if r.get("event") == "diversity warning"]
    assert len(events) == 1 and events[0]["message"] == warnings[0]


@pytest.mark.slow
def test_the_shortened_quick_run_does_not_warn_and_covers_hair_colours(tmp_path, capsys):
    """The README's quick run, shortened to 16 px and 4 kimg per phase (10 kimg). Measured on the
    development CPU: no warning, final hair coverage 0.51 (0.22 to 0.51 over its 16 px ticks);
    a one-hair-colour collapse scores at most 0.16."""
    out = tmp_path / "quick"
    assert main(["train", "--res", "16", "--fade-kimg", "2", "--stable-kimg", "2", "--total-kimg", "10",
                 "--batch", "16", "--lr", "2e-3",
                 "--fmap-base", "512", "--fmap-max", "64", "--latent-dim", "64", "--num-faces", "2000",
                 "--ema-beta", "0.99", "--tick-kimg", "1", "--no-tensorboard", "--out", str(out)]) == 0
    console = capsys.readouterr()
    assert "losing" not in console.out + console.err
    div = records(out, "diversity")
    assert len(div) >= 10
    assert div[-1]["res"] == 16 and div[-1]["hair_coverage"] >= 0.2
