"""The one place that decides which implementation of a fused op runs.

``impl`` is ``"reference"`` (pure PyTorch), ``"triton"`` (the fused Triton kernels) or ``"auto"``
(Triton where it can run, the reference elsewhere, with one warning naming the reason).
"""

from __future__ import annotations

from typing import Literal

import torch

Impl = Literal["auto", "triton", "reference"]
IMPLS: tuple[str, ...] = ("auto", "triton", "reference")


def check_impl(impl: str) -> None:
    """Raise ``ValueError`` for an unknown ``impl`` name."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def resolve_impl(impl: str, x: torch.Tensor) -> str:
    """Return the implementation that will run for tensor ``x``: "reference" or "triton"."""
    check_impl(impl)
    if impl == "triton":
        raise NotImplementedError("the Triton implementation is not built yet")
    return "reference"
