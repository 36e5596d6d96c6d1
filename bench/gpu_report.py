"""One GPU report: kernel tests on the GPU, kernel benchmarks, training throughput, peak memory.

    python -m bench.gpu_report [--out FILE.md] [--record] [--budget-s 420] [--bench-res 8,32,256]
    python -m bench.gpu_report --dry-run     # CPU, tiny sizes: checks the plumbing only (CI)

Stages, in order (``--stages`` picks some):

- ``tests``: ``pytest tests/test_kernels.py tests/test_ops_dispatch.py`` with
  ``TRITON_INTERPRET=0``: the Triton kernels compiled on the GPU against the float64 reference
  (forward, backward, double backward, ``opcheck``, ``torch.compile`` without graph breaks).
- ``bench``: ``pytest bench/test_ops.py --benchmark-only``, one process per resolution (a time-out
  loses one resolution, not all); per group the median of each variant, its speedup over the
  eager reference and its GB/s against the measured copy bandwidth (:mod:`bench.summary`).
- ``train``: ``python -m bench.train_throughput``: images/s per resolution, eager reference
  against the fast path.
- ``memory``: peak memory of one 256x256 iteration at batch 16 (from the train stage's JSON).

Each stage gets its share of the time still left (time a stage saves goes to the later ones);
one with too little left is skipped with a note. Subprocess logs go to ``--log-dir``. At the end
one markdown table (card, torch and triton versions, commit, date, every stage's status, time and
key numbers) is printed, written to ``--out`` and, with ``--record``, appended to
``bench/RESULTS.md``. Exit status: 0 when every selected stage passed; 1 when one failed or ran
out of time (the table is still written); 2 for bad arguments or no usable GPU, before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from bench.shapes import DEFAULT_BATCH
from bench.summary import copy_bandwidth, summarize, timings_from_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
DEFAULT_OUT = ROOT / "bench" / "last_gpu_report.md"

STAGES = ("tests", "bench", "train", "memory")
# Relative shares of the time budget; memory only reads the train stage's JSON.
SHARES = {"tests": 120.0, "bench": 130.0, "train": 170.0, "memory": 0.0}
MIN_STAGE_S = 20.0  # a stage with less than this left is skipped (10x less in a dry run)
NOT_SELECTED = "skipped (not selected)"
TABLE_RESERVE_S = 5.0  # kept back for the bandwidth measurement and the table

KERNEL_TESTS = ("tests/test_kernels.py", "tests/test_ops_dispatch.py")
# The dry run's interpreted subset: one test of each kind, a few seconds on a CPU.
DRY_RUN_TESTS = ("test_epilogue_out_scale_sign or test_mbstd_gradgradcheck or test_opcheck or "
                 "test_public_ops_compile or test_choose_impl_rules")
# 512 channels at batch 64 and 64 channels at batch 8 (~33M elements each), in about 2 minutes
DEFAULT_BENCH_RES = "32,256"
TRAIN_RES = "4,8,16,32,64,128,256"


# ------------------------------------------------------------------------------------------------
# The commands the stages run (module-level so a test can swap one)


def kernel_tests_cmd(dry_run: bool, junit: Path) -> list[str]:
    # -v: one line per finished test, so a killed run's log still tells what passed
    cmd = [sys.executable, "-m", "pytest", *KERNEL_TESTS, "-v", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]
    return cmd + ["-k", DRY_RUN_TESTS] if dry_run else cmd


def bench_cmd(dry_run: bool, res: int, json_path: Path, junit: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "bench/test_ops.py", "-q", "-p", "no:cacheprovider",
           "--benchmark-only", f"--benchmark-json={json_path}", f"--junitxml={junit}",
           f"--bench-res={res}", f"--bench-device={'cpu' if dry_run else 'cuda'}",
           # short measurements: the report has a budget; medians of >= 5 rounds still
           "--benchmark-max-time=0.2", "--benchmark-min-rounds=5"]
    # one op and mode, eager against compiled: the plumbing, not the numbers
    return cmd + ["-k", "d_epilogue-fwd-"] if dry_run else cmd


def throughput_cmd(dry_run: bool, json_path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "bench.train_throughput", "--json", str(json_path)]
    if dry_run:
        return cmd + ["--device", "cpu", "--res", "4,8", "--dry-run"]
    return cmd + ["--device", "cuda", "--res", TRAIN_RES]


# ------------------------------------------------------------------------------------------------
# Running subprocesses within a time limit


@dataclass
class Proc:
    """A finished subprocess: ``returncode`` is ``None`` when it ran out of time (killed)."""

    returncode: int | None
    seconds: float
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def last_error_line(self) -> str:
        for line in reversed(self.tail(200).splitlines()):
            if "Error" in line or "error:" in line or "FAILED" in line:
                return line.strip()[:300]
        lines = self.tail(1).strip()
        return lines[:300] if lines else "(no output)"


def run_logged(cmd: list[str], env: dict[str, str], timeout: float, log: Path) -> Proc:
    """Run ``cmd`` in the repository root, output to ``log``; kill its process group on timeout."""
    start = time.monotonic()
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        # its own session, so that a timeout also ends the compile workers it started
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        returncode: int | None = None
        try:
            returncode = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            pass
        finally:  # a time-out, or Ctrl-C: never leave the child running
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    return Proc(returncode, time.monotonic() - start, log)


def subprocess_env(interpret: bool) -> dict[str, str]:
    # unbuffered: a killed subprocess's log still holds everything it printed
    env = dict(os.environ, TRITON_INTERPRET="1" if interpret else "0", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@dataclass(frozen=True)
class PytestCounts:
    passed: int
    failed: int
    skipped: int
    failed_names: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"


def parse_junit(path: Path) -> PytestCounts | None:
    """Counts from pytest's ``--junitxml`` file, ``None`` if it was not written."""
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    names = tuple(
        case.get("name", "?") for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    )
    return PytestCounts(total - failed - skipped, failed, skipped, names)


