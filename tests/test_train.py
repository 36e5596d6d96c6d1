"""Training: schedule, Adam resets, an end-to-end tiny run, exact resume (also mid-fade),
training on a messy folder, signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from fastpggan.__main__ import main
from fastpggan.data import load_data, open_source
from fastpggan.training import TrainConfig, Trainer, latest_checkpoint, list_checkpoints, load_checkpoint
from fastpggan.training.run import prepare_reals

# Tiny model and schedule: res 16 = 4px 32 images, then 8 and 16px 32 fading + 32 stable each
# (batch 8: a phase ends one step after its images are used up, as the authors' schedule does).
TINY = ["--fmap-base", "64", "--fmap-max", "16", "--latent-dim", "16", "--batch", "8",
        "--num-faces", "64", "--workers", "0", "--grid", "2", "--no-tensorboard"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(out: Path, **kw) -> TrainConfig:
    base = dict(
        resolution=16, num_faces=64, out=str(out), fade_kimg=0.032, stable_kimg=0.032, total_kimg=0.16, batch={r: 8 for r in (4, 8, 16)},
        latent_dim=16, fmap_base=64, fmap_max=16, grid=2, tick_kimg=0.05, log_kimg=0.02,
        tensorboard=False, progress=False, cache_dir=None,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_prepare_reals_scales_mirrors_and_fades():
    x = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    flip = torch.tensor([True, False])
    r = prepare_reals(x, flip, 1.0, mirror=True)
    ref = x.permute(0, 3, 1, 2).float() / 127.5 - 1
    assert r.shape == (2, 3, 4, 4) and r.is_contiguous()
    torch.testing.assert_close(r[0], ref[0].flip(2))
    torch.testing.assert_close(r[1], ref[1])
    torch.testing.assert_close(prepare_reals(x, flip, 1.0, mirror=False), ref)
    blurred = prepare_reals(x, flip, torch.tensor(0.0), mirror=False)
    coarse = torch.nn.functional.avg_pool2d(ref, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(blurred, coarse)


def test_end_to_end_tiny_run_writes_everything(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--res", "16", "--out", str(out), "--fade-kimg", "0.032", "--stable-kimg", "0.032", "--total-kimg", "0.16", "--tick-kimg", "0.05",
            "--log-kimg", "0.02", "--ckpt-ticks", "1", "--keep-ckpts", "2", *TINY]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolution"] == 16 and cfg["batch"]["16"] == 8 and cfg["device"] == "cpu"
    assert cfg["tf32"] is False  # IEEE fp32 unless asked, whatever torch defaults to
    ckpts = list_checkpoints(out)
    assert len(ckpts) == 2 and ckpts[-1].name == "ckpt-00000.160kimg-16px.pt"
    state = load_checkpoint(ckpts[-1])
    assert state["progress"]["images"] == 160
    assert set(state) >= {"G", "D", "G_ema", "opt_g", "opt_d", "progress", "rng", "config"}
    grids = sorted(p.name for p in out.glob("grid-*.png"))
    for res in (4, 8, 16):  # every phase end has a grid, small ones upscaled to be viewable
        assert any(g.startswith(f"grid-{res}px-") for g in grids)
    from PIL import Image
    assert Image.open(out / "grid-4px-00000.040kimg.png").size == (129, 129)  # 2 x 64 px + gap
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    logs = [r for r in recs if r["kind"] == "log"]
    assert logs and all(k in logs[0] for k in ("d_loss", "g_loss", "gp", "img_per_s", "res", "fade", "lod", "lr", "epoch"))
    # 64 faces: the epoch is the images seen over 64; the authors' lr preset is logged per phase.
    assert logs[-1]["epoch"] == pytest.approx(160 / 64, abs=1e-3) and logs[-1]["lod"] == 0.0
    assert [(r["res"], r["lr"], r["batch"]) for r in recs if r["kind"] == "phase"] == [(4, 1e-3, 8), (8, 1e-3, 8), (16, 1e-3, 8)]
    assert [r["kind"] for r in recs].count("phase_end") == 3 and recs[-1]["event"] == "done"
    assert not list(out.glob(".*tmp*"))  # no temp files left over
    # Done: --resume auto on a finished run has nothing left to do; --tf32 may change on
    # resume, and on a CPU it is said to change nothing.
    capsys.readouterr()
    assert main(args + ["--resume", "auto", "--tf32"]) == 0
    assert "note: --tf32 has no effect on cpu" in capsys.readouterr().out


def test_tensorboard_events_are_written(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    from fastpggan.training.runlog import RunLog

    log = RunLog(tmp_path, tensorboard=True)
    log.record("log", 100, d_loss=1.0, res=4)
    from PIL import Image
    log.image("samples", Image.new("RGB", (4, 4)), 100)
    log.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def _weights(t: Trainer) -> dict[str, torch.Tensor]:
    flat = {}
    for name, sd in (("G", t.G.state_dict()), ("D", t.D.state_dict()), ("E", t.G_ema.state_dict())):
        flat.update({f"{name}.{k}": v for k, v in sd.items()})
    for name, opt in (("og", t.opt_g), ("od", t.opt_d)):
        for i, st in opt.state_dict()["state"].items():
            flat.update({f"{name}.{i}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return flat


@pytest.mark.parametrize("n_steps", [3, 6])  # 3: inside 4x4; 6: in the middle of the 8px fade
def test_resume_is_exact(tmp_path, n_steps):
    data = load_data(open_source(None, 64), 16)
    total = 10  # crosses into the 8px stable half (an Adam reset) after the stop
    straight = Trainer(tiny_config(tmp_path / "a"), data)
    assert straight.run(max_steps=total) == "paused"

    first = Trainer(tiny_config(tmp_path / "b"), data)
    assert first.run(max_steps=n_steps) == "paused"
    ckpt = latest_checkpoint(tmp_path / "b")
    pos = first.schedule.at(first.progress.images)
    if n_steps == 6:
        assert not pos.stable and 0 < pos.fade < 1
    del first
    torch.manual_seed(123)  # resuming must not depend on the global RNG state
    resumed = Trainer(tiny_config(tmp_path / "b"), data, resume=load_checkpoint(ckpt))
    assert resumed.run(max_steps=total - n_steps) == "paused"

    assert resumed.progress.images == straight.progress.images == total * 8
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_adam_state_is_reset_when_the_level_of_detail_changes(tmp_path):
    data = load_data(open_source(None, 16), 16)
    t = Trainer(tiny_config(tmp_path), data)
    t.run(max_steps=5)  # the whole 4x4 phase: images 0, 8, ..., 32 (still 4x4): 5 Adam steps
    assert next(iter(t.opt_g.state.values()))["step"].item() == 5
    t.run(max_steps=1)  # first step of the 8px fade: fresh moments
    assert next(iter(t.opt_g.state.values()))["step"].item() == 1


def test_trains_on_a_messy_folder(tmp_path, capsys):
    from test_data import _write_mixed_folder

    _write_mixed_folder(tmp_path / "data")
    out = tmp_path / "run"
    rc = main(["train", "--res", "8", "--data", str(tmp_path / "data"), "--out", str(out),
               "--fade-kimg", "0.016", "--stable-kimg", "0.016", "--total-kimg", "0.048", *TINY])
    assert rc == 0
    err = capsys.readouterr().out
    assert err.count("skipped 2 files") == 1 and err.count("smaller than 8px") == 1
    assert latest_checkpoint(out).name == "ckpt-00000.048kimg-8px.pt"


def test_sigterm_writes_a_checkpoint_and_stops(tmp_path):
    data = load_data(open_source(None, 16), 16)
    t = Trainer(tiny_config(tmp_path), data)
    sent = []

    def send_once(*a, **k):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    import fastpggan.training.run as run

    orig = run.ema_update
    run.ema_update = lambda *a: (orig(*a), send_once())
    try:
        assert t.run() == "interrupted"
    finally:
        run.ema_update = orig
    assert t.stopped_by == signal.SIGTERM
    ckpt = latest_checkpoint(tmp_path)
    assert load_checkpoint(ckpt)["progress"]["step"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
