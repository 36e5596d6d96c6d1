"""Compile every Triton kernel for sm_80 and sm_90 ahead of time, at the ops' launch configs.

The interpreter (which runs the other kernel tests) forgives what a real compile does not; this
test makes such errors fail in CI without a GPU. It runs ``python -m fastpggan.ops.aot`` in a
subprocess because ``TRITON_INTERPRET=1`` (set for the test session) swaps ``@triton.jit``
functions for Python ones at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_kernel_compiles_for_sm80_and_sm90() -> None:
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(ROOT))
    # every kernel variant in every dtype; of the epilogues' block shapes only the widest and
    # narrowest (the full sweep: `python -m fastpggan.ops.aot --ptxas`, a few minutes)
    proc = subprocess.run(
        [sys.executable, "-m", "fastpggan.ops.aot", "--arch", "80", "90", "--extremes-only"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    kernels = {line.split()[1].split("[")[0] for line in lines[:-1]}
    assert kernels == {"epilogue_fwd", "epilogue_bwd", "mbstd_fwd", "mbstd_bwd", "mbstd_bwd2"}
    assert {line.split()[0] for line in lines[:-1]} == {"sm_80", "sm_90"}
    assert lines[-1].startswith("compiled ")
