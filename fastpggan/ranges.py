"""Number ranges: the allowed values of a numeric setting, and the check that names the flag.

A base module: every layer may use it, and it imports no other fastpggan module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """``lo <= value <= hi`` (``lo < value`` when ``lo_open``, ``value < hi`` when
    ``hi_open``); ``integer``: a whole number. Always finite: ``argparse`` takes ``nan`` and
    ``inf`` (and ``1e999``) as floats, and any size of integer."""

    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False

    def text(self) -> str:
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} in {left}{_num(self.lo)}, {_num(self.hi)}{right}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def check_number(flag: str, value: object, limit: Limit) -> None:
    """``ValueError`` (one line naming ``flag``) unless ``value`` is within ``limit``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and limit.integer:
        ok = isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
    if ok:
        ok = math.isfinite(value) and (value > limit.lo if limit.lo_open else value >= limit.lo)
        ok = ok and (value < limit.hi if limit.hi_open else value <= limit.hi)
    if not ok:
        raise ValueError(f"{flag} must be {limit.text()}, got {value!r}")
