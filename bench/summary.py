"""Per-group benchmark summary: speedup over the eager reference and achieved bandwidth.

Shared by the ``pytest bench/`` terminal summary (live pytest-benchmark objects) and by
``python -m bench.gpu_report`` (the ``--benchmark-json`` file), so both say the same thing.
Each benchmark carries ``extra_info`` ``variant`` (``reference`` | ``compiled`` | ``triton``) and
``bytes`` (minimal traffic of one call); its group is one op, mode and shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch


@dataclass(frozen=True)
class Timing:
    """One benchmark: ``median_s`` seconds per call of ``variant`` in ``group``."""

    group: str
    variant: str
    median_s: float
    nbytes: int | None


@dataclass(frozen=True)
class VariantSummary:
    """One variant of a group: its median, speedup over the eager reference, GB/s."""

    variant: str
    median_s: float
    speedup: float | None  # reference median / this median; None without a reference
    gbps: float | None  # achieved GB/s from the minimal traffic; None without a bandwidth
    copy_fraction: float | None  # gbps against the measured copy bandwidth

    def describe(self) -> str:
        text = f"{self.variant} {self.median_s * 1e3:.3f} ms"
        if self.speedup is not None:
            text += f" ({self.speedup:.2f}x)"
        if self.gbps is not None and self.copy_fraction is not None:
            text += f" {self.gbps:.0f} GB/s = {100 * self.copy_fraction:.0f}% of copy"
        return text


def timings_from_session(benchmarks: Iterable[Any]) -> list[Timing]:
    """Timings from pytest-benchmark's live benchmark objects (those that ran)."""
    return [
        Timing(b.group or b.name, str(b.extra_info.get("variant")), b.stats.median,
               b.extra_info.get("bytes"))
        for b in benchmarks
        if b.stats is not None
    ]


def timings_from_json(data: dict) -> list[Timing]:
    """Timings from a ``--benchmark-json`` file's parsed contents."""
    return [
        Timing(b.get("group") or b["name"], str(b.get("extra_info", {}).get("variant")),
               b["stats"]["median"], b.get("extra_info", {}).get("bytes"))
        for b in data.get("benchmarks", [])
    ]


def summarize(timings: Iterable[Timing], bandwidth: float | None
              ) -> dict[str, list[VariantSummary]]:
    """Per group (in first-seen order), its variants sorted by name.

    ``bandwidth`` is the measured copy bandwidth in bytes/s (CUDA), ``None`` on CPU.
    """
    groups: dict[str, dict[str, Timing]] = {}
    for t in timings:
        groups.setdefault(t.group, {})[t.variant] = t
    out = {}
    for group, by_variant in groups.items():
        ref = by_variant.get("reference")
        rows = []
        for variant, t in sorted(by_variant.items()):
            gbps = t.nbytes / t.median_s / 1e9 if bandwidth and t.nbytes else None
            rows.append(VariantSummary(
                variant, t.median_s,
                ref.median_s / t.median_s if ref is not None else None,
                gbps, gbps * 1e9 / bandwidth if gbps is not None and bandwidth else None,
            ))
        out[group] = rows
    return out


def summary_lines(timings: Iterable[Timing], bandwidth: float | None) -> list[str]:
    """One line per group: ``group: variant median (speedup) GB/s, ...``."""
    return [f"{group}: " + ", ".join(v.describe() for v in rows)
            for group, rows in summarize(timings, bandwidth).items()]


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted). CUDA only."""
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
