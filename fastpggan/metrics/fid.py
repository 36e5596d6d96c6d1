"""Frechet Inception Distance: streaming feature statistics, the Frechet distance, a stats cache.

FID between two image sets is the Frechet distance between Gaussians fitted to their
features (Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. Features
come from any extractor ``uint8 [N, 3, H, W] -> [N, D]`` (``fastpggan.metrics.features``);
the standard FID uses ``inception_extractor()`` (2048-d). Statistics are accumulated in
float64 as sums and a sum of outer products, so memory is ``O(D^2)`` whatever the number of
images (50,000 images: one 2048x2048 float64 matrix, 32 MB).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fastpggan.metrics.features import FeatureExtractor, extractor_name
from fastpggan.metrics.images import ImageSource, iterate_batches


@dataclass(frozen=True)
class FeatureStats:
    """Mean ``mu`` float64 ``[D]`` and covariance ``sigma`` float64 ``[D, D]`` of ``count`` features.

    ``sigma`` is the unbiased estimate (divides by ``count - 1``), as ``np.cov`` and the
    reference FID code compute it.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    def save(self, path: str | Path) -> None:
        """Write ``.npz`` atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, mu=self.mu, sigma=self.sigma, count=np.int64(self.count))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        with np.load(path) as data:
            return cls(data["mu"], data["sigma"], int(data["count"]))


class FeatureStatsAccumulator:
    """Running mean and covariance of feature batches ``[B, D]``, in float64 on their device.

    Sums are taken around the first batch's mean (a fixed shift), which keeps
    ``sum(x x^T) - n m m^T`` free of cancellation when features sit far from zero.
    """

    def __init__(self) -> None:
        self.count = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(f"features must be a non-empty [B, D] tensor, got {tuple(features.shape)}")
        x = features.detach().to(torch.float64)
        if self._shift is None:
            self._shift = x.mean(dim=0)
            self._sum = torch.zeros_like(self._shift)
            self._outer = x.new_zeros(x.shape[1], x.shape[1])
        elif x.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature size changed from {self._shift.shape[0]} to {x.shape[1]}")
        x = x - self._shift
        self._sum += x.sum(dim=0)
        self._outer += x.T @ x
        self.count += x.shape[0]

    def stats(self) -> FeatureStats:
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        mean = self._sum / self.count
        sigma = (self._outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        mu = self._shift + mean
        return FeatureStats(mu.cpu().numpy(), sigma.cpu().numpy(), self.count)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` in float64.

    ``tr((S1 S2)^(1/2))`` is computed as ``tr((R S2 R)^(1/2))`` with ``R = S1^(1/2)``: the same
    eigenvalues, but a symmetric positive semi-definite matrix, so ``eigh`` applies and
    round-off cannot produce complex or negative eigenvalues beyond clipping at 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"need mu [D] and sigma [D, D] for both sets, got {mu1.shape}, {s1.shape}, "
            f"{mu2.shape}, {s2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        raise ValueError("feature statistics contain NaN or inf")
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    # A squared Wasserstein-2 distance is >= 0; only round-off takes it below.
    return max(float(value), 0.0)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two sets' statistics."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def feature_stats(
    source: ImageSource,
    num_images: int,
    resolution: int,
    extractor: FeatureExtractor,
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "FID features",
) -> FeatureStats:
    """Feature statistics of the first ``num_images`` images of ``source`` at ``resolution``.

    ``source`` as ``iterate_batches`` takes it (larger images are box-filtered down to
    ``resolution`` first). Batches go to ``device`` (default: CUDA when available) as uint8
    before the extractor sees them.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    acc = FeatureStatsAccumulator()
    with tqdm(total=num_images, desc=desc, unit="img", disable=not progress) as bar:
        for batch in iterate_batches(source, num_images, resolution, batch_size):
            with torch.no_grad():
                acc.update(extractor(batch.to(device)))
            bar.update(batch.shape[0])
    return acc.stats()


def default_cache_dir() -> Path:
    """``$FASTPGGAN_CACHE``, else ``$XDG_CACHE_HOME/fastpggan``, else ``~/.cache/fastpggan``."""
    if os.environ.get("FASTPGGAN_CACHE"):
        return Path(os.environ["FASTPGGAN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastpggan"


def dataset_identity(source: str | Path) -> str:
    """A string that changes when the dataset at ``source`` changes.

    A file: resolved path, size, modification time. A folder: resolved path and every file's
    relative path, size and modification time (cheap stat calls, no reading). Anything else
    (a built-in dataset's name) is used as given.
    """
    path = Path(source).expanduser()
    if path.is_file():
        st = path.stat()
        return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return f"dir:{path.resolve()}:{h.hexdigest()}"
    return f"name:{source}"


def stats_cache_path(
    cache_dir: str | Path,
    dataset_id: str,
    resolution: int,
    num_images: int,
    extractor: FeatureExtractor | str,
) -> Path:
    """Cache file for one dataset, resolution, image count and extractor."""
    name = extractor if isinstance(extractor, str) else extractor_name(extractor)
    key = f"{dataset_id}|res={resolution}|n={num_images}|features={name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cache_dir) / "fid-stats" / f"{resolution}px-n{num_images}-{digest}.npz"
