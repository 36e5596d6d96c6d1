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
    the grid's (:func:`run_latents`), and for a conditional G their classes, int64 ``[M]``, and
    the grid's classes (``grid_labels``, int64 ``[grid]``).
    """

    def __init__(self, data: ImageData, extra_z: torch.Tensor, threshold: float,
                 extra_labels: torch.Tensor | None = None, grid_labels: torch.Tensor | None = None) -> None:
        self.data, self.extra_z, self.extra_labels, self.grid_labels = data, extra_z, extra_labels, grid_labels
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
        vals = measure_generator(G, self.extra_z, res, fade, self._real[res], grid_images, chunk,
                                 self.extra_labels, self.grid_labels)
        out = {k: round(v, 4) for k, v in zip(vals, torch.stack(list(vals.values())).tolist())}
        out["seconds"] = round(time.perf_counter() - t, 3)
        return out

    def check(self, values: dict[str, float]) -> str | None:
        """Feed the watch one tick's values; a warning line or ``None``."""
        return self.watch.update(values)

    @staticmethod
    def summary(values: dict[str, float]) -> str:
        """The tick line's part: ``div colour 0.93 structure 1.01 nearest 0.98 hair 0.85`` (and
        ``class 0.91``: a conditional run's class accuracy on the built-in faces)."""
        parts = [f"{k} {values[k + '_ratio']:.2f}" for k in ("colour", "structure", "nearest")]
        if "hair_coverage" in values:
            parts.append(f"hair {values['hair_coverage']:.2f}")
        if "class_accuracy" in values:
            parts.append(f"class {values['class_accuracy']:.2f}")
        return "div " + " ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return self.watch.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.watch.load_state_dict(state)


def run_latents(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """A run's fixed latents (CPU): the tick grid's ``z`` and classes, and the collapse watch's
    extra ``z`` and classes (classes ``None`` for an unconditional run; the latents are
    :func:`fastpggan.metrics.diversity.diversity_latents`'). Conditional: the grid is one row
    per class, the same ``cfg.grid`` latents in every row (float32 ``[K * grid, D]``, int64
    ``[K * grid]``), and the extra latents' classes are drawn at the data's frequencies
    (``cfg.class_counts``) from ``cfg.seed + 3``. The trainer and ``evaluate`` both take them
    from here."""
    grid_z, extra_z = diversity_latents(cfg.grid**2, cfg.latent_dim, cfg.seed)
    K = cfg.label_size
    if not K:
        return grid_z, None, extra_z, None
    grid_labels = torch.arange(K).repeat_interleave(cfg.grid)
    counts = torch.tensor(cfg.class_counts or [1] * K, dtype=torch.float64)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    extra_labels = torch.zeros(0, dtype=torch.int64)
    if len(extra_z):
        extra_labels = torch.multinomial(counts, len(extra_z), replacement=True, generator=g)
    return grid_z[: cfg.grid].repeat(K, 1), grid_labels, extra_z, extra_labels


def measure_checkpoint(
    G: torch.nn.Module, cfg: TrainConfig, data: ImageData, res: int, fade: float, device: torch.device
) -> dict[str, float]:
    """What a tick of ``cfg``'s run records for ``G`` at ``res`` and ``fade`` (``evaluate --metric
    diversity``): the run's grid and extra latents, sampled in the run's chunks, against the same
    reals. The values of the ``diversity`` record, without ``seconds``."""
    grid_z, grid_labels, extra_z, extra_labels = run_latents(cfg)
    on = lambda t: t.to(device) if t is not None else None  # noqa: E731
    monitor = CollapseMonitor(data, extra_z.to(device), cfg.diversity_threshold, on(extra_labels), on(grid_labels))
    chunk = cfg.batch[res]
    values = monitor.measure(G, res, fade, sample(G, grid_z.to(device), res, fade, chunk, on(grid_labels)), chunk)
    values.pop("seconds")
    return values
