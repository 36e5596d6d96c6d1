"""One call of :meth:`.loop.Trainer.run`: the steps to the end of the schedule (or a stop) and
what each step ends.

A :class:`Run` holds what lives only as long as that call: the run log, the real-batch feed
and progress bar of the current phase, the running statistics since the last record and the
stop vote. What a checkpoint holds (models, optimizers, generator, :class:`.progress.Progress`)
stays on the trainer, which the run steps and saves.

Per step: :meth:`Run._enter` (a new phase's feed and learning rate; Adam reset when the level
of detail changes), :meth:`Run._train_step`, then :meth:`Run._due` names what the step ends and
:meth:`Run._on_record` handles it (record, tick, metric point, checkpoint); then the stop vote
and the ``max_steps`` pause. Host syncs happen only at records, ticks and phase ends.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from fastpggan.atomic import DiskFullError, atomic_write
from fastpggan.data import RealBatches
from fastpggan.data.holdout import HOLDOUT_STREAM
from fastpggan.layers import downsample2x, upsample2x
from fastpggan.sampling import make_grid, sample
from fastpggan.training.ada import overfit_ratio
from fastpggan.training.checkpoint import latest_checkpoint
from fastpggan.training.distributed import Distributed, StopVote
from fastpggan.training.resume_policy import show_value
from fastpggan.training.runlog import RunLog
from fastpggan.training.schedule import Position
from fastpggan.training.steps import ema_update, reset_adam

if TYPE_CHECKING:  # for the annotation only: loop imports this module
    from fastpggan.training.loop import Trainer

Fade = float | torch.Tensor
# the losses, D's mean score of held-out reals (with --holdout) and the augmentation strength p
STAT_NAMES = ("d_loss", "d_real", "d_fake", "gp", "g_loss", "d_heldout", "aug_p")


class NonFinite(Exception):
    """The losses or the weights stopped being finite numbers (caught in :meth:`Run.train`)."""


@dataclass(frozen=True)
class Due:
    """What a step ends (:meth:`Run._due`): each is handled at the record point that follows."""

    log: bool  # log_kimg more images seen: a scalar record
    tick: bool  # tick_kimg more: a grid and a console line; every ckpt_ticks-th tick a checkpoint
    phase_end: bool  # the resolution phase (or the run) ended: grid, checkpoint, metric point
    metric: bool  # metric_every more images (or a phase end) with metrics on

    @property
    def record(self) -> bool:
        """Whether this step ends at a record point (any of the above: each needs the statistics)."""
        return self.log or self.tick or self.phase_end or self.metric


def prepare_reals(x: torch.Tensor, flip: torch.Tensor, fade: Fade, mirror: bool) -> torch.Tensor:
    """``uint8 [B, r, r, 3]`` -> ``float32 [B, 3, r, r]`` in [-1, 1], mirrored where ``flip``,
    and blended with their 2x2 down-then-up copy by ``1 - fade`` while a block fades in."""
    x = x.permute(0, 3, 1, 2).float().contiguous().div_(127.5).sub_(1.0)
    if mirror:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if isinstance(fade, torch.Tensor) or fade != 1.0:
        x = torch.lerp(upsample2x(downsample2x(x)), x, fade)
    return x


class RunningStats:
    """The losses (:data:`STAT_NAMES`) summed on the device since the last record, and when and
    at how many images seen that record was.

    ``sums``: float32 ``[len(STAT_NAMES)]`` on the training device; adding never syncs.
    """

    def __init__(self, device: torch.device, images: int) -> None:
        self.sums = torch.zeros(len(STAT_NAMES), device=device)
        self.steps, self.t, self.images = 0, time.perf_counter(), images

    def add(self, values: torch.Tensor) -> None:
        """One step's losses, float32 ``[len(STAT_NAMES)]`` on the device."""
        self.sums += values
        self.steps += 1

    def means(self, dist: Distributed) -> list[float]:
        """The means since the last record over every rank: the one host sync per record."""
        return dist.mean_(self.sums / self.steps).tolist()

    def restart(self, t: float, images: int) -> None:
        """A record was written at time ``t`` (``time.perf_counter``) after ``images``."""
        self.sums.zero_()
        self.steps, self.t, self.images = 0, t, images


