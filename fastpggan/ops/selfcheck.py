"""``python -m fastpggan.ops.selfcheck``: every Triton op against the reference, for a bug report.

Prints the Python, torch, triton and ptxas versions, the device and what ``impl="auto"`` picks
there, then runs :func:`fastpggan.ops.verify.self_check` for every op in each ``--dtype``: one
line per op, exit code 1 if any fails. Options: ``--device cuda|cpu|cuda:N`` (default: cuda
when available), ``--dtype float32 [float16 ...]``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from fastpggan.ops import dispatch, registry, toolchain, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check every Triton op against the PyTorch reference on this machine and "
                    "print what a bug report needs.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["float32"],
                        choices=[str(d).removeprefix("torch.") for d in verify.TOLERANCE])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    try:
        import triton

        print(f"triton {triton.__version__}")
        path = toolchain.ptxas_path()
        print(f"Triton's ptxas: {path} (CUDA {toolchain.ptxas_version(path)})")
    except Exception as e:
        print(f"triton: {type(e).__name__}: {e}".splitlines()[0])
    print(f"device: {dispatch.device_label(device)}")
    print(dispatch.describe_impl("auto", device))
    module = dispatch.load_triton_ops()
    if isinstance(module, str):
        print(module)
        return 1
    if device.type != "cuda" and not module.INTERPRETED:
        print("the Triton kernels run on CUDA devices (or on CPU with TRITON_INTERPRET=1)")
        return 1
    failed = 0
    for dtype_name in args.dtype:
        for op in registry.OPS:
            problem = verify.self_check(op, module, device, getattr(torch, dtype_name))
            failed += problem is not None
            print(f"{op} {dtype_name}: {'ok' if problem is None else 'FAILED: ' + problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
