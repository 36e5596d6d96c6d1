"""Metrics for a generator: sample it in batches, stream reals and fakes through SWD and FID.

Independent of the checkpoint format: ``G`` is any module called as ``G(z, res, fade)``
returning float images ``[N, 3, res, res]`` in ``[-1, 1]`` and exposing ``latent_dim``
(``fastpggan.networks.Generator``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fastpggan.metrics.features import FeatureExtractor, extractor_name, inception_extractor
from fastpggan.metrics.fid import (
    FeatureStats,
    FeatureStatsAccumulator,
    fid_from_stats,
    stats_cache_path,
)
from fastpggan.metrics.images import ImageSource, iterate_batches, to_uint8
from fastpggan.metrics.swd import (
    DEFAULT_MAX_DESCRIPTORS,
    SWDDescriptors,
    level_resolutions,
    multiscale_swd,
)

METRICS = ("swd", "fid")


@torch.no_grad()
def sample_images(
    G: torch.nn.Module,
    num_images: int,
    *,
    res: int | None = None,
    fade: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield uint8 ``[B, 3, res, res]`` batches of ``G``'s samples on ``G``'s device.

    Latents are drawn on the CPU from ``torch.Generator`` seeded with ``seed`` (the same
    latents on any device and for any batch size) and mapped to uint8 like the authors'
    evaluation: ``round(x * 127.5 + 127.5)`` clipped to ``[0, 255]``.
    """
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    done = 0
    with tqdm(total=num_images, desc="sampling G", unit="img", disable=not progress) as bar:
        while done < num_images:
            b = min(batch_size, num_images - done)
            z = torch.randn(b, G.latent_dim, generator=gen).to(device)
            yield to_uint8(G(z, res, fade))
            done += b
            bar.update(b)


