"""Diversity of generated images against reals: cheap, no pretrained network, no host sync.

Aimed at mode collapse, the seed article's complaint ("many generated images came out with the
same hair colour"): a training run measures ``G_ema`` on a fixed set of latents at every tick and
compares with the same measurement on reals at the same resolution (:func:`diversity_stats` of
each side, :func:`compare_diversity` of the two). Three numbers per side, each ``0`` for a set of
identical images:

- ``colour``: spread of the images' mean colours, ``sqrt(mean_c var_n(mean_hw x[n, c]))`` on
  values in ``[0, 1]``: range ``[0, 0.5]``. A mean is blind to blur, so early, blurry samples are
  not mistaken for a loss of variety; a set drawn with one hair colour scores 0.56 to 0.69 of
  the reals' on the built-in faces at 4 to 64 px (backgrounds and clothes still vary).
- ``structure``: spread of the images' shapes: grayscale, box-filtered to at most 16x16, each
  image shifted and scaled to mean 0 and standard deviation 1 (brightness and contrast removed),
  then ``sqrt(mean_p var_n(g[n, p]))``: range ``[0, 1]`` (1: the mean image is flat).
- ``nearest``: mean distance from each image's shape vector (as above) to the nearest other
  image's, divided by ``sqrt(pixels)``: range ``[0, 2]``. Near-duplicates drive it to 0 where
  the spreads barely move (a set of 4 faces repeated keeps 0.7 of the reals' colour spread).

Ratios ``<name>_ratio = fake / real`` are about 1 when the samples vary as the reals do (two
disjoint sets of 256 built-in faces: 0.98 to 1.03). Every value is a 0-d tensor on the images'
device: a caller syncs once, when it logs.

For the built-in faces (:mod:`fastpggan.data.faces`), whose hair colours come from a known
palette, :func:`hair_classes` classifies each image's hair exactly enough to give the tests a
ground truth (99.5% of reals right at 16 to 64 px; silver and white are the only confusion), and
``hair_coverage`` is how much of the reals' hair-colour distribution the samples reproduce.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import torch

from fastpggan.data.faces import hair_palette
from fastpggan.layers import downsample2x
from fastpggan.metrics.images import check_images, to_uint8
from fastpggan.metrics.reals import real_batches
from fastpggan.sampling import sample

DIVERSITY_SAMPLES = 256  # the grid's latents and more, up to this many
STRUCTURE_RES = 16  # shapes are compared at most at this size
_FLAT = 0.02  # per-image std floor (about 5/255): a near-flat image counts as flat, not as noise

# Built-in faces' hair: the probe is the crown, hair in 95% or more of the faces (pixel centres
# inside it), and a probe's median colour farther than HAIR_TOLERANCE (0..255 RGB units) from every
# palette colour is unclassified (99% of reals lie within 45 of their own).
HAIR_MIN_RES = 16
HAIR_PROBE = ((0.33, 0.67), (0.2, 0.3))  # (x range, y range) in the unit square
HAIR_TOLERANCE = 64.0


@dataclass
class DiversityStats:
    """One side's measurement: 0-d float32 tensors; ``hair``: float32 ``[K + 1]`` shares of the
    ``K`` palette classes and, last, of unclassified images (``None`` when not asked for)."""

    colour: torch.Tensor
    structure: torch.Tensor
    nearest: torch.Tensor
    hair: torch.Tensor | None = None
    n: int = 0  # how many images were measured (nearest distances shrink as a set grows)


@dataclass
class DiversityFeatures:
    """What the measures need of each image, so a large set is reduced chunk by chunk:
    ``colour`` float32 ``[N, 3]`` mean colour in [0, 1]; ``shape`` float32 ``[N, P]`` standardised
    grayscale (``P = min(H, 16)**2``); ``hair`` int64 ``[N]`` palette class or -1 (or ``None``)."""

    colour: torch.Tensor
    shape: torch.Tensor
    hair: torch.Tensor | None = None

    @staticmethod
    def cat(parts: list[DiversityFeatures]) -> DiversityFeatures:
        hair = [p.hair for p in parts]
        return DiversityFeatures(
            torch.cat([p.colour for p in parts]), torch.cat([p.shape for p in parts]),
            None if any(h is None for h in hair) else torch.cat(hair),
        )


def diversity_features(images: torch.Tensor, hair: bool = False) -> DiversityFeatures:
    """uint8 ``[N, 3, H, H]`` (or float in ``[-1, 1]``, rounded to uint8 first as every metric
    here does) -> :class:`DiversityFeatures`. ``hair`` needs ``H >= HAIR_MIN_RES``."""
    check_images(images)
    x = to_uint8(images)
    xf = x.float().div_(255.0)
    colour = xf.mean((2, 3))
    g = xf.mean(1, keepdim=True)  # grayscale in [0, 1]
    del xf
    while g.shape[-1] > STRUCTURE_RES:
        g = downsample2x(g)
    g = g.flatten(1)
    g = g - g.mean(1, keepdim=True)
    shape = g / g.std(1, unbiased=False, keepdim=True).clamp_min(_FLAT)  # flat images -> 0
    return DiversityFeatures(colour, shape, hair_classes(x) if hair else None)


def diversity_stats(images: torch.Tensor | DiversityFeatures, hair: bool = False) -> DiversityStats:
    """Measure a set of images: uint8 ``[N, 3, H, H]`` (or float in ``[-1, 1]``), ``N >= 2``, or
    their :func:`diversity_features` (then ``hair`` is whether they hold hair classes).

    ``hair=True`` also classifies the built-in faces' hair (needs ``H >= HAIR_MIN_RES``).
    Costs ``O(N^2 * 256)`` for the nearest distances: trivial at ``N = 256``.
    """
    f = images if isinstance(images, DiversityFeatures) else diversity_features(images, hair)
    n = f.colour.shape[0]
    if n < 2:
        raise ValueError(f"diversity needs at least 2 images, got {n}")
    colour = f.colour.var(0, unbiased=False).mean().sqrt()
    s = f.shape
    structure = s.var(0, unbiased=False).mean().sqrt()
    d = torch.cdist(s.double(), s.double())  # float64: duplicates come out at ~1e-7, not ~1e-3
    d.diagonal().fill_(float("inf"))
    nearest = (d.min(1).values.mean() / s.shape[1] ** 0.5).float()
    shares = None
    if f.hair is not None:
        k = len(_palette_rgb())
        cls = torch.where(f.hair >= 0, f.hair, torch.full_like(f.hair, k))
        shares = torch.nn.functional.one_hot(cls, k + 1).sum(0).float() / n  # bincount would sync
    return DiversityStats(colour, structure, nearest, shares, n)


def _palette_rgb() -> torch.Tensor:
    """float32 ``[K, 3]``: the faces' hair palette centres in 0..255 RGB."""
    return torch.tensor([colorsys.hsv_to_rgb(h, s, v) for h, s, v in hair_palette()]) * 255.0


