"""The metric points of a training run (``--metric-every``): ``G_ema`` measured by
:mod:`fastpggan.metrics` every ``metric_every`` images and at each phase end.

Like :mod:`.collapse` for the collapse watch, this module keeps what a run needs between
measurements: the reals' SWD descriptors / FID statistics at the resolution being measured
(dropped when training moves up), the FID feature extractor (made on first use) and whether
the SWD-below-16px note was shown. None of it is checkpointed: a resumed run measures the reals
again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fastpggan.data import ImageData
from fastpggan.metrics import FeatureExtractor, evaluate_generator, inception_extractor
from fastpggan.metrics.evaluate import ClassConditioned
from fastpggan.metrics.reals import data_identity, real_batches
from fastpggan.metrics.swd import MIN_RESOLUTION as SWD_MIN_RESOLUTION
from fastpggan.training.config import TrainConfig
from fastpggan.training.runlog import RunLog
from fastpggan.training.schedule import Position


class MetricPoints:
    """Measures ``G_ema`` at a metric point; ``echo``: where its console lines go."""

    def __init__(self, cfg: TrainConfig, data: ImageData, device: torch.device, echo: Callable[[str], None]) -> None:
        self.cfg, self.data, self.device, self.echo = cfg, data, device, echo
        self._reals: dict = {}  # evaluate_generator's real_cache, for the resolution _res
        self._res = 0
        self._extractor: FeatureExtractor | None = None
        self._swd_skip_noted = False

    def measure(self, G: torch.nn.Module, pos: Position, images: int, log: RunLog) -> dict[str, float]:
        """Measure ``G`` at ``pos``'s resolution and fade (``images`` seen): ``cfg.metrics`` from
        ``cfg.metric_n`` samples against as many reals; writes one ``metric`` record (JSONL and
        TensorBoard) and a console line. Returns the results, empty when no asked metric applies
        yet (SWD below 16 px, skipped with a one-time note)."""
        cfg, res = self.cfg, pos.phase.res
        metrics = [m for m in cfg.metrics if m != "swd" or res >= SWD_MIN_RESOLUTION]
        if len(metrics) < len(cfg.metrics) and not self._swd_skip_noted:
            self._swd_skip_noted = True
            self.echo(f"note: SWD needs {SWD_MIN_RESOLUTION}px images: not measured below {SWD_MIN_RESOLUTION}px")
        if not metrics:
            return {}
        if res != self._res:  # training never returns to a lower resolution
            self._reals.clear()
            self._res = res
        if "fid" in metrics and self._extractor is None:
            self._extractor = inception_extractor(cfg.inception_weights, self.device)
        t = time.perf_counter()
        B = cfg.batch[res]
        if cfg.label_size:  # classes at the data's frequencies, as the reals come
            G = ClassConditioned(G, cfg.class_counts or [1] * cfg.label_size, seed=cfg.seed)
        results = evaluate_generator(
            G, real_batches(self.data.levels[res], cfg.metric_n, B), res=res, metrics=metrics,
            num_images=cfg.metric_n, fade=pos.fade, batch_size=B, seed=cfg.seed, device=self.device,
            extractor=self._extractor, cache_dir=cfg.cache_dir, dataset_id=data_identity(self.data),
            real_cache=self._reals, progress=cfg.progress,
        )
        secs = time.perf_counter() - t
        log.record("metric", images, res=res, fade=round(pos.fade, 4), n=cfg.metric_n,
                   seconds=round(secs, 2), **{k: round(v, 4) for k, v in results.items()})
        shown = "  ".join(f"{k} {v:.2f}" for k, v in results.items() if k in ("swd_x1e3_avg", "fid"))
        self.echo(f"metric {images / 1000:.1f} kimg  {res}px  {shown}  ({cfg.metric_n} images, {secs:.1f}s)")
        return results
