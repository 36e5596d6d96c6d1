"""The end-to-end stages: the real ``train.py`` with its defaults, stopped, resumed, sampled.

One run (:data:`~bench.gpu_report.plan.E2E_GPU`): train.py from 4 px on the built-in faces
with a short schedule; as soon as its ``log.jsonl`` shows it training at the top resolution the
report sends it SIGTERM (what Ctrl-C or a cluster's pre-emption does: it writes a checkpoint
and exits 143); ``train.py --resume auto`` then continues from that checkpoint to the end of
the schedule; ``python -m fastpggan generate`` samples a grid from the last checkpoint.
Both train processes run under :mod:`bench.gpu_report.peak`, which records their peak CUDA
memory; the resume trains at the top resolution only, so its peak is that resolution's.

``e2e`` runs it with train.py's defaults (fused ops, compiled, where the device allows);
``e2e_ref`` with ``--impl reference --no-compile``, same schedule, and sets the two runs'
speeds side by side.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.gpu_report import trainlog
from bench.gpu_report.plan import (
    E2E_DRY,
    E2E_GENERATE_MIN_S,
    E2E_GPU,
    E2E_RESUME_SHARE,
    E2E_RUN_SHARE,
    REFERENCE_FLAGS,
    STOP_GRACE_S,
    train_flags,
)
from bench.gpu_report.procs import ROOT, Proc, run_logged, subprocess_env
from bench.gpu_report.stages import Context
from bench.gpu_report.table import StageResult, gib

GRID_MAX_PX = 1024  # the copy of train's last grid next to the report is at most this wide


@dataclass
class E2ERun:
    """What one end-to-end run left behind."""

    name: str
    top: int  # the schedule's top resolution
    procs: dict[str, Proc] = field(default_factory=dict)  # "train", "resume", "generate"
    peaks: dict[str, int | None] = field(default_factory=dict)  # "train", "resume"
    records: list[dict] = field(default_factory=list)
    reached: int | None = None  # highest resolution the first process trained at
    grids: list[str] = field(default_factory=list)  # files copied next to the report
    problems: list[str] = field(default_factory=list)


def stage_e2e(ctx: Context, timeout: float) -> StageResult:
    run = run_e2e(ctx, timeout, reference=False)
    ctx.shared["e2e"] = run
    return describe(run, ctx, compare=None)


def stage_e2e_ref(ctx: Context, timeout: float) -> StageResult:
    run = run_e2e(ctx, timeout, reference=True)
    return describe(run, ctx, compare=ctx.shared.get("e2e"))


def _train_cmd(peak_json: Path, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "bench.gpu_report.peak", str(peak_json),
            str(ROOT / "train.py"), *flags]


def _read_peak(path: Path) -> int | None:
    try:
        return json.loads(path.read_text())["peak_bytes"]
    except (OSError, ValueError, KeyError):
        return None


def run_e2e(ctx: Context, timeout: float, reference: bool) -> E2ERun:
    size = E2E_DRY if ctx.dry_run else E2E_GPU
    name = "e2e_ref" if reference else "e2e"
    run = E2ERun(name, size.res)
    out = ctx.work_dir / name
    shutil.rmtree(out, ignore_errors=True)
    # one cache of the rendered faces for both runs: the second one only memory-maps it
    flags = [*train_flags(size), "--out", str(out), "--cache-dir", str(ctx.work_dir / "faces_cache"),
             *(REFERENCE_FLAGS if reference else ())]
    env = subprocess_env(False, ctx.dry_run)
    start = time.monotonic()

    def left() -> float:
        return timeout - (time.monotonic() - start)

    # 1. train from scratch, stopped as soon as it trains at the top resolution
    tail = trainlog.Tail(out / "log.jsonl")
    seen: list[int] = []

    def at_top() -> bool:
        seen.extend(r["res"] for r in tail.new() if isinstance(r.get("res"), int))
        return bool(seen) and max(seen) >= size.res

    share = timeout * E2E_RUN_SHARE
    proc = run_logged(_train_cmd(ctx.log_dir / f"{name}_train_peak.json", flags), env,
                      left(), ctx.log_dir / f"{name}_train.log", stop_when=at_top,
                      stop_after=share, grace=STOP_GRACE_S)
    run.procs["train"] = proc
    run.peaks["train"] = _read_peak(ctx.log_dir / f"{name}_train_peak.json")
    run.reached = trainlog.top_res(trainlog.read_records(out / "log.jsonl"))
    if proc.returncode == 0 and not proc.stopped:
        run.problems.append(f"train finished before the report could stop it at {size.res} px: "
                            "the resume had nothing to train")
    elif proc.stopped and proc.stopped != "reached its goal":
        run.problems.append(f"train got to {run.reached or 0} px, not {size.res} px, in its "
                            f"{share:.0f} s")
    if proc.returncode not in (0, 143):  # 143: stopped by the report's SIGTERM, checkpointed
        run.problems.append(f"train: {proc.describe()}: {proc.last_error_line()}")

    # 2. resume from its last checkpoint and train to the end of the schedule
    if _latest_checkpoint(out) is None:
        run.problems.append("train left no checkpoint: resume and generate not run")
    else:
        share = timeout * (E2E_RUN_SHARE + E2E_RESUME_SHARE) - (time.monotonic() - start)
        proc = run_logged(_train_cmd(ctx.log_dir / f"{name}_resume_peak.json",
                                     [*flags, "--resume", "auto"]), env, left(),
                          ctx.log_dir / f"{name}_resume.log", stop_after=max(share, 1.0),
                          grace=min(STOP_GRACE_S, max(left() - 1, 1.0)))
        run.procs["resume"] = proc
        run.peaks["resume"] = _read_peak(ctx.log_dir / f"{name}_resume_peak.json")
        if proc.returncode != 0:
            run.problems.append(f"resume: {proc.describe()}: {proc.last_error_line()}")
    run.records = trainlog.read_records(out / "log.jsonl")
    if "resume" in run.procs:
        if not trainlog.resumed_and_trained(run.records):
            run.problems.append("the resume trained no step")
        elif trainlog.events(run.records)[-1:] != ["done"]:
            run.problems.append("the resumed run did not reach the end of its schedule")

    # 3. a grid from the last checkpoint, and the run's own last grid, next to the report
    ckpt = _latest_checkpoint(out)
    if not reference and ckpt is not None:
        grid = ctx.out_dir / "grid-generate.png"
        grid.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "fastpggan", "generate", "--ckpt", str(ckpt),
               "--n", str(size.generate_n), "--out", str(grid)]
        proc = run_logged(cmd, env, max(left(), E2E_GENERATE_MIN_S), ctx.log_dir / f"{name}_generate.log")
        run.procs["generate"] = proc
        if proc.returncode == 0 and grid.exists():
            run.grids.append(f"{grid.name} ({size.generate_n} samples from {ckpt.name})")
        else:
            run.problems.append(f"generate: {proc.describe()}: {proc.last_error_line()}")
        if (last := _last_grid(out)) is not None:
            _copy_small(last, ctx.out_dir / "grid-train.png")
            run.grids.append(f"grid-train.png (train's {last.name})")
    return run


def _latest_checkpoint(folder: Path) -> Path | None:
    from fastpggan.training.checkpoint import latest_checkpoint

    return latest_checkpoint(folder)


def _last_grid(folder: Path) -> Path | None:
    """The newest ``grid-{res}px-{kimg}kimg.png`` of a run folder (by images seen)."""
    def kimg(p: Path) -> float:
        try:
            return float(p.stem.rsplit("-", 1)[1].removesuffix("kimg"))
        except (IndexError, ValueError):
            return -1.0

    grids = sorted(folder.glob("grid-*px-*kimg.png"), key=kimg)
    return grids[-1] if grids else None


def _copy_small(src: Path, dst: Path) -> None:
    """``src`` saved as ``dst``, scaled down to at most :data:`GRID_MAX_PX` wide."""
    from PIL import Image

    with Image.open(src) as img:
        if img.width > GRID_MAX_PX:
            img = img.resize((GRID_MAX_PX, round(img.height * GRID_MAX_PX / img.width)),
                             Image.Resampling.LANCZOS)
        img.save(dst)


def _speeds_text(speeds: dict[int, trainlog.Speed]) -> str:
    return ", ".join(f"{s.res} px {s.img_s:.0f}" for s in speeds.values()) or "none measured"


def describe(run: E2ERun, ctx: Context, compare: E2ERun | None) -> StageResult:
    """The table lines of one end-to-end run (``compare``: the fast run, for the ratios)."""
    result = StageResult(run.name)
    procs = "; ".join(f"{k}: {p.describe()} in {p.seconds:.0f} s" for k, p in run.procs.items())
    result.rows.append((f"{run.name} processes", procs))
    compiles = trainlog.compiles(run.records)
    if compiles:
        by_process: dict[int, list[str]] = {}
        for c in compiles:
            by_process.setdefault(c.process, []).append(f"{c.res}{c.phase[0]} {c.seconds:.1f}")
        text = "; ".join(f"{'train' if p == 0 else f'resume {p}'}: {', '.join(v)}"
                         for p, v in by_process.items())
        total = sum(c.seconds for c in compiles)
        result.rows.append((f"{run.name} compile s (res, f=fade s=stable)",
                            f"{text}; total {total:.0f} s"))
    speeds = trainlog.speeds(run.records)
    result.rows.append((f"{run.name} img/s per resolution", _speeds_text(speeds)))
    if compare is not None:
        fast = trainlog.speeds(compare.records)
        ratios = [f"{r} px {fast[r].img_s / s.img_s:.2f}x" for r, s in speeds.items() if r in fast]
        result.rows.append(("e2e / e2e_ref img/s", ", ".join(ratios) or
                            "n/a (the e2e stage measured no common resolution)"))
    peak = run.peaks
    if ctx.dry_run and not any(peak.values()):
        mem = "not measured on the CPU"
    else:
        mem = (f"train 4-{run.reached or '?'} px {gib(peak.get('train'))}; "
               f"resume at {run.top} px {gib(peak.get('resume'))}")
    result.rows.append((f"{run.name} peak memory", mem))
    if run.grids:
        result.rows.append((f"{run.name} grids", "; ".join(run.grids)))
    reached = f"reached {run.reached} px" if run.reached else "trained no step"
    result.summary = (f"{reached}; {len(compiles)} compiles; "
                      f"{sum(r.get('kind') == 'log' for r in run.records)} log records")
    result.status = "ok"
    for problem in run.problems:
        result.fail(problem)
    if not result.ok:
        result.details = "\n".join(f"--- {k}\n{p.tail()}" for k, p in run.procs.items())
    return result
