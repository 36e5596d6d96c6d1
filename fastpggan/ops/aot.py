"""Ahead-of-time compile every Triton kernel at the launch configurations the ops use; no GPU needed.

The interpreter forgives what a real GPU compile does not (layouts, register pressure, type
rules), so CI compiles each kernel for real targets: ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))`` builds PTX and cubin on a machine without a GPU, with the
ptxas Triton itself uses (bundled in its wheel: CUDA 12, which still builds for Pascal; the CUDA
toolkit's on the PATH may not). ``--ptxas`` also reports registers and spills per kernel from
that same ptxas.

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
from typing import Iterator

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastpggan.kernels import epilogue as ek
from fastpggan.kernels import mbstd as mk
from fastpggan.ops import toolchain
from fastpggan.ops.reference import mbstd_group_size
from fastpggan.ops.triton_ops import epilogue_config, mbstd_config

DTYPES = ("fp32", "bf16", "fp16")
# GTX 10xx (Pascal), V100, T4 / RTX 20xx, A100, H100
ARCHS = (61, 70, 75, 80, 90)
# The shapes PGGAN's layers give the epilogues: feature maps nf(stage) at 4..1024 px, and the
# dense layers ([N, 512] with N up to 128); minibatch stddev at 4x4 for batches 1..128.
CHANNELS = (16, 32, 64, 128, 256, 512)
SPATIAL = tuple(4**k for k in range(1, 11))  # 4x4 .. 1024x1024 positions
DENSE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
BATCHES = tuple(range(1, 129))


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


def _sig(names: str, ptr: str, ptr_names: int, float_names: tuple[str, ...] = ()
         ) -> tuple[tuple[str, str], ...]:
    out = []
    for i, name in enumerate(names.split()):
        if i < ptr_names:
            out.append((name, ptr))
        else:
            out.append((name, "fp32" if name in float_names else "i32"))
    return tuple(out)


_FWD_ARGS = "x_ptr b_ptr y_ptr rstd_ptr C S out_scale sxn sxc sxs syn syc sys_"
_BWD_ARGS = ("dy_ptr y_ptr rstd_ptr dx_ptr db_ptr C S out_scale tiles_per_prog "
             "sdn sdc sds syn syc sys_ sgn sgc sgs")
_MBSTD_ARGS = {
    "mbstd_fwd": ("x_ptr out_ptr", 2),
    "mbstd_bwd": ("dout_ptr out_ptr dx_ptr", 3),
    "mbstd_bwd2": ("ddx_ptr dout_ptr out_ptr ddout_ptr gx_ptr", 5),
}
_STRIDE_SETS = {"mbstd_fwd": "x o", "mbstd_bwd": "d o g", "mbstd_bwd2": "e d o f g"}


def _fix_ptr_types(sig: tuple[tuple[str, str], ...], dtype: str) -> tuple[tuple[str, str], ...]:
    # bias, rstd and the bias partials are float32 whatever the activations' dtype
    fp32 = {"b_ptr", "rstd_ptr", "db_ptr"}
    return tuple((n, "*fp32" if n in fp32 else t) for n, t in sig)


def epilogue_blocks() -> set[tuple[int, int, int]]:
    """Every ``(BLOCK_C, BLOCK_S, num_warps)`` the epilogues take for PGGAN's shapes."""
    blocks = {epilogue_config(c, s) for c in CHANNELS for s in SPATIAL}
    blocks |= {epilogue_config(512, n) for n in DENSE_BATCHES}
    return blocks


def launches(dtypes: tuple[str, ...] = DTYPES, extremes_only: bool = False) -> list[Launch]:
    """The kernel configurations the ops launch for PGGAN's shapes, in ``dtypes``.

    ``extremes_only`` keeps, of the epilogues' block shapes, only the widest and the narrowest
    in channels (each at its largest tile): a quicker CI sweep over every kernel variant.
    """
    return list(dict.fromkeys(_launches(dtypes, extremes_only)))


def _launches(dtypes: tuple[str, ...], extremes_only: bool) -> Iterator[Launch]:
    blocks_used = sorted(epilogue_blocks())
    if extremes_only:
        by_c: dict[int, tuple[int, int, int]] = {}
        for b in blocks_used:  # sorted: the last one per BLOCK_C has the largest BLOCK_S
            by_c[b[0]] = b
        blocks_used = [by_c[min(by_c)], by_c[max(by_c)]]
    for dtype in dtypes:
        for block_c, block_s, warps in blocks_used:
            blocks = (("BLOCK_C", block_c), ("BLOCK_S", block_s))
            for pix in (False, True):
                sig = _fix_ptr_types(_sig(_FWD_ARGS, f"*{dtype}", 4, ("out_scale",)), dtype)
                yield Launch("epilogue_fwd", sig, (("PIXNORM", pix), ("FP64", False)) + blocks,
                             warps)
            for pix, write_db in ((True, True), (False, True), (False, False)):
                sig = _fix_ptr_types(_sig(_BWD_ARGS, f"*{dtype}", 5, ("out_scale",)), dtype)
                consts = (("PIXNORM", pix), ("WRITE_DB", write_db), ("FP64", False))
                yield Launch("epilogue_bwd", sig, consts + blocks, warps)
        for g in sorted({mbstd_group_size(n) for n in BATCHES}):
            block_g, block_k, warps = mbstd_config(g)
            for name, (ptrs, nptr) in _MBSTD_ARGS.items():
                strides = " ".join(f"s{t}{d}" for t in _STRIDE_SETS[name].split() for d in "nchw")
                sig = _sig(f"{ptrs} M G C H W {strides}", f"*{dtype}", nptr)
                consts = (("FP64", False), ("BLOCK_G", block_g), ("BLOCK_K", block_k))
                yield Launch(name, sig, consts, warps)


_KERNELS = {
    "epilogue_fwd": ek.epilogue_fwd,
    "epilogue_bwd": ek.epilogue_bwd,
    "mbstd_fwd": mk.mbstd_fwd,
    "mbstd_bwd": mk.mbstd_bwd,
    "mbstd_bwd2": mk.mbstd_bwd2,
}


def compile_launch(launch: Launch, arch: int) -> dict[str, object]:
    """Compile ``launch`` for ``sm_<arch>``; returns the kernel's ``asm`` dict (ptx, cubin...)."""
    fn = _KERNELS[launch.kernel]
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
