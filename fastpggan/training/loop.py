"""The progressive training loop (the authors' recipe) with exact, atomic checkpoints.

:class:`Trainer` holds what a checkpoint holds (models, optimizers, latent generator, the
:class:`.progress.Progress` counters) and writes it; each :meth:`Trainer.run` is a
:class:`.run.Run`, which takes the steps and handles what each one ends.

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
rank), gradients are averaged before each optimizer step, and ``cfg.batch`` is the global
batch, split evenly over the ranks (:meth:`.distributed.Distributed.local_batch`): a step
consumes the same images however many ranks share it, and the images counted (kimg,
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fastpggan.console import printable
from fastpggan.data import ImageData, split_holdout
from fastpggan.data.holdout import check_holdout
from fastpggan.errors import stop_signals
from fastpggan.networks import Discriminator, Generator
from fastpggan.training.ada import AugmentStrength
from fastpggan.training.checkpoint import FORMAT, checkpoint_name, list_checkpoints, save_checkpoint
from fastpggan.training.collapse import CollapseMonitor, run_latents
from fastpggan.training.config import TrainConfig
from fastpggan.training.distributed import Distributed, param_digest, rank_seed
from fastpggan.training.metric_points import MetricPoints
from fastpggan.training.progress import Progress
from fastpggan.training.resume_policy import resume_changes
from fastpggan.training.run import NonFinite, Run
from fastpggan.training.steps import TrainSteps, set_tf32


class Trainer:
    """Owns the models, optimizers, schedule and run folder of one run (``cfg.out``): what a
    checkpoint holds (:meth:`state_dict`, :meth:`save`), with :attr:`progress` its counters.
    Each :meth:`run` is a :class:`.run.Run`, which steps it.

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
        # --holdout: the images D never trains on, scored beside the training reals (the
        # built-in faces' are extra faces loaded after the --num-faces ones)
        check_holdout(data.count, cfg.holdout, cfg.aug)
        train, held = split_holdout(data.count, cfg.holdout, cfg.seed, tail=cfg.data is None)
        self.heldout = data.take(held) if cfg.holdout else None
        self.cfg, self.data = cfg, data.take(train) if cfg.holdout else data
        data = self.data
        self.dist.check_batches(cfg.batch, cfg.resolution)
        # every line printable whatever the terminal (file names need not be text)
        self.echo = (lambda line: echo(printable(line))) if self.dist.is_main else (lambda line: None)
        self.out = Path(cfg.out)
        self.device = self.dist.device(cfg.device)
        self.schedule = cfg.schedule()
        torch.manual_seed(cfg.seed)  # weight init
        if cfg.cond and not cfg.classes:
            raise ValueError("cfg.cond needs cfg.classes (the train command takes them from the data)")
        K = cfg.label_size
        self.G = Generator(cfg.resolution, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, impl=cfg.impl, label_size=K)
        self.D = Discriminator(cfg.resolution, cfg.fmap_base, cfg.fmap_max, cfg.mbstd_group_size, impl=cfg.impl,
                               label_size=K)
        self.G.set_fused_scale(cfg.fused_scale_from)
        set_tf32(cfg.tf32)
        self.G.to(self.device)
        self.D.to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        adam = dict(lr=cfg.lr[4], betas=tuple(cfg.betas), eps=cfg.adam_eps)  # each phase sets its own
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)
        self.gen = torch.Generator(self.device).manual_seed(rank_seed(cfg.seed, self.dist.rank))
        # --aug: its strength p (moved on the device by --aug ada) and the pipeline, which draws
        # from the latents' generator (saved in checkpoints); off, nothing draws from it.
        self.aug = AugmentStrength(cfg.aug, cfg.aug_pipe, cfg.aug_p, cfg.aug_target, cfg.aug_kimg,
                                   self.device, self.gen, self.dist)
        self.steps = TrainSteps(
            self.G, self.D, self.opt_g, self.opt_d, compile=cfg.compile,
            compile_backend=cfg.compile_backend, precision=cfg.precision,
            gp_lambda=cfg.gp_lambda, drift=cfg.drift, gp_every=cfg.gp_every, gp_resolution=cfg.gp_resolution,
            grad_sync=self.dist.sync_grads if self.dist.enabled else None, augment=self.aug.augment,
        )
        self.compiled_segments: set[tuple[int, bool]] = set()  # whose compile time was reported
        self.fade_t = torch.zeros((), device=self.device)
        self.zero = torch.zeros((), device=self.device)  # a statistic a run does not measure
        # Conditional: every real's class, int64 [N] on the device (G's step draws its labels
        # from them, so classes come at the data's frequencies, as the authors draw them).
        self.train_labels = torch.from_numpy(np.asarray(data.labels)).to(self.device) if K else None
        grid_z, grid_labels, extra_z, extra_labels = run_latents(cfg)
        self.grid_z = grid_z.to(self.device)
        self.grid_labels = grid_labels.to(self.device) if grid_labels is not None else None
        # What a run measures besides the losses: the collapse watch, G_ema's diversity at every
        # tick (rank 0 measures; its state is kept in progress.diversity_watch, so checkpoints
        # carry it), and the metric points (--metric-every).
        watch = cfg.diversity and self.dist.is_main and data.count >= 2  # a spread needs 2 reals
        self.collapse = CollapseMonitor(
            data, extra_z.to(self.device), cfg.diversity_threshold,
            extra_labels.to(self.device) if extra_labels is not None else None, self.grid_labels,
        ) if watch else None
        self.metric_points = MetricPoints(cfg, data, self.device, self.echo)
        self.progress = Progress.start(cfg)
        # Settings changed on resume: {field: [old, new]} (recorded in the resume event).
        self.resumed_changes: dict[str, list[Any]] = {}
        self.resumed_at: int | None = None  # images seen when the checkpoint resumed from was written
        if resume is not None:
            self._load(resume)
        if self.collapse is not None:
            self.collapse.load_state_dict(self.progress.diversity_watch or {})
        self.dist.broadcast_(self.G, self.D, self.G_ema)  # every rank starts from rank 0's weights
        self.stopped_by: int | None = None  # the signal number that stopped the last run(), if any
        self.stop_message: str | None = None  # one line when run() ends "diverged" or "disk_full"

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
            "augment": self.aug.state_dict(),
            "progress": self.progress.state_dict(),
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
        self.aug.load_state_dict(s.get("augment"))
        self.progress.load_state_dict(s["progress"])
        self.resumed_at = self.progress.images
        self.progress.restart_intervals(self.cfg, self.resumed_changes)
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
            self.gen.manual_seed(rank_seed(self.cfg.seed * 1_000_003 + self.progress.step, self.dist.rank))
            why = (f"from {len(gens)} to {self.dist.world_size} processes" if same_device
                   else f"on {self.device.type} from a {rng['gen_device']} run")
            self.echo(f"note: resumed {why}; latents reseeded")

    def _apply_adam_settings(self) -> None:
        """Restored optimizers keep the hyperparameters they were saved with: give them this
        run's. (The learning rate is the phase's: :meth:`.run.Run._enter` sets it when the resumed
        run enters its phase, so a rate changed on resume takes effect there.)"""
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["betas"] = tuple(self.cfg.betas)
                group["eps"] = self.cfg.adam_eps

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
            raise RuntimeError(f"ranks hold different weights at step {self.progress.step}: {digests}")
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
        res = self.schedule.at(self.progress.images).phase.res
        path = self.out / checkpoint_name(self.progress.images, res)
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

    # --- the run -------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> str:
        """Train to the end of the schedule: returns ``"done"``, ``"interrupted"`` (one of
        :data:`fastpggan.errors.STOP_SIGNALS`: checkpoint written), ``"paused"`` (``max_steps`` reached: checkpoint written),
        ``"diverged"`` (non-finite losses or weights: stopped, nothing written from them) or
        ``"disk_full"`` (the older checkpoints kept); the last two set :attr:`stop_message`.
        The steps and what they end are :class:`.run.Run`'s."""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        run = Run(self)
        try:
            with stop_signals(run.on_signal):
                return run.train(max_steps)
        finally:
            run.close()
            self.stopped_by, self.stop_message = run.stopped_by, run.stop_message
