"""``python -m bench.gpu_report``: the arguments, the stage loop within the budget, the output.

Exit status: 0 when every selected stage passed; 1 when one failed or ran out of time (the
table is still written); 2 for bad arguments or no usable GPU, before any work.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from bench.gpu_report.e2e import stage_e2e, stage_e2e_ref
from bench.gpu_report.plan import (
    BY_NAME,
    DEFAULT_BUDGET_S,
    RESERVE_S,
    STAGE_NAMES,
    STAGES,
    min_stage_s,
)
from bench.gpu_report.procs import ROOT
from bench.gpu_report.stages import (
    Context,
    stage_bench,
    stage_memory,
    stage_tests,
    stage_throughput,
)
from bench.gpu_report.table import (
    NOT_SELECTED,
    StageResult,
    git_commit,
    header_value,
    machine_rows,
    render_table,
)

RESULTS = ROOT / "bench" / "RESULTS.md"
STAGE_FUNCS: dict[str, Callable[[Context, float], StageResult]] = {
    "tests": stage_tests, "e2e": stage_e2e, "e2e_ref": stage_e2e_ref,
    "throughput": stage_throughput, "memory": stage_memory, "bench": stage_bench,
}
# What --out-dir receives (a GPU session copies back at most 8 files): nothing else.
OUT_FILES = ("report.md", "logs.tar.gz", "grid-generate.png", "grid-train.png")


def cap_s(name: str, dry_run: bool) -> float:
    stage = BY_NAME[name]
    return stage.dry_cap_s if dry_run else stage.cap_s


def plan_text(selected: list[str], budget_s: float, dry_run: bool) -> str:
    """The plan printed at the start: each stage's cap and the expected duration."""
    caps = {n: cap_s(n, dry_run) for n in selected}
    expected = min(sum(caps.values()) + RESERVE_S, budget_s)
    where = "dry run on the CPU" if dry_run else "GPU"
    stages = ", ".join(f"{n} {c:.0f}" for n, c in caps.items())
    return (f"expected duration: at most {expected:.0f} s ({expected / 60:.1f} min, {where}; "
            f"budget {budget_s:.0f} s); caps in s: {stages}")


def run_stages(ctx: Context, selected: list[str], budget_s: float, log: Callable[[str], None]
               ) -> list[StageResult]:
    """Every stage in order, each within its cap plus what earlier stages left unused, and
    within the budget left; all are reported."""
    deadline = time.monotonic() + budget_s - RESERVE_S
    results = []
    unused = 0.0  # seconds earlier stages finished before their caps
    for stage in STAGES:
        name = stage.name
        if name not in selected:
            results.append(StageResult(name, NOT_SELECTED))
            continue
        left = deadline - time.monotonic()
        cap = cap_s(name, ctx.dry_run)
        timeout = min(cap + max(unused, 0.0), left)
        if timeout < min_stage_s(ctx.dry_run):
            results.append(StageResult(name, "skipped (out of time)",
                                       summary=f"{max(left, 0):.0f} s of the budget left"))
            log(f"{name}: skipped, out of time")
            continue
        log(f"{name}: {stage.title} (up to {timeout:.0f} s)")
        start = time.monotonic()
        try:
            result = STAGE_FUNCS[name](ctx, timeout)
        except KeyboardInterrupt:
            results.append(StageResult(name, "FAILED", time.monotonic() - start, "interrupted"))
            break
        except Exception as e:  # a bug here must not cost the table of the other stages
            result = StageResult(name, "FAILED", summary=f"report error: {type(e).__name__}: {e}")
        result.seconds = time.monotonic() - start
        unused += cap - result.seconds
        log(f"{name}: {result.status} in {result.seconds:.0f} s: {result.summary}")
        results.append(result)
    return results


