"""The resolved settings of a training run (written to ``config.json`` in the run folder)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from fastpggan.metrics.diversity import DEFAULT_THRESHOLD
from fastpggan.networks import check_resolution

# Minibatch per resolution: the authors' single-GPU preset (fits an 8 GB card in fp32),
# extended to 1024.
DEFAULT_BATCH: dict[int, int] = {
    4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4,
}

# Settings that define the networks' shapes: a checkpoint only fits a run that agrees on them.
ARCH_KEYS = ("resolution", "latent_dim", "fmap_base", "fmap_max")


def parse_batch(spec: str | None) -> dict[int, int]:
    """``None`` -> defaults; ``"32"`` -> 32 everywhere; ``"4:128,8:64"`` -> those overrides.

    ``ValueError`` with a one-line message on bad syntax, a key that is not a power of two from
    4 to 1024, or a size below 1.
    """
    batch = dict(DEFAULT_BATCH)
    if spec is None or not spec.strip():
        return batch
    try:
        if ":" not in spec:
            size = int(spec)
            if size < 1:
                raise ValueError
            return {r: size for r in batch}
        for item in spec.split(","):
            r_s, b_s = item.split(":")
            r, b = int(r_s), int(b_s)
            check_resolution(r, 4, 1024)
            if b < 1:
                raise ValueError
            batch[r] = b
    except ValueError:
        raise ValueError(
            f"--batch must be one size (e.g. 32) or RES:SIZE pairs like 4:128,8:128,256:8 "
            f"(RES a power of two from 4 to 1024, SIZE >= 1), got {spec!r}"
        ) from None
    return batch


@dataclass
class TrainConfig:
    """Every setting of a run, resolved (no "auto" left except ``impl``)."""

    resolution: int = 256
    data: str | None = None  # None: the built-in faces
    num_faces: int = 10000
    out: str = ""
    kimg_per_phase: float = 600.0
    final_kimg: float = 0.0
    batch: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_BATCH))
    lr: float = 1e-3
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
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def arch(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ARCH_KEYS}
