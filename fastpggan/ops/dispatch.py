"""The one place that decides which implementation of a fused op runs.

``impl`` is ``"reference"`` (pure PyTorch), ``"triton"`` (the fused Triton kernels) or ``"auto"``
(Triton where it can run, the reference elsewhere).

"auto" takes Triton for CUDA tensors on a device of compute capability 6.0 or more (the GTX 1080
is 6.1) when Triton and the kernels import and Triton's own ptxas can build for the card. Each op
then checks itself against the reference the first time it runs on a device in a dtype
(:mod:`fastpggan.ops.verify`); a failing op uses the reference on that device. Every such
fallback on a GPU warns once (``RuntimeWarning``) and never raises. CPU tensors take the
reference silently: that is the CPU's path, not a fallback (:func:`describe_impl` says so in
words for a program's opening lines).

"triton" asked for explicitly raises a one-line ``RuntimeError`` where the kernels cannot run or
fail the self-check; on CPU tensors it runs them under Triton's interpreter when
``TRITON_INTERPRET=1`` was set before triton was imported (that is how the tests exercise the
kernels without a GPU).

The rules are :func:`choose_impl`, a pure function of (device type, capability, Triton problem),
so tests can simulate a capability-6.1 GPU or a missing Triton. A decision is taken once per
(impl, op, device, dtype) and remembered: later calls cost one dictionary look-up, and under
``torch.compile`` the decision is a traced constant (so the self-check never enters a graph).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType
from typing import Literal

import torch

from fastpggan.ops import registry, verify
from fastpggan.ops.registry import FusedOp

Impl = Literal["auto", "triton", "reference"]
IMPLS: tuple[str, ...] = ("auto", "triton", "reference")
# Our kernels need nothing newer than Pascal: they compile for sm_60/61 (see fastpggan.ops.aot).
MIN_CAPABILITY = (6, 0)
REPORT_HINT = (
    "please report it on the fastpggan issue tracker with the output of "
    "`python -m fastpggan.ops.selfcheck`"
)

_warned: set[str] = set()
_decisions: dict[tuple[str, str, str, int, str], str] = {}


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


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """Compute capability of a CUDA device (cached: no query per call), ``None`` elsewhere."""
    if device.type != "cuda":
        return None
    return _capability(_index(device))


def device_label(device: torch.device) -> str:
    """``"cuda:0 (NVIDIA GeForce GTX 1080, compute capability 6.1)"``, or ``"cpu"``."""
    if device.type != "cuda":
        return device.type
    index = _index(device)
    major, minor = _capability(index)
    return f"cuda:{index} ({torch.cuda.get_device_name(index)}, compute capability {major}.{minor})"


def choose_impl(
    impl: str,
    device_type: str,
    capability: tuple[int, int] | None,
    triton_problem: str | None,
    interpreted: bool = False,
) -> tuple[str, str | None]:
    """``(implementation, reason)``: what runs, and why "auto" fell back (or "triton" can't run).

    ``triton_problem`` says why Triton cannot serve the device (it does not import, its ptxas
    cannot build for the card), ``None`` if nothing is known against it. For "auto" a reason is
    the warning text when the reference is picked; "auto" on a device other than CUDA picks the
    reference with no reason (nothing to warn about). For "triton" a reason means the request
    cannot be served (the caller raises it).
    """
    check_impl(impl)
    if impl == "reference":
        return "reference", None
    if device_type != "cuda":
        if impl == "auto":
            return "reference", None
        if triton_problem is None and interpreted:
            return "triton", None
        problem = triton_problem or (
            f"tensors on {device_type}: the Triton kernels run on CUDA devices (or on CPU with "
            f"TRITON_INTERPRET=1 set before triton is imported)"
        )
        return "triton", problem
    problem = triton_problem
    if problem is None and capability is not None and tuple(capability) < MIN_CAPABILITY:
        problem = (
            f"CUDA device of compute capability {capability[0]}.{capability[1]} is below "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}, the oldest the Triton kernels are built for"
        )
    if problem is None:
        return "triton", None
    return ("triton" if impl == "triton" else "reference"), problem


def _plan(impl: str, device: torch.device) -> tuple[str, str | None]:
    """:func:`choose_impl` with this machine's facts for ``device`` (no self-check)."""
    module = load_triton_ops()
    problem = module if isinstance(module, str) else None
    capability = device_capability(device)
    if problem is None and capability is not None and tuple(capability) >= MIN_CAPABILITY:
        from fastpggan.ops import toolchain

        problem = toolchain.ptxas_problem(capability)
    return choose_impl(impl, device.type, capability, problem, triton_interpreted())


def warn_once(message: str) -> None:
    """``RuntimeWarning`` with ``message``, once per distinct message per process."""
    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=6)  # the public op's caller


