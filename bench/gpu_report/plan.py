"""What the report runs and how long each part may take: the one place for sizes and caps.

Stages run in this order, most important first, so that a report cut short still holds kernel
correctness, the training command end to end, the training iteration's throughput and memory
at 256 px. Each stage stops at its own cap (seconds on a GPU) plus the time earlier stages
left unused, and never past the report's overall budget.

A dry run (``--dry-run``, CPU) runs every stage's real code at the tiny sizes below: it checks
the plumbing in CI and measures nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    cap_s: float  # on a GPU
    dry_cap_s: float  # in a dry run on a CPU (a guard against hangs, not a plan)


STAGES: tuple[Stage, ...] = (
    Stage("tests", "kernel tests vs float64 reference", 50, 90),
    Stage("e2e", "train.py end to end: defaults (fused ops, compiled)", 250, 120),
    Stage("e2e_ref", "train.py end to end: --impl reference --no-compile", 40, 90),
    # 8 variants, each compiled anew: the last two (G's fusion flipped, TF32) need the time
    Stage("throughput", "training iteration, every variant side by side", 90, 90),
    Stage("memory", "peak memory: measured against estimated", 15, 60),
    Stage("bench", "fused-op microbenchmarks", 20, 90),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}

# The whole report on a GPU: the caps above (465 s) and the table; with the report's own
# start-up (importing torch, a few seconds) within 8 minutes.
DEFAULT_BUDGET_S = 470.0
RESERVE_S = 5.0  # kept back at the end for the table and the archive of logs
MIN_STAGE_S = 10.0  # a stage with less than this left is skipped (a tenth of it in a dry run)


def min_stage_s(dry_run: bool) -> float:
    return MIN_STAGE_S / 10 if dry_run else MIN_STAGE_S


# --- kernel tests ---------------------------------------------------------------------------
KERNEL_TESTS = ("tests/test_kernels.py", "tests/test_ops_dispatch.py")
KERNEL_TEST_WORKERS = 8  # pytest-xdist processes, where it is installed
# The dry run's interpreted subset: one test of each kind, seconds on a CPU.
DRY_RUN_TESTS = ("test_epilogue_out_scale_sign or test_mbstd_double_backward or "
                 "test_opcheck_every_op or test_broken_triton_never_crashes_auto")


# --- end to end: train.py, then a resume, then generate --------------------------------------
@dataclass(frozen=True)
class TrainRun:
    """A short training schedule up to ``res`` and the flags besides train.py's defaults.

    Each resolution fades in for ``fade_kimg`` and trains stable for ``stable_kimg``; the last
    one trains ``final_kimg`` more, so that the report can stop the run there and resume it.
    """

    res: int
    fade_kimg: float
    stable_kimg: float
    final_kimg: float
    log_kimg: float  # several log records per phase: img/s from intervals without a compile
    num_faces: int
    model: tuple[str, ...] = ()  # model-size flags (dry run only)
    generate_n: int = 16


# 256 px from 4 px: 13 segments (fade and stable per resolution), each compiled once; 4,800
# images in all (1,280 at 256 px). 1,024 built-in faces: rendering the default 10,000 would
# take about a minute of the budget and says nothing more about training.
E2E_GPU = TrainRun(res=256, fade_kimg=0.32, stable_kimg=0.32, final_kimg=0.64, log_kimg=0.032,
                   num_faces=1024)
# The dry run: 4 to 16 px, a tiny model; the last phase is 20 steps, so the report sees the run
# at 16 px (it polls every 0.2 s) well before the schedule ends.
E2E_DRY = TrainRun(res=16, fade_kimg=0.016, stable_kimg=0.016, final_kimg=0.16, log_kimg=0.008,
                   num_faces=32, model=("--fmap-base", "64", "--fmap-max", "16",
                                        "--latent-dim", "16", "--batch", "8", "--grid", "4"))


def schedule_flags(run: TrainRun) -> list[str]:
    """``run``'s schedule as train.py flags: the only code that knows those flags' names.

    train.py: ``--fade-kimg`` and ``--stable-kimg`` per resolution (4 px: the stable part only),
    then the last resolution trains on until ``--total-kimg``.
    """
    later = run.res.bit_length() - 3  # resolutions after 4 px, each faded in, then stable
    total = run.stable_kimg + later * (run.fade_kimg + run.stable_kimg) + run.final_kimg
    return ["--fade-kimg", f"{run.fade_kimg:g}", "--stable-kimg", f"{run.stable_kimg:g}",
            "--total-kimg", f"{round(total, 6):g}"]


def train_flags(run: TrainRun) -> list[str]:
    """Everything the report passes to train.py besides ``--out``, ``--cache-dir``, ``--resume``."""
    return ["--res", str(run.res), *schedule_flags(run), "--log-kimg", f"{run.log_kimg:g}",
            "--num-faces", str(run.num_faces), *run.model]


REFERENCE_FLAGS = ("--impl", "reference", "--no-compile")
# Shares of the stage's time: the first run is stopped (SIGTERM) as soon as it trains at the
# top resolution, or at the end of its share; the resume runs to the end of the schedule, or
# until generate's share (e2e only) is all that is left.
E2E_RUN_SHARE = 0.62
E2E_GENERATE_SHARE = 0.1
E2E_GENERATE_MIN_S = 20.0  # generate gets at least this, even past the stage's cap
STOP_GRACE_S = 25.0  # after SIGTERM: a step still compiling must finish, then a checkpoint
E2E_STOP_MARGIN_S = 15.0  # the resume's SIGTERM comes this long before its hard limit


# --- throughput and memory of one training iteration -----------------------------------------
@dataclass(frozen=True)
class IterationSize:
    res: int
    batch: int
    model: tuple[str, ...] = ()  # bench.train_throughput / bench.memory_estimate flags
    timing: tuple[str, ...] = ()


THROUGHPUT_GPU = IterationSize(256, 16)
THROUGHPUT_DRY = IterationSize(8, 4, ("--fmap-base", "32", "--fmap-max", "8", "--latent-dim", "8"),
                               ("--warmup", "1", "--min-iters", "1", "--min-time", "0"))
GTX1080_BYTES = 8 * 2**30  # the target card's memory (its CUDA context, ~0.3 GiB, not counted)


# --- fused-op microbenchmarks ----------------------------------------------------------------
BENCH_RES_GPU = (256, 32)  # 64 channels at batch 8, 512 channels at batch 64
BENCH_RES_DRY = (4,)
DRY_RUN_BENCH = "mbstd-fwd-4px-N128"  # one small group, eager against compiled
GPU_BENCH = "not compiled"  # the eager reference against the Triton kernels
