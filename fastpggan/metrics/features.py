"""Feature extractors for FID: the standard Inception-v3 pool features, or any injected callable.

A feature extractor is a callable ``uint8 [N, 3, H, W] -> float [N, D]`` that runs on its
inputs' device; an optional ``name`` attribute identifies it in the dataset-statistics cache
key. ``inception_extractor`` builds the standard one through torch-fidelity
(``pip install 'fastpggan[fid]'``): the TensorFlow FID Inception graph's weights converted to
PyTorch (file ``weights-inception-2015-12-05-6726825d.pth``), 2048-d pool3 features. It resizes
every input to 299x299 itself, with a bilinear resize that reproduces TensorFlow 1.x's
(``align_corners=False``), then maps ``[0, 255]`` to ``[-1, 1]``, as the original FID code does;
callers pass images at their own resolution.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_NAME = "inception-v3-compat-pool3-2048"


class InceptionWeightsError(RuntimeError):
    """The Inception weights are neither given, cached, nor downloadable."""


def default_inception_weights_path() -> Path:
    """Where torch (and torch-fidelity) cache the weights: ``<torch hub dir>/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def _network_reachable(url: str, timeout: float) -> bool:
    # A TCP connect with a short timeout, so an offline machine fails fast instead of hanging
    # inside urllib.
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_inception_weights(
    path: str | Path | None = None, *, allow_download: bool = True, timeout: float = 5.0
) -> Path:
    """Path of the Inception weights file: ``path`` if given, else the torch hub cache.

    With no ``path`` and no cached copy the file is downloaded into the cache, after checking
    up front (``timeout`` seconds) that the host answers. ``InceptionWeightsError`` with the
    download URL when ``path`` does not exist, or the file is not cached and cannot be fetched.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise InceptionWeightsError(
                f"Inception weights file {str(path)!r} does not exist; download it from "
                f"{INCEPTION_URL}"
            )
        return path
    cached = default_inception_weights_path()
    if cached.is_file():
        return cached
    if not allow_download or not _network_reachable(INCEPTION_URL, timeout):
        raise InceptionWeightsError(
            "FID needs the Inception weights and they cannot be downloaded here (no network). "
            f"Download {INCEPTION_URL} on a machine with network access, then pass its path "
            f"with --inception-weights PATH (or copy it to {cached})"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".partial")
    torch.hub.download_url_to_file(INCEPTION_URL, str(tmp), progress=True)
    tmp.replace(cached)  # atomic: a killed download never leaves a truncated cache file
    return cached


class InceptionFeatures(torch.nn.Module):
    """uint8 ``[N, 3, H, W]`` -> float32 ``[N, 2048]`` Inception-v3 pool3 features (FID's)."""

    name = INCEPTION_NAME

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as err:
            raise ImportError(
                "FID's Inception network needs torch-fidelity: pip install 'fastpggan[fid]'"
            ) from err
        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights_path)
            )
        except Exception as err:  # a corrupt or foreign file: say which one
            raise InceptionWeightsError(
                f"cannot load Inception weights from {str(weights_path)!r} ({err}); the "
                f"expected file is {INCEPTION_URL}"
            ) from err

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[0].float()


def inception_extractor(
    weights_path: str | Path | None = None,
    device: torch.device | str | None = None,
    *,
    allow_download: bool = True,
) -> InceptionFeatures:
    """The standard FID extractor on ``device`` (default: CUDA when available).

    Weights from ``weights_path``, else the torch hub cache, else downloaded (see
    ``resolve_inception_weights``). The weights are resolved before torch-fidelity is touched,
    so a missing file is reported first and no network call can hang.
    """
    path = resolve_inception_weights(weights_path, allow_download=allow_download)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return InceptionFeatures(path).to(device)


def extractor_name(extractor: FeatureExtractor) -> str:
    """The extractor's ``name`` attribute, else its (or its type's) qualified name, for cache keys."""
    name = getattr(extractor, "name", None)
    if isinstance(name, str) and name:
        return name
    owner = extractor if hasattr(extractor, "__qualname__") else type(extractor)
    return f"{owner.__module__}.{owner.__qualname__}"
