"""Per-resolution settings (``--batch``, ``--lr``): the authors' presets and the flag syntax.

A per-resolution setting is a dict ``{resolution: value}`` for every power of two from 4 to
1024. Its flag takes one value for all, ``RES:VALUE`` overrides of the preset, or both.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from fastpggan.networks import check_resolution

# Minibatch per resolution: the authors' single-GPU preset (fits an 8 GB card in fp32),
# extended to 1024.
DEFAULT_BATCH: dict[int, int] = {
    4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4,
}
# Adam learning rate of G and D per resolution: the authors' single-GPU preset.
DEFAULT_LR: dict[int, float] = {**{2**k: 1e-3 for k in range(2, 10)}, 1024: 1.5e-3}


def _parse_per_res(spec: str | None, defaults: dict[int, Any], cast: Callable[[str], Any],
                   flag: str, one: str, pairs: str, what: str) -> dict[int, Any]:
    """The ``--batch`` / ``--lr`` syntax: ``None`` -> ``defaults``; ``"V"`` -> V everywhere;
    ``"RES:V,..."`` -> the defaults with those overrides; ``"V,RES:V,..."`` -> V everywhere
    except the overrides. ``ValueError`` (one line naming ``flag``) on bad syntax, a key that is
    not a power of two from 4 to 1024 or appears twice, or a value that is not a positive
    finite number."""
    out = dict(defaults)
    if spec is None or not spec.strip():
        return out

    def value(text: str) -> Any:
        v = cast(text)
        if not (math.isfinite(v) and v > 0):
            raise ValueError
        return v

    given: list[int] = []
    try:
        items = spec.split(",")
        if ":" not in items[0]:  # a value for every resolution first
            v = value(items.pop(0))
            out = {r: v for r in out}
        for item in items:
            r_s, v_s = item.split(":")
            r = int(r_s)
            check_resolution(r, 4, 1024)
            out[r] = value(v_s)
            given.append(r)
    except ValueError:
        raise ValueError(
            f"{flag} must be one {what} (e.g. {one}), RES:{what.upper()} overrides, or both, like "
            f"{pairs} (RES a power of two from 4 to 1024, {what.upper()} positive), got {spec!r}"
        ) from None
    twice = sorted({r for r in given if given.count(r) > 1})
    if twice:  # which one was meant cannot be guessed (the last used to win silently)
        raise ValueError(f"{flag} gives {', '.join(f'{r}px' for r in twice)} more than once, got {spec!r}: "
                         "give each resolution once")
    return out


def parse_batch(spec: str | None) -> dict[int, int]:
    """``--batch``: ``None`` -> defaults; ``"32"`` -> 32 everywhere; ``"4:128,8:64"`` -> those
    overrides; ``"16,256:8"`` -> 16 except 8 at 256. ``ValueError`` (one line) on bad input."""
    return _parse_per_res(spec, DEFAULT_BATCH, int, "--batch", "32", "16,256:8", "size")


def parse_lr(spec: str | None) -> dict[int, float]:
    """``--lr``: ``None`` -> the authors' one-GPU preset; ``"0.002"`` -> 0.002 everywhere;
    ``"1024:0.002"`` -> that override; ``"0.002,1024:0.003"`` -> both. ``ValueError`` (one
    line) on bad input."""
    return _parse_per_res(spec, DEFAULT_LR, float, "--lr", "0.002", "0.001,1024:0.0015", "rate")


def format_per_res(values: dict[int, Any]) -> str:
    """The shortest ``--batch`` / ``--lr`` spec of ``values``: the most common value, then the
    resolutions that differ (``{4: 1e-3, ..., 1024: 1.5e-3}`` -> ``"0.001,1024:0.0015"``)."""
    listed = list(values.values())
    common = max(listed, key=listed.count)
    return ",".join([f"{common:g}", *(f"{r}:{v:g}" for r, v in sorted(values.items()) if v != common)])