def pack_logs(log_dir: Path, archive: Path) -> None:
    """Every log and JSON of the stages, and each run's log.jsonl and config, in one archive."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(log_dir.iterdir()):
            tar.add(path, arcname=f"logs/{path.name}")
        for run in sorted(log_dir.parent.iterdir()):
            for name in ("log.jsonl", "config.json"):
                if (run / name).is_file():
                    tar.add(run / name, arcname=f"{run.name}/{name}")


def record(report: Path) -> int:
    """Append a finished GPU report's table to bench/RESULTS.md (never a dry run's)."""
    try:
        table = report.read_text()
    except OSError as e:
        print(f"gpu_report: cannot read {report}: {e.strerror}", file=sys.stderr)
        return 2
    card, date, commit = (header_value(table, k) for k in ("card", "date", "commit"))
    if card is None or date is None or commit is None:
        print(f"gpu_report: {report} is not a gpu_report table", file=sys.stderr)
        return 2
    if card.startswith("CPU"):
        print("gpu_report: --record keeps measured GPU runs only, not a dry run", file=sys.stderr)
        return 2
    with open(RESULTS, "a") as f:
        f.write(f"\n## {date}: {card}, commit {commit}\n\n{table}")
    print(f"gpu_report: table appended to {RESULTS}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_report",
                                     description=(sys.modules["bench.gpu_report"].__doc__ or ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"gets {', '.join(OUT_FILES)} (default: a new folder in "
                             f"{tempfile.gettempdir()})")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="run folders, caches and raw logs (default: a new folder in "
                             f"{tempfile.gettempdir()}, never inside --out-dir)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every stage's real code on the CPU at tiny sizes (CI); measures nothing")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="wall-clock budget of the whole report in seconds (default %(default)s)")
    parser.add_argument("--stages", default=",".join(STAGE_NAMES),
                        help=f"comma-separated subset of {','.join(STAGE_NAMES)} (default: all)")
    parser.add_argument("--record", type=Path, default=None, metavar="REPORT.md",
                        help="append a finished GPU report's table to bench/RESULTS.md "
                             "(runs nothing)")
    args = parser.parse_args(argv)
    if args.record and args.dry_run:
        parser.error("--record keeps measured GPU runs only: not with --dry-run")
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(args.stages) - set(STAGE_NAMES))
    if unknown or not args.stages:
        parser.error(f"--stages takes names from {','.join(STAGE_NAMES)}, got {unknown or 'none'}")
    return args


def gpu_problem() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device is visible: run this on a GPU, or pass --dry-run on a CPU"
    try:
        import triton  # noqa: F401
    except Exception as e:
        return f"triton does not import ({type(e).__name__}: {e})"
    return None


def _folders(args: argparse.Namespace) -> tuple[Path, Path]:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(tempfile.gettempdir()) / "fastpggan-gpu-report"
    out = (args.out_dir or base / stamp).resolve()
    work = (args.work_dir or base / f"{stamp}-work").resolve()
    if work == out or work.is_relative_to(out):
        raise ValueError(f"--work-dir {work} must not be inside --out-dir {out}")
    for folder in (out, work, work / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    return out, work


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.record is not None:
        return record(args.record)
    if not args.dry_run and (problem := gpu_problem()):
        print(f"gpu_report: {problem}", file=sys.stderr)
        return 2
    try:
        out_dir, work_dir = _folders(args)
    except (OSError, ValueError) as e:
        print(f"gpu_report: {e}", file=sys.stderr)
        return 2
    for name in OUT_FILES:  # a rerun into the same folder must not show an older run's files
        (out_dir / name).unlink(missing_ok=True)

    def log(message: str) -> None:
        print(f"[gpu_report {time.strftime('%H:%M:%S')}] {message}", flush=True)

    started = time.monotonic()
    log(plan_text(args.stages, args.budget_s, args.dry_run))
    info = dict(machine_rows(args.dry_run))
    info["commit"] = git_commit([out_dir, work_dir])
    info["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    log(f"{info['card']}; results to {out_dir}; work in {work_dir}")
    ctx = Context(args.dry_run, work_dir, out_dir)
    results = run_stages(ctx, args.stages, args.budget_s, log)
    command = "python -m bench.gpu_report " + " ".join(argv if argv is not None else sys.argv[1:])
    info["command"] = f"`{command.strip()}`"
    table = render_table(list(info.items()), results, time.monotonic() - started, args.budget_s)

    for r in results:
        if r.details:
            print(f"\n----- {r.name}: {r.status}; end of its log -----\n{r.details}", flush=True)
    print("\n" + table, flush=True)
    (out_dir / "report.md").write_text(table)
    pack_logs(ctx.log_dir, out_dir / "logs.tar.gz")
    log(f"wrote {', '.join(p.name for p in sorted(out_dir.iterdir()))} to {out_dir}")
    problems = [r for r in results if not r.passed]
    if problems:
        names = ", ".join(f"{r.name} ({r.status})" for r in problems)
        print(f"gpu_report: NOT ALL STAGES PASSED: {names}", file=sys.stderr, flush=True)
        return 1
    return 0