_VERBOSE_RESULT = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.M)


def counts_from_verbose_log(text: str) -> PytestCounts:
    """Counts from ``pytest -v`` output, for a run killed before it wrote its junit file."""
    results = _VERBOSE_RESULT.findall(text)
    failed = tuple(name.split("::")[-1] for name, r in results if r in ("FAILED", "ERROR"))
    skipped = sum(r in ("SKIPPED", "XFAIL") for _, r in results)
    return PytestCounts(len(results) - len(failed) - skipped, len(failed), skipped, failed)


# ------------------------------------------------------------------------------------------------
# Stages


@dataclass
class StageResult:
    """One stage's line in the table, and its key numbers as extra rows."""

    name: str
    status: str = "not run"  # "ok", "FAILED", "skipped ..."
    seconds: float = 0.0
    summary: str = ""
    rows: list[tuple[str, str]] = field(default_factory=list)
    details: str = ""  # printed (not tabled) when the stage failed: the log's tail

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def passed(self) -> bool:
        """Ran fine, or was left out on purpose (``--stages``)."""
        return self.ok or self.status == NOT_SELECTED


@dataclass
class Context:
    dry_run: bool
    log_dir: Path
    bench_res: list[int]
    train_json: dict | None = None  # the train stage's output, read by the memory stage


def stage_tests(ctx: Context, timeout: float) -> StageResult:
    result = StageResult("tests")
    junit = ctx.log_dir / "kernel_tests.xml"
    junit.unlink(missing_ok=True)
    proc = run_logged(kernel_tests_cmd(ctx.dry_run, junit), subprocess_env(ctx.dry_run),
                      timeout, ctx.log_dir / "kernel_tests.log")
    counts = parse_junit(junit)
    where = "interpreted on CPU, dry run" if ctx.dry_run else "compiled on the GPU"
    if proc.returncode is None:
        partial = counts_from_verbose_log(proc.log.read_text(errors="replace"))
        result.status = "FAILED"
        result.summary = f"timed out after {timeout:.0f} s ({where}); before that "
        result.summary += partial.describe()
        if partial.failed_names:
            result.summary += "; failed: " + ", ".join(partial.failed_names[:5])
    elif counts is None:
        result.status = "FAILED"
        result.summary = f"pytest exit {proc.returncode}: {proc.last_error_line()}"
    else:
        result.summary = f"{counts.describe()} ({where})"
        if counts.failed_names:
            result.summary += "; failed: " + ", ".join(counts.failed_names[:5])
        # On the GPU nothing may skip: a skip means the CUDA path did not run.
        gpu_skipped = not ctx.dry_run and counts.skipped
        good = proc.returncode == 0 and counts.failed == 0 and counts.passed and not gpu_skipped
        result.status = "ok" if good else "FAILED"
        if gpu_skipped:
            result.summary += " (skips on the GPU: the CUDA path did not run)"
    if not result.ok:
        result.details = proc.tail()
    return result


