"""The end-to-end stages: the real ``train.py`` with its defaults, stopped, resumed, sampled.

One run (:data:`~bench.gpu_report.plan.E2E_GPU`): train.py from 4 px on the built-in faces
with a short schedule; as soon as its ``log.jsonl`` shows it training at the top resolution the
report sends it SIGTERM (what Ctrl-C or a cluster's pre-emption does: it writes a checkpoint
and exits 143); ``train.py --resume auto`` then continues from that checkpoint to the end of
the schedule; ``python -m fastpggan generate`` samples a grid from the last checkpoint.
Both train processes run under :mod:`bench.gpu_report.peak`, which records their peak CUDA
memory; the resume trains at the top resolution only, so its peak is that resolution's.

``e2e`` runs it with train.py's defaults (fused ops, compiled, where the device allows).
``e2e_ref`` runs the same schedule with ``--impl reference --no-compile`` in one process,
start to end (it is there for the speeds), and sets the two runs' speeds side by side.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.gpu_report import trainlog
from bench.gpu_report.plan import (
    E2E_DRY,
    E2E_GENERATE_MIN_S,
    E2E_GPU,
    E2E_GENERATE_SHARE,
    E2E_RUN_SHARE,
    E2E_STOP_MARGIN_S,
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
    config: dict = field(default_factory=dict)  # the run's config.json (train's resolved settings)
    grids: list[str] = field(default_factory=list)  # files copied next to the report
    problems: list[str] = field(default_factory=list)


def stage_e2e(ctx: Context, timeout: float) -> StageResult:
    run = run_e2e(ctx, timeout, reference=False)
    ctx.shared["e2e"] = run
    return describe(run, ctx, compare=None)


def stage_e2e_ref(ctx: Context, timeout: float) -> StageResult:
    run = run_e2e(ctx, timeout, reference=True)
    return describe(run, ctx, compare=ctx.shared.get("e2e"))


def _read_peak(path: Path) -> int | None:
    try:
        return json.loads(path.read_text())["peak_bytes"]
    except (OSError, ValueError, KeyError):
        return None


def run_e2e(ctx: Context, timeout: float, reference: bool) -> E2ERun:
    """``e2e``: train, stopped at the top resolution; resume to the end; generate.
    ``e2e_ref`` (``reference``): one run straight to the end, for the speeds alone."""
    size = E2E_DRY if ctx.dry_run else E2E_GPU
    name = "e2e_ref" if reference else "e2e"
    run = E2ERun(name, size.res)
    out = ctx.work_dir / name
    shutil.rmtree(out, ignore_errors=True)
    # one cache of the rendered faces for both runs: the second one only memory-maps it
    flags = [*train_flags(size), "--out", str(out), "--cache-dir", str(ctx.work_dir / "faces_cache"),
             *(REFERENCE_FLAGS if reference else ())]
    env = subprocess_env(False, ctx.dry_run)
    deadline = time.monotonic() + timeout
    if reference:
        _train(run, ctx, out, flags, env, "train", until=timeout, stop_when=None)
        if run.procs["train"].returncode == 0 and trainlog.events(run.records)[-1:] != ["done"]:
            run.problems.append("train exited 0 before the end of its schedule")
        return run

    generate_s = timeout * E2E_GENERATE_SHARE
    _train(run, ctx, out, flags, env, "train", until=timeout - generate_s,
           stop_when=_reaches(out / "log.jsonl", size.res), share=timeout * E2E_RUN_SHARE)
    if _latest_checkpoint(out) is None:
        run.problems.append("train left no checkpoint: resume and generate not run")
        return run
    _train(run, ctx, out, [*flags, "--resume", "auto"], env, "resume",
           until=deadline - time.monotonic() - generate_s, stop_when=None)
    if not trainlog.resumed_and_trained(run.records):
        run.problems.append("the resume trained no step")
    elif run.procs["resume"].returncode == 0 and trainlog.events(run.records)[-1:] != ["done"]:
        run.problems.append("the resume exited 0 before the end of its schedule")
    _generate(run, ctx, out, env, max(deadline - time.monotonic(), E2E_GENERATE_MIN_S),
              size.generate_n)
    return run


def _reaches(log_jsonl: Path, res: int) -> Callable[[], bool]:
    """Polled while train runs: has ``log_jsonl`` a record at ``res`` px yet?"""
    tail = trainlog.Tail(log_jsonl)
    seen = [0]

    def check() -> bool:
        seen.extend(r["res"] for r in tail.new() if isinstance(r.get("res"), int))
        return max(seen) >= res

    return check


def _train(run: E2ERun, ctx: Context, out: Path, flags: list[str], env: dict[str, str],
           label: str, until: float, stop_when: Callable[[], bool] | None,
           share: float | None = None) -> None:
    """One train.py process (``label`` "train" or "resume") of at most ``until`` seconds.

    With ``stop_when``: SIGTERM when it is true (the expected end: exit 143 with a checkpoint),
    or at the end of ``share`` seconds. Without: it should finish its schedule (exit 0); it gets
    SIGTERM shortly before ``until`` so that it can still write its checkpoint.
    """
    peak_json = ctx.log_dir / f"{run.name}_{label}_peak.json"
    cmd = [sys.executable, "-m", "bench.gpu_report.peak", str(peak_json), str(ROOT / "train.py"),
           *flags]
    stop_after = share if stop_when is not None else until - E2E_STOP_MARGIN_S
    grace = STOP_GRACE_S if stop_when is not None else E2E_STOP_MARGIN_S
    proc = run_logged(cmd, env, until, ctx.log_dir / f"{run.name}_{label}.log",
                      stop_when=stop_when, stop_after=stop_after, grace=grace)
    run.procs[label] = proc
    run.peaks[label] = _read_peak(peak_json)
    run.records = trainlog.read_records(out / "log.jsonl")
    if label == "train":
        run.reached = trainlog.top_res(run.records)
        try:
            run.config = json.loads((out / "config.json").read_text())
        except (OSError, ValueError):
            pass
    expected = 143 if stop_when is not None else 0  # 143: the report's SIGTERM, checkpointed
    if stop_when is not None and proc.returncode == 0:
        run.problems.append(f"train finished before the report could stop it at {run.top} px: "
                            "the resume had nothing to train")
    elif proc.stopped and proc.stopped != "reached its goal":
        run.problems.append(f"{label} got to {trainlog.top_res(run.records) or 0} px and was "
                            f"stopped after {proc.seconds:.0f} s: {proc.describe()}")
    elif proc.returncode != expected:
        run.problems.append(f"{label}: {proc.describe()}: {proc.last_error_line()}")


def _generate(run: E2ERun, ctx: Context, out: Path, env: dict[str, str], timeout: float,
              n: int) -> None:
    """``generate`` from the run's last checkpoint, and train's own last grid, next to the report."""
    ckpt = _latest_checkpoint(out)
    grid = ctx.out_dir / "grid-generate.png"
    grid.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "fastpggan", "generate", "--ckpt", str(ckpt), "--n", str(n),
           "--out", str(grid)]
    proc = run_logged(cmd, env, timeout, ctx.log_dir / f"{run.name}_generate.log")
    run.procs["generate"] = proc
    if proc.returncode == 0 and grid.exists():
        run.grids.append(f"{grid.name} ({n} samples from {ckpt.name})")
    else:
        run.problems.append(f"generate: {proc.describe()}: {proc.last_error_line()}")
    if (last := _last_grid(out)) is not None:
        _copy_small(last, ctx.out_dir / "grid-train.png")
        run.grids.append(f"grid-train.png (train's {last.name})")


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


def _span(resolutions: list[int]) -> str:
    """``[64, 128, 256]`` -> ``at 64-256 px``; ``[256]`` -> ``at 256 px``."""
    if not resolutions:
        return "(no step)"
    lo, hi = resolutions[0], resolutions[-1]
    return f"at {lo} px" if lo == hi else f"at {lo}-{hi} px"


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
    if ctx.dry_run and not any(run.peaks.values()):
        mem = "not measured on the CPU"
    else:
        where = {"train": f"train {_span([4, run.reached] if run.reached else [])}",
                 "resume": f"resume {_span(trainlog.resumed_resolutions(run.records))}"}
        mem = "; ".join(f"{where[k]} {gib(v)}" for k, v in run.peaks.items())
    result.rows.append((f"{run.name} peak memory", mem))
    if run.grids:
        result.rows.append((f"{run.name} grids", "; ".join(run.grids)))
    reached = f"reached {run.reached} px" if run.reached else "trained no step"
    cfg = run.config
    how = (f"impl {cfg.get('impl')}, compile {'on' if cfg.get('compile') else 'off'}"
           + (f" ({cfg['compile_backend']})" if cfg.get("compile") and "compile_backend" in cfg else "")
           + f", {cfg.get('precision')}, on {cfg.get('device')}") if cfg else "no config.json"
    result.summary = (f"{reached}; {how}; {len(compiles)} compiles; "
                      f"{sum(r.get('kind') == 'log' for r in run.records)} log records")
    result.status = "ok"
    for problem in run.problems:
        result.fail(problem)
    if not result.ok:
        result.details = "\n".join(f"--- {k}\n{p.tail()}" for k, p in run.procs.items())
    return result
