"""The training loop's events one at a time (:class:`fastpggan.training.run.Run`): what a step
ends (:class:`Due`), the scalar record, a tick, the checkpoint cadence, a stop; and the one way
:class:`Progress` steps an interval. Whole runs are in test_train.py."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from test_train import tiny_config

from fastpggan.data import load_data, open_source
from fastpggan.training import Trainer, list_checkpoints
from fastpggan.training.progress import Progress
from fastpggan.training.run import Due, Run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_data(open_source(None, 16), 16)


@pytest.fixture
def trainer(tmp_path, data):
    # tiny_config: batch 8; 4px = 32 images (stable only), 8px and 16px = 32 fade + 32 stable;
    # a record every 20 images, a tick every 50. A phase ends after the step taken once its
    # images are used up (the step from 32 still trains 4px, as in the authors' schedule).
    t = Trainer(tiny_config(tmp_path, ckpt_ticks=2), data)
    t.out.mkdir(parents=True, exist_ok=True)
    run = Run(t)  # tiny_config: no TensorBoard
    run._begin()
    yield t, run
    run.close()


def records(t: Trainer, kind: str) -> list[dict]:
    lines = (t.out / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def set_progress(t: Trainer, **counters) -> None:
    for k, v in counters.items():
        setattr(t.progress, k, v)


def due_after_step(run: Run, images_before: int, **progress) -> Due:
    """Set the counters as after one step of 8 images from ``images_before``; what is due?"""
    set_progress(run.trainer, images=images_before + 8, **progress)
    return run._due(run.trainer.schedule.at(images_before))


def test_due_names_what_a_step_ends(trainer) -> None:
    t, run = trainer
    assert due_after_step(run, 0) == Due(log=False, tick=False, phase_end=False, metric=False)
    assert not Due(False, False, False, False).record
    assert due_after_step(run, 16) == Due(log=True, tick=False, phase_end=False, metric=False)  # 24 >= 20
    assert due_after_step(run, 24, next_log=40) == Due(log=False, tick=False, phase_end=False, metric=False)
    assert due_after_step(run, 32, next_log=60) == Due(log=False, tick=False, phase_end=True, metric=False)
    assert due_after_step(run, 48, next_log=60) == Due(log=False, tick=True, phase_end=False, metric=False)
    last = t.schedule.total_images - 8
    assert due_after_step(run, last, next_log=10**9, next_tick=10**9).phase_end  # the run's end
    # A metric point at every metric_every images and at each phase end, only when metrics are on.
    t.cfg.metric_every = 0.04
    t.progress.next_metric = 40
    assert due_after_step(run, 32, next_log=60).metric  # phase end (and 40 images)
    assert due_after_step(run, 24, next_log=60, next_metric=32).metric  # 32 images
    assert not due_after_step(run, 24, next_log=60, next_metric=40).metric
    assert not due_after_step(run, 8, next_log=60).metric
    assert all(Due(**{k: k == name for k in ("log", "tick", "phase_end", "metric")}).record
               for name in ("log", "tick", "phase_end", "metric"))


def test_a_record_writes_the_means_and_restarts_the_statistics(trainer) -> None:
    t, run = trainer
    set_progress(t, images=24, step=3)
    run.stats.sums += torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 0.5, 0.25])
    run.stats.sums += torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0, 0.5, 0.25])
    run.stats.steps = 2
    vals, speed = run._log_stats(t.schedule.at(16))
    # no --holdout: no held-out score, and no r_v
    assert vals == {"d_loss": 2.0, "d_real": 2.0, "d_fake": 2.0, "gp": 2.0, "g_loss": 2.0, "aug_p": 0.25}
    assert speed > 0
    (rec,) = records(t, "log")
    assert rec["kimg"] == 0.024 and rec["res"] == 4 and rec["batch"] == 8 and rec["d_loss"] == 2.0
    assert run.stats.sums.eq(0).all() and run.stats.steps == 0 and run.stats.images == 24
    assert t.progress.next_log == 40  # the next multiple of log_kimg


def test_a_tick_writes_a_grid_and_moves_the_tick_counters(trainer) -> None:
    t, run = trainer
    set_progress(t, images=56)
    vals = dict.fromkeys(("d_loss", "d_real", "d_fake", "gp", "g_loss"), 0.5)
    run._on_tick(t.schedule.at(48), Due(log=True, tick=True, phase_end=False, metric=False), vals, 10.0)
    (rec,) = records(t, "tick")
    assert (t.out / rec["grid"]).is_file() and rec["grid"].startswith("grid-8px-")
    assert t.progress.ticks == 1 and t.progress.next_tick == 100
    # A phase end that is not a tick: a grid and a record, but the tick counters stay.
    run._on_tick(t.schedule.at(48), Due(log=False, tick=False, phase_end=True, metric=False), vals, 10.0)
    assert len(records(t, "phase_end")) == 1 and t.progress.ticks == 1


def test_checkpoints_at_every_ckpt_ticks_th_tick_and_every_phase_end(trainer, monkeypatch) -> None:
    t, run = trainer
    saved = []
    monkeypatch.setattr(run, "_log_stats", lambda pos: (dict.fromkeys(("d_loss", "gp", "g_loss"), 0.0), 1.0))
    monkeypatch.setattr(run, "_on_checkpoint", lambda phase_end: saved.append((t.progress.ticks, phase_end)))
    pos = t.schedule.at(0)
    tick = Due(log=True, tick=True, phase_end=False, metric=False)
    for _ in range(4):  # ckpt_ticks=2: after ticks 2 and 4
        run._on_record(pos, tick)
    run._on_record(pos, Due(log=False, tick=False, phase_end=True, metric=False))
    run._on_record(pos, Due(log=True, tick=False, phase_end=False, metric=False))  # a record alone
    assert saved == [(2, False), (4, False), (4, True)]


def test_a_stop_writes_a_checkpoint_and_a_record(trainer) -> None:
    t, run = trainer
    set_progress(t, images=16, step=2)
    assert run._on_stop(signal.SIGTERM) == "interrupted"
    assert run.stopped_by == signal.SIGTERM
    (ckpt,) = list_checkpoints(t.out)
    (rec,) = [r for r in records(t, "event") if r["event"] == "stopped by SIGTERM"]
    assert rec["checkpoint"] == ckpt.name and rec["kimg"] == 0.016


# --- the progress counters ---------------------------------------------------------------------
def test_an_interval_steps_to_the_next_multiple_past_the_images_seen() -> None:
    p = Progress(images=0)
    assert p.next_multiple(0.02) == 20 and p.next_multiple(0.0) == 0  # 0: never
    p.images = 24
    assert p.next_multiple(0.02) == 40 and p.next_multiple(0.008) == 32  # 32: 24 is a multiple
    p.images = 1_000_001
    assert p.next_multiple(0.05) == 1_000_050


def test_progress_keeps_the_checkpoint_dict_it_always_had(tmp_path) -> None:
    cfg = tiny_config(tmp_path, metric_every=0.04)
    fresh = Progress.start(cfg).state_dict()
    assert fresh == {"images": 0, "step": 0, "segment": [-1, False], "ticks": 0,
                     "next_tick": 50, "next_log": 20, "next_metric": 40}
    assert list(fresh) == ["images", "step", "segment", "ticks", "next_tick", "next_log", "next_metric"]
    # A checkpoint's dict loads back unchanged; one older than a key keeps that key's fresh value.
    saved = {**fresh, "images": 56, "step": 7, "segment": [1, True], "ticks": 1, "next_tick": 100,
             "next_log": 60, "next_metric": 80, "diversity_watch": {"low": [1]}}
    p = Progress.start(cfg)
    p.load_state_dict(saved)
    assert p.segment == (1, True) and p.state_dict() == saved and list(p.state_dict()) == list(saved)
    old = {k: v for k, v in saved.items() if k not in ("next_metric", "diversity_watch")}
    p = Progress.start(cfg)
    p.load_state_dict(old)
    assert p.next_metric == 40 and p.state_dict() == {**old, "next_metric": 40}
    # Intervals changed on resume count from the images seen.
    p.restart_intervals(tiny_config(tmp_path, tick_kimg=0.03, log_kimg=0.016), {"tick_kimg", "log_kimg"})
    assert (p.next_tick, p.next_log, p.next_metric) == (60, 64, 40)