def stage_bench(ctx: Context, timeout: float) -> StageResult:
    result = StageResult("bench")
    deadline = time.monotonic() + timeout
    timings, notes, failed = [], [], False
    for res in ctx.bench_res:
        left = deadline - time.monotonic()
        if left < min_stage_s(ctx.dry_run) / 2:
            notes.append(f"{res}px skipped: out of time")
            failed = True
            continue
        json_path, junit = ctx.log_dir / f"bench_{res}.json", ctx.log_dir / f"bench_{res}.xml"
        json_path.unlink(missing_ok=True)
        junit.unlink(missing_ok=True)
        proc = run_logged(bench_cmd(ctx.dry_run, res, json_path, junit),
                          subprocess_env(interpret=False), left, ctx.log_dir / f"bench_{res}.log")
        counts = parse_junit(junit)
        if json_path.exists():
            timings += timings_from_json(json.loads(json_path.read_text()))
        if proc.returncode is None:
            notes.append(f"{res}px timed out")
        elif proc.returncode != 0 or counts is None or counts.failed:
            what = counts.describe() if counts else proc.last_error_line()
            notes.append(f"{res}px failed ({what})")
            if counts and counts.failed_names:
                notes[-1] += ": " + ", ".join(counts.failed_names[:3])
        else:
            continue
        failed = True
        result.details += f"--- {res}px\n{proc.tail()}\n"
    bandwidth = None
    if not ctx.dry_run and timings:
        device = torch.device("cuda")
        bandwidth = copy_bandwidth(device)
        torch.cuda.empty_cache()
    groups = summarize(timings, bandwidth)
    for group, variants in groups.items():
        result.rows.append((group, ", ".join(v.describe() for v in variants)))
    done = ",".join(str(r) for r in ctx.bench_res)
    result.summary = f"{len(groups)} groups at {done} px"
    result.summary += (f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s" if bandwidth
                       else "; CPU timings (dry run: mean nothing)" if ctx.dry_run else "")
    if notes:
        result.summary += "; " + "; ".join(notes)
    result.status = "FAILED" if failed or not groups else "ok"
    return result


def _gib(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**30:.2f} GiB"


def stage_train(ctx: Context, timeout: float) -> StageResult:
    result = StageResult("train")
    json_path = ctx.log_dir / "train_throughput.json"
    json_path.unlink(missing_ok=True)
    proc = run_logged(throughput_cmd(ctx.dry_run, json_path), subprocess_env(interpret=False),
                      timeout, ctx.log_dir / "train_throughput.log")
    data = None
    if json_path.exists():  # read even after a failure or time-out: the rows it did write
        try:
            data = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            result.summary = f"unreadable JSON ({e}); "
    ctx.train_json = data
    rows = (data or {}).get("rows", [])
    for row in rows:
        result.rows.append((
            f"train {row['res']}px, batch {row['batch']}",
            f"reference {row['reference_img_s']:.1f} img/s, fast {row['fast_img_s']:.1f} img/s "
            f"({row['ratio']:.2f}x); peak memory {_gib(row.get('peak_mem_reference'))} / "
            f"{_gib(row.get('peak_mem_fast'))}",
        ))
    if proc.returncode is None:
        result.summary += f"timed out after {timeout:.0f} s; "
    elif proc.returncode != 0:
        result.summary += f"exit {proc.returncode}: {proc.last_error_line()}; "
    if data is None:
        result.summary += "no JSON written"
    if data is not None:
        result.summary += f"{len(rows)} resolutions on {data.get('device', '?')}"
    result.status = "ok" if proc.returncode == 0 and rows else "FAILED"
    if not result.ok:
        result.details = proc.tail()
    return result


