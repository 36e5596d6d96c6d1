"""The progressive training loop (the authors' recipe) with exact, atomic checkpoints.

Per step: one D step (WGAN-GP + drift on faded, mirrored reals), one G step, one EMA update of
``G_ema``; the updates themselves (eager or compiled) are :class:`.steps.TrainSteps`. Adam state
is reset whenever the level of detail changes (start and end of every fade), as the authors do.

All randomness of a step comes from explicit sources saved in checkpoints: the real batch from
``(seed, images seen)`` (reals are drawn epoch by epoch: :class:`fastpggan.data.EpochDraws`),
latents and penalty mixes from one
``torch.Generator`` on the device. So a run stopped after N steps and resumed for M more ends
with exactly the weights of an uninterrupted N + M step run (on the CPU; cuDNN may differ).
Host syncs happen only when a record is logged (every ``log_kimg``), at ticks and phase ends.

Under ``torchrun`` (a :class:`.distributed.Distributed` of several ranks) every rank runs this
same loop on its own slice of each step's real batch and its own latents (generator seeded per
rank), gradients are averaged before each optimizer step, and ``cfg.batch`` is the per-rank
batch: a step consumes ``world_size`` times as many images, and the images counted (kimg,
schedule, checkpoint names) are global. Rank 0 alone writes the run folder and prints; the
others take part in the collectives only (logged statistics, checkpoint bookkeeping, a stop
flag every step so that a signal on any rank stops all of them after the same step).

When things go wrong: losses that turn NaN or infinite stop the run at the next record (no
checkpoint is ever written from non-finite weights, so the ones kept are finite); a full disk
stops it with the last good checkpoint kept (:class:`fastpggan.atomic.DiskFullError`). Both
return a status and leave a one-line :attr:`Trainer.stop_message`. A resume applies the
settings :mod:`.resume_policy` lets change, for real (the restored optimizers get the new
learning rate and Adam settings; tick, log and metric intervals restart from the current count).
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fastpggan.atomic import DiskFullError, atomic_write
from fastpggan.console import printable
from fastpggan.data import ImageData, RealBatches
from fastpggan.layers import downsample2x, upsample2x
from fastpggan.metrics import FeatureExtractor, evaluate_generator, inception_extractor
from fastpggan.metrics.diversity import diversity_latents
from fastpggan.metrics.reals import data_identity, real_batches
from fastpggan.metrics.swd import MIN_RESOLUTION as SWD_MIN_RESOLUTION
from fastpggan.networks import Discriminator, Generator
from fastpggan.sampling import make_grid, sample
from fastpggan.training.checkpoint import (
    FORMAT,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from fastpggan.training.collapse import CollapseMonitor
from fastpggan.training.config import TrainConfig
from fastpggan.training.distributed import Distributed, StopVote, param_digest, rank_seed
from fastpggan.training.resume_policy import resume_changes, show_value
from fastpggan.training.runlog import RunLog
from fastpggan.training.schedule import Position
from fastpggan.training.steps import TrainSteps, ema_update, reset_adam

Fade = float | torch.Tensor
STAT_NAMES = ("d_loss", "d_real", "d_fake", "gp", "g_loss")


class NonFinite(Exception):
    """The losses or the weights stopped being finite numbers (caught in :meth:`Trainer.run`)."""


@dataclass(frozen=True)
class Due:
    """What a step ends (:meth:`Trainer._due`): each is handled at the record point that follows."""

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


class Trainer:
    """Owns the models, optimizers, schedule and run folder of one run (``cfg.out``).

    ``resume``: a loaded checkpoint dict to continue from (see :mod:`.checkpoint`).
    ``echo``: where human-readable lines go (default ``tqdm.write``; rank 0 only).
    ``dist``: this process's place in a multi-process run (default: the only process).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        data: ImageData,
        resume: dict[str, Any] | None = None,
        echo: Callable[[str], None] = tqdm.write,
        dist: Distributed | None = None,
    ) -> None:
        self.dist = dist if dist is not None else Distributed()
        self.cfg, self.data = cfg, data
        # every line printable whatever the terminal (file names need not be text)
        self.echo = (lambda line: echo(printable(line))) if self.dist.is_main else (lambda line: None)
        self.out = Path(cfg.out)
        self.device = self.dist.device(cfg.device)
        self.schedule = cfg.schedule()
        torch.manual_seed(cfg.seed)  # weight init
        self.G = Generator(cfg.resolution, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, impl=cfg.impl)
        self.D = Discriminator(cfg.resolution, cfg.fmap_base, cfg.fmap_max, cfg.mbstd_group_size, impl=cfg.impl)
        self.G.to(self.device)
        self.D.to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        adam = dict(lr=cfg.lr[4], betas=tuple(cfg.betas), eps=cfg.adam_eps)  # each phase sets its own
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)
        self.steps = TrainSteps(
            self.G, self.D, self.opt_g, self.opt_d, compile=cfg.compile,
            compile_backend=cfg.compile_backend, precision=cfg.precision,
            gp_lambda=cfg.gp_lambda, drift=cfg.drift, gp_every=cfg.gp_every, gp_resolution=cfg.gp_resolution,
            grad_sync=self.dist.sync_grads if self.dist.enabled else None,
        )
        self._compiled_segments: set[tuple[int, bool]] = set()
        self.gen = torch.Generator(self.device).manual_seed(rank_seed(cfg.seed, self.dist.rank))
        self.fade_t = torch.zeros((), device=self.device)
        grid_z, extra_z = diversity_latents(cfg.grid**2, cfg.latent_dim, cfg.seed)
        self.grid_z = grid_z.to(self.device)
        # The collapse watch: G_ema's diversity at every tick (rank 0 measures; its state is kept
        # in progress["diversity_watch"], so checkpoints carry it).
        watch = cfg.diversity and self.dist.is_main and data.count >= 2  # a spread needs 2 reals
        self.collapse = CollapseMonitor(data, extra_z.to(self.device), cfg.diversity_threshold) if watch else None
        tick, log = round(cfg.tick_kimg * 1000), round(cfg.log_kimg * 1000)
        self.progress: dict[str, Any] = {
            "images": 0, "step": 0, "segment": [-1, False], "ticks": 0,
            "next_tick": tick, "next_log": log, "next_metric": round(cfg.metric_every * 1000),
        }
        # Settings changed on resume: {field: [old, new]} (recorded in the resume event).
        self.resumed_changes: dict[str, list[Any]] = {}
        self.stop_message: str | None = None  # one line when run() ends "diverged" or "disk_full"
        if resume is not None:
            self._load(resume)
        if self.collapse is not None:
            self.collapse.load_state_dict(self.progress.get("diversity_watch", {}))
        self.dist.broadcast_(self.G, self.D, self.G_ema)  # every rank starts from rank 0's weights
        self._stop: int | None = None
        # For _evaluate: the reals' SWD descriptors / FID statistics at the resolution being
        # measured (kept between measurements, dropped when training moves up), the FID
        # feature extractor (made on first use), whether the SWD-below-16px note was shown.
        self._metric_reals: dict = {}
        self._metric_res = 0
        self._extractor: FeatureExtractor | None = None
        self._swd_skip_noted = False

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {
            "gen": self.gen.get_state(), "gen_device": self.device.type, "torch_cpu": torch.get_rng_state()
        }
        if self.device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "steps": self.steps.state_dict(),
            "progress": dict(self.progress),
            "rng": rng,
        }

    def _load(self, s: dict[str, Any]) -> None:
        # ResumeRefused (a ValueError) for settings the policy does not let change
        self.resumed_changes = resume_changes(s["config"], self.cfg, s["progress"]["images"])
        self.G.load_state_dict(s["G"])
        self.D.load_state_dict(s["D"])
        self.G_ema.load_state_dict(s["G_ema"])
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self._apply_adam_settings()
        self.steps.load_state_dict(s.get("steps", {}))
        self.progress.update(s["progress"])
        self._restart_intervals()
        rng = s["rng"]
        torch.set_rng_state(rng["torch_cpu"])
        gens = rng.get("gen_ranks", [rng["gen"]])  # one state per rank of the run that saved it
        same_device = rng["gen_device"] == self.device.type
        if same_device and len(gens) == self.dist.world_size:
            self.gen.set_state(gens[self.dist.rank])
            if "torch_cuda" in rng:
                torch.cuda.set_rng_state(rng["torch_cuda"], self.device)
        else:  # a generator's state does not carry across device types or world sizes:
            # continue reproducibly from the seed and the step
            self.gen.manual_seed(rank_seed(self.cfg.seed * 1_000_003 + self.progress["step"], self.dist.rank))
            why = (f"from {len(gens)} to {self.dist.world_size} processes" if same_device
                   else f"on {self.device.type} from a {rng['gen_device']} run")
            self.echo(f"note: resumed {why}; latents reseeded")

    def _apply_adam_settings(self) -> None:
        """Restored optimizers keep the hyperparameters they were saved with: give them this
        run's. (The learning rate is the phase's: :meth:`_enter` sets it when the resumed run
        enters its phase, so a rate changed on resume takes effect there.)"""
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["betas"] = tuple(self.cfg.betas)
                group["eps"] = self.cfg.adam_eps

    def _restart_intervals(self) -> None:
        """An interval changed on resume counts from the images seen so far."""
        pr, images = self.progress, self.progress["images"]
        for field, key in (("tick_kimg", "next_tick"), ("log_kimg", "next_log"), ("metric_every", "next_metric")):
            if field in self.resumed_changes:
                step = round(getattr(self.cfg, field) * 1000)
                pr[key] = (images // step + 1) * step if step > 0 else 0

    def _all_finite(self) -> bool:
        """Whether every weight, buffer and optimizer state of the run is finite (one host sync)."""
        tensors = [t for m in (self.G, self.D, self.G_ema) for t in m.state_dict().values()]
        for opt in (self.opt_g, self.opt_d):
            tensors += [t for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
        tensors = [t for t in tensors if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def _rank_states(self) -> tuple[list[torch.Tensor], list[str]]:
        """Every rank's latent-generator state and weight digest (a collective). Raises if the
        ranks' weights differ: a bug, better caught at a checkpoint than after days."""
        gen = self.gen.get_state()
        digest = param_digest(m.state_dict() for m in (self.G, self.D, self.G_ema))
        rows = self.dist.all_gather_bytes(torch.cat([gen, torch.tensor(list(digest.encode()), dtype=torch.uint8)]))
        n = gen.numel()
        digests = [bytes(r[n:].tolist()).decode() for r in rows]
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks hold different weights at step {self.progress['step']}: {digests}")
        return [r[:n].clone() for r in rows], digests

    def save(self) -> Path:
        """Write a checkpoint for the current position and keep only the newest ``keep_ckpts``.

        Multi-process: every rank calls it (it gathers each rank's generator state and weight
        digest into the checkpoint); rank 0 alone writes. Returns the checkpoint's path.
        :class:`NonFinite` instead of writing non-finite weights (every rank holds the same
        weights, so every rank decides alike); :class:`DiskFullError` with the older
        checkpoints kept.
        """
        if not self._all_finite():
            raise NonFinite("non-finite weights")
        res = self.schedule.at(self.progress["images"]).phase.res
        path = self.out / checkpoint_name(self.progress["images"], res)
        if self.dist.enabled:
            gens, digests = self._rank_states()
        if not self.dist.is_main:
            return path
        state = self.state_dict()
        if self.dist.enabled:
            state["rng"]["gen_ranks"] = gens
            state["ranks"] = {"world_size": self.dist.world_size, "param_sha256": digests}
        save_checkpoint(state, path)
        old = list_checkpoints(self.out)
        for p in old[: max(0, len(old) - self.cfg.keep_ckpts)]:
            p.unlink(missing_ok=True)
        return path

    # --- outputs -------------------------------------------------------------------------
    def write_grid(self, log: RunLog, pos: Position, samples: torch.Tensor) -> Path:
        """Grid of ``G_ema`` on the fixed latents, ``samples`` (float ``[grid**2, 3, res, res]``,
        drawn once per tick for the grid and the collapse watch): ``grid-{res}px-{kimg}kimg.png``."""
        images = self.progress["images"]
        path = self.out / f"grid-{pos.phase.res}px-{images / 1000:09.3f}kimg.png"
        img = make_grid(samples)
        atomic_write(path, lambda f: img.save(f, format="PNG"), what="sample grid")
        log.image("samples", img, images)
        return path

    def _measure_diversity(self, log: RunLog, pos: Position, grid_samples: torch.Tensor) -> tuple[str, str | None]:
        """The collapse watch at a tick: a ``diversity`` record (JSONL, TensorBoard), the watch fed
        (its warning also an ``event`` record). Returns the tick line's part and the warning."""
        res, images = pos.phase.res, self.progress["images"]
        vals = self.collapse.measure(self.G_ema, res, pos.fade, grid_samples, self.cfg.batch[res])
        log.record("diversity", images, res=res, fade=round(pos.fade, 4), **vals)
        warning = self.collapse.check(vals)
        self.progress["diversity_watch"] = self.collapse.state_dict()
        if warning is not None:
            log.record("event", images, event="diversity warning", message=warning)
        return "  " + self.collapse.summary(vals), warning

    def _evaluate(self, log: RunLog, pos: Position) -> dict[str, float]:
        """Measure ``G_ema`` at ``pos``'s resolution and fade: ``cfg.metrics`` from
        ``cfg.metric_n`` samples against as many reals (:mod:`fastpggan.metrics`); writes one
        ``metric`` record (JSONL and TensorBoard) and a console line. Returns the results, empty
        when no asked metric applies yet (SWD below 16 px, skipped with a one-time note)."""
        cfg, res = self.cfg, pos.phase.res
        metrics = [m for m in cfg.metrics if m != "swd" or res >= SWD_MIN_RESOLUTION]
        if len(metrics) < len(cfg.metrics) and not self._swd_skip_noted:
            self._swd_skip_noted = True
            self.echo(f"note: SWD needs {SWD_MIN_RESOLUTION}px images: not measured below {SWD_MIN_RESOLUTION}px")
        if not metrics:
            return {}
        if res != self._metric_res:  # training never returns to a lower resolution
            self._metric_reals.clear()
            self._metric_res = res
        if "fid" in metrics and self._extractor is None:
            self._extractor = inception_extractor(cfg.inception_weights, self.device)
        t = time.perf_counter()
        B = cfg.batch[res]
        results = evaluate_generator(
            self.G_ema, real_batches(self.data.levels[res], cfg.metric_n, B), res=res, metrics=metrics,
            num_images=cfg.metric_n, fade=pos.fade, batch_size=B, seed=cfg.seed, device=self.device,
            extractor=self._extractor, cache_dir=cfg.cache_dir, dataset_id=data_identity(self.data),
            real_cache=self._metric_reals, progress=cfg.progress,
        )
        secs = time.perf_counter() - t
        images = self.progress["images"]
        log.record("metric", images, res=res, fade=round(pos.fade, 4), n=cfg.metric_n,
                   seconds=round(secs, 2), **{k: round(v, 4) for k, v in results.items()})
        shown = "  ".join(f"{k} {v:.2f}" for k, v in results.items() if k in ("swd_x1e3_avg", "fid"))
        self.echo(f"metric {images / 1000:.1f} kimg  {res}px  {shown}  ({cfg.metric_n} images, {secs:.1f}s)")
        return results

    # --- the loop -------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = signum

    @property
    def stopped_by(self) -> int | None:
        """The signal number that stopped the last :meth:`run`, if any."""
        return self._stop

    def run(self, max_steps: int | None = None) -> str:
        """Train to the end of the schedule: returns ``"done"``, ``"interrupted"`` (SIGINT or
        SIGTERM: checkpoint written), ``"paused"`` (``max_steps`` reached: checkpoint written),
        ``"diverged"`` (non-finite losses or weights: stopped, nothing written from them) or
        ``"disk_full"`` (the older checkpoints kept); the last two set :attr:`stop_message`."""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        log = RunLog(self.out, self.cfg.tensorboard, enabled=self.dist.is_main)
        try:
            return self._run(log, max_steps)
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            log.close()

    def _run(self, log: RunLog, max_steps: int | None) -> str:
        """Step by step to the end of the schedule; after each step, whatever it ends (a record,
        a tick, a phase, a metric point, a checkpoint: :meth:`_due`, :meth:`_on_record`), then
        the stop vote and the ``max_steps`` pause."""
        pr, total = self.progress, self.schedule.total_images
        self._begin(log)
        steps_here = 0
        images_ok = pr["images"]  # after the last step known to be finite
        try:
            while pr["images"] < total:
                pos = self.schedule.at(pr["images"])
                self._enter(log, pos)
                self._train_step(log, pos)
                steps_here += 1
                due = self._due(pos)
                if due.record:
                    self._on_record(log, pos, due)
                    images_ok = pr["images"]  # the record found the losses finite
                # A signal on any rank stops every rank after the same step (one step later
                # when there are several ranks: the vote is reduced in the background).
                stop = self._vote(self._stop or 0)
                if stop:
                    return self._on_stop(log, stop)
                if max_steps is not None and steps_here >= max_steps and pr["images"] < total:
                    return self._on_pause(log)
        except NonFinite as e:
            return self._on_non_finite(log, images_ok, str(e))
        except DiskFullError as e:
            return self._on_disk_full(e)
        finally:
            self._vote.settle()  # every rank issued it: it completes
            if self._bar is not None:
                self._bar.close()
        log.record("event", pr["images"], event="done")
        return "done"

    @property
    def epoch(self) -> float:
        """Passes over the data so far (2.5: half-way through the third): the reals are drawn
        epoch by epoch, every image once per pass."""
        return self.progress["images"] / self.data.count

    # --- one step and what it ends -------------------------------------------------------
    def _begin(self, log: RunLog) -> None:
        """Start (or resume) a run: fresh running statistics and stop vote, a start/resume record."""
        pr, W = self.progress, self.dist.world_size
        self._acc = torch.zeros(len(STAT_NAMES), device=self.device)  # summed STAT_NAMES since the last record
        self._acc_steps, self._t_log, self._img_log = 0, time.perf_counter(), pr["images"]
        self._feed: RealBatches | None = None
        self._bar: tqdm | None = None
        self._phase_idx = -1
        self._vote = StopVote(self.dist)
        if pr["images"] == 0:
            log.record("event", 0, event="start", config=self.cfg.to_dict(), world_size=W)
        else:
            log.record("event", pr["images"], event="resume", step=pr["step"], world_size=W,
                       changed=self.resumed_changes)
            if self.resumed_changes:
                shown = ", ".join(f"{k} {show_value(v[0])} -> {show_value(v[1])}" for k, v in self.resumed_changes.items())
                self.echo(f"resumed with changed settings: {shown}")

    def _enter(self, log: RunLog, pos: Position) -> None:
        """Before a step at ``pos``: a new phase (or a resume inside one) gets its real-batch feed,
        learning rate (a ``phase`` record and a console line say which) and progress bar; a new
        level of detail (start or end of a fade) resets Adam."""
        cfg, pr = self.cfg, self.progress
        if pos.phase.index != self._phase_idx:
            self._phase_idx = pos.phase.index
            res, lr = pos.phase.res, cfg.lr[pos.phase.res]
            self._feed = RealBatches(self.data.levels[res], cfg.batch[res], cfg.seed, pr["images"], self.device,
                                     cfg.workers, rank=self.dist.rank, world_size=self.dist.world_size)
            for opt in (self.opt_g, self.opt_d):
                for group in opt.param_groups:
                    group["lr"] = lr
            batch = cfg.batch[res] * self.dist.world_size
            log.record("phase", pr["images"], res=res, lr=lr, batch=batch)
            self.echo(f"{res}px from {pr['images'] / 1000:.1f} kimg: batch {batch}, lr {lr:g}")
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(
                total=pos.phase.end - pos.phase.start, initial=pr["images"] - pos.phase.start,
                desc=f"{res}px", unit="img", unit_scale=True, leave=False,
                disable=not (cfg.progress and self.dist.is_main),
            )
        if list(pos.segment) != list(pr["segment"]):
            reset_adam(self.opt_g)
            reset_adam(self.opt_d)
            pr["segment"] = list(pos.segment)

    def _train_step(self, log: RunLog, pos: Position) -> None:
        """One D step, one G step and one EMA update at ``pos``; adds the losses to the running
        statistics (no host sync, except once per newly compiled segment) and counts the images."""
        cfg, pr, W = self.cfg, self.progress, self.dist.world_size
        res, B = pos.phase.res, cfg.batch[pos.phase.res]  # B: per rank
        fade: Fade = 1.0 if pos.stable else self.fade_t.fill_(pos.fade)
        x, flip = next(self._feed)
        real = prepare_reals(x, flip, fade, cfg.mirror)
        z_d = torch.randn(B, cfg.latent_dim, device=self.device, generator=self.gen)
        alpha = torch.rand(B, 1, 1, 1, device=self.device, generator=self.gen)
        z_g = torch.randn(B, cfg.latent_dim, device=self.device, generator=self.gen)
        first_compile = cfg.compile and (res, pos.stable) not in self._compiled_segments
        t_compile = time.perf_counter()
        stats = self.steps.d_step(real, z_d, alpha, res, fade, pr["step"])
        g_loss = self.steps.g_step(z_g, res, fade)
        if first_compile:  # this step traced and compiled new graphs: report the time
            self._compiled_segments.add((res, pos.stable))
            g_loss.item()  # one sync per compiled segment, so the time is real
            secs = time.perf_counter() - t_compile
            kind = "stable" if pos.stable else "fade"
            log.record("event", pr["images"], event="compile", res=res, phase=kind, seconds=round(secs, 2))
            self.echo(f"compiled the {res}px {kind} step in {secs:.1f}s")
        ema_update(self.G_ema, self.G, cfg.ema_beta)
        self._acc += torch.stack([*(stats[k] for k in STAT_NAMES[:4]), g_loss])
        self._acc_steps += 1
        pr["images"] += B * W
        pr["step"] += 1
        self._bar.update(min(B * W, pos.phase.end - pos.phase.start - self._bar.n))

    def _due(self, pos: Position) -> Due:
        """What the step just taken at ``pos`` ends: a log record, a tick, the phase, a metric point."""
        cfg, pr = self.cfg, self.progress
        phase_end = pr["images"] >= self.schedule.total_images or (
            self.schedule.at(pr["images"]).phase.index != pos.phase.index
        )
        return Due(
            log=pr["images"] >= pr["next_log"],
            tick=pr["images"] >= pr["next_tick"],
            phase_end=phase_end,
            metric=cfg.metric_every > 0 and (phase_end or pr["images"] >= pr["next_metric"]),
        )

    def _on_record(self, log: RunLog, pos: Position, due: Due) -> None:
        """Everything a record point does, in order: the scalar record, then the tick (grid,
        console line), the metric point and the checkpoint that are due."""
        vals, speed = self._log_stats(log, pos)
        if due.tick or due.phase_end:
            self._on_tick(log, pos, due, vals, speed)
        if due.metric:
            self._on_metric(log, pos)
        if due.phase_end or (due.tick and self.progress["ticks"] % self.cfg.ckpt_ticks == 0):
            self._on_checkpoint(due.phase_end)

    def _log_stats(self, log: RunLog, pos: Position) -> tuple[dict[str, float], float]:
        """Write a ``log`` record of the running statistics' means over every rank since the last
        record and restart them. Returns those means (rounded) and the images per second."""
        cfg, pr = self.cfg, self.progress
        t = time.perf_counter()
        means = self.dist.mean_(self._acc / self._acc_steps).tolist()  # the one host sync per record
        speed = (pr["images"] - self._img_log) / max(t - self._t_log, 1e-9)
        vals = {k: round(v, 5) for k, v in zip(STAT_NAMES, means)}
        log.record("log", pr["images"], res=pos.phase.res, fade=round(pos.fade, 4), lod=round(pos.lod, 4),
                   batch=cfg.batch[pos.phase.res] * self.dist.world_size, lr=cfg.lr[pos.phase.res],
                   epoch=round(self.epoch, 3), img_per_s=round(speed, 2), **vals)
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"fade {pos.fade:.2f} {speed:.0f} img/s D {vals['d_loss']:.3f} G {vals['g_loss']:.3f}"
            )
        if not all(math.isfinite(v) for v in means):
            bad = ", ".join(f"{k} {v}" for k, v in vals.items() if not math.isfinite(v))
            raise NonFinite(f"non-finite losses ({bad})")
        self._acc.zero_()
        self._acc_steps, self._t_log, self._img_log = 0, t, pr["images"]
        step_log = round(cfg.log_kimg * 1000)
        pr["next_log"] = (pr["images"] // step_log + 1) * step_log
        return vals, speed

    def _on_tick(self, log: RunLog, pos: Position, due: Due, vals: dict[str, float], speed: float) -> None:
        """A tick or a phase end: a sample grid, a ``tick``/``phase_end`` record and a console line
        (rank 0); a tick also moves the tick counters on (every rank)."""
        pr = self.progress
        if self.dist.is_main:
            res = pos.phase.res
            samples = sample(self.G_ema, self.grid_z, res, pos.fade, self.cfg.batch[res])
            grid = self.write_grid(log, pos, samples)
            kind = "phase_end" if due.phase_end else "tick"
            log.record(kind, pr["images"], res=res, fade=round(pos.fade, 4), grid=grid.name)
            div, warning = self._measure_diversity(log, pos, samples) if self.collapse is not None else ("", None)
            self.echo(
                f"{kind} {pr['images'] / 1000:.1f} kimg  epoch {self.epoch:.2f}  {res}px fade {pos.fade:.2f}  "
                f"{speed:.1f} img/s  D {vals['d_loss']:.3f} G {vals['g_loss']:.3f}  gp {vals['gp']:.3f}{div}"
            )
            if warning is not None:
                self.echo(warning)
        if due.tick:
            step_tick = round(self.cfg.tick_kimg * 1000)
            pr["next_tick"] = (pr["images"] // step_tick + 1) * step_tick
            pr["ticks"] += 1

    def _on_metric(self, log: RunLog, pos: Position) -> None:
        """A metric point: rank 0 measures ``G_ema`` (the other ranks wait in the next
        collective); the metric schedule advances on every rank."""
        pr = self.progress
        if self.dist.is_main:
            self._evaluate(log, pos)
        step_metric = round(self.cfg.metric_every * 1000)
        pr["next_metric"] = (pr["images"] // step_metric + 1) * step_metric
        self._t_log = time.perf_counter()  # the next speed is training's, not evaluation's

    def _on_checkpoint(self, phase_end: bool) -> Path:
        """A checkpoint at a tick or phase end (named on the console at phase ends)."""
        path = self.save()
        if phase_end:
            self.echo(f"checkpoint {path}")
        return path

    def _on_stop(self, log: RunLog, signum: int) -> str:
        """Stopped by signal ``signum`` (on any rank): checkpoint, record, ``"interrupted"``."""
        self._stop = signum
        path = self.save()
        name = signal.Signals(signum).name
        log.record("event", self.progress["images"], event=f"stopped by {name}", checkpoint=path.name)
        self.echo(f"stopped by {name}: checkpoint {path}")
        return "interrupted"

    def _on_non_finite(self, log: RunLog, images_ok: int, what: str) -> str:
        """Losses or weights stopped being finite after ``images_ok`` images: nothing is
        written from this state; the run stops (``"diverged"``) naming the last checkpoint."""
        images = self.progress["images"]
        last = latest_checkpoint(self.out) if self.dist.is_main else None
        log.record("event", images, event="non-finite losses", detail=what,
                   last_checkpoint=last.name if last else None)
        then = (f"the last checkpoint, {last}, is finite: resume from it, e.g. with a lower --lr"
                if last else "no checkpoint was written yet: start again with a lower --lr")
        self.stop_message = (f"stopped: {what} between {images_ok / 1000:g} and {images / 1000:g} kimg; "
                             f"nothing was saved from them; {then}")
        return "diverged"

    def _on_disk_full(self, e: DiskFullError) -> str:
        """The disk filled up while writing: no partial file, the older checkpoints kept."""
        last = latest_checkpoint(self.out)
        kept = f"last good checkpoint {last}" if last else "no checkpoint was written yet"
        self.stop_message = (f"{e}; stopped at {self.progress['images'] / 1000:g} kimg, {kept}: free "
                             "space and resume with --resume auto")
        return "disk_full"

    def _on_pause(self, log: RunLog) -> str:
        """``max_steps`` reached before the end: checkpoint, record, ``"paused"``."""
        path = self.save()
        log.record("event", self.progress["images"], event="paused", checkpoint=path.name)
        return "paused"
