"""What a fused op declares once, and the registry that verify, aot, dispatch and the tests read.

Each op is declared beside its public function in :mod:`fastpggan.ops`, as
``register(FusedOp(...))``, with everything the rest of the project needs of it: its reference,
its Triton implementation, its self-check inputs and the kernels it launches (from which
:mod:`fastpggan.ops.aot` derives the ahead-of-time launch configurations). Nothing else lists
the ops: :data:`OPS` is the list.

The Triton side is never imported here: ``FusedOp.triton`` is handed the Triton ops module
(:mod:`fastpggan.ops.triton_ops`, loaded lazily by :mod:`fastpggan.ops.dispatch`), and a
:class:`KernelFile` names its kernels and launch-configuration function by name, so a machine
without Triton still imports :mod:`fastpggan.ops`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KernelFile:
    """A module of ``fastpggan.kernels``, as the ahead-of-time compiler sees it.

    Type rule of its kernels' parameters (their names and order come from the kernels): a name
    ending in ``_ptr`` is a pointer to the tensors' dtype, any other is an int32, except the
    names in ``fp32``, which are float32 (pointer or scalar) whatever the tensors' dtype.
    ``config`` names the function of :mod:`fastpggan.ops.triton_ops` that picks a launch's
    ``(*block sizes, num_warps)`` at run time, the block sizes in the order of the kernels'
    ``BLOCK_*`` parameters; ``shapes`` are its arguments at every shape PGGAN gives these kernels.
    ``quick``: ``aot --extremes-only`` keeps, of their configurations, only the narrowest and the
    widest first block size, each at its largest second one.
    """

    module: str
    fp32: frozenset[str]
    config: str
    shapes: tuple[tuple[int, ...], ...]
    quick: bool = False

    def use(self, kernel: str, **constexprs: object) -> KernelUse:
        """``kernel`` of this file, launched with these compile-time constants."""
        return KernelUse(self, kernel, tuple(constexprs.items()))

    def jit(self, kernel: str) -> object:
        """The ``@triton.jit`` function ``kernel`` of this file (imports Triton)."""
        return getattr(importlib.import_module(f"fastpggan.kernels.{self.module}"), kernel)


@dataclass(frozen=True)
class KernelUse:
    """A kernel an op launches, and the compile-time constants it launches it with.

    ``constexprs`` leaves out ``FP64`` (float64 tensors only run in tests) and the block sizes
    (they follow from the shapes: :attr:`KernelFile.config`).
    """

    file: KernelFile
    kernel: str
    constexprs: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class SelfCheck:
    """How an op is checked against its reference (:func:`fastpggan.ops.verify.self_check`).

    ``inputs(shape, generator)`` draws the op's float64 tensor inputs for each of ``shapes``;
    ``args`` are the reference's other arguments (not its defaults where a default would skip
    work, e.g. ``out_scale=1``); ``twice_differentiable``: the gradients of the gradients are
    checked too (WGAN-GP differentiates the discriminator's ops twice).
    """

    shapes: tuple[tuple[int, ...], ...]
    inputs: Callable[[tuple[int, ...], torch.Generator], list[torch.Tensor]]
    args: tuple[object, ...]
    twice_differentiable: bool


@dataclass(frozen=True)
class FusedOp:
    """One fused op. Its public function is ``fastpggan.ops.<name>``, the reference's signature
    plus ``impl``.

    ``reference``: the pure-PyTorch ground truth (:mod:`fastpggan.ops.reference`).
    ``triton(triton_ops, *reference's arguments)``: the same result through the ``torch.library``
    ops of the Triton ops module it is handed (a stand-in in tests). ``label``: its short name in
    the benchmarks' groups. ``kernels``: every kernel variant its Triton implementation launches.
    """

    name: str
    label: str
    reference: Callable[..., torch.Tensor]
    triton: Callable[..., torch.Tensor]
    check: SelfCheck
    kernels: tuple[KernelUse, ...]

    @property
    def tensor_inputs(self) -> tuple[str, ...]:
        """Names of the tensor arguments: the reference's parameters before ``check.args``."""
        names = tuple(inspect.signature(self.reference).parameters)
        return names[: len(names) - len(self.check.args)]


OPS: dict[str, FusedOp] = {}


def register(op: FusedOp) -> FusedOp:
    """Add ``op`` to :data:`OPS` (one declaration per name) and return it."""
    if op.name in OPS:
        raise ValueError(f"fused op {op.name!r} is declared twice")
    OPS[op.name] = op
    return op


def get(name: str) -> FusedOp:
    """The op registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in OPS:
        raise ValueError(f"no fused op {name!r}; known: {tuple(OPS)}")
    return OPS[name]


def kernel_files() -> dict[str, KernelFile]:
    """Every kernel some op launches -> its file (a kernel's name is unique across files)."""
    found: dict[str, KernelFile] = {}
    for op in OPS.values():
        for use in op.kernels:
            if found.setdefault(use.kernel, use.file) != use.file:
                raise ValueError(f"kernel {use.kernel!r} is declared in two kernel files")
    return found


def activation(shape: tuple[int, ...], gen: torch.Generator) -> list[torch.Tensor]:
    """Self-check inputs ``[x]``: ``x`` of ``shape``, standard normal, float64."""
    return [torch.randn(shape, generator=gen, dtype=torch.float64)]


def activation_and_bias(shape: tuple[int, ...], gen: torch.Generator) -> list[torch.Tensor]:
    """Self-check inputs ``[x, bias]``: ``x`` of ``shape`` ``[N, C, *]``, ``bias`` ``[C]``."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    return [x, torch.randn(shape[1], generator=gen, dtype=torch.float64)]