def stage_memory(ctx: Context, timeout: float) -> StageResult:
    result = StageResult("memory")
    mem = (ctx.train_json or {}).get("memory_256_b16")
    if mem is None:
        result.status = "FAILED"
        result.summary = "no memory_256_b16 entry: the train stage did not produce it"
        return result
    peak = mem.get("peak_bytes")
    how = f"impl {mem.get('impl', '?')}, {'compiled' if mem.get('compiled') else 'eager'}"
    result.summary = f"peak {_gib(peak)} ({how})"
    # CPU has no peak-memory counter; on a GPU a missing number is a failure
    result.status = "ok" if peak is not None or ctx.dry_run else "FAILED"
    return result


STAGE_FUNCS: dict[str, Callable[[Context, float], StageResult]] = {
    "tests": stage_tests, "bench": stage_bench, "train": stage_train, "memory": stage_memory,
}
TITLES = {
    "tests": "kernel tests vs float64 reference",
    "bench": "kernel benchmarks",
    "train": "training throughput",
    "memory": "peak memory, 256 px, batch 16",
}


def min_stage_s(dry_run: bool) -> float:
    return MIN_STAGE_S / 10 if dry_run else MIN_STAGE_S


def run_stages(ctx: Context, selected: list[str], budget_s: float, log: Callable[[str], None]
               ) -> list[StageResult]:
    """Every stage in order, each within its share of the budget left; all are reported."""
    deadline = time.monotonic() + budget_s - TABLE_RESERVE_S
    results = []
    for i, name in enumerate(STAGES):
        if name not in selected:
            results.append(StageResult(name, NOT_SELECTED))
            continue
        left = deadline - time.monotonic()
        later = [s for s in STAGES[i:] if s in selected]
        shares = sum(SHARES[s] for s in later)
        timeout = left * SHARES[name] / shares if shares and SHARES[name] else left
        if SHARES[name] and timeout < min_stage_s(ctx.dry_run):
            results.append(StageResult(name, "skipped (out of time)",
                                       summary=f"{max(left, 0):.0f} s of the budget left"))
            log(f"{name}: skipped, out of time")
            continue
        log(f"{name}: {TITLES[name]} (up to {timeout:.0f} s)")
        start = time.monotonic()
        try:
            result = STAGE_FUNCS[name](ctx, timeout)
        except KeyboardInterrupt:
            results.append(StageResult(name, "FAILED", time.monotonic() - start, "interrupted"))
            break
        except Exception as e:  # a bug here must not cost the table of the other stages
            result = StageResult(name, "FAILED", summary=f"report error: {type(e).__name__}: {e}")
        result.seconds = time.monotonic() - start
        log(f"{name}: {result.status} in {result.seconds:.0f} s: {result.summary}")
        results.append(result)
    return results


# ------------------------------------------------------------------------------------------------
# The table