def _first_decision(impl: str, op: str, device_type: str, index: int, dtype: str) -> str:
    device = torch.device(device_type, index if index >= 0 else None)
    choice, reason = _plan(impl, device)
    if choice == "triton" and reason is None and op and verify.enabled():
        module = load_triton_ops()
        assert not isinstance(module, str)
        failure = verify.self_check(op, module, device, getattr(torch, dtype))
        if failure is not None:
            reason = (f"the Triton kernel of {op} failed its self-check against the PyTorch "
                      f"reference on {device_label(device)} in {dtype}: {failure}")
            if impl == "auto":
                choice = "reference"
                warn_once(f"fastpggan.ops: {reason}. {op} uses the PyTorch reference on this "
                          f"device from now on (correct, slower); {REPORT_HINT}")
    elif reason is not None and impl == "auto":
        # here, not in the caller: torch.compile cannot trace warnings.warn
        warn_once(f"fastpggan.ops: impl='auto' runs the PyTorch reference: {reason}")
    return f"{choice}|{reason or ''}"


@torch.compiler.assume_constant_result
def _decide(impl: str, op: str, device_type: str, index: int, dtype: str) -> str:
    """The decision for (impl, op, device, dtype) as one string, ``"<choice>|<reason>"``.

    Taken once, remembered after. Run for real even under torch.compile, which takes the answer
    as a constant: tracing the import of the Triton ops, the capability query or the self-check
    would break (or bloat) the graph.
    """
    key = (impl, op, device_type, index, dtype)
    decided = _decisions.get(key)
    if decided is None:
        decided = _decisions[key] = _first_decision(*key)
    return decided


def resolve_impl(impl: str, x: torch.Tensor, op: str = "") -> str:
    """Return the implementation that will run for tensor ``x``: "reference" or "triton".

    ``op`` names the public op about to run (one of :data:`registry.OPS`): the first Triton
    choice for it on ``x``'s device and dtype runs the self-check. Without it, none runs.
    """
    check_impl(impl)
    if impl == "reference":
        return "reference"
    index = x.device.index if x.device.index is not None else -1
    dtype = str(x.dtype).removeprefix("torch.")
    choice, _, reason = _decide(impl, op, x.device.type, index, dtype).partition("|")
    if reason and impl == "triton":
        raise RuntimeError(f"impl='triton' cannot run: {reason}")
    return choice


def run(op: FusedOp, impl: str, x: torch.Tensor, *args: object) -> torch.Tensor:
    """``op`` on ``x`` and the rest of its reference's arguments, by the implementation that
    :func:`resolve_impl` picks for ``x``: what every public op of :mod:`fastpggan.ops` does."""
    if resolve_impl(impl, x, op.name) == "triton":
        return op.triton(load_triton_ops(), x, *args)
    return op.reference(x, *args)


def impl_problem(impl: str, device: torch.device | str) -> str | None:
    """Why ``impl`` cannot run on ``device`` (only "triton" can fail so), else ``None``.

    For programs to refuse ``--impl triton`` before any work starts; the self-check, which
    needs the op to run, is not part of it.
    """
    if impl != "triton":
        check_impl(impl)
        return None
    return _plan(impl, torch.device(device))[1]


def check_ops(impl: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
    """Take every op's decision on ``device`` in ``dtype`` now rather than at its first use.

    Runs the self-checks up front (their warnings come before the work) and raises, as the ops
    would, a ``RuntimeError`` when ``impl="triton"`` cannot run or fails a check.
    """
    check_impl(impl)
    if impl == "reference":
        return
    probe = torch.empty(0, device=device, dtype=dtype)  # a CUDA tensor names its device index
    for op in registry.OPS:
        resolve_impl(impl, probe, op)


def describe_impl(impl: str, device: torch.device | str) -> str:
    """One line in plain words: which implementation the fused ops take on ``device``.

    For a program's opening lines, e.g. ``"fused ops: PyTorch reference (CPU)"``. Says what the
    rules pick before any op runs; a self-check failing later warns on its own.
    """
    device = torch.device(device)
    choice, reason = _plan(impl, device)
    if impl == "reference":
        return "fused ops: PyTorch reference (asked for)"
    if device.type != "cuda":
        if choice == "reference":
            return (f"fused ops: PyTorch reference ({device.type.upper()}; the Triton kernels "
                    f"run on CUDA GPUs)")
        if reason is None:
            return "fused ops: Triton kernels in Triton's CPU interpreter (TRITON_INTERPRET=1; slow)"
        return f"fused ops: Triton kernels cannot run: {reason}"
    if choice == "reference":
        return f"fused ops: PyTorch reference ({reason})"
    if reason is not None:
        return f"fused ops: Triton kernels cannot run: {reason}"
    check = ("each checked against the PyTorch reference on first use" if verify.enabled()
             else f"self-check off ({verify.ENV}=0)")
    return f"fused ops: Triton kernels on {device_label(device)}, {check}"