def hair_classes(images: torch.Tensor) -> torch.Tensor:
    """Hair colour class of built-in faces: uint8 ``[N, 3, H, H]`` (or float in ``[-1, 1]``),
    ``H >= HAIR_MIN_RES`` -> int64 ``[N]``, an index into ``fastpggan.data.faces.HAIR_NAMES``, or
    ``-1`` where the crown's median colour is near no palette colour."""
    check_images(images)
    res = images.shape[-1]
    if res < HAIR_MIN_RES:
        raise ValueError(f"hair classes need images of at least {HAIR_MIN_RES}px, got {res}px")
    x = to_uint8(images)
    c = (torch.arange(res) + 0.5) / res  # on the CPU: picking the probe syncs nothing
    (x0, x1), (y0, y1) = HAIR_PROBE
    ys = ((c >= y0) & (c <= y1)).nonzero().flatten().to(x.device)
    xs = ((c >= x0) & (c <= x1)).nonzero().flatten().to(x.device)
    probe = x.index_select(2, ys).index_select(3, xs).flatten(2).float()  # [N, 3, P]
    colour = probe.median(2).values  # the shine band and stray pixels are a minority
    dist, cls = torch.cdist(colour, _palette_rgb().to(x.device)).min(1)
    return torch.where(dist <= HAIR_TOLERANCE, cls, torch.full_like(cls, -1))


def compare_diversity(fake: DiversityStats, real: DiversityStats) -> dict[str, torch.Tensor]:
    """The record of one measurement: 0-d tensors ``colour``, ``colour_real``, ``colour_ratio``
    and the same for ``structure`` and ``nearest`` (a ratio is 0 when the reals' value is 0), and
    ``hair_coverage`` when both sides have hair shares: ``sum_c min(p_c, q_c)`` over the palette
    classes, ``p`` the reals' shares among their classified images, ``q`` the samples' shares
    among all samples (an unclassified sample covers nothing). Range ``[0, 1]``; one hair colour
    scores that colour's share of the reals (about 1/13)."""
    out: dict[str, torch.Tensor] = {}
    for name in ("colour", "structure", "nearest"):
        f, r = getattr(fake, name), getattr(real, name)
        out[name] = f
        out[f"{name}_real"] = r
        out[f"{name}_ratio"] = torch.where(r > 0, f / r.clamp_min(1e-12), torch.zeros_like(f))
    if fake.hair is not None and real.hair is not None:
        p = real.hair[:-1] / real.hair[:-1].sum().clamp_min(1e-12)
        out["hair_coverage"] = torch.minimum(p, fake.hair[:-1]).sum()
    return out


