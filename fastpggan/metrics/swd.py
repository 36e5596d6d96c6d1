"""Multi-scale sliced Wasserstein distance (SWD), as the PGGAN paper defines it (Sec. 5, App. D).

For each level of a Laplacian pyramid of the images (from full size down to 16x16; the
coarsest level is the 16x16 low-pass image itself), 7x7 neighbourhoods of the 3 colour
channels are taken at random positions, ``nhoods_per_image`` per image. Each set's
descriptors ``[M, 3, 7, 7]`` are normalised per colour channel (mean and population std over
that set's descriptors and pixels), flattened to ``[M, 147]``, projected on random unit
directions (``dir_repeats`` x ``dirs_per_repeat``), and the sorted projections of the two sets
are compared: mean absolute difference, averaged over directions and repeats. Values are
reported x1e3 per level (``swd_x1e3_<res>``, in the paper's units) and averaged
(``swd_x1e3_avg``).

Defaults are the authors' (``metrics/sliced_wasserstein.py``): 128 neighbourhoods per image,
4 repeats of 128 directions. Images are uint8 ``[0, 255]`` (float input in ``[-1, 1]`` is
converted the way the authors convert generator output).

Memory: descriptors for all levels of one set are held on the CPU in float32:
``levels * M * 147 * 4`` bytes, ``M = num_images * nhoods_per_image``. ``max_descriptors``
caps ``M`` per level by lowering the neighbourhoods taken per image (never below one), so a
50,000-image evaluation stays bounded. The paper's protocol is 16384 images x 128 = 2**21
descriptors per level (about 1.2 GB per level per set); the default cap is 2**19.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fastpggan.metrics.images import check_images, iterate_batches, to_uint8

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
DEFAULT_MAX_DESCRIPTORS = 2**19

# The authors' 5x5 binomial kernel (what cv2.pyrDown/pyrUp use).
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
_GAUSSIAN_5X5 = (torch.outer(_BINOMIAL, _BINOMIAL) / 256.0).to(torch.float32)


def level_resolutions(resolution: int) -> list[int]:
    """Pyramid level sizes, finest first: ``[resolution, resolution / 2, ..., 16]``."""
    if resolution < MIN_RESOLUTION or resolution & (resolution - 1):
        raise ValueError(
            f"SWD needs a power-of-two image size of at least {MIN_RESOLUTION}, got {resolution}"
        )
    return [resolution >> i for i in range(int(math.log2(resolution // MIN_RESOLUTION)) + 1)]


def metric_names(resolution: int) -> list[str]:
    """Result keys: ``swd_x1e3_<res>`` per level (finest first), then ``swd_x1e3_avg``."""
    return [f"swd_x1e3_{r}" for r in level_resolutions(resolution)] + ["swd_x1e3_avg"]


def _blur(x: torch.Tensor, gain: float) -> torch.Tensor:
    # Depthwise 5x5 binomial filter with mirror edges (scipy.ndimage "mirror" = torch "reflect").
    c = x.shape[1]
    weight = (_GAUSSIAN_5X5 * gain).to(x.device, x.dtype).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), weight, groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """float ``[N, C, H, W]`` -> ``[N, C, H/2, W/2]``: binomial blur, keep even pixels (cv2.pyrDown)."""
    return _blur(x, 1.0)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """float ``[N, C, H, W]`` -> ``[N, C, 2H, 2W]``: zero insertion, blur x4 (cv2.pyrUp)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, 4.0)


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """float32 ``[N, C, H, W]`` -> ``num_levels`` tensors, finest first.

    Level ``i`` is ``G_i - pyr_up(G_{i+1})`` with ``G_0 = images``, ``G_{i+1} = pyr_down(G_i)``;
    the last level is the low-pass ``G_{num_levels-1}`` itself.
    """
    gauss = [images]
    for _ in range(num_levels - 1):
        gauss.append(pyr_down(gauss[-1]))
    return [g - pyr_up(g_next) for g, g_next in zip(gauss, gauss[1:])] + [gauss[-1]]


