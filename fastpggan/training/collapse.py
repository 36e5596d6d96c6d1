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
    DIVERSITY_SAMPLES,
    RATIO_NAMES,
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
        # Conditional: the same watch within each class (its samples against its reals).
        self.names = list(data.class_names) if grid_labels is not None else []
        self.class_watches = [CollapseWatch(threshold, who=f"samples of class {n!r}") for n in self.names]
        self._real_classes: dict[int, list[DiversityStats | None]] = {}

    def measure(
        self, G: torch.nn.Module, res: int, fade: float | torch.Tensor, grid_images: torch.Tensor, chunk: int
    ) -> dict[str, float]:
        """One tick's record: the values of :func:`measure_generator` as host floats (the one
        sync), rounded to 4 digits, and ``seconds`` (sampling the extra latents included)."""
        t = time.perf_counter()
        if res not in self._real:  # training never returns to a lower resolution
            # as many reals as samples are measured (nearest distances shrink as a set grows)
            n = len(self.extra_z) + (len(self.grid_labels) if self.grid_labels is not None else DIVERSITY_SAMPLES - len(self.extra_z))
            self._real = {res: real_diversity(self.data.levels[res], self.hair, n, device=self.extra_z.device)}
            if self.names:
                self._real_classes = {res: self._class_reals(res)}
        vals = measure_generator(G, self.extra_z, res, fade, self._real[res], grid_images, chunk,
                                 self.extra_labels, self.grid_labels, self._real_classes.get(res))
        out = {k: round(v, 4) for k, v in zip(vals, torch.stack(list(vals.values())).tolist())}
        for c, name in enumerate(self.names):  # class<c>_... keys named by the class
            for k in RATIO_NAMES:
                if f"class{c}_{k}" in out:
                    out[f"{name}.{k}"] = out.pop(f"class{c}_{k}")
        out["seconds"] = round(time.perf_counter() - t, 3)
        return out

    def _class_reals(self, res: int) -> list[DiversityStats | None]:
        """Each class's reals, as many as the watch makes samples of it (``None``: under 2)."""
        level, labels = self.data.levels[res], self.data.labels
        asked = torch.cat([self.grid_labels.cpu(), self.extra_labels.cpu()])
        out: list[DiversityStats | None] = []
        for c in range(len(self.names)):
            rows = (labels == c).nonzero()[0]
            n = min(len(rows), int((asked == c).sum()))
            out.append(real_diversity(level[rows], False, n, device=self.extra_z.device) if n >= 2 else None)
        return out

    def check(self, values: dict[str, float]) -> str | None:
        """Feed the watch (and a conditional run's watch of each class) one tick's values; the
        warning lines (one per watch that warns) or ``None``."""
        lines = [self.watch.update(values)]
        classes = []  # (name, warning) of the classes whose watch warns this tick
        for name, watch in zip(self.names, self.class_watches):
            mine = {k: values[f"{name}.{k}"] for k in RATIO_NAMES if f"{name}.{k}" in values}
            if mine and (line := watch.update(mine)) is not None:
                classes.append((name, line))
        if len(classes) == 1:
            lines.append(classes[0][1])
        elif classes:  # one line for them all: a collapse of every class is one event
            watches = dict(zip(self.names, self.class_watches))
            shown = "; ".join(
                f"{name} " + ", ".join(f"{k.removesuffix('_ratio')} {v:.2f}" for k, v in watches[name].last_warned.items())
                for name, _ in classes)
            lines.append(
                f"warning: samples of {len(classes)} classes are losing variety (mode collapse?), against "
                f"each class's reals: {shown} (below {self.watch.threshold:g} for {self.watch.patience}+ ticks). "
                "Try a larger batch (--batch), a lower learning rate (--lr), or resume from an earlier "
                "checkpoint (--resume PATH) and look at the sample grids.")
        said = [line for line in lines if line is not None]
        return "\n".join(said) if said else None

    def summary(self, values: dict[str, float]) -> str:
        """The tick line's part: ``div colour 0.93 structure 1.01 nearest 0.98 hair 0.85`` (and
        ``class 0.91``: a conditional run's class accuracy on the built-in faces)."""
        parts = [f"{k} {values[k + '_ratio']:.2f}" for k in ("colour", "structure", "nearest")]
        if "hair_coverage" in values:
            parts.append(f"hair {values['hair_coverage']:.2f}")
        if "class_accuracy" in values:
            parts.append(f"class {values['class_accuracy']:.2f}")
        per = [(values[f"{n}.{k}"], n) for n in self.names for k in RATIO_NAMES if f"{n}.{k}" in values]
        if per:
            low, name = min(per)
            parts.append(f"lowest class {name} {low:.2f}")
        return "div " + " ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        state = self.watch.state_dict()
        if self.names:
            state["classes"] = {n: w.state_dict() for n, w in zip(self.names, self.class_watches)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.watch.load_state_dict(state)
        for name, watch in zip(self.names, self.class_watches):
            watch.load_state_dict(state.get("classes", {}).get(name, {}))


PER_CLASS = 32  # a conditional run's collapse watch measures at least this many samples per class


def run_latents(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """A run's fixed latents (CPU): the tick grid's ``z`` and classes, and the collapse watch's
    extra ``z`` and classes (classes ``None`` for an unconditional run; the latents are
    :func:`fastpggan.metrics.diversity.diversity_latents`'). Conditional: the grid is one row
    per class, the same ``cfg.grid`` latents in every row (float32 ``[K * grid, D]``, int64
    ``[K * grid]``), and the extra latents' classes are drawn at the data's frequencies
    (``cfg.class_counts``) from ``cfg.seed + 3``, then topped up with latents of the classes
    that have fewer than :data:`PER_CLASS` samples. The trainer and ``evaluate`` both take them
    from here."""
    grid_z, extra_z = diversity_latents(cfg.grid**2, cfg.latent_dim, cfg.seed)
    K = cfg.label_size
    if not K:
        return grid_z, None, extra_z, None
    grid_labels = torch.arange(K).repeat_interleave(cfg.grid)
    counts = torch.tensor(cfg.class_counts or [1] * K, dtype=torch.float64)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    extra_labels = torch.multinomial(counts, max(len(extra_z), 1), replacement=True, generator=g)[: len(extra_z)]
    # every class gets at least PER_CLASS samples, so that its own measure is not mere noise
    have = torch.bincount(torch.cat([grid_labels, extra_labels]), minlength=K)
    top_up = torch.arange(K).repeat_interleave((PER_CLASS - have).clamp_min(0))
    extra_labels = torch.cat([extra_labels, top_up])
    more = torch.randn(len(top_up), cfg.latent_dim, generator=g)
    return grid_z[: cfg.grid].repeat(K, 1), grid_labels, torch.cat([extra_z, more]), extra_labels


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
