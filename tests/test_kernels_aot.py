"""Compile every Triton kernel ahead of time for real GPUs, at the ops' launch configurations.

The interpreter (which runs the other kernel tests) forgives what a real compile does not; this
test makes such errors fail in CI without a GPU. Targets: sm_61 (GTX 1080, Pascal), sm_70 (V100),
sm_75 (T4, RTX 20xx), sm_80 (A100) and sm_90 (H100), built with Triton's own ptxas (the one a
real run uses). It runs ``python -m fastpggan.ops.aot`` in a subprocess because
``TRITON_INTERPRET=1`` (set for the test session) swaps ``@triton.jit`` functions for Python
ones at import.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from fastpggan.ops.aot import ARCHS

ROOT = Path(__file__).resolve().parent.parent
KERNELS = {"epilogue_fwd", "epilogue_bwd", "mbstd_fwd", "mbstd_bwd", "mbstd_bwd2"}


def run_aot(*args: str) -> list[str]:
    """``python -m fastpggan.ops.aot ARGS`` without the interpreter: its kernel lines."""
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "fastpggan.ops.aot", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"compiled {len(lines) - 1} kernel configurations"
    return lines[:-1]


def test_every_kernel_compiles_for_every_arch() -> None:
    # every kernel variant in every dtype for every target; of the epilogues' block shapes only
    # the widest and narrowest (the Pascal test below takes every fp32 one)
    lines = run_aot("--arch", *map(str, ARCHS), "--extremes-only")
    assert {line.split()[1].split("[")[0] for line in lines} == KERNELS
    assert {line.split()[0] for line in lines} == {f"sm_{a}" for a in ARCHS}
    assert {61, 70, 75, 80, 90} <= set(ARCHS)
    per_arch = len(lines) // len(ARCHS)
    assert all(sum(line.startswith(f"sm_{a} ") for line in lines) == per_arch for a in ARCHS)


def test_every_pascal_launch_compiles_without_spills() -> None:
    # A GTX 1080 trains in fp32: every configuration the ops launch for PGGAN's shapes, with
    # the registers and spills ptxas reports for sm_61.
    from fastpggan.ops.aot import launches

    lines = run_aot("--arch", "61", "--dtypes", "fp32", "--ptxas")
    assert len(lines) == len(launches(("fp32",))) > 40
    for line in lines:
        m = re.fullmatch(r"sm_61 (\w+)\[fp32,\S*\] registers=(\d+) spill_bytes=(\d+)", line)
        assert m is not None, line
        assert m.group(1) in KERNELS
        assert int(m.group(3)) == 0, f"spills: {line}"
        assert int(m.group(2)) <= 255, line
