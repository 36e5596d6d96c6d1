"""The resolved settings of a training run (written to ``config.json`` in the run folder)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from fastpggan.metrics.diversity import DEFAULT_THRESHOLD
from fastpggan.networks import check_resolution
from fastpggan.training.schedule import FADE_KIMG, STABLE_KIMG, TOTAL_KIMG, Schedule

# Minibatch per resolution: the authors' single-GPU preset (fits an 8 GB card in fp32),
# extended to 1024.
DEFAULT_BATCH: dict[int, int] = {
    4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4,
}
# Adam learning rate of G and D per resolution: the authors' single-GPU preset.
DEFAULT_LR: dict[int, float] = {**{2**k: 1e-3 for k in range(2, 10)}, 1024: 1.5e-3}
# Where the gradient penalty's norm is taken: "full" = with respect to the full-resolution
# image the authors' networks see (reals and fakes nearest-upscaled, D average-pooling them),
# computed at the current resolution; "current" = the current-resolution image (the seed
# article's form).
GP_RESOLUTIONS = ("full", "current")

# Settings that define the networks' shapes: a checkpoint only fits a run that agrees on them.
ARCH_KEYS = ("resolution", "latent_dim", "fmap_base", "fmap_max")


def _parse_per_res(spec: str | None, defaults: dict[int, Any], cast: Callable[[str], Any],
                   flag: str, one: str, pairs: str, what: str) -> dict[int, Any]:
    """The ``--batch`` / ``--lr`` syntax: ``None`` -> ``defaults``; ``"V"`` -> V everywhere;
    ``"RES:V,..."`` -> the defaults with those overrides; ``"V,RES:V,..."`` -> V everywhere
    except the overrides. ``ValueError`` (one line naming ``flag``) on bad syntax, a key that is
    not a power of two from 4 to 1024, or a value that is not a positive finite number."""
    out = dict(defaults)
    if spec is None or not spec.strip():
        return out

    def value(text: str) -> Any:
        v = cast(text)
        if not (math.isfinite(v) and v > 0):
            raise ValueError
        return v

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
    except ValueError:
        raise ValueError(
            f"{flag} must be one {what} (e.g. {one}), RES:{what.upper()} overrides, or both, like "
            f"{pairs} (RES a power of two from 4 to 1024, {what.upper()} positive), got {spec!r}"
        ) from None
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


@dataclass
class TrainConfig:
    """Every setting of a run, resolved (no "auto" left except ``impl``)."""

    resolution: int = 256
    data: str | None = None  # None: the built-in faces
    num_faces: int = 10000
    out: str = ""
    fade_kimg: float = FADE_KIMG
    stable_kimg: float = STABLE_KIMG
    total_kimg: float = TOTAL_KIMG
    batch: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_BATCH))
    lr: dict[int, float] = field(default_factory=lambda: dict(DEFAULT_LR))
    betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    seed: int = 0
    device: str = "cpu"
    latent_dim: int = 512
    fmap_base: int = 8192
    fmap_max: int = 512
    mbstd_group_size: int = 4
    mirror: bool = True
    ema_beta: float = 0.999
    gp_lambda: float = 10.0
    gp_resolution: str = "full"
    drift: float = 1e-3
    tick_kimg: float = 50.0
    ckpt_ticks: int = 4
    keep_ckpts: int = 3
    log_kimg: float = 1.0
    grid: int = 8
    workers: int = 0
    cache_dir: str | None = None
    tensorboard: bool = True
    progress: bool = True
    impl: str = "auto"
    compile: bool = False
    compile_backend: str = "inductor"  # "inductor" | "cudagraphs" (training.steps.resolve_compile)
    precision: str = "fp32"
    gp_every: int = 1
    # Quality metrics of G_ema during training (fastpggan.metrics): every metric_every kimg
    # (0 = never) and at phase ends, metric_n generated images against as many reals.
    metric_every: float = 0.0
    metrics: list[str] = field(default_factory=lambda: ["swd"])
    metric_n: int = 2000
    inception_weights: str | None = None
    # Collapse watch (fastpggan.metrics.diversity): G_ema's diversity against the reals at
    # every tick, a warning when a ratio stays below diversity_threshold.
    diversity: bool = True
    diversity_threshold: float = DEFAULT_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "batch" in d:  # JSON turns the int keys into strings
            d["batch"] = {int(k): int(v) for k, v in d["batch"].items()}
        if "lr" in d:  # one number in configs written before the per-resolution rate
            lr = d["lr"]
            d["lr"] = {int(k): float(v) for k, v in lr.items()} if isinstance(lr, dict) else {r: float(lr) for r in DEFAULT_LR}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def schedule(self) -> Schedule:
        """The run's progressive schedule (``ValueError`` when its lengths are invalid)."""
        return Schedule(self.resolution, self.fade_kimg, self.stable_kimg, self.total_kimg)

    def arch(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ARCH_KEYS}
