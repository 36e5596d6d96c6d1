"""Subprocesses of the report: run one with a time limit and its output in a log file; read
pytest's counts from its junit file, or from its ``-v`` log when it was killed before writing it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent.parent
POLL_S = 0.2


@dataclass
class Proc:
    """A finished subprocess. ``returncode`` is ``None`` when the report killed it (time limit);
    ``stopped`` says why the report sent it SIGTERM ("" when it did not)."""

    returncode: int | None
    seconds: float
    log: Path
    stopped: str = ""

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def last_error_line(self) -> str:
        for line in reversed(self.tail(200).splitlines()):
            if "Error" in line or "error:" in line or "FAILED" in line:
                return line.strip()[:300]
        lines = self.tail(1).strip()
        return lines[:300] if lines else "(no output)"

    def describe(self) -> str:
        """``exit 0``, ``exit 143 after SIGTERM (reason)``, ``killed at its time limit``."""
        if self.returncode is None:
            return f"killed at its time limit after {self.seconds:.0f} s"
        text = f"exit {self.returncode}"
        return text + (f" after SIGTERM ({self.stopped})" if self.stopped else "")


def subprocess_env(interpret: bool, dry_run: bool) -> dict[str, str]:
    """The environment of a stage's subprocess: this checkout first on the path, unbuffered
    output (a killed subprocess's log still holds everything it printed). A dry run's tiny
    models run one CPU thread each: more only spin against each other (measured 10-30x slower
    with two threads on a busy 2-core machine)."""
    env = dict(os.environ, TRITON_INTERPRET="1" if interpret else "0", PYTHONUNBUFFERED="1")
    if dry_run:
        env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_logged(cmd: list[str], env: dict[str, str], timeout: float, log: Path, *,
               stop_when: Callable[[], bool] | None = None, stop_after: float | None = None,
               grace: float = 30.0) -> Proc:
    """Run ``cmd`` in the repository root, its output to ``log``.

    ``timeout``: seconds until its process group is killed (``returncode`` ``None``).
    ``stop_when`` (polled) or ``stop_after`` seconds: send it SIGTERM once, as Ctrl-C would, so
    that it can write a checkpoint and exit; killed if it has not exited ``grace`` s later.
    """
    start = time.monotonic()
    stopped, stop_time, killed = "", 0.0, False
    with open(log, "w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        # its own session, so that a kill also ends the compile workers and data loaders it started
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - start
                if elapsed >= timeout or (stopped and elapsed - stop_time >= grace):
                    break
                if not stopped:
                    if stop_when is not None and stop_when():
                        stopped = "reached its goal"
                    elif stop_after is not None and elapsed >= stop_after:
                        stopped = "its share of the time was up"
                    if stopped:
                        proc.send_signal(signal.SIGTERM)
                        stop_time = elapsed
                time.sleep(POLL_S)
        finally:  # a time-out, or Ctrl-C: never leave the child running
            if proc.poll() is None:
                killed = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    return Proc(None if killed else proc.returncode, time.monotonic() - start, log, stopped)


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


_STATUS = "(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)"
_VERBOSE_RESULT = re.compile(rf"^(\S+::\S+) {_STATUS}\b", re.M)
# pytest-xdist: "[gw3] [ 12%] PASSED tests/test_x.py::test_y[a]"
_XDIST_RESULT = re.compile(rf"^\[gw\d+\] \[\s*\d+%\] {_STATUS} (\S+::\S+)", re.M)


def counts_from_verbose_log(text: str) -> PytestCounts:
    """Counts from ``pytest -v`` output (pytest-xdist's too), for a run killed before it wrote
    its junit file."""
    results = _VERBOSE_RESULT.findall(text)
    results += [(name, r) for r, name in _XDIST_RESULT.findall(text)]
    failed = tuple(name.split("::")[-1] for name, r in results if r in ("FAILED", "ERROR"))
    skipped = sum(r in ("SKIPPED", "XFAIL") for _, r in results)
    return PytestCounts(len(results) - len(failed) - skipped, len(failed), skipped, failed)
