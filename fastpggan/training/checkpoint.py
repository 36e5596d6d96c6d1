"""Checkpoints: atomic writes, safe loads, finding the newest in a run folder, and the
sample generator (``G_ema``) of one.

A checkpoint is a ``torch.save`` dict of plain containers and tensors only, so it loads with
``torch.load(weights_only=True)``: a file whose pickle would build any other object (run code)
is refused with :class:`CheckpointError`. Contents: ``format``, ``config`` (dict),
``G``, ``D``, ``G_ema`` (state dicts), ``opt_g``, ``opt_d`` (optimizer state dicts),
``progress`` (images seen, step, last level-of-detail segment, tick counters) and ``rng``
(generator states as ``uint8`` tensors).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fastpggan.networks import Generator
from fastpggan.training.config import TrainConfig

FORMAT = "fastpggan-checkpoint-v1"
_NAME = re.compile(r"^ckpt-(\d+\.\d{3})kimg-(\d+)px\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, unsafe, corrupt, or for another model)."""


def checkpoint_name(images: int, res: int) -> str:
    """``ckpt-00123.456kimg-32px.pt``: exact images seen and current resolution in the name."""
    return f"ckpt-{images // 1000:05d}.{images % 1000:03d}kimg-{res}px.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global it does not know: a pickle that would build arbitrary
        # objects (run code) lands here, with torch's reason among the lines of the message.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln), None)
        if why is None:
            raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {lines[-2] if len(lines) > 1 else e}") from None
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain "
            f"containers, which could run code ({why[:160]})"
        ) from None
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a fastpggan checkpoint")
    _refuse_old_generator(state, path)
    return state


def _refuse_old_generator(state: dict[str, Any], path: Path) -> None:
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
                f"{str(path)!r} was written by an older fastpggan whose generator has a bias per "
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


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Generator, int, float]:
    """``G_ema`` of a checkpoint (eval mode, on ``device``) and the resolution and fade it reached."""
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    G = Generator(cfg.resolution, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, impl=cfg.impl)
    G.load_state_dict(state["G_ema"])
    G.to(device).eval().requires_grad_(False)
    pos = cfg.schedule().at(state["progress"]["images"])
    return G, pos.phase.res, pos.fade
