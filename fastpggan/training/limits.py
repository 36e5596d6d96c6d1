"""The range of every numeric setting, checked before a run writes anything.

``argparse`` takes ``nan``, ``inf`` and ``1e999`` as floats and any size of integer; values like
those trained NaN to the end or failed with a traceback after files were written. One table,
keyed by :class:`TrainConfig` field names (per-resolution dicts are checked value by value), plus
the combinations that would make the loop divide by zero or overflow:

- an interval in kimg (``tick_kimg``, ``log_kimg``, a non-zero ``metric_every``) must be at
  least one image (0.001 kimg): the loop steps its counters by whole images;
- ``grid`` samples fit one sheet at the final resolution (:mod:`fastpggan.sampling`: 8 x 8 at
  1024 px, 32 x 32 at 256 px), so a training grid stays a bounded image;
- ``seed`` fits 32 bits: per-rank and resumed generators are seeded with ``seed * 1000003 +
  step``, which must stay within the 64 bits a generator seed holds.

Fields this table does not list are not numeric or have their own checks (``resolution``).
"""

from __future__ import annotations

from typing import Any

from fastpggan.ranges import Limit, check_number
from fastpggan.sampling import MAX_SHEET_SIDE, cells_per_side
from fastpggan.training.resume_policy import flag_name

BIG_KIMG = 1e7  # ten billion images: more than any run, small enough that counts stay exact


_KIMG = Limit(0.0, BIG_KIMG, lo_open=True)
_INTERVAL = Limit(0.001, BIG_KIMG)

LIMITS: dict[str, Limit] = {
    "num_faces": Limit(1, 10_000_000, integer=True),
    "fade_kimg": Limit(0.0, BIG_KIMG),
    "stable_kimg": Limit(0.0, BIG_KIMG),
    "total_kimg": _KIMG,
    "batch": Limit(1, 65536, integer=True),
    "lr": Limit(0.0, 1.0, lo_open=True),
    "betas": Limit(0.0, 1.0, hi_open=True),
    "adam_eps": Limit(0.0, 1.0, lo_open=True),
    "seed": Limit(0, 2**32 - 1, integer=True),
    "latent_dim": Limit(1, 8192, integer=True),
    "fmap_base": Limit(1, 2**20, integer=True),
    "fmap_max": Limit(1, 8192, integer=True),
    "mbstd_group_size": Limit(1, 1024, integer=True),
    "ema_beta": Limit(0.0, 1.0, hi_open=True),
    "gp_lambda": Limit(0.0, 1e6),
    "drift": Limit(0.0, 1.0),
    "tick_kimg": _INTERVAL,
    "ckpt_ticks": Limit(1, 1_000_000, integer=True),
    "keep_ckpts": Limit(1, 1_000_000, integer=True),
    "log_kimg": _INTERVAL,
    "grid": Limit(1, 32, integer=True),
    "workers": Limit(0, 256, integer=True),
    "gp_every": Limit(1, 1_000_000, integer=True),
    "metric_every": Limit(0.0, BIG_KIMG),
    "metric_n": Limit(2, 1_000_000, integer=True),
    "diversity_threshold": Limit(0.0, 1.0, lo_open=True),
}


def check_config_numbers(cfg: Any) -> None:
    """Every numeric field of ``cfg`` (a :class:`TrainConfig`) within :data:`LIMITS`, and the
    combinations of the module doc. ``ValueError`` with one line naming the flag."""
    for name, limit in LIMITS.items():
        if not hasattr(cfg, name):  # a setting of another version
            continue
        value = getattr(cfg, name)
        flag = flag_name(name)
        if isinstance(value, dict):
            for key, v in value.items():
                check_number(f"{flag} (at {key})", v, limit)
        elif isinstance(value, (list, tuple)):
            for v in value:
                check_number(flag, v, limit)
        else:
            check_number(flag, value, limit)
    res, grid = getattr(cfg, "resolution", None), getattr(cfg, "grid", None)
    if res is not None and grid is not None and grid > cells_per_side(res):
        raise ValueError(
            f"--grid must be at most {cells_per_side(res)} at --res {res} (a sheet holds "
            f"{MAX_SHEET_SIDE} px of samples per side), got {grid}"
        )
    every = getattr(cfg, "metric_every", 0.0)
    if 0 < every < _INTERVAL.lo:
        raise ValueError(
            f"{flag_name('metric_every')} must be 0 (never) or at least {_INTERVAL.lo} "
            f"(one image), got {every!r}"
        )
