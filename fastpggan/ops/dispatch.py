"""The one place that decides which implementation of a fused op runs.

``impl`` is ``"reference"`` (pure PyTorch), ``"triton"`` (the fused Triton kernels) or ``"auto"``
(Triton where it can run, the reference elsewhere, with one warning naming the reason).

"auto" takes Triton for CUDA tensors on a device of compute capability 7.0 or more when Triton
and the kernels import; otherwise (CPU tensors, a Pascal GPU such as the GTX 1080 at 6.1, Triton
missing or broken) the reference, warning once per reason and never raising. "triton" asked for
explicitly raises a one-line ``RuntimeError`` where the kernels cannot run; on CPU tensors it
runs them under Triton's interpreter when ``TRITON_INTERPRET=1`` was set before triton was
imported (that is how the tests exercise the kernels without a GPU).

The decision itself is :func:`choose_impl`, a pure function of (device type, capability, Triton
problem), so tests can simulate a capability-6.1 GPU or a missing Triton.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType
from typing import Literal

import torch

Impl = Literal["auto", "triton", "reference"]
IMPLS: tuple[str, ...] = ("auto", "triton", "reference")
MIN_CAPABILITY = (7, 0)  # Triton and inductor refuse older GPUs

_warned: set[str] = set()


def check_impl(impl: str) -> None:
    """Raise ``ValueError`` for an unknown ``impl`` name."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


_triton_ops: ModuleType | str | None = None


def load_triton_ops() -> ModuleType | str:
    """The registered Triton ops module, or a string saying why it cannot be loaded."""
    # A plain global, not functools.cache: torch.compile traces through cache wrappers (and
    # cannot trace the import); once loaded it reads the global as a constant.
    global _triton_ops
    if _triton_ops is None:
        try:
            _triton_ops = importlib.import_module("fastpggan.ops.triton_ops")
        except Exception as e:  # ImportError, or a broken install failing in any other way
            _triton_ops = f"Triton is unavailable ({type(e).__name__}: {e})".splitlines()[0]
    return _triton_ops


def triton_interpreted() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    module = load_triton_ops()
    return not isinstance(module, str) and module.INTERPRETED


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """Compute capability of a CUDA device (cached: no query per call), ``None`` elsewhere."""
    if device.type != "cuda":
        return None
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


def choose_impl(
    impl: str,
    device_type: str,
    capability: tuple[int, int] | None,
    triton_problem: str | None,
    interpreted: bool = False,
) -> tuple[str, str | None]:
    """``(implementation, reason)``: what runs, and why "auto" fell back (or "triton" can't run).

    For "auto" the reason is the warning text when the reference is picked. For "triton" a
    reason means the request cannot be served (the caller raises it).
    """
    check_impl(impl)
    if impl == "reference":
        return "reference", None
    problem = triton_problem
    if problem is None and device_type == "cuda":
        if capability is not None and tuple(capability) < MIN_CAPABILITY:
            problem = (
                f"CUDA device of compute capability {capability[0]}.{capability[1]} is below "
                f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}, which Triton needs"
            )
    elif problem is None and not (impl == "triton" and interpreted):
        problem = f"tensors on {device_type}: the Triton kernels run on CUDA devices"
        if impl == "triton" and device_type == "cpu":
            problem += " (or on CPU with TRITON_INTERPRET=1 set before triton is imported)"
    if problem is None:
        return "triton", None
    return ("triton" if impl == "triton" else "reference"), problem


def warn_once(reason: str) -> None:
    """Warn that "auto" uses the reference, once per distinct reason per process."""
    if reason in _warned:
        return
    _warned.add(reason)
    warnings.warn(f"fastpggan.ops: impl='auto' runs the PyTorch reference: {reason}",
                  RuntimeWarning, stacklevel=4)


@torch.compiler.assume_constant_result
def _decide(impl: str, device_type: str, index: int) -> str:
    """:func:`choose_impl` for a device as one string, ``"<choice>|<reason>"``.

    Run for real even under torch.compile, which takes the answer as a constant: tracing the
    import of the Triton ops or the capability query would break the graph.
    """
    module = load_triton_ops()
    problem = module if isinstance(module, str) else None
    device = torch.device(device_type, index if index >= 0 else None)
    choice, reason = choose_impl(impl, device_type, device_capability(device), problem,
                                 triton_interpreted())
    if reason is not None and impl == "auto":
        warn_once(reason)  # here, not in the caller: torch.compile cannot trace warnings.warn
    return f"{choice}|{reason or ''}"


def resolve_impl(impl: str, x: torch.Tensor) -> str:
    """Return the implementation that will run for tensor ``x``: "reference" or "triton"."""
    check_impl(impl)
    if impl == "reference":
        return "reference"
    index = x.device.index if x.device.index is not None else -1
    choice, _, reason = _decide(impl, x.device.type, index).partition("|")
    if reason and impl == "triton":
        raise RuntimeError(f"impl='triton' cannot run: {reason}")
    return choice