def git_commit(exclude: list[Path]) -> str:
    """Short commit of HEAD, ``+dirty`` when files differ from it (the report's own excluded)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    skip = [str(p.resolve().relative_to(ROOT)) for p in exclude if p.resolve().is_relative_to(ROOT)]
    dirty = [line for line in status
             if not any(line[3:].strip('"').startswith(s) for s in skip)]
    return head + ("+dirty" if dirty else "")


def machine_rows(dry_run: bool) -> list[tuple[str, str]]:
    import triton

    if dry_run:
        card = f"CPU, {os.cpu_count()} cores (dry run: plumbing only, no GPU numbers)"
    else:
        props = torch.cuda.get_device_properties(0)
        card = (f"{torch.cuda.get_device_name(0)} (compute {props.major}.{props.minor}, "
                f"{props.total_memory / 2**30:.0f} GiB)")
    software = (f"torch {torch.__version__} (CUDA {torch.version.cuda}), "
                f"triton {triton.__version__}, Python {sys.version.split()[0]}")
    return [("card", card), ("software", software)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(header: list[tuple[str, str]], results: list[StageResult], total_s: float,
                 budget_s: float) -> str:
    """The one markdown table: machine rows, then each stage and its key numbers, then total."""
    lines = ["| item | status | time | result |", "|---|---|---|---|"]
    lines += [f"| {k} | | | {_cell(v)} |" for k, v in header]
    for r in results:
        time_s = f"{r.seconds:.0f} s" if r.seconds else ""
        lines.append(f"| **{TITLES[r.name]}** | {r.status} | {time_s} | {_cell(r.summary)} |")
        lines += [f"| {_cell(k)} | | | {_cell(v)} |" for k, v in r.rows]
    status = "ok" if all(r.passed for r in results) else "FAILED"
    lines.append(f"| **total** | {status} | {total_s:.0f} s | budget {budget_s:.0f} s |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file for the table (default: bench/last_gpu_report.md)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="subprocess logs and JSON (default: gpu_report_logs beside --out)")
    parser.add_argument("--record", action="store_true",
                        help=f"also append the table to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every stage on CPU at tiny sizes (checks the plumbing)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="wall-clock budget for all stages in seconds (default 420)")
    parser.add_argument("--bench-res", default=None,
                        help=f"benchmark resolutions (default {DEFAULT_BENCH_RES}; 4 in a dry run)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    args = parser.parse_args(argv)
    if args.record and args.dry_run:
        parser.error("--record keeps measured GPU runs only: not with --dry-run")
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown or not args.stages:
        parser.error(f"--stages takes names from {','.join(STAGES)}, got {unknown or 'none'}")
    res = args.bench_res or ("4" if args.dry_run else DEFAULT_BENCH_RES)
    try:
        args.bench_res = [int(r) for r in res.split(",")]
    except ValueError:
        parser.error(f"--bench-res takes comma-separated integers, got {res!r}")
    if not set(args.bench_res) <= set(DEFAULT_BATCH):
        parser.error(f"--bench-res values must be among {sorted(DEFAULT_BATCH)}, got {res}")
    return args


def _gpu_problem() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device is visible: run this on a GPU, or pass --dry-run on a CPU"
    capability = torch.cuda.get_device_capability(0)
    if capability < (7, 0):
        return (f"{torch.cuda.get_device_name(0)} has compute capability "
                f"{capability[0]}.{capability[1]}: Triton needs 7.0 or more")
    try:
        import triton  # noqa: F401
    except Exception as e:
        return f"triton does not import ({type(e).__name__}: {e})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not args.dry_run and (problem := _gpu_problem()):
        print(f"gpu_report: {problem}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    log_dir = (args.log_dir or out.parent / "gpu_report_logs").resolve()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"gpu_report: cannot create {e.filename}: {e.strerror}", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(f"[gpu_report {time.strftime('%H:%M:%S')}] {message}", flush=True)

    started = time.monotonic()
    info = dict(machine_rows(args.dry_run))
    info["commit"] = git_commit([out, log_dir])
    info["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    log(f"{info['card']}; logs in {log_dir}")
    ctx = Context(args.dry_run, log_dir, args.bench_res)
    results = run_stages(ctx, args.stages, args.budget_s, log)
    command = "python -m bench.gpu_report " + " ".join(argv if argv is not None else sys.argv[1:])
    info["command"] = f"`{command.strip()}`"
    table = render_table(list(info.items()), results, time.monotonic() - started, args.budget_s)

    for r in results:
        if r.details:
            print(f"\n----- {r.name}: {r.status}; end of its log -----\n{r.details}", flush=True)
    print("\n" + table, flush=True)
    out.write_text(table)
    log(f"table written to {out}")
    if args.record:
        with open(RESULTS, "a") as f:
            f.write(f"\n## {info['date']}: {info['card']}, commit {info['commit']}\n\n{table}")
        log(f"table appended to {RESULTS}")
    problems = [r for r in results if not r.passed]
    if problems:
        names = ", ".join(f"{r.name} ({r.status})" for r in problems)
        print(f"gpu_report: NOT ALL STAGES PASSED: {names}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
