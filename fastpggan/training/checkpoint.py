"""Checkpoints: atomic writes, safe loads, finding the newest in a run folder, and the
sample generator (``G_ema``) of one.

A checkpoint is a ``torch.save`` dict of plain containers and tensors only, so it loads with
``torch.load(weights_only=True)``: a file whose pickle would build any other object (run code)
is refused with :class:`CheckpointError`. Contents: ``format``, ``config`` (dict),
``G``, ``D``, ``G_ema`` (state dicts), ``opt_g``, ``opt_d`` (optimizer state dicts),
``progress`` (images seen, step, last level-of-detail segment, tick counters), ``rng``
(generator states as ``uint8`` tensors) and ``sha256``: a checksum of everything else
(:func:`state_digest`), checked on load, so a file damaged on disk is refused rather than
loaded with wrong weights. Files written before the checksum existed load unchecked.

Writes are atomic (:func:`fastpggan.atomic.atomic_write`): a crash or a full disk leaves the
previous checkpoints as they were and no partial file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fastpggan.atomic import atomic_write
from fastpggan.console import printable
from fastpggan.networks import Generator
from fastpggan.training.config import TrainConfig

FORMAT = "fastpggan-checkpoint-v1"
_NAME = re.compile(r"^ckpt-(\d+\.\d{3})kimg-(\d+)px\.pt$")


CHECKSUM = "sha256"
# How a file torch.save wrote begins: a zip archive (the format since torch 1.6) or the legacy
# pickle stream (protocol 2).
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80\x02"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, unsafe, corrupt, or for another model)."""


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj) if isinstance(obj, list) else b"U%d" % len(obj))
        for v in obj:
            _feed(h, v)
    else:  # str, int, float, bool, None: repr is exact and survives pickling unchanged
        h.update(f"{type(obj).__name__}:{obj!r}".encode("utf-8", "backslashreplace"))


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of every tensor's dtype, shape and bytes and every other value of
    ``state`` (nested dicts, lists, tuples), in order, leaving out the ``sha256`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM})
    return h.hexdigest()


def checkpoint_name(images: int, res: int) -> str:
    """``ckpt-00123.456kimg-32px.pt``: exact images seen and current resolution in the name."""
    return f"ckpt-{images // 1000:05d}.{images % 1000:03d}kimg-{res}px.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` plus its checksum to ``path`` atomically (temp file in the same folder,
    fsync, rename). :class:`fastpggan.atomic.DiskFullError` when the disk is full."""
    state = {**state, CHECKSUM: state_digest(state)}
    return atomic_write(path, lambda f: torch.save(state, f), what="checkpoint")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain containers, and
    any file whose contents do not match its checksum. ``CheckpointError`` (one line) else."""
    path = Path(path)
    name = repr(printable(str(path)))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {name} does not exist")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {name}: {_first_line(e)}") from None
    if not head:
        raise CheckpointError(f"checkpoint {name} is empty (0 bytes): not a checkpoint, or a write that never finished")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise CheckpointError(f"{name} is not a checkpoint: not a file torch.save wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global it does not know: a pickle that would build arbitrary
        # objects (run code) lands here, with torch's reason among the lines of the message.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln), None)
        if why is None:
            raise CheckpointError(f"checkpoint {name} is damaged or truncated: {_first_line(e)}") from None
        raise CheckpointError(
            f"refusing to load {name}: it holds objects other than tensors and plain "
            f"containers, which could run code ({why[:160]})"
        ) from None
    except Exception as e:
        raise CheckpointError(f"checkpoint {name} is damaged or truncated: {_first_line(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{name} is not a fastpggan checkpoint")
    stored = state.get(CHECKSUM)
    if stored is not None and stored != state_digest(state):
        raise CheckpointError(
            f"checkpoint {name} is damaged: its contents do not match the checksum written with it"
        )
    _refuse_old_generator(state, name)
    _refuse_non_finite(state, name)
    return state


def _refuse_non_finite(state: dict[str, Any], name: str) -> None:
    """Refuse weights that are NaN or infinite: such a checkpoint's checksum can be right (it
    was written so), but nothing can train from or sample it (an all-black grid)."""
    for key in ("G", "D", "G_ema"):
        weights = state.get(key)
        if not isinstance(weights, dict):
            continue
        bad = [k for k, t in weights.items()
               if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise CheckpointError(
                f"checkpoint {name} holds non-finite weights (NaN or inf in {key}.{bad[0]}{more}): it "
                "cannot be trained from or sampled; use an earlier checkpoint"
            )


def load_newest_good(
    folder: str | os.PathLike,
) -> tuple[dict[str, Any] | None, Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint of ``folder`` that loads: ``(state, path, damaged)`` where
    ``damaged`` lists the newer ones refused on the way, each with its one-line reason.
    ``(None, None, damaged)`` when none loads (or there is none)."""
    damaged: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path), path, damaged
        except CheckpointError as e:
            damaged.append((path, str(e)))
    return None, None, damaged


def _refuse_old_generator(state: dict[str, Any], name: str) -> None:
    """Refuse checkpoints whose G still has a bias per channel and pixel in its first layer.

    Generators before the authors' layout added a learned ``[16 * nf(1)]`` bias to the first
    dense layer's output (a constant 4x4 pattern per channel). The authors' G has one bias per
    channel only; a per-pixel pattern cannot be folded into it (nor into the weights, which see
    a pixel-normalised latent), so such weights cannot be converted without changing the
    generator: they are refused with what to do instead.
    """
    for key in ("G", "G_ema"):
        weights = state.get(key)
        if isinstance(weights, dict) and "dense.bias" in weights:
            raise CheckpointError(
                f"{name} was written by an older fastpggan whose generator has a bias per "
                "pixel in its first layer (the authors' network, used now, has one per channel): "
                "it cannot be converted exactly; start a new run, or use fastpggan 628a3a3 or "
                "earlier to resume or sample it"
            )


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The checkpoints in ``folder``, oldest first (by images seen in the name)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(float(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``folder``, or ``None``."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu", impl: str = "auto"
) -> tuple[Generator, int, float]:
    """``G_ema`` of a checkpoint (eval mode, on ``device``, fused ops ``impl``) and the
    resolution and fade it reached."""
    return generator_of(load_checkpoint(path), device, impl)


def generator_of(
    state: dict[str, Any], device: str | torch.device = "cpu", impl: str = "auto"
) -> tuple[Generator, int, float]:
    """``G_ema`` of a loaded checkpoint ``state`` (:func:`load_checkpoint`; eval mode, on
    ``device``) and the resolution and fade it reached. Its fused ops are ``impl``, chosen for
    the machine that samples, not the ``--impl`` the run trained with (a run trained with the
    Triton kernels on a GPU samples on a CPU)."""
    cfg = TrainConfig.from_dict(state["config"])
    G = Generator(cfg.resolution, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, impl=impl,
                  label_size=cfg.label_size)
    G.load_state_dict(state["G_ema"])
    G.set_fused_scale(cfg.fused_scale_from)
    G.to(device).eval().requires_grad_(False)
    pos = cfg.schedule().at(state["progress"]["images"])
    return G, pos.phase.res, pos.fade
