"""The collapse watch of a training run: ``G_ema``'s diversity at every tick, against the reals.

The measurement is :mod:`fastpggan.metrics.diversity` (shared with ``evaluate --metric
diversity``); this module keeps what a run needs between ticks: the reals' side per resolution
(measured once, when training reaches it) and the :class:`CollapseWatch` that turns ratios into
warnings, whose state travels in checkpoints.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from fastpggan.data import ImageData
from fastpggan.metrics.diversity import (
    CollapseWatch,
    DiversityStats,
    diversity_latents,
    measure_generator,
    real_diversity,
)
from fastpggan.sampling import sample
from fastpggan.training.config import TrainConfig


def data_has_hair_palette(data: ImageData) -> bool:
    """Whether ``data`` is the built-in faces, whose hair colours the palette classifies."""
    return data.source.kind == "faces"


class CollapseMonitor:
    """Measures ``G_ema`` at a tick and keeps the watch.

    ``extra_z``: float32 ``[M, latent_dim]`` on the training device, the latents measured besides
    the grid's (:func:`fastpggan.metrics.diversity.diversity_latents`).
    """

    def __init__(self, data: ImageData, extra_z: torch.Tensor, threshold: float) -> None:
        self.data, self.extra_z = data, extra_z
        self.hair = data_has_hair_palette(data)
        self.watch = CollapseWatch(threshold)
        self._real: dict[int, DiversityStats] = {}

    def measure(
        self, G: torch.nn.Module, res: int, fade: float | torch.Tensor, grid_images: torch.Tensor, chunk: int
    ) -> dict[str, float]:
        """One tick's record: the values of :func:`measure_generator` as host floats (the one
        sync), rounded to 4 digits, and ``seconds`` (sampling the extra latents included)."""
        t = time.perf_counter()
        if res not in self._real:  # training never returns to a lower resolution
            self._real = {res: real_diversity(self.data.levels[res], self.hair, device=self.extra_z.device)}
        vals = measure_generator(G, self.extra_z, res, fade, self._real[res], grid_images, chunk)
        out = {k: round(v, 4) for k, v in zip(vals, torch.stack(list(vals.values())).tolist())}
        out["seconds"] = round(time.perf_counter() - t, 3)
        return out

    def check(self, values: dict[str, float]) -> str | None:
        """Feed the watch one tick's values; a warning line or ``None``."""
        return self.watch.update(values)

    @staticmethod
    def summary(values: dict[str, float]) -> str:
        """The tick line's part: ``div colour 0.93 structure 1.01 nearest 0.98 hair 0.85``."""
        parts = [f"{k} {values[k + '_ratio']:.2f}" for k in ("colour", "structure", "nearest")]
        if "hair_coverage" in values:
            parts.append(f"hair {values['hair_coverage']:.2f}")
        return "div " + " ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return self.watch.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.watch.load_state_dict(state)


def measure_checkpoint(
    G: torch.nn.Module, cfg: TrainConfig, data: ImageData, res: int, fade: float, device: torch.device
) -> dict[str, float]:
    """What a tick of ``cfg``'s run records for ``G`` at ``res`` and ``fade`` (``evaluate --metric
    diversity``): the run's grid and extra latents, sampled in the run's chunks, against the same
    reals. The values of the ``diversity`` record, without ``seconds``."""
    grid_z, extra_z = diversity_latents(cfg.grid**2, cfg.latent_dim, cfg.seed)
    monitor = CollapseMonitor(data, extra_z.to(device), cfg.diversity_threshold)
    chunk = cfg.batch[res]
    values = monitor.measure(G, res, fade, sample(G, grid_z.to(device), res, fade, chunk), chunk)
    values.pop("seconds")
    return values
