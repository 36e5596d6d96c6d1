"""Command-line pieces the commands share: flag range, output-folder, device and metric checks.

Every command (``train``, ``generate``, ``evaluate``) checks its flags before it writes or
computes anything and reports a bad one as a :class:`~fastpggan.errors.UsageError`: one line,
exit code 2 (:mod:`fastpggan.__main__`). The commands share these pieces through this module,
never through each other.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from fastpggan.console import printable
from fastpggan.errors import UsageError, usage_errors
from fastpggan.metrics.evaluate import METRICS
from fastpggan.metrics.features import InceptionWeightsError, resolve_inception_weights
from fastpggan.metrics.swd import MIN_RESOLUTION as SWD_MIN_RESOLUTION
from fastpggan.ops import IMPLS, check_ops, impl_problem
from fastpggan.ranges import Limit, check_number


def check_flags(args: object, limits: dict[str, Limit]) -> None:
    """:func:`check_number` for each ``--flag`` of ``limits`` (``None`` values skipped), as a
    :class:`UsageError`."""
    for flag, limit in limits.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            with usage_errors():
                check_number(flag, value, limit)


def check_writable(out: Path, flag: str = "--out") -> None:
    """``UsageError`` naming ``flag`` unless ``out`` is (or can be created as) a writable folder:
    not a file, no file where a folder of its path should be, and the nearest existing folder
    writable (a read-only filesystem counts: ``access`` reports it)."""
    shown = printable(str(out))
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {shown!r} exists and is not a folder")
    probe = out
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if os.path.lexists(probe) and not probe.is_dir():
        raise UsageError(f"{flag} {shown!r} is not writable: {printable(str(probe))!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        ro = _read_only(probe)
        why = "a read-only filesystem" if ro else "no write permission"
        raise UsageError(f"{flag} {shown!r} is not writable ({why} on {printable(str(probe))!r})")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def resolve_device(flag: str) -> str:
    """``--device auto|cpu|cuda`` -> ``"cpu"`` or ``"cuda"``: auto picks cuda when available;
    ``UsageError`` when cuda is asked for and there is none."""
    if flag == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if flag == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return flag


# --- fused ops (``train --impl``, ``generate --impl``, ``evaluate --impl``) -------------------
def add_impl_flag(p: argparse.ArgumentParser) -> None:
    """``--impl`` of the commands that only sample a checkpoint: the ops are chosen for the
    machine they run on, whatever the checkpoint was trained with."""
    p.add_argument(
        "--impl", default="auto", choices=IMPLS,
        help="fused ops: auto = the Triton kernels where they can run (a CUDA GPU), the PyTorch "
             "reference elsewhere, whatever the checkpoint trained with; triton or reference to "
             "force one (default: %(default)s)")


def check_impl_flag(impl: str, device: str | torch.device) -> None:
    """``--impl`` can run on ``device``, and the ops' self-checks pass now, so that a failing one
    stops ``--impl triton`` before any work; ``UsageError`` (one line) else."""
    if (problem := impl_problem(impl, device)) is not None:
        raise UsageError(f"--impl {impl}: {problem}")
    with usage_errors(RuntimeError, prefix=f"--impl {impl}: "):
        check_ops(impl, device)


# --- metric flags (``train --metric``, ``evaluate --metric``) ---------------------------------
def parse_metrics(spec: str, allowed: Sequence[str] = METRICS) -> tuple[str, ...]:
    """``"swd,fid"`` -> ``("swd", "fid")``; ``ValueError`` (one line) on a name not in ``allowed``
    or no name."""
    names = tuple(dict.fromkeys(s.strip().lower() for s in spec.split(",") if s.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"--metric must be a comma-separated subset of {','.join(allowed)}, got {spec!r}")
    return names


def fidelity_installed() -> bool:
    """Whether torch-fidelity (FID's Inception network, the ``fid`` extra) can be imported."""
    return importlib.util.find_spec("torch_fidelity") is not None


def check_metric_setup(metrics: Sequence[str], inception_weights: str | None) -> None:
    """``ValueError`` (one line) when FID is asked for but cannot run: torch-fidelity missing,
    or the Inception weights neither at ``inception_weights``, cached, nor downloadable."""
    if "fid" not in metrics:
        return
    if not fidelity_installed():
        raise ValueError("FID needs torch-fidelity: pip install 'fastpggan[fid]'")
    try:
        resolve_inception_weights(inception_weights)
    except InceptionWeightsError as e:
        raise ValueError(str(e)) from None


def check_swd_resolution(metrics: Sequence[str], res: int, what: str) -> None:
    """``ValueError`` when SWD is asked for at a resolution below its 16 px minimum."""
    if "swd" in metrics and res < SWD_MIN_RESOLUTION:
        raise ValueError(f"SWD needs images of at least {SWD_MIN_RESOLUTION}px; {what} is at {res}px")
