"""The report's one markdown table: machine rows, then each stage's status, time, summary and
key numbers, then the total."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.gpu_report.plan import BY_NAME
from bench.gpu_report.procs import ROOT

NOT_SELECTED = "skipped (not selected)"
HEADER = ("| item | status | time | result |", "|---|---|---|---|")


@dataclass
class StageResult:
    """One stage's line in the table, and its key numbers as extra rows."""

    name: str
    status: str = "not run"  # "ok", "FAILED", "skipped ..."
    seconds: float = 0.0
    summary: str = ""
    rows: list[tuple[str, str]] = field(default_factory=list)
    details: str = ""  # printed (not tabled) when the stage failed: the end of its log

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def passed(self) -> bool:
        """Ran fine, or was left out on purpose (``--stages``)."""
        return self.ok or self.status == NOT_SELECTED

    def fail(self, why: str) -> None:
        """Mark FAILED, adding ``why`` to the summary."""
        self.status = "FAILED"
        self.summary = f"{self.summary}; {why}" if self.summary else why


def gib(nbytes: int | None) -> str:
    """``5.68 GiB``; below 1 GiB in MiB (a dry run's tiny model: ``0.42 MiB``)."""
    if nbytes is None:
        return "n/a"
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.2f} MiB"


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
    lines = list(HEADER)
    lines += [f"| {k} | | | {_cell(v)} |" for k, v in header]
    for r in results:
        time_s = f"{r.seconds:.0f} s" if r.seconds else ""
        lines.append(f"| **{BY_NAME[r.name].title}** | {r.status} | {time_s} | {_cell(r.summary)} |")
        lines += [f"| {_cell(k)} | | | {_cell(v)} |" for k, v in r.rows]
    status = "ok" if all(r.passed for r in results) else "FAILED"
    lines.append(f"| **total** | {status} | {total_s:.0f} s | budget {budget_s:.0f} s |")
    return "\n".join(lines) + "\n"


def header_value(table: str, item: str) -> str | None:
    """The result cell of a machine row (``card``, ``commit``, ``date``...) of a rendered table."""
    for line in table.splitlines():
        if line.startswith(f"| {item} | | | "):
            return line[len(f"| {item} | | | "):].rstrip(" |")
    return None