class ClassConditioned(torch.nn.Module):
    """A conditional generator (``G(z, res, fade, labels)``) seen as an unconditional one,
    ``G(z, res, fade)``, for the metrics: every sample of class ``only``, or (``only`` None) of a
    class drawn at the frequencies ``counts`` (images per class) from its own generator, seeded
    with ``seed``, so the classes come as the reals' do."""

    def __init__(self, G: torch.nn.Module, counts: Sequence[int], only: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.G, self.only = G, only
        self.latent_dim, self.resolution = G.latent_dim, G.resolution
        self.weights = torch.tensor(list(counts), dtype=torch.float64)
        self.gen = torch.Generator().manual_seed(seed + 7)

    def forward(self, z: torch.Tensor, res: int, fade: float = 1.0) -> torch.Tensor:
        n = z.shape[0]
        if self.only is not None:
            y = torch.full((n,), self.only, dtype=torch.int64)
        else:
            y = torch.multinomial(self.weights, n, replacement=True, generator=self.gen)
        return self.G(z, res, fade, y.to(z.device))


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {list(metrics)}")
    return tuple(dict.fromkeys(metrics))


def evaluate_generator(
    G: torch.nn.Module,
    reals: ImageSource | None,
    *,
    res: int | None = None,
    metrics: Sequence[str] = METRICS,
    num_images: int = 10_000,
    fade: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    extractor: FeatureExtractor | None = None,
    inception_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    dataset_id: str | None = None,
    real_cache: dict | None = None,
    swd_max_descriptors: int = DEFAULT_MAX_DESCRIPTORS,
    progress: bool = True,
) -> dict[str, float]:
    """SWD and/or FID of ``num_images`` samples of ``G`` against ``num_images`` reals.

    ``reals``: a source as ``iterate_batches`` takes it (a tensor, a DataLoader, batches or
    single images; uint8 or float in ``[-1, 1]``; box-filtered down to ``res``); it may be
    ``None`` when only FID is asked for and the real statistics come from a cache.
    ``res`` defaults to ``G.resolution``. Returns ``swd_x1e3_<res>`` per level and
    ``swd_x1e3_avg`` (see ``fastpggan.metrics.swd``) and ``fid``.

    FID features: ``extractor`` if given, else the standard Inception network
    (``inception_weights`` path, torch hub cache, or download; resolved before any sampling so
    a missing file fails fast). Real-side results are reused, most local first: from
    ``real_cache`` (an in-process dict the caller keeps between calls, e.g. one per training
    run; it holds the reals' SWD descriptors, so it costs their memory), then for FID from
    ``cache_dir`` when ``dataset_id`` is given (``fastpggan.metrics.fid.dataset_identity``).
    Computation runs on ``device`` (default: CUDA when available); ``G`` samples on its own.
    """
    metrics = _check_metrics(metrics)
    res = int(G.resolution) if res is None else res
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    want_swd, want_fid = "swd" in metrics, "fid" in metrics
    # Bad arguments fail here, before any image is sampled.
    if num_images < 2:
        raise ValueError(f"num_images must be at least 2, got {num_images}")
    if want_swd:
        level_resolutions(res)
    if want_fid and extractor is None:
        extractor = inception_extractor(inception_weights, device)

    # Real side: what the in-process cache or the on-disk stats cache already hold.
    features = extractor_name(extractor) if want_fid else None
    key = (res, num_images, seed, swd_max_descriptors, features)
    held = real_cache.get(key, {}) if real_cache is not None else {}
    real_swd: SWDDescriptors | None = held.get("swd")
    real_fid: FeatureStats | None = held.get("fid")
    stats_path = None
    if want_fid and cache_dir is not None and dataset_id is not None:
        stats_path = stats_cache_path(cache_dir, dataset_id, res, num_images, extractor)
        if real_fid is None and stats_path.is_file():
            real_fid = FeatureStats.load(stats_path)

    need_swd = want_swd and real_swd is None
    need_fid = want_fid and real_fid is None
    if need_swd or need_fid:
        if reals is None:
            raise ValueError("no real images given and no cached real statistics to use")
        with tqdm(total=num_images, desc="reals", unit="img", disable=not progress) as bar:
            swd_set, fid_stats = _one_pass(
                iterate_batches(reals, num_images, res, batch_size), need_swd, need_fid, res,
                num_images, seed, device, swd_max_descriptors, extractor, bar,
            )
        if need_swd:
            real_swd = swd_set
        if need_fid:
            real_fid = fid_stats
            if stats_path is not None:
                real_fid.save(stats_path)
    if real_cache is not None:
        real_cache[key] = {"swd": real_swd, "fid": real_fid}

    # Fake side: one pass over G's samples feeds both metrics.
    fakes = sample_images(
        G, num_images, res=res, fade=fade, batch_size=batch_size, seed=seed, progress=progress
    )
    fake_swd, fake_fid = _one_pass(fakes, want_swd, want_fid, res, num_images, seed, device,
                                   swd_max_descriptors, extractor)

    results: dict[str, float] = {}
    if want_swd:
        results.update(multiscale_swd(real_swd, fake_swd, seed=seed, device=device))
    if want_fid:
        results["fid"] = fid_from_stats(real_fid, fake_fid)
    return results


def _one_pass(
    batches, swd: bool, fid: bool, res: int, num_images: int, seed: int,
    device: torch.device | str, max_descriptors: int, extractor, bar: tqdm | None = None,
) -> tuple[SWDDescriptors | None, FeatureStats | None]:
    """One pass over uint8 batches ``[B, 3, res, res]`` feeding both metrics: the SWD
    descriptors (``swd``) and the FID feature statistics (``fid``), each ``None`` if not asked."""
    swd_set = _new_swd_set(res, num_images, seed, device, max_descriptors) if swd else None
    acc = FeatureStatsAccumulator() if fid else None
    for batch in batches:
        batch = batch.to(device)
        if swd_set is not None:
            swd_set.update(batch)
        if acc is not None:
            with torch.no_grad():
                acc.update(extractor(batch))
        if bar is not None:
            bar.update(batch.shape[0])
    return swd_set, (acc.stats() if acc is not None else None)


def _new_swd_set(
    res: int, num_images: int, seed: int, device: torch.device | str, max_descriptors: int
) -> SWDDescriptors:
    return SWDDescriptors(
        res, num_images, seed=seed, device=device, max_descriptors=max_descriptors
    )