class Run:
    """One :meth:`.loop.Trainer.run` of ``trainer`` (a :class:`.loop.Trainer`, which imports
    this module): opens the run log (rank 0 writes it); :meth:`train` steps, :meth:`close` ends.

    ``stopped_by``: the signal number that stopped it (or was received), if any.
    ``stop_message``: one line when :meth:`train` ends ``"diverged"`` or ``"disk_full"``.
    """

    def __init__(self, trainer: Trainer) -> None:
        t = self.trainer = trainer
        self.cfg, self.dist, self.progress, self.echo = t.cfg, t.dist, t.progress, t.echo
        self.log = RunLog(t.out, self.cfg.tensorboard, enabled=self.dist.is_main)
        self.stats = RunningStats(t.device, self.progress.images)
        self._feed: RealBatches | None = None  # the current phase's (_enter)
        self._held_feed: RealBatches | None = None  # its held-out reals (--holdout)
        self._bar: tqdm | None = None
        self._phase_idx = -1
        self._vote = StopVote(self.dist)
        self.stopped_by: int | None = None
        self.stop_message: str | None = None

    def on_signal(self, signum: int, frame: Any) -> None:
        """The handler of every stop signal (:data:`fastpggan.errors.STOP_SIGNALS`): voted for
        after the step under way."""
        self.stopped_by = signum

    def close(self) -> None:
        self.log.close()

    @property
    def epoch(self) -> float:
        """Passes over the data so far (2.5: half-way through the third): the reals are drawn
        epoch by epoch, every image once per pass."""
        return self.progress.images / self.trainer.data.count

    def train(self, max_steps: int | None) -> str:
        """Step by step to the end of the schedule; after each step, whatever it ends (a record,
        a tick, a phase, a metric point, a checkpoint: :meth:`_due`, :meth:`_on_record`), then
        the stop vote and the ``max_steps`` pause. The status :meth:`.loop.Trainer.run` returns."""
        pr, schedule = self.progress, self.trainer.schedule
        self._begin()
        steps_here = 0
        images_ok = pr.images  # after the last step known to be finite
        try:
            while pr.images < schedule.total_images:
                pos = schedule.at(pr.images)
                self._enter(pos)
                self._train_step(pos)
                steps_here += 1
                due = self._due(pos)
                if due.record:
                    self._on_record(pos, due)
                    images_ok = pr.images  # the record found the losses finite
                # A signal on any rank stops every rank after the same step (one step later
                # when there are several ranks: the vote is reduced in the background).
                stop = self._vote(self.stopped_by or 0)
                if stop:
                    return self._on_stop(stop)
                if max_steps is not None and steps_here >= max_steps and pr.images < schedule.total_images:
                    return self._on_pause()
        except NonFinite as e:
            return self._on_non_finite(images_ok, str(e))
        except DiskFullError as e:
            return self._on_disk_full(e)
        finally:
            self._vote.settle()  # every rank issued it: it completes
            if self._bar is not None:
                self._bar.close()
        self.log.record("event", pr.images, event="done")
        return "done"

    # --- one step and what it ends -------------------------------------------------------
    def _begin(self) -> None:
        """A start or resume record (and the settings a resume changed, on the console)."""
        pr, W, changed = self.progress, self.dist.world_size, self.trainer.resumed_changes
        if pr.images == 0:
            self.log.record("event", 0, event="start", config=self.cfg.to_dict(), world_size=W)
        else:
            self.log.record("event", pr.images, event="resume", step=pr.step, world_size=W, changed=changed)
            if changed:
                shown = ", ".join(f"{k} {show_value(v[0])} -> {show_value(v[1])}" for k, v in changed.items())
                self.echo(f"resumed with changed settings: {shown}")

    def _enter(self, pos: Position) -> None:
        """Before a step at ``pos``: a new phase (or a resume inside one) gets its real-batch feed,
        learning rate (a ``phase`` record and a console line say which) and progress bar; a new
        level of detail (start or end of a fade) resets Adam."""
        cfg, pr, t = self.cfg, self.progress, self.trainer
        if pos.phase.index != self._phase_idx:
            self._phase_idx = pos.phase.index
            res, lr = pos.phase.res, cfg.lr[pos.phase.res]
            self._feed = RealBatches(t.data.levels[res], self.dist.local_batch(cfg.batch[res]), cfg.seed,
                                     pr.images, t.device, cfg.workers, rank=self.dist.rank,
                                     world_size=self.dist.world_size,
                                     labels=t.data.labels if t.train_labels is not None else None)
            if t.heldout is not None:  # a batch per step, drawn as the training reals are
                self._held_feed = RealBatches(t.heldout.levels[res], self.dist.local_batch(cfg.batch[res]),
                                              cfg.seed + HOLDOUT_STREAM, pr.images, t.device, cfg.workers,
                                              rank=self.dist.rank, world_size=self.dist.world_size)
            for opt in (t.opt_g, t.opt_d):
                for group in opt.param_groups:
                    group["lr"] = lr
            batch = cfg.batch[res]  # global
            self.log.record("phase", pr.images, res=res, lr=lr, batch=batch)
            self.echo(f"{res}px from {pr.images / 1000:.1f} kimg: batch {batch}, lr {lr:g}")
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(
                total=pos.phase.end - pos.phase.start, initial=pr.images - pos.phase.start,
                desc=f"{res}px", unit="img", unit_scale=True, leave=False,
                disable=not (cfg.progress and self.dist.is_main),
            )
        if pos.segment != pr.segment:
            reset_adam(t.opt_g)
            reset_adam(t.opt_d)
            pr.segment = pos.segment

    def _train_step(self, pos: Position) -> None:
        """One D step, one G step and one EMA update at ``pos``; adds the losses to the running
        statistics (no host sync, except once per newly compiled segment) and counts the images."""
        cfg, pr, t, W = self.cfg, self.progress, self.trainer, self.dist.world_size
        res = pos.phase.res
        B = self.dist.local_batch(cfg.batch[res])  # per rank
        fade: Fade = 1.0 if pos.stable else t.fade_t.fill_(pos.fade)
        x, flip, *labels = next(self._feed)  # a conditional run's feed adds the reals' classes
        real = prepare_reals(x, flip, fade, cfg.mirror)
        held = prepare_reals(*next(self._held_feed), fade, cfg.mirror) if self._held_feed is not None else None
        z_d = torch.randn(B, cfg.latent_dim, device=t.device, generator=t.gen)
        alpha = torch.rand(B, 1, 1, 1, device=t.device, generator=t.gen)
        z_g = torch.randn(B, cfg.latent_dim, device=t.device, generator=t.gen)
        d_labels = g_labels = None
        if t.train_labels is not None:  # G's classes: random reals' labels (the data's frequencies)
            d_labels = labels[0]
            pick = torch.randint(t.train_labels.shape[0], (B,), device=t.device, generator=t.gen)
            g_labels = t.train_labels[pick]
        first_compile = cfg.compile and (res, pos.stable) not in t.compiled_segments
        t_compile = time.perf_counter()
        stats = t.steps.d_step(real, z_d, alpha, res, fade, pr.step, labels=d_labels, heldout=held)
        g_loss = t.steps.g_step(z_g, res, fade, labels=g_labels)
        if first_compile:  # this step traced and compiled new graphs: report the time
            t.compiled_segments.add((res, pos.stable))
            g_loss.item()  # one sync per compiled segment, so the time is real
            secs = time.perf_counter() - t_compile
            kind = "stable" if pos.stable else "fade"
            self.log.record("event", pr.images, event="compile", res=res, phase=kind, seconds=round(secs, 2))
            self.echo(f"compiled the {res}px {kind} step in {secs:.1f}s")
        ema_update(t.G_ema, t.G, cfg.ema_beta)
        self.stats.add(torch.stack([*(stats[k] for k in STAT_NAMES[:4]), g_loss, stats.get("d_heldout", t.zero),
                                    t.aug.p]))
        t.aug.observe(stats, B)  # after the record of the p this step used
        pr.images += B * W
        pr.step += 1
        self._bar.update(min(B * W, pos.phase.end - pos.phase.start - self._bar.n))

    def _due(self, pos: Position) -> Due:
        """What the step just taken at ``pos`` ends: a log record, a tick, the phase, a metric point."""
        pr, schedule = self.progress, self.trainer.schedule
        phase_end = pr.images >= schedule.total_images or schedule.at(pr.images).phase.index != pos.phase.index
        return Due(
            log=pr.images >= pr.next_log,
            tick=pr.images >= pr.next_tick,
            phase_end=phase_end,
            metric=self.cfg.metric_every > 0 and (phase_end or pr.images >= pr.next_metric),
        )

    def _on_record(self, pos: Position, due: Due) -> None:
        """Everything a record point does, in order: the scalar record, then the tick (grid,
        console line), the metric point and the checkpoint that are due."""
        vals, speed = self._log_stats(pos)
        if due.tick or due.phase_end:
            self._on_tick(pos, due, vals, speed)
        if due.metric:
            self._on_metric(pos)
        if due.phase_end or (due.tick and self.progress.ticks % self.cfg.ckpt_ticks == 0):
            self._on_checkpoint(due.phase_end)

    def _log_stats(self, pos: Position) -> tuple[dict[str, float], float]:
        """Write a ``log`` record of the running statistics' means over every rank since the last
        record and restart them. Returns those means (rounded) and the images per second."""
        cfg, pr = self.cfg, self.progress
        t = time.perf_counter()
        means = self.stats.means(self.dist)
        speed = (pr.images - self.stats.images) / max(t - self.stats.t, 1e-9)
        vals = {k: round(v, 5) for k, v in zip(STAT_NAMES, means)}
        if self.trainer.heldout is None:
            del vals["d_heldout"]
        else:  # the overfitting signal over the record's steps (what --aug ada steers by)
            real, fake, held = (torch.tensor(means[STAT_NAMES.index(k)]) for k in ("d_real", "d_fake", "d_heldout"))
            vals["rv"] = round(overfit_ratio(real, fake, held).item(), 5)
        self.log.record("log", pr.images, res=pos.phase.res, fade=round(pos.fade, 4), lod=round(pos.lod, 4),
                        batch=cfg.batch[pos.phase.res], lr=cfg.lr[pos.phase.res],
                        epoch=round(self.epoch, 3), img_per_s=round(speed, 2), **vals)
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"fade {pos.fade:.2f} {speed:.0f} img/s D {vals['d_loss']:.3f} G {vals['g_loss']:.3f}"
            )
        if not all(math.isfinite(v) for v in means):
            bad = ", ".join(f"{k} {v}" for k, v in vals.items() if not math.isfinite(v))
            raise NonFinite(f"non-finite losses ({bad})")
        self.stats.restart(t, pr.images)
        pr.next_log = pr.next_multiple(cfg.log_kimg)
        return vals, speed

    def _on_tick(self, pos: Position, due: Due, vals: dict[str, float], speed: float) -> None:
        """A tick or a phase end: a sample grid, a ``tick``/``phase_end`` record and a console line
        (rank 0); a tick also moves the tick counters on (every rank)."""
        pr, t = self.progress, self.trainer
        if self.dist.is_main:
            res = pos.phase.res
            samples = sample(t.G_ema, t.grid_z, res, pos.fade, self.cfg.batch[res], t.grid_labels)
            grid = self.write_grid(pos, samples)
            kind = "phase_end" if due.phase_end else "tick"
            self.log.record(kind, pr.images, res=res, fade=round(pos.fade, 4), grid=grid.name)
            div, warning = self._measure_diversity(pos, samples) if t.collapse is not None else ("", None)
            # p, and the overfitting signal that moves it (--aug ada) or is only watched
            aug = f"  aug p {vals['aug_p']:.3f}" if self.cfg.aug != "off" else ""
            aug += f"  r_v {vals['rv']:.3f}" if "rv" in vals else ""
            self.echo(
                f"{kind} {pr.images / 1000:.1f} kimg  epoch {self.epoch:.2f}  {res}px fade {pos.fade:.2f}  "
                f"{speed:.1f} img/s  D {vals['d_loss']:.3f} G {vals['g_loss']:.3f}  gp {vals['gp']:.3f}{aug}{div}"
            )
            for line in (warning or "").splitlines():  # a conditional run may warn for several classes
                self.echo(line)
        if due.tick:
            pr.next_tick = pr.next_multiple(self.cfg.tick_kimg)
            pr.ticks += 1

    def write_grid(self, pos: Position, samples: torch.Tensor) -> Path:
        """Grid of ``G_ema`` on the fixed latents, ``samples`` (float ``[grid**2, 3, res, res]``,
        drawn once per tick for the grid and the collapse watch): ``grid-{res}px-{kimg}kimg.png``."""
        images = self.progress.images
        path = self.trainer.out / f"grid-{pos.phase.res}px-{images / 1000:09.3f}kimg.png"
        # conditional: one row per class (the same latents in every row)
        img = make_grid(samples, cols=self.cfg.grid if self.trainer.grid_labels is not None else None)
        atomic_write(path, lambda f: img.save(f, format="PNG"), what="sample grid")
        self.log.image("samples", img, images)
        return path

    def _measure_diversity(self, pos: Position, grid_samples: torch.Tensor) -> tuple[str, str | None]:
        """The collapse watch at a tick: a ``diversity`` record (JSONL, TensorBoard), the watch fed
        (its warning also an ``event`` record). Returns the tick line's part and the warning."""
        collapse, res, images = self.trainer.collapse, pos.phase.res, self.progress.images
        vals = collapse.measure(self.trainer.G_ema, res, pos.fade, grid_samples, self.cfg.batch[res])
        self.log.record("diversity", images, res=res, fade=round(pos.fade, 4), **vals)
        warning = collapse.check(vals)
        self.progress.diversity_watch = collapse.state_dict()
        for line in (warning or "").splitlines():
            self.log.record("event", images, event="diversity warning", message=line)
        return "  " + collapse.summary(vals), warning

    def _on_metric(self, pos: Position) -> None:
        """A metric point: rank 0 measures ``G_ema`` (the other ranks wait in the next
        collective); the metric schedule advances on every rank."""
        pr = self.progress
        if self.dist.is_main:
            self.trainer.metric_points.measure(self.trainer.G_ema, pos, pr.images, self.log)
        pr.next_metric = pr.next_multiple(self.cfg.metric_every)
        self.stats.t = time.perf_counter()  # the next speed is training's, not evaluation's

    def _on_checkpoint(self, phase_end: bool) -> Path:
        """A checkpoint at a tick or phase end (named on the console at phase ends)."""
        path = self.trainer.save()
        if phase_end:
            self.echo(f"checkpoint {path}")
        return path

    # --- how it ends, other than done ------------------------------------------------------
    def _on_stop(self, signum: int) -> str:
        """Stopped by signal ``signum`` (on any rank): checkpoint, record, ``"interrupted"``."""
        self.stopped_by = signum
        path = self.trainer.save()
        name = signal.Signals(signum).name
        self.log.record("event", self.progress.images, event=f"stopped by {name}", checkpoint=path.name)
        try:
            self.echo(f"stopped by {name}: checkpoint {path}")
        except OSError:  # a hang-up (SIGHUP) may have closed the terminal: the checkpoint is what counts
            pass
        return "interrupted"

    def _on_non_finite(self, images_ok: int, what: str) -> str:
        """Losses or weights stopped being finite after ``images_ok`` images: nothing is
        written from this state; the run stops (``"diverged"``) naming the last checkpoint."""
        images, out = self.progress.images, self.trainer.out
        last = latest_checkpoint(out) if self.dist.is_main else None
        self.log.record("event", images, event="non-finite losses", detail=what,
                        last_checkpoint=last.name if last else None)
        if last:
            then = f"the last checkpoint, {last}, is finite: resume from it, e.g. with a lower --lr"
        elif self.trainer.resumed_at is not None:  # a resume into a new folder: its checkpoint is elsewhere
            then = (f"no checkpoint was written since this run resumed at {self.trainer.resumed_at / 1000:g} "
                    "kimg: resume again from the checkpoint it started from, e.g. with a lower --lr")
        else:
            then = "no checkpoint was written yet: start again with a lower --lr"
        self.stop_message = (f"stopped: {what} between {images_ok / 1000:g} and {images / 1000:g} kimg; "
                             f"nothing was saved from them; {then}")
        return "diverged"

    def _on_disk_full(self, e: DiskFullError) -> str:
        """The disk filled up while writing: no partial file, the older checkpoints kept."""
        last = latest_checkpoint(self.trainer.out)
        kept = f"last good checkpoint {last}" if last else "no checkpoint was written yet"
        self.stop_message = (f"{e}; stopped at {self.progress.images / 1000:g} kimg, {kept}: free "
                             "space and resume with --resume auto")
        return "disk_full"

    def _on_pause(self) -> str:
        """``max_steps`` reached before the end: checkpoint, record, ``"paused"``."""
        path = self.trainer.save()
        self.log.record("event", self.progress.images, event="paused", checkpoint=path.name)
        return "paused"
