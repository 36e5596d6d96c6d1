"""pytest-benchmark setup: resolution selection, CUDA timing, and the per-group speedup summary.

Every benchmark records ``extra_info`` with its ``variant`` (``reference`` = eager reference,
``compiled`` = ``torch.compile`` of the reference, ``triton`` = the fused kernels) and ``bytes``:
the minimal traffic of the call, each distinct tensor it takes or returns counted once.
After the table, each group gets one summary line: speedup over the eager reference and, on
CUDA, achieved GB/s against the device's measured copy bandwidth.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from bench.shapes import DEFAULT_BATCH  # noqa: E402

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


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted)."""
    src = torch.empty(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize(device)
    return 2 * nbytes * 20 / (start.elapsed_time(end) / 1e3)


def _summary_lines(benchmarks: list, bandwidth: float | None) -> list[str]:
    groups: dict[str, list] = {}
    for bench in benchmarks:
        groups.setdefault(bench.group or bench.name, []).append(bench)
    lines = []
    for group, items in groups.items():
        by_variant = {b.extra_info.get("variant"): b for b in items}
        ref = by_variant.get("reference")
        parts = []
        for variant, b in sorted(by_variant.items(), key=lambda kv: str(kv[0])):
            median = b.stats.median
            part = f"{variant} {median * 1e3:.3f} ms"
            if ref is not None:
                part += f" ({ref.stats.median / median:.2f}x)"
            nbytes = b.extra_info.get("bytes")
            if bandwidth and nbytes:
                gbps = nbytes / median / 1e9
                part += f" {gbps:.0f} GB/s = {100 * gbps * 1e9 / bandwidth:.0f}% of copy"
            parts.append(part)
        lines.append(f"{group}: " + ", ".join(parts))
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    benchmarks = [b for b in getattr(session, "benchmarks", []) if b.stats is not None]
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
    for line in _summary_lines(benchmarks, bandwidth):
        terminalreporter.write_line(line)