RATIO_NAMES = ("colour_ratio", "structure_ratio", "nearest_ratio")


def diversity_latents(grid_n: int, latent_dim: int, run_seed: int,
                      n: int = DIVERSITY_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """A run's fixed latents, float32 on the CPU: the sample grid's ``[grid_n, latent_dim]``
    (drawn from ``run_seed + 1``) and the ``[max(n - grid_n, 0), latent_dim]`` measured besides
    them (from ``run_seed + 2``). The trainer and ``evaluate`` both take them from here, so a
    checkpoint is measured on the latents its run measured."""
    grid = torch.randn(grid_n, latent_dim, generator=torch.Generator().manual_seed(run_seed + 1))
    extra = torch.randn(max(n - grid_n, 0), latent_dim, generator=torch.Generator().manual_seed(run_seed + 2))
    return grid, extra


def real_diversity(level: np.ndarray, hair: bool, n: int = DIVERSITY_SAMPLES,
                   device: torch.device | str = "cpu") -> DiversityStats:
    """The reals' side at one resolution: the first ``min(n, count)`` images of the metrics'
    fixed order (:func:`fastpggan.metrics.reals.real_batches`) of one level of ``ImageData``
    (``uint8 [count, r, r, 3]``); ``hair`` for the built-in faces at ``r >= HAIR_MIN_RES``."""
    n = min(n, level.shape[0])
    hair = hair and level.shape[1] >= HAIR_MIN_RES
    parts = [diversity_features(b.to(device), hair) for b in real_batches(level, n, 64)]
    return diversity_stats(DiversityFeatures.cat(parts))


def measure_generator(
    G: torch.nn.Module, extra_z: torch.Tensor, res: int, fade: float | torch.Tensor,
    real: DiversityStats, grid_images: torch.Tensor, chunk: int, extra_labels: torch.Tensor | None = None,
    grid_labels: torch.Tensor | None = None, real_classes: list[DiversityStats | None] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`compare_diversity` of ``G``'s samples against ``real``: the grid's images (float
    ``[G, 3, res, res]``, already sampled for the grid PNG) and ``G(extra_z)`` (a conditional G:
    of classes ``extra_labels``, int64 ``[M]``) sampled ``chunk`` latents at a time, each chunk
    reduced to its features at once (memory: one chunk of images). Hair classes when ``real``
    has them; then, for a conditional G of the built-in faces (``grid_labels``, int64 ``[G]``,
    the grid's classes, and ``extra_labels`` given), ``class_accuracy``: the share of samples
    whose hair :func:`hair_classes` reads as the class they were made for (chance: 1/13).
    ``real_classes``: the reals' side of each class ``c`` (``None`` where it has under 2 images);
    with the labels it adds, per class with 2+ samples, ``class<c>_<ratio name>`` (each ratio of
    :data:`RATIO_NAMES`: the class's samples against the class's reals, as many of each, since
    nearest distances shrink as a set grows).
    No host sync: 0-d tensors on ``G``'s device."""
    hair = real.hair is not None
    parts = [diversity_features(grid_images, hair)]
    labels = extra_labels.split(chunk) if extra_labels is not None else [None] * len(extra_z.split(chunk))
    parts += [diversity_features(sample(G, z, res, fade, chunk, y), hair) for z, y in zip(extra_z.split(chunk), labels)]
    f = DiversityFeatures.cat(parts)
    out = compare_diversity(diversity_stats(f), real)
    asked = None
    if grid_labels is not None and extra_labels is not None:
        asked = torch.cat([grid_labels, extra_labels]).to(f.colour.device)
    if hair and asked is not None:
        out["class_accuracy"] = (f.hair == asked).float().mean()
    if real_classes is not None and asked is not None:
        picks = asked.cpu()  # a tick syncs anyway: picking each class's rows on the host is simplest
        for c, real_c in enumerate(real_classes):
            rows = (picks == c).nonzero().flatten()[: real_c.n if real_c is not None else 0].to(f.colour.device)
            if real_c is None or len(rows) < 2:
                continue
            sub = DiversityFeatures(f.colour[rows], f.shape[rows], None)
            part = compare_diversity(diversity_stats(sub), real_c)
            out.update({f"class{c}_{k}": part[k] for k in RATIO_NAMES})
    return out


@torch.no_grad()
def class_accuracy(G: torch.nn.Module, res: int, fade: float, n_per_class: int, chunk: int = 64,
                   seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """A conditional generator of the built-in faces' hair colours (``G.label_size`` classes in
    ``HAIR_NAMES`` order), ``res >= HAIR_MIN_RES``: float32 ``[K]``, per class ``c`` the share of
    ``n_per_class`` samples made for ``c`` whose hair :func:`hair_classes` reads as ``c`` (chance
    1/13). Latents from ``seed``; one host-free tensor on ``device``."""
    K = G.label_size
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(K * n_per_class, G.latent_dim, generator=g).to(device)
    labels = torch.arange(K).repeat_interleave(n_per_class).to(device)
    read = torch.cat([hair_classes(sample(G, zc, res, fade, chunk, yc)) for zc, yc in zip(z.split(chunk), labels.split(chunk))])
    return (read == labels).float().view(K, n_per_class).mean(1)


DEFAULT_THRESHOLD = 0.75
DEFAULT_PATIENCE = 3
DEFAULT_ARM_TICKS = 20


class CollapseWatch:
    """Turns a run's diversity ratios, one set per tick, into warnings.

    A ratio (``RATIO_NAMES``) is watched once the run has had variety: from its ``patience``-th
    tick in a row at or above ``threshold`` (a young ``G_ema``, and a block fading in, often
    have little colour variety for a while: that is not a collapse), or from tick
    ``arm_ticks`` on (a run that never had variety). A watched ratio below ``threshold`` for
    ``patience`` ticks in a row raises one warning naming it; while it stays low, another only
    when the lowest ratio has fallen at least ``worsen`` below the value last warned about.
    Once every ratio has been back at or above ``threshold`` for ``patience`` ticks, a later
    drop warns afresh. Its state (:meth:`state_dict`) is plain JSON, kept in checkpoints so a
    resumed run goes on where it was.
    """

    def __init__(
        self, threshold: float = DEFAULT_THRESHOLD, patience: int = DEFAULT_PATIENCE,
        worsen: float = 0.1, arm_ticks: int = DEFAULT_ARM_TICKS, who: str = "samples",
    ) -> None:
        if patience < 1 or arm_ticks < 0:
            raise ValueError(f"patience must be >= 1 and arm_ticks >= 0, got {patience}, {arm_ticks}")
        self.threshold, self.patience, self.worsen, self.arm_ticks = threshold, patience, worsen, arm_ticks
        self.who = who  # what the warning names: "samples", or e.g. "samples of class 'red'"
        self.last_warned: dict[str, float] = {}
        self.ticks = 0
        self.armed: dict[str, bool] = {}
        self.high: dict[str, int] = {}  # consecutive ticks at or above the threshold, per ratio
        self.low: dict[str, int] = {}  # consecutive watched ticks below it, per ratio
        self.healthy = 0  # consecutive ticks with no watched ratio low
        self.warned_at: float | None = None  # lowest ratio in the last warning of this episode

    def update(self, ratios: dict[str, float]) -> str | None:
        """Feed one tick's ratios (host floats, e.g. from :func:`compare_diversity`); returns a
        warning line, or ``None``."""
        self.ticks += 1
        low: dict[str, float] = {}
        for name in RATIO_NAMES:
            if name not in ratios:
                continue
            v = float(ratios[name])
            self.high[name] = self.high.get(name, 0) + 1 if v >= self.threshold else 0
            if self.high[name] >= self.patience or self.ticks >= self.arm_ticks:
                self.armed[name] = True
            below = v < self.threshold and self.armed.get(name, False)
            self.low[name] = self.low.get(name, 0) + 1 if below else 0
            if self.low[name] >= self.patience:
                low[name] = v
        self.healthy = 0 if any(self.low.values()) else self.healthy + 1
        if self.healthy >= self.patience:
            self.warned_at = None
        if not low:
            return None
        worst = min(low.values())
        if self.warned_at is not None and worst > self.warned_at - self.worsen:
            return None
        again = self.warned_at is not None
        self.warned_at = worst
        self.last_warned = dict(low)  # what this warning is about (CollapseMonitor merges classes')
        shown = ", ".join(f"{k.removesuffix('_ratio')} {v:.2f}" for k, v in low.items())
        return (
            f"warning: {self.who} {'are losing even more' if again else 'are losing'} variety (mode collapse?): "
            f"{shown} of the reals' (below {self.threshold:g} for {self.patience}+ ticks). "
            "Try a larger batch (--batch), a lower learning rate (--lr), or resume from an "
            "earlier checkpoint (--resume PATH) and look at the sample grids."
        )

    def state_dict(self) -> dict:
        return {"ticks": self.ticks, "armed": dict(self.armed), "high": dict(self.high), "low": dict(self.low),
                "healthy": self.healthy, "warned_at": self.warned_at}

    def load_state_dict(self, state: dict) -> None:
        self.ticks = int(state.get("ticks", 0))
        self.armed = {k: bool(v) for k, v in state.get("armed", {}).items()}
        self.high = {k: int(v) for k, v in state.get("high", {}).items()}
        self.low = {k: int(v) for k, v in state.get("low", {}).items()}
        self.healthy = int(state.get("healthy", 0))
        self.warned_at = state.get("warned_at")
