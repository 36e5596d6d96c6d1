"""The resolved settings of a training run (written to ``config.json`` in the run folder).

Each setting is declared once, as a field of :class:`TrainConfig` (:mod:`.settings`): its
default, resume rule, range and flag (help text, how the flag's text becomes the value). The
``train`` flags, the range checks (:mod:`.limits`) and the resume policy (:mod:`.resume_policy`)
are read from these declarations; the train command resolves the few settings whose value
depends on more than their flag (the device, compile, the data, the run folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from fastpggan.augment import DEFAULT_PIPE, check_pipe
from fastpggan.data.holdout import FACES_HOLDOUT, FOLDER_MAX, FOLDER_SHARE
from fastpggan.metrics.diversity import DEFAULT_THRESHOLD
from fastpggan.networks import check_resolution
from fastpggan.ranges import Limit
from fastpggan.training.per_resolution import DEFAULT_BATCH, DEFAULT_LR, format_per_res, parse_batch, parse_lr
from fastpggan.training.schedule import FADE_KIMG, STABLE_KIMG, TOTAL_KIMG, Schedule
from fastpggan.training.settings import MAY, WITH_SCHEDULE, Flag, fixed, setting
from fastpggan.training.steps import COMPILE_BACKENDS, PRECISIONS

# Where the gradient penalty's norm is taken: "full" = with respect to the full-resolution
# image the authors' networks see (reals and fakes nearest-upscaled, D average-pooling them),
# computed at the current resolution; "current" = the current-resolution image (the seed
# article's form).
GP_RESOLUTIONS = ("full", "current")
# --aug: off (the authors' recipe), a fixed strength, or ADA's adaptive one.
AUG_MODES = ("off", "fixed", "ada")
DEFAULT_METRICS = ("swd",)

# Settings that define the networks' shapes: a checkpoint only fits a run that agrees on them.
ARCH_KEYS = ("resolution", "latent_dim", "fmap_base", "fmap_max")

BIG_KIMG = 1e7  # ten billion images: more than any run, small enough that counts stay exact
KIMG = Limit(0.0, BIG_KIMG)
# An interval in kimg: at least one image, since the loop steps its counters by whole images.
INTERVAL = Limit(0.001, BIG_KIMG)
COUNT = Limit(1, 1_000_000, integer=True)
_SHAPE = fixed("it sets the networks' shapes")
_IMAGES = fixed("the run learns these images")


def default_workers() -> int:
    """``--workers`` when not given: one process per CPU, at most 8."""
    return min(8, os.cpu_count() or 1)


def _power_of_two(resolution: int) -> int:
    check_resolution(resolution)
    return resolution


def _no_auto(precision: str) -> str:
    return "fp32" if precision == "auto" else precision


@dataclass
class TrainConfig:
    """Every setting of a run, resolved (no "auto" left except ``impl``). ``train --help`` lists
    the flags in field order; a setting without a flag keeps the recipe's value."""

    # the model and the data: a different one is a different run
    resolution: int = setting(
        256, resume=_SHAPE, limit=Limit(8, 1024, integer=True),
        flag=Flag("--res", "final resolution, a power of two from 8 to 1024 (default: %(default)s)",
                  "R", parse=_power_of_two))
    data: str | None = setting(  # None: the built-in faces (resolved by the train command)
        None, resume=_IMAGES,
        flag=Flag("--data", "image folder (searched recursively) or .zip of images (default: the "
                  "built-in procedural anime faces)", "PATH"))
    num_faces: int = setting(
        10000, resume=fixed(_IMAGES.why, applies=lambda c: c.get("data") is None),
        limit=Limit(1, 10_000_000, integer=True),
        flag=Flag("--num-faces", "how many built-in faces when --data is not given "
                  "(default: %(default)s)", "N"))
    # Conditional training (the authors' AC-GAN): the classes and their image counts are the
    # data's, filled in by the train command once the data is loaded.
    cond: bool = setting(
        False, resume=fixed("it sets the networks' shapes and what they learn"),
        flag=Flag("--cond", "conditional training (the authors' AC-GAN): G makes the class it is "
                  "given, D also classifies; the labels come from the data (class subfolders, a "
                  "dataset.json, or the built-in faces' hair colour) (default: off)",
                  action=argparse.BooleanOptionalAction))
    classes: list[str] | None = setting(  # None until the data is loaded: checked from then on
        None, resume=fixed("the networks learn these classes", applies=lambda c: c.get("classes") is not None))
    class_counts: list[int] | None = setting(None, resume=MAY)
    out: str = setting(  # resolved by the train command
        "", resume=MAY,
        flag=Flag("--out", "run folder for config, checkpoints, grids, logs (default: runs/<data "
                  "name>-<R>)", "DIR", default=None))
    # the schedule: only where the run's current place in it stays the same
    fade_kimg: float = setting(
        FADE_KIMG, resume=WITH_SCHEDULE, limit=KIMG,
        flag=Flag("--fade-kimg", "thousands of real images over which each new resolution fades in "
                  "(default: %(default)g, the authors')", "K"))
    stable_kimg: float = setting(
        STABLE_KIMG, resume=WITH_SCHEDULE, limit=KIMG,
        flag=Flag("--stable-kimg", "thousands of real images each resolution then trains stable "
                  "before the next fades in; 4x4 gets only this (default: %(default)g, the authors')",
                  "K"))
    total_kimg: float = setting(
        TOTAL_KIMG, resume=WITH_SCHEDULE, limit=Limit(0.0, BIG_KIMG, lo_open=True),
        flag=Flag("--total-kimg", "thousands of real images in the whole run: the final resolution "
                  "trains on until then; must reach it (default: %(default)g, the authors')", "K"))
    # optimisation: takes effect at once
    batch: dict[int, int] = setting(
        factory=lambda: dict(DEFAULT_BATCH), resume=MAY, limit=Limit(1, 65536, integer=True),
        flag=Flag("--batch", "minibatch per resolution (global: split over the processes under "
                  "torchrun): one size for "
                  "all, or RES:SIZE overrides (default, fits an 8 GB card: "
                  + ",".join(f"{r}:{b}" for r, b in DEFAULT_BATCH.items()) + ")", "SPEC",
                  default=None, parse=parse_batch))
    lr: dict[int, float] = setting(
        factory=lambda: dict(DEFAULT_LR), resume=MAY, limit=Limit(0.0, 1.0, lo_open=True),
        flag=Flag("--lr", "Adam learning rate of G and D per resolution: one rate, RES:RATE "
                  "overrides, or both (e.g. 0.002,1024:0.003) (default, the authors' one-GPU "
                  f"preset: {format_per_res(DEFAULT_LR)})", "SPEC", default=None, parse=parse_lr))
    betas: tuple[float, float] = setting((0.0, 0.99), resume=MAY, limit=Limit(0.0, 1.0, hi_open=True))
    adam_eps: float = setting(1e-8, resume=MAY, limit=Limit(0.0, 1.0, lo_open=True))
    seed: int = setting(
        0, resume=fixed("it fixes the run's batch order and latents"),
        limit=Limit(0, 2**32 - 1, integer=True),
        flag=Flag("--seed", "seed of weights, latents and batch order (default: %(default)s)"))
    device: str = setting(  # "auto": resolved by the train command
        "cpu", resume=MAY,
        flag=Flag("--device", "where to train; auto picks cuda when available (default: "
                  "%(default)s)", choices=("auto", "cpu", "cuda"), default="auto"))
    latent_dim: int = setting(
        512, resume=_SHAPE, limit=Limit(1, 8192, integer=True),
        flag=Flag("--latent-dim", "latent size (default: %(default)s)", "N"))
    fmap_base: int = setting(
        8192, resume=_SHAPE, limit=Limit(1, 2**20, integer=True),
        flag=Flag("--fmap-base", "feature maps of stage s are min(fmap_base / 2**s, fmap_max) "
                  "(default: %(default)s)", "N"))
    fmap_max: int = setting(
        512, resume=_SHAPE, limit=Limit(1, 8192, integer=True),
        flag=Flag("--fmap-max", "most feature maps in any layer (default: %(default)s)", "N"))
    mbstd_group_size: int = setting(4, resume=fixed("it sets what D computes"),
                                    limit=Limit(1, 1024, integer=True))
    mirror: bool = setting(
        True, resume=MAY,
        flag=Flag("--no-mirror", "turn off random horizontal flips of the reals (default: flips "
                  "on)", action="store_false", dest="mirror"))
    # Augmentation of every image D sees (fastpggan.augment): off by default, the recipe's
    aug: str = setting(
        "off", resume=MAY,
        flag=Flag("--aug", "augment every image the critic sees (reals, fakes, the penalty's "
                  "mixes) with probability p per transform: off (the authors' recipe), fixed "
                  "(p = --aug-p) or ada (p adapted to the critic's overfitting signal, starting "
                  "at --aug-p); for small datasets, see the README (default: %(default)s)",
                  choices=AUG_MODES))
    aug_p: float = setting(
        0.0, resume=MAY, limit=Limit(0.0, 1.0),
        flag=Flag("--aug-p", "augmentation probability: the value with --aug fixed, the start "
                  "with --aug ada (a resumed ada run keeps its checkpoint's p) (default: "
                  "%(default)s)", "P"))
    aug_target: float = setting(
        0.05, resume=MAY, limit=Limit(0.0, 1.0),
        flag=Flag("--aug-target", "--aug ada raises p while the critic's overfitting r_v "
                  "(held-out reals scored between the training reals, 0, and the fakes, 1) is "
                  "above this, lowers it while below (default: %(default)s, measured: README, "
                  "Small datasets)", "T"))
    aug_kimg: float = setting(
        500.0, resume=MAY, limit=Limit(0.0, BIG_KIMG, lo_open=True),
        flag=Flag("--aug-kimg", "--aug ada moves p by at most 1 per this many thousand images "
                  "(default: %(default)g, ADA's)", "K"))
    aug_pipe: str = setting(
        DEFAULT_PIPE, resume=fixed("the critic has learnt these transforms"),
        flag=Flag("--aug-pipe", "augmentation classes, any of b (x-flip, quarter turns, integer "
                  "moves), g (scale, rotation, anisotropy, fractional moves), c (brightness, "
                  "contrast, luma flip, hue, saturation) (default: %(default)s)", "CLASSES",
                  parse=check_pipe))
    holdout: int = setting(
        0, resume=fixed("the run trains on the other images", applies=lambda c: c.get("data") is not None),
        limit=Limit(0, 1_000_000, integer=True),
        flag=Flag("--holdout", "images kept out of training, scored by the critic beside the "
                  "training reals to measure its overfitting (r_v, logged; the signal of --aug ada): "
                  "with the built-in faces, extra faces past --num-faces; with --data, that many of "
                  f"its images, chosen by --seed (default: 0, or with --aug ada {FACES_HOLDOUT} built-in "
                  f"faces or {round(FOLDER_SHARE * 100)}%% of the folder's images, at most {FOLDER_MAX})",
                  "N", default=None))
    ema_beta: float = setting(
        0.999, resume=MAY, limit=Limit(0.0, 1.0, hi_open=True),
        flag=Flag("--ema-beta", "per-step decay of the generator average used for samples "
                  "(default: %(default)s)", "B"))
    gp_lambda: float = setting(10.0, resume=MAY, limit=Limit(0.0, 1e6))
    drift: float = setting(1e-3, resume=MAY, limit=Limit(0.0, 1.0))
    # what it writes, and where
    tick_kimg: float = setting(
        50.0, resume=MAY, limit=INTERVAL,
        flag=Flag("--tick-kimg", "thousands of images per tick: a sample grid and a console line "
                  "(default: %(default)s)", "T"))
    ckpt_ticks: int = setting(
        4, resume=MAY, limit=COUNT,
        flag=Flag("--ckpt-ticks", "checkpoint every N ticks, and always at phase ends and on "
                  "Ctrl-C/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 (default: %(default)s)", "N"))
    keep_ckpts: int = setting(
        3, resume=MAY, limit=COUNT,
        flag=Flag("--keep-ckpts", "keep the newest N checkpoints (default: %(default)s)", "N"))
    log_kimg: float = setting(
        1.0, resume=MAY, limit=INTERVAL,
        flag=Flag("--log-kimg", "thousands of images between scalar records in "
                  "log.jsonl/TensorBoard (default: %(default)s)", "L"))
    grid: int = setting(
        8, resume=MAY, limit=Limit(1, 32, integer=True),
        flag=Flag("--grid", "sample grids are N x N (default: %(default)s)", "N"))
    workers: int = setting(
        0, resume=MAY, limit=Limit(0, 256, integer=True),
        flag=Flag("--workers", lambda: "processes decoding images and feeding large resolutions "
                  f"(default: min(8, CPUs) = {default_workers()} here)", "N", default=None,
                  parse=lambda n: default_workers() if n is None else n))
    cache_dir: str | None = setting(  # None: <out>/cache (resolved by the train command)
        None, resume=MAY,
        flag=Flag("--cache-dir", "where decoded per-resolution image arrays are kept, keyed by "
                  "the source files (default: <out>/cache)", "DIR"))
    tensorboard: bool = setting(
        True, resume=MAY,
        flag=Flag("--no-tensorboard", "do not write TensorBoard events (default: written when "
                  "tensorboard is installed)", action="store_false", dest="tensorboard"))
    progress: bool = setting(True, resume=MAY)  # a progress bar: set by the train command
    # speed: the fused ops, compile (resolved by the train command), precision
    impl: str = setting(
        "auto", resume=MAY,
        flag=Flag("--impl", "fused ops: Triton kernels, the PyTorch reference, or auto = Triton on "
                  "CUDA GPUs of compute capability 6.0+ (GTX 1080 included) whose architecture "
                  "Triton's ptxas builds for, each op checked against the reference on first use "
                  "(a failing op falls back to it with a warning; FASTPGGAN_SELF_CHECK=0 skips the "
                  "check), the reference elsewhere (default: %(default)s)",
                  choices=("auto", "triton", "reference")))
    compile: bool = setting(
        False, resume=MAY,
        flag=Flag("--compile", "run G and D through torch.compile (default: on for CUDA GPUs of "
                  "compute capability 7.0+; off on the CPU, where it measured no faster, and on "
                  "older GPUs such as the GTX 1080, where no GPU measurement shows it faster yet)",
                  action=argparse.BooleanOptionalAction, default=None))
    compile_backend: str = setting(
        "inductor", resume=MAY,
        flag=Flag("--compile-backend", "torch.compile backend: inductor (generated code; CPU or "
                  "CUDA GPUs of compute capability 7.0+) or cudagraphs (CUDA graphs, no generated "
                  "code; any CUDA GPU, the GTX 1080 included). auto = inductor, cudagraphs on GPUs "
                  "below 7.0. Naming one turns --compile on (default: %(default)s)",
                  choices=("auto", *COMPILE_BACKENDS), default="auto"))
    fused_scale_from: int = setting(
        32, resume=MAY, limit=Limit(1, 2048, integer=True),
        flag=Flag("--fused-scale-from", "G's blocks at RES px and up run their upsample + 3x3 conv "
                  "as one 4x4 transposed conv of stride 2: the same result up to rounding, 16/36 of "
                  "the multiply-adds; a value above --res never fuses (default: %(default)s: a whole "
                  "CPU iteration was faster with it from 32 px on and slower at 16, bench.vs_pro_gan; "
                  "the authors fuse every block; unmeasured on GPUs)", "RES"))
    precision: str = setting(
        "fp32", resume=MAY,
        flag=Flag("--precision", "arithmetic of the G and D passes; the gradient penalty is always "
                  "fp32. auto = fp32 (Pascal GPUs run fp16 at 1/64 rate; lower precision is not yet "
                  "measured to train as well elsewhere) (default: %(default)s)",
                  choices=("auto", *PRECISIONS), default="auto", parse=_no_auto))
    tf32: bool = setting(
        False, resume=MAY,
        flag=Flag("--tf32", "let the fp32 convolutions and matmuls use TensorFloat-32 (a 10-bit "
                  "mantissa) on GPUs of compute capability 8.0+ (Ampere and newer); no effect "
                  "elsewhere. Off = IEEE fp32, the authors' arithmetic; torch itself lets cuDNN "
                  "convolutions use TF32 unless told (default: off)",
                  action=argparse.BooleanOptionalAction))
    gp_resolution: str = setting(
        "full", resume=MAY,
        flag=Flag("--gp-resolution", "where the gradient penalty's norm is taken: full = w.r.t. the "
                  "full-resolution image the authors' networks see (computed at the current "
                  "resolution), current = w.r.t. the current-resolution image (the seed article's "
                  "form) (default: %(default)s)", choices=GP_RESOLUTIONS))
    gp_every: int = setting(
        1, resume=MAY, limit=COUNT,
        flag=Flag("--gp-every", "take the gradient penalty every K-th D step, scaled by K (lazy "
                  "regularisation; 1 = every step, the authors' recipe) (default: %(default)s)",
                  "K"))
    # Quality metrics of G_ema during training (fastpggan.metrics): every metric_every kimg
    # (0 = never) and at phase ends, metric_n generated images against as many reals.
    metric_every: float = setting(
        0.0, resume=MAY, limit=KIMG,
        flag=Flag("--metric-every", "measure G_ema every K thousand images and at each phase end, "
                  "logged as 'metric' records; each measurement pauses training (default: "
                  "%(default)s = never)", "K"))
    metrics: list[str] = setting(  # the flag's list: parsed and checked by the train command
        factory=lambda: list(DEFAULT_METRICS), resume=MAY,
        flag=Flag("--metric", "metrics for --metric-every: swd, fid or swd,fid; SWD is skipped "
                  "below 16 px (default: %(default)s)", "LIST", default=",".join(DEFAULT_METRICS)))
    metric_n: int = setting(
        2000, resume=MAY, limit=Limit(2, 1_000_000, integer=True),
        flag=Flag("--metric-n", "generated images per measurement, against as many reals "
                  "(default: %(default)s)", "N"))
    inception_weights: str | None = setting(
        None, resume=MAY,
        flag=Flag("--inception-weights", "FID's Inception weights file, for machines without "
                  "network (default: torch's hub cache, else downloaded before training starts)",
                  "PATH"))
    # Collapse watch (fastpggan.metrics.diversity): G_ema's diversity against the reals at
    # every tick, a warning when a ratio stays below diversity_threshold.
    diversity: bool = setting(
        True, resume=MAY,
        flag=Flag("--diversity", "the collapse watch: at every tick, G_ema's colour and structure "
                  "variety against the reals' ('diversity' records, the tick line) and a warning "
                  "when it stays low (default: on)", action=argparse.BooleanOptionalAction))
    diversity_threshold: float = setting(
        DEFAULT_THRESHOLD, resume=MAY, limit=Limit(0.0, 1.0, lo_open=True),
        flag=Flag("--diversity-threshold", "warn when a diversity ratio (samples' variety over the "
                  "reals') stays below R for 3 ticks, in (0, 1] (default: %(default)s)", "R"))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "batch" in d:  # JSON turns the int keys into strings
            d["batch"] = {int(k): int(v) for k, v in d["batch"].items()}
        if "lr" in d:  # one number in configs written before the per-resolution rate
            lr = d["lr"]
            d["lr"] = {int(k): float(v) for k, v in lr.items()} if isinstance(lr, dict) else {r: float(lr) for r in DEFAULT_LR}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def schedule(self) -> Schedule:
        """The run's progressive schedule (``ValueError`` when its lengths are invalid)."""
        return Schedule(self.resolution, self.fade_kimg, self.stable_kimg, self.total_kimg)

    def arch(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ARCH_KEYS}

    @property
    def label_size(self) -> int:
        """The networks' number of classes: 0 for an unconditional run."""
        return len(self.classes) if self.cond and self.classes else 0