def extract_descriptors(level: torch.Tensor, positions: torch.Tensor, per_image: int) -> torch.Tensor:
    """Neighbourhoods ``[B * per_image, C, 7, 7]`` of ``level`` ``[B, C, S, S]``.

    ``positions`` int64 ``[B * per_image, 2]`` are the (y, x) centres, image-major (the first
    ``per_image`` rows belong to image 0), each in ``[3, S - 3)`` as the authors draw them.
    """
    b, c = level.shape[:2]
    half = NHOOD_SIZE // 2
    offsets = torch.arange(-half, half + 1, device=level.device)
    pos = positions.to(level.device)
    img = torch.arange(b, device=level.device).repeat_interleave(per_image)
    ys = pos[:, 0, None] + offsets  # [M, 7]
    xs = pos[:, 1, None] + offsets
    chan = torch.arange(c, device=level.device)
    return level[
        img[:, None, None, None], chan[None, :, None, None], ys[:, None, :, None], xs[:, None, None, :]
    ]


class SWDDescriptors:
    """Streaming collector of one image set's pyramid descriptors.

    ``update`` takes batches ``[B, 3, R, R]`` (uint8, or float in ``[-1, 1]``) in order until
    ``num_images`` images are in. Descriptor positions come from one ``torch.Generator`` per
    level seeded from ``seed``, drawn image by image, so the result depends on the seed and
    the image order but not on how the images are split into batches. The pyramid runs on
    ``device`` (default: the batch's device); descriptors are kept on the CPU.
    """

    def __init__(
        self,
        resolution: int,
        num_images: int,
        *,
        nhoods_per_image: int = NHOODS_PER_IMAGE,
        max_descriptors: int = DEFAULT_MAX_DESCRIPTORS,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        self.resolutions = level_resolutions(resolution)
        if num_images < 1 or nhoods_per_image < 1 or max_descriptors < 1:
            raise ValueError(
                "num_images, nhoods_per_image and max_descriptors must be positive, got "
                f"{num_images}, {nhoods_per_image}, {max_descriptors}"
            )
        self.resolution = resolution
        self.num_images = num_images
        self.per_image = max(1, min(nhoods_per_image, max_descriptors // num_images))
        self.device = torch.device(device) if device is not None else None
        count = num_images * self.per_image
        self.descriptors = [
            torch.empty(count, 3, NHOOD_SIZE, NHOOD_SIZE, dtype=torch.float32)
            for _ in self.resolutions
        ]
        # Level l's positions: seed * 64 + l (fewer than 64 levels below 2**70 px).
        self._generators = [
            torch.Generator().manual_seed(seed * 64 + lod) for lod in range(len(self.resolutions))
        ]
        self.count = 0  # images taken in so far

    def update(self, images: torch.Tensor) -> None:
        """Add a batch ``[B, 3, R, R]``; ``ValueError`` past ``num_images`` or on a wrong shape."""
        check_images(images, self.resolution)
        b = images.shape[0]
        if self.count + b > self.num_images:
            raise ValueError(
                f"SWD set is full: {self.count} + {b} images exceed num_images={self.num_images}"
            )
        device = self.device if self.device is not None else images.device
        x = to_uint8(images).to(device).float()  # the authors' float32 of uint8 pixels
        half = NHOOD_SIZE // 2
        rows = slice(self.count * self.per_image, (self.count + b) * self.per_image)
        for lod, level in enumerate(laplacian_pyramid(x, len(self.resolutions))):
            size = level.shape[-1]
            pos = torch.randint(
                half, size - half, (b * self.per_image, 2), generator=self._generators[lod]
            )
            self.descriptors[lod][rows] = extract_descriptors(level, pos, self.per_image).cpu()
        self.count += b

    @property
    def complete(self) -> bool:
        return self.count == self.num_images


def normalize_descriptors(desc: torch.Tensor) -> torch.Tensor:
    """``[M, C, 7, 7]`` -> float32 ``[M, C * 49]``, each channel at mean 0, population std 1."""
    var, mean = torch.var_mean(desc, dim=(0, 2, 3), correction=0, keepdim=True)
    return ((desc - mean) / var.sqrt()).reshape(desc.shape[0], -1)


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """float32 ``[dim, count]`` unit columns from a normal draw (float64 before rounding)."""
    dirs = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    return (dirs / dirs.norm(dim=0, keepdim=True)).float()


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    generator: torch.Generator,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
) -> float:
    """Sliced Wasserstein distance of two equal-size descriptor sets ``[M, D]`` (not x1e3).

    Per repeat: ``dirs_per_repeat`` random unit directions (from ``generator``, on the CPU),
    projections sorted per direction, mean of ``|sorted_a - sorted_b|``; then the mean over
    repeats. Runs on ``a``'s device.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"descriptor sets must have equal [M, D] shapes, got {a.shape}, {b.shape}")
    results = []
    for _ in range(dir_repeats):
        dirs = random_directions(a.shape[1], dirs_per_repeat, generator).to(a.device)
        # [K, M] (one row per direction) sorts faster than [M, K] along dim 0.
        proj_a = torch.sort(dirs.T @ a.T, dim=1).values
        proj_b = torch.sort(dirs.T @ b.T, dim=1).values
        results.append((proj_a - proj_b).abs_().mean(dtype=torch.float64))
    return float(torch.stack(results).mean())


def multiscale_swd(
    a: SWDDescriptors,
    b: SWDDescriptors,
    *,
    seed: int = 0,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Per-level SWD x1e3 of two complete descriptor sets, plus their average.

    Keys as ``metric_names(resolution)``. Directions come from ``torch.Generator`` seeded with
    ``seed``, drawn level by level (the same directions for every pair of sets). One level at a
    time is normalised and moved to ``device`` (default: CUDA when available).
    """
    if a.resolutions != b.resolutions or not (a.complete and b.complete):
        raise ValueError(
            "SWD needs two complete sets of the same resolution: got "
            f"{a.count}/{a.num_images} images at {a.resolution} and "
            f"{b.count}/{b.num_images} at {b.resolution}"
        )
    if a.descriptors[0].shape != b.descriptors[0].shape:
        raise ValueError(
            f"SWD sets differ in size: {a.descriptors[0].shape[0]} vs "
            f"{b.descriptors[0].shape[0]} descriptors per level; use the same num_images"
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(seed)
    dists = []
    levels = zip(a.descriptors, b.descriptors)
    for da, db in tqdm(levels, total=len(a.resolutions), desc="SWD", disable=not progress):
        na = normalize_descriptors(da.to(device))
        nb = normalize_descriptors(db.to(device))
        dists.append(sliced_wasserstein(na, nb, gen, dir_repeats, dirs_per_repeat) * 1e3)
        del na, nb
    names = metric_names(a.resolution)
    return dict(zip(names, dists + [sum(dists) / len(dists)]))


def swd(
    images_a: torch.Tensor | Iterable[torch.Tensor],
    images_b: torch.Tensor | Iterable[torch.Tensor],
    num_images: int,
    resolution: int,
    *,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    **descriptor_options: int,
) -> dict[str, float]:
    """Multi-scale SWD x1e3 between the first ``num_images`` of two image sources.

    Sources as ``fastpggan.metrics.images.iterate_batches`` takes them. Both sets use
    ``seed`` for positions and directions. ``descriptor_options``: ``nhoods_per_image``,
    ``max_descriptors`` of ``SWDDescriptors``.
    """
    sets = []
    for source in (images_a, images_b):
        desc = SWDDescriptors(
            resolution, num_images, seed=seed, device=device, **descriptor_options
        )
        for batch in iterate_batches(source, num_images, resolution, batch_size):
            desc.update(batch)
        sets.append(desc)
    return multiscale_swd(sets[0], sets[1], seed=seed, device=device)
