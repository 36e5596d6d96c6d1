"""pytest-benchmark setup: resolution selection, CUDA timing, and the per-group speedup summary.

Every benchmark records ``extra_info`` with its ``variant`` (``reference`` = eager reference,
``compiled`` = ``torch.compile`` of the reference, ``triton`` = the fused kernels) and ``bytes``:
the minimal traffic of the call, each distinct tensor it takes or returns counted once.
After the table, each group gets one summary line (:mod:`bench.summary`): speedup over the eager
reference and, on CUDA, achieved GB/s against the device's measured copy bandwidth.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from bench.shapes import DEFAULT_BATCH  # noqa: E402
from bench.summary import copy_bandwidth, summary_lines, timings_from_session  # noqa: E402

# On CPU the full sweep takes long; two resolutions show the trend in a few minutes.
CPU_DEFAULT_RES = "8,64"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-res",
        default=None,
        help="comma-separated resolutions to benchmark, or 'all' "
        f"(default: all on CUDA, {CPU_DEFAULT_RES} on CPU)",
    )
    parser.addoption(
        "--bench-device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="device for the benchmarks (default: cuda when available)",
    )


def bench_device(config: pytest.Config) -> torch.device:
    choice = config.getoption("--bench-device")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def bench_resolutions(config: pytest.Config) -> list[int]:
    value = config.getoption("--bench-res")
    if value is None:
        value = "all" if bench_device(config).type == "cuda" else CPU_DEFAULT_RES
    if value == "all":
        return sorted(DEFAULT_BATCH)
    return [int(v) for v in value.split(",")]


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    return bench_device(pytestconfig)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    benchmarks = timings_from_session(getattr(session, "benchmarks", []))
    if not benchmarks:
        return
    device = bench_device(config)
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    terminalreporter.section("speedup over the eager reference (median times)")
    if bandwidth:
        terminalreporter.write_line(
            f"{torch.cuda.get_device_name(device)}: measured copy bandwidth "
            f"{bandwidth / 1e9:.0f} GB/s"
        )
    else:
        terminalreporter.write_line(f"device: {device} (CPU figures)")
    for line in summary_lines(benchmarks, bandwidth):
        terminalreporter.write_line(line)
