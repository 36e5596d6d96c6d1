"""The report's stages besides the end-to-end ones (:mod:`bench.gpu_report.e2e`).

Each stage takes the :class:`Context` and its time limit in seconds and returns a
:class:`~bench.gpu_report.table.StageResult`; the work runs in subprocesses (a crash or a hang
costs that stage only), whose output goes to ``<work dir>/logs``.

- ``tests``: ``pytest tests/test_kernels.py tests/test_ops_dispatch.py`` with
  ``TRITON_INTERPRET=0``: the Triton kernels compiled on the GPU against the float64 reference.
- ``throughput``: ``python -m bench.train_throughput``: one training iteration at 256 px, batch
  16, every variant (eager/compiled, reference/fused, CUDA graphs, bf16, G's fusion flipped,
  TF32): img/s and peak memory.
- ``memory``: ``python -m bench.memory_estimate`` at the same size, set against the peaks the
  throughput stage measured, and against a GTX 1080's 8 GB.
- ``bench``: ``pytest bench/test_ops.py --benchmark-only``, one process per resolution: each
  fused op's median per variant, speedup over the eager reference, GB/s against copy bandwidth.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.gpu_report.plan import (
    BENCH_RES_DRY,
    BENCH_RES_GPU,
    DRY_RUN_BENCH,
    DRY_RUN_TESTS,
    GPU_BENCH,
    GTX1080_BYTES,
    KERNEL_TEST_WORKERS,
    KERNEL_TESTS,
    THROUGHPUT_DRY,
    THROUGHPUT_GPU,
    min_stage_s,
)
from bench.gpu_report.procs import counts_from_verbose_log, parse_junit, run_logged, subprocess_env
from bench.gpu_report.table import StageResult, gib
from bench.summary import copy_bandwidth, summarize, timings_from_json


@dataclass
class Context:
    """What every stage needs: where to write, whether this is a dry run, what earlier stages
    left for later ones (``shared``: the e2e run for e2e_ref, throughput rows for memory)."""

    dry_run: bool
    work_dir: Path  # run folders, caches, raw logs: not copied back
    out_dir: Path  # report.md, logs.tar.gz, grids: what a GPU session copies back
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"


def kernel_tests_cmd(dry_run: bool, junit: Path) -> list[str]:
    # -v: one line per finished test, so a killed run's log still tells what passed
    cmd = [sys.executable, "-m", "pytest", *KERNEL_TESTS, "-v", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]
    if importlib.util.find_spec("xdist") is not None:
        # Triton compiles each kernel specialisation on first use: in parallel, when it can
        cmd += ["-n", str(min(KERNEL_TEST_WORKERS, os.cpu_count() or 1))]
    return cmd + ["-k", DRY_RUN_TESTS] if dry_run else cmd


def stage_tests(ctx: Context, timeout: float) -> StageResult:
    result = StageResult("tests")
    junit = ctx.log_dir / "kernel_tests.xml"
    junit.unlink(missing_ok=True)
    proc = run_logged(kernel_tests_cmd(ctx.dry_run, junit), subprocess_env(ctx.dry_run, ctx.dry_run),
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


def throughput_cmd(dry_run: bool, json_path: Path) -> list[str]:
    size = THROUGHPUT_DRY if dry_run else THROUGHPUT_GPU
    cmd = [sys.executable, "-m", "bench.train_throughput", "--json", str(json_path),
           "--device", "cpu" if dry_run else "cuda", "--res", str(size.res),
           "--batch", str(size.batch), *size.model, *size.timing]
    # the dry run's CPU has no TF32: the variant runs anyway, so its plumbing is checked
    return cmd + ["--dry-run", "--tf32-variant", "on"] if dry_run else cmd


def _variant_line(row: dict) -> str:
    if "error" in row:
        return f"FAILED: {row['error']}"
    how = f"{row['resolved_impl']} ops" + (f", {row['backend']}" if row["compile"] else ", eager")
    how += f", {row['precision']}" + (" with TF32" if row.get("tf32") else "")
    fused = row.get("fused_scale_from")
    how += f", G fused from {fused} px" if fused is not None else ", G unfused"
    return (f"{row['img_s']:.1f} img/s, peak {gib(row['peak_bytes'])} ({how}; "
            f"warm-up incl. compile {row['warmup_s']:.1f} s)")


def stage_throughput(ctx: Context, timeout: float) -> StageResult:
    result = StageResult("throughput")
    json_path = ctx.log_dir / "train_throughput.json"
    json_path.unlink(missing_ok=True)
    proc = run_logged(throughput_cmd(ctx.dry_run, json_path), subprocess_env(False, ctx.dry_run),
                      timeout, ctx.log_dir / "train_throughput.log")
    data = None
    if json_path.exists():  # read even after a failure or time-out: the variants it did measure
        try:
            data = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            result.fail(f"unreadable JSON ({e})")
    ctx.shared["throughput"] = data
    rows = (data or {}).get("variants", [])
    ref = next((r for r in rows if r["name"] == "eager reference" and "img_s" in r), None)
    for row in rows:
        line = _variant_line(row)
        if ref is not None and "img_s" in row and row is not ref:
            line = f"{row['img_s'] / ref['img_s']:.2f}x eager reference; " + line
        result.rows.append((row["name"], line))
    if data is not None:
        ok = sum("img_s" in r for r in rows)
        result.summary = (f"{data['res']} px, batch {data['batch']} on {data['device']}: "
                          f"{ok} of {len(rows)} variants measured")
        if ctx.dry_run:
            result.summary += " (dry run: CPU timings, compiled = aot_eager, no peak memory)"
    else:
        result.fail("no JSON written")
    if proc.returncode is None:
        result.fail(f"timed out after {timeout:.0f} s")
    elif proc.returncode != 0:
        result.fail(f"exit {proc.returncode}: {proc.last_error_line()}")
    if result.status != "FAILED":
        result.status = "ok" if rows else "FAILED"
    if not result.ok:
        result.details = proc.tail()
    return result


def memory_cmd(dry_run: bool, json_path: Path) -> list[str]:
    size = THROUGHPUT_DRY if dry_run else THROUGHPUT_GPU
    return [sys.executable, "-m", "bench.memory_estimate", "--res", str(size.res),
            "--batch", str(size.batch), *size.model, "--json", str(json_path)]


def stage_memory(ctx: Context, timeout: float) -> StageResult:
    """The peaks the throughput stage measured, against the estimate without a GPU."""
    result = StageResult("memory")
    json_path = ctx.log_dir / "memory_estimate.json"
    json_path.unlink(missing_ok=True)
    proc = run_logged(memory_cmd(ctx.dry_run, json_path), subprocess_env(False, ctx.dry_run),
                      timeout, ctx.log_dir / "memory_estimate.log")
    estimate: dict[str, int] = {}
    if proc.returncode == 0 and json_path.exists():
        estimate = {k: v["estimated_peak"] for k, v in json.loads(json_path.read_text()).items()}
    else:
        what = "timed out" if proc.returncode is None else f"exit {proc.returncode}"
        result.fail(f"estimate {what}: {proc.last_error_line()}")
        result.details = proc.tail()
    size = THROUGHPUT_DRY if ctx.dry_run else THROUGHPUT_GPU
    measured = [r for r in (ctx.shared.get("throughput") or {}).get("variants", [])
                if r.get("peak_bytes") is not None]
    for row in measured:
        line = f"measured {gib(row['peak_bytes'])}"
        est = estimate.get("triton" if row["resolved_impl"] == "triton" else "reference")
        if est and not row["compile"] and row["precision"] == "fp32":
            line += f", estimated {gib(est)} (measured / estimated {row['peak_bytes'] / est:.2f})"
        fits = "fits" if row["peak_bytes"] < GTX1080_BYTES else "does NOT fit"
        result.rows.append((f"memory, {row['name']}", f"{line}; {fits} a GTX 1080's 8 GiB"))
    est_text = ", ".join(f"{k} {gib(v)}" for k, v in estimate.items())
    if ctx.dry_run:
        result.summary = (f"measured nothing on the CPU (no peak-memory counter); estimate at the "
                          f"dry run's {size.res} px, batch {size.batch}: {est_text or 'n/a'}")
    else:
        result.summary = f"{size.res} px, batch {size.batch}: estimated {est_text or 'n/a'}"
        if not measured:
            result.fail("no measured peak: the throughput stage measured no variant")
    if result.status != "FAILED":
        result.status = "ok"
    return result


def bench_cmd(dry_run: bool, res: int, json_path: Path, junit: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "bench/test_ops.py", "-q", "-p", "no:cacheprovider",
           "--benchmark-only", f"--benchmark-json={json_path}", f"--junitxml={junit}",
           f"--bench-res={res}", f"--bench-device={'cpu' if dry_run else 'cuda'}",
           # short measurements: the report has a budget; medians of >= 5 rounds still
           "--benchmark-max-time=0.2", "--benchmark-min-rounds=5"]
    # dry run: one small group, eager against compiled: the plumbing, not the numbers. On the
    # GPU: the reference against the Triton kernels (compiling every op would take the budget;
    # the throughput stage times compiled training)
    return cmd + ["-k", DRY_RUN_BENCH if dry_run else GPU_BENCH]


def stage_bench(ctx: Context, timeout: float) -> StageResult:
    result = StageResult("bench")
    deadline = time.monotonic() + timeout
    resolutions = BENCH_RES_DRY if ctx.dry_run else BENCH_RES_GPU
    timings, notes, failed, done = [], [], False, []
    for res in resolutions:
        left = deadline - time.monotonic()
        if left < min_stage_s(ctx.dry_run):
            notes.append(f"{res} px skipped: out of time")
            continue
        json_path, junit = ctx.log_dir / f"bench_{res}.json", ctx.log_dir / f"bench_{res}.xml"
        json_path.unlink(missing_ok=True)
        junit.unlink(missing_ok=True)
        proc = run_logged(bench_cmd(ctx.dry_run, res, json_path, junit),
                          subprocess_env(False, ctx.dry_run), left, ctx.log_dir / f"bench_{res}.log")
        counts = parse_junit(junit)
        if json_path.exists():
            timings += timings_from_json(json.loads(json_path.read_text()))
        if proc.returncode is None:
            notes.append(f"{res} px timed out")
        elif proc.returncode != 0 or counts is None or counts.failed:
            what = counts.describe() if counts else proc.last_error_line()
            notes.append(f"{res} px failed ({what})")
            if counts and counts.failed_names:
                notes[-1] += ": " + ", ".join(counts.failed_names[:3])
            failed = True
        else:
            done.append(str(res))
            continue
        result.details += f"--- {res} px\n{proc.tail()}\n"
    bandwidth = None
    if not ctx.dry_run and timings:
        bandwidth = copy_bandwidth(torch.device("cuda"))
        torch.cuda.empty_cache()
    groups = summarize(timings, bandwidth)
    for group, variants in groups.items():
        result.rows.append((group, ", ".join(v.describe() for v in variants)))
    result.summary = f"{len(groups)} groups, complete at {','.join(done) or 'no'} px"
    result.summary += (f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s" if bandwidth
                       else "; CPU timings (dry run: mean nothing)" if ctx.dry_run else "")
    if notes:
        result.summary += "; " + "; ".join(notes)
    # a resolution cut by the budget is no failure (the most important one runs first)
    result.status = "FAILED" if failed or not groups else "ok"
    return result
