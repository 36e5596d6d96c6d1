"""Ahead-of-time compile every Triton kernel at the launch configurations the ops use; no GPU needed.

The interpreter forgives what a real GPU compile does not (layouts, register pressure, type
rules), so CI compiles each kernel for real targets: ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))`` builds PTX and cubin on a machine without a GPU, with the
ptxas Triton itself uses (bundled in its wheel: CUDA 12, which still builds for Pascal; the CUDA
toolkit's on the PATH may not). ``--ptxas`` also reports registers and spills per kernel from
that same ptxas.

What is compiled comes from the registered ops (:mod:`fastpggan.ops.registry`): each kernel an op
launches, with its constants, at every block configuration that the op's own configuration
function (in :mod:`fastpggan.ops.triton_ops`) picks for PGGAN's shapes. A kernel's parameter
names and order are read from the kernel itself, their types from its file's rule.

Run ``TRITON_INTERPRET=0 python -m fastpggan.ops.aot [--arch 61 70 75 80 90] [--dtypes fp32]
[--ptxas]``: one line per compiled kernel. Must run without ``TRITON_INTERPRET`` (the
interpreter replaces ``@triton.jit`` functions, and their helpers, by Python).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastpggan.ops import registry, toolchain, triton_ops
from fastpggan.ops.registry import KernelFile, KernelUse

DTYPES = ("fp32", "bf16", "fp16")
# GTX 10xx (Pascal), V100, T4 / RTX 20xx, A100, H100
ARCHS = (61, 70, 75, 80, 90)


@dataclass(frozen=True)
class Launch:
    """One kernel at one compile-time configuration."""

    kernel: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int

    def label(self) -> str:
        consts = ",".join(f"{k}={v}" for k, v in self.constexprs if k != "FP64")
        dtype = next(t for _, t in self.signature if t.startswith("*"))[1:]
        return f"{self.kernel}[{dtype},{consts},warps={self.num_warps}]"


def signature(file: KernelFile, kernel: str, dtype: str) -> tuple[tuple[str, str], ...]:
    """``(name, type)`` of each runtime parameter of ``kernel``, by its file's type rule."""
    out = []
    for name, is_constexpr in toolchain.kernel_parameters(file.jit(kernel)):
        if is_constexpr:
            continue
        pointer = name.endswith("_ptr")
        base = "fp32" if name in file.fp32 else (dtype if pointer else "i32")
        out.append((name, f"*{base}" if pointer else base))
    return tuple(out)


def configs(file: KernelFile, extremes_only: bool = False) -> list[tuple[int, ...]]:
    """Every ``(*block sizes, num_warps)`` the kernels of ``file`` take at PGGAN's shapes.

    ``extremes_only`` (for a file declared ``quick``) keeps the narrowest and the widest first
    block size, each at its largest second one: a quicker CI sweep over every kernel variant.
    """
    pick = getattr(triton_ops, file.config)
    used = sorted({pick(*shape) for shape in file.shapes})
    if not (extremes_only and file.quick):
        return used
    by_first: dict[int, tuple[int, ...]] = {}
    for config in used:  # sorted: the last one per first block size has the largest second
        by_first[config[0]] = config
    return [by_first[min(by_first)], by_first[max(by_first)]]


def constexprs(use: KernelUse, config: tuple[int, ...]) -> tuple[tuple[str, object], ...]:
    """The compile-time constants of ``use`` at ``config``, in the kernel's parameter order."""
    given = dict(use.constexprs)
    blocks = iter(config[:-1])
    out = []
    for name, is_constexpr in toolchain.kernel_parameters(use.file.jit(use.kernel)):
        if not is_constexpr:
            continue
        if name in given:
            out.append((name, given.pop(name)))
        elif name == "FP64":  # float64 tensors only run in the tests' interpreter
            out.append((name, False))
        elif name.startswith("BLOCK_"):
            out.append((name, next(blocks)))
        else:
            raise ValueError(f"{use.kernel}: no value declared for its constexpr {name}")
    if given or next(blocks, None) is not None:
        raise ValueError(f"{use.kernel}: declared values it has no parameter for: {use}")
    return tuple(out)


def launches(dtypes: tuple[str, ...] = DTYPES, extremes_only: bool = False) -> list[Launch]:
    """The kernel configurations the registered ops launch for PGGAN's shapes, in ``dtypes``.

    ``extremes_only``: of the epilogues' block shapes only the widest and the narrowest in
    channels (see :func:`configs`).
    """
    found = []
    for dtype in dtypes:
        for op in registry.OPS.values():
            for use in op.kernels:
                sig = signature(use.file, use.kernel, dtype)
                for config in configs(use.file, extremes_only):
                    found.append(Launch(use.kernel, sig, constexprs(use, config), config[-1]))
    return list(dict.fromkeys(found))


def compile_launch(launch: Launch, arch: int) -> dict[str, object]:
    """Compile ``launch`` for ``sm_<arch>``; returns the kernel's ``asm`` dict (ptx, cubin...)."""
    fn = registry.kernel_files()[launch.kernel].jit(launch.kernel)
    if not isinstance(fn, triton.runtime.JITFunction):
        raise RuntimeError("AOT compile needs real @triton.jit kernels: unset TRITON_INTERPRET")
    consts = dict(launch.constexprs)
    sig = dict(launch.signature) | {k: "constexpr" for k in consts}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": launch.num_warps})
    return compiled.asm


def ptxas_usage(ptx: str, arch: int) -> tuple[int, int]:
    """``(registers, spill bytes)`` from ``ptxas -v`` (Triton's own ptxas) for ``sm_<arch>``."""
    ptxas = toolchain.ptxas_path(arch)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/k.ptx"
        with open(path, "w") as f:
            f.write(ptx)
        arch_s = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
        proc = subprocess.run([ptxas, "-v", f"--gpu-name={arch_s}", path, "-o", f"{tmp}/k.o"],
                              capture_output=True, text=True, check=True)
    text = proc.stderr + proc.stdout
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    spills = sum(int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", text))
    return regs, spills


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--ptxas", action="store_true", help="report registers and spills")
    parser.add_argument("--extremes-only", action="store_true",
                        help="only the widest and narrowest epilogue blocks (quick CI sweep)")
    args = parser.parse_args(argv)
    count = 0
    for launch in launches(tuple(args.dtypes), args.extremes_only):
        for arch in args.arch:
            asm = compile_launch(launch, arch)
            if "cubin" not in asm or "ptx" not in asm:
                print(f"sm_{arch} {launch.label()}: no cubin", file=sys.stderr)
                return 1
            line = f"sm_{arch} {launch.label()}"
            if args.ptxas:
                regs, spills = ptxas_usage(asm["ptx"], arch)
                line += f" registers={regs} spill_bytes={spills}"
            print(line, flush=True)
            count += 1
    print(f"compiled {count} kernel configurations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
