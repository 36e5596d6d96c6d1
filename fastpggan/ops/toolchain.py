"""Facts about the installed Triton that differ between its versions: interpreter mode, what a
kernel's parameters are, its ptxas.

The oldest supported torch (2.7.1, the newest default build with Pascal kernels) brings triton
3.3.1, which has no ``triton.knobs``; newer Triton keeps its settings there. Everything version-
dependent is read here, so the rest of the project works with either.

Triton compiles PTX to machine code with the ``ptxas`` bundled in its wheel (or the one named by
``TRITON_PTXAS_PATH``), not the CUDA toolkit's on the PATH: whether Triton can build for a GPU is
whether *that* ptxas lists the GPU's ``sm_XY``. CUDA 13's ptxas dropped Pascal (sm_6x), CUDA 12's
has it.
"""

from __future__ import annotations

import functools
import inspect
import re
import subprocess

import triton


def interpreted(jit_function: object) -> bool:
    """Whether ``@triton.jit`` produced an interpreted (CPU, ``TRITON_INTERPRET=1``) function.

    Asked of a kernel rather than of Triton's settings: the interpreter is chosen when a kernel
    is defined, and the settings live in different places across Triton versions.
    """
    return not isinstance(jit_function, triton.runtime.JITFunction)


def is_kernel(obj: object) -> bool:
    """Whether ``obj`` is a ``@triton.jit`` function, compiled or (``TRITON_INTERPRET=1``)
    interpreted."""
    if isinstance(obj, triton.runtime.JITFunction):
        return True
    from triton.runtime.interpreter import InterpretedFunction  # in triton 3.3 and later

    return isinstance(obj, InterpretedFunction)


def kernel_parameters(kernel: object) -> tuple[tuple[str, bool], ...]:
    """``(name, is_constexpr)`` of each parameter of the ``@triton.jit`` function ``kernel``.

    A compiled kernel says so itself (``arg_names``, ``params[i].is_constexpr``); the
    interpreter's wrapper keeps only the Python function, whose annotations are read the way
    ``JITFunction`` reads them (``constexpr`` in the annotation's text).
    """
    if isinstance(kernel, triton.runtime.JITFunction):
        return tuple(zip(kernel.arg_names, (p.is_constexpr for p in kernel.params)))
    parameters = inspect.signature(kernel.fn).parameters.values()
    return tuple((p.name, "constexpr" in str(p.annotation)) for p in parameters)


def ptxas_path(arch: int = 80) -> str:
    """The ``ptxas`` Triton compiles ``sm_<arch>`` code with; ``RuntimeError`` if it has none."""
    from triton.backends.nvidia import compiler as nv

    tool = nv.get_ptxas(arch)  # (path, version) in triton 3.3; an object with .path later
    return tool[0] if isinstance(tool, tuple) else tool.path


@functools.cache
def ptxas_version(path: str) -> str:
    """``"12.9"``-style release of the ptxas at ``path``."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"release (\d+\.\d+)", out)
    return found.group(1) if found else "unknown"


@functools.cache
def ptxas_archs(path: str) -> frozenset[int]:
    """The ``sm_XY`` targets the ptxas at ``path`` can build for (from its ``--help``)."""
    out = subprocess.run([path, "--help"], capture_output=True, text=True, check=True).stdout
    return frozenset(int(m) for m in re.findall(r"'sm_(\d+)a?'", out))


def ptxas_problem(capability: tuple[int, int]) -> str | None:
    """``None`` when Triton's ptxas can build for a GPU of ``capability``, else why not."""
    arch = capability[0] * 10 + capability[1]
    try:
        path = ptxas_path(arch)
        archs = ptxas_archs(path)
    except Exception as e:  # no ptxas in the wheel, a broken TRITON_PTXAS_PATH...
        return f"Triton's ptxas cannot be run ({type(e).__name__}: {e})".splitlines()[0]
    if arch not in archs:
        return (f"Triton's ptxas ({path}, CUDA {ptxas_version(path)}) cannot build for sm_{arch}; "
                f"point TRITON_PTXAS_PATH at a CUDA 12 ptxas")
    return None
