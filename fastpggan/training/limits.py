"""The range of every numeric setting, checked before a run writes anything.

``argparse`` takes ``nan``, ``inf`` and ``1e999`` as floats and any size of integer; values like
those trained NaN to the end or failed with a traceback after files were written. Each numeric
field of :class:`TrainConfig` declares its range (:mod:`.settings`; per-resolution dicts are
checked value by value), and :data:`LIMITS` collects them. Beside them, the combinations that
would make the loop divide by zero or overflow:

- an interval in kimg (``tick_kimg``, ``log_kimg``, a non-zero ``metric_every``) must be at
  least one image (0.001 kimg): the loop steps its counters by whole images;
- ``grid`` samples fit one sheet at the final resolution (:mod:`fastpggan.sampling`: 8 x 8 at
  1024 px, 32 x 32 at 256 px), so a training grid stays a bounded image;
- ``seed`` fits 32 bits: per-rank and resumed generators are seeded with ``seed * 1000003 +
  step``, which must stay within the 64 bits a generator seed holds.
"""

from __future__ import annotations

from typing import Any

from fastpggan.ranges import Limit, check_number
from fastpggan.sampling import MAX_SHEET_SIDE, cells_per_side
from fastpggan.training.config import INTERVAL, TrainConfig
from fastpggan.training.settings import flag_name, limits

LIMITS: dict[str, Limit] = limits(TrainConfig)


def check_config_numbers(cfg: Any) -> None:
    """Every numeric field of ``cfg`` (a :class:`TrainConfig`, or a dataclass declared the same
    way) within its declared range, and the combinations of the module doc. ``ValueError`` with
    one line naming the flag."""
    kind = type(cfg)
    for name, limit in limits(kind).items():
        value = getattr(cfg, name)
        flag = flag_name(kind, name)
        if isinstance(value, dict):
            for key, v in value.items():
                check_number(f"{flag} (at {key})", v, limit)
        elif isinstance(value, (list, tuple)):
            for v in value:
                check_number(flag, v, limit)
        else:
            check_number(flag, value, limit)
    res, grid = cfg.resolution, cfg.grid
    if grid > cells_per_side(res):
        raise ValueError(
            f"--grid must be at most {cells_per_side(res)} at --res {res} (a sheet holds "
            f"{MAX_SHEET_SIDE} px of samples per side), got {grid}"
        )
    every = cfg.metric_every
    if 0 < every < INTERVAL.lo:
        raise ValueError(
            f"{flag_name(kind, 'metric_every')} must be 0 (never) or at least {INTERVAL.lo} "
            f"(one image), got {every!r}"
        )
