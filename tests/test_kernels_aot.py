"""Compile every Triton kernel ahead of time for real GPUs, at the ops' launch configurations.

The interpreter (which runs the other kernel tests) forgives what a real compile does not; this
test makes such errors fail in CI without a GPU. Targets: sm_61 (GTX 1080, Pascal), sm_70 (V100),
sm_75 (T4, RTX 20xx), sm_80 (A100) and sm_90 (H100), built with Triton's own ptxas (the one a
real run uses). It runs ``python -m fastpggan.ops.aot`` in a subprocess because
``TRITON_INTERPRET=1`` (set for the test session) swaps ``@triton.jit`` functions for Python
ones at import. What it compiles is what the ops register: the first tests make sure that is
every kernel of ``fastpggan.kernels``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import fastpggan.kernels
from fastpggan.ops import registry, toolchain, triton_ops
from fastpggan.ops.aot import ARCHS, launches

ROOT = Path(__file__).resolve().parent.parent
KERNELS = set(registry.kernel_files())


def defined_kernels() -> set[tuple[str, str]]:
    """``(module, name)`` of every public ``@triton.jit`` function a kernels module defines."""
    found = set()
    for info in pkgutil.iter_modules(fastpggan.kernels.__path__):
        module = importlib.import_module(f"fastpggan.kernels.{info.name}")
        for name, obj in vars(module).items():
            if (not name.startswith("_") and toolchain.is_kernel(obj)
                    and obj.fn.__module__ == module.__name__):
                found.add((info.name, name))
    return found


def test_every_kernel_is_registered() -> None:
    # a kernel no op declares would never be compiled ahead of time (nor self-checked)
    registered = {(file.module, name) for name, file in registry.kernel_files().items()}
    assert registered == defined_kernels()
    assert {"epilogue_fwd", "mbstd_bwd2"} <= KERNELS


def test_kernel_files_name_what_exists() -> None:
    parameters: dict[registry.KernelFile, set[str]] = {}
    for kernel, file in registry.kernel_files().items():
        names = {name for name, _ in toolchain.kernel_parameters(file.jit(kernel))}
        parameters.setdefault(file, set()).update(names)
    for file, names in parameters.items():
        assert callable(getattr(triton_ops, file.config)), file.config
        assert file.fp32 <= names, (file.module, file.fp32 - names)  # a renamed parameter
    # every registered kernel has launches, with every constexpr given a value
    assert {launch.kernel for launch in launches(("fp32",))} == KERNELS
    assert {launch.kernel for launch in launches(("fp16",), extremes_only=True)} == KERNELS


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
    lines = run_aot("--arch", "61", "--dtypes", "fp32", "--ptxas")
    assert len(lines) == len(launches(("fp32",))) > 40
    for line in lines:
        m = re.fullmatch(r"sm_61 (\w+)\[fp32,\S*\] registers=(\d+) spill_bytes=(\d+)", line)
        assert m is not None, line
        assert m.group(1) in KERNELS
        assert int(m.group(3)) == 0, f"spills: {line}"
        assert int(m.group(2)) <= 255, line
