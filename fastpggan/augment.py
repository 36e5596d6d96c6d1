"""Differentiable augmentation of every image the critic sees (the idea of ADA, Karras et al.
2020): batched tensor operations on the images' device, each transform applied to each image
with probability ``p``, a 0-d tensor, so that moving ``p`` recompiles nothing and reads nothing
back to the host.

Three classes of transforms, selected by the letters of ``pipe`` (:data:`PIPE_CLASSES`):

- ``b``, pixel blitting: x-flip, rotation by a multiple of 90 degrees, integer translation (up to
  1/8 of the size). All three are integer maps of the pixel grid, so they run as one exact gather
  with symmetric (edge-repeating) reflection outside the image: no filtering, no loss.
- ``g``, general geometric: isotropic scaling, rotation, anisotropic scaling, fractional
  translation, composed into one 3x3 matrix per image and applied in one resampling pass that
  does not leak: the image is upsampled 2x through a windowed-sinc lowpass (mirrored at the
  borders), sampled bilinearly at the transformed positions (mirrored again outside), and
  filtered and decimated back. Without the lowpass, bilinear sampling of the raw image aliases,
  and the generator could learn that signature (see the module tests' no-leak checks).
- ``c``, colour: brightness, contrast, luma flip, hue rotation, saturation, composed into one
  4x4 affine colour matrix per image (images in [-1, 1], so contrast scales about 0, and the luma
  axis is the grey diagonal).

Everything is linear in the images (the random parameters never depend on them), so the
gradient of anything downstream passes back through the augmentation, and so does its double
backward (the gradient penalty's): gathers, convolutions and matrix products only, no
``grid_sample``. Images an augmentation leaves alone (their draws all ``>= p``) are returned
bit for bit: ``p = 0`` is exactly the identity.

Randomness comes from the ``generator`` passed in (the training loop's, saved in checkpoints),
so a resumed run draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PIPE_CLASSES = "bgc"
DEFAULT_PIPE = "bgc"

# Strengths of the transforms (ADA's published defaults): the spread of each parameter.
INT_TRANSLATE = 0.125  # integer translation: uniform in +-this fraction of the size
SCALE_STD = 0.2  # isotropic scale: 2 ** N(0, this)
ANISO_STD = 0.2  # anisotropic scale: x * 2 ** N(0, this), y / the same
FRAC_TRANSLATE_STD = 0.125  # fractional translation: N(0, this) times the size
BRIGHTNESS_STD = 0.2  # added to every channel
CONTRAST_STD = 0.5  # every channel times 2 ** N(0, this)
SATURATION_STD = 1.0  # chroma times 2 ** N(0, this)
# Taps of the anti-aliasing lowpass (windowed sinc at the original Nyquist, even length so that
# 2x up- and downsampling stay centred on the pixel grid).
FILTER_TAPS = 12


def check_pipe(pipe: str) -> str:
    """``pipe`` if it is a non-empty string of distinct letters from :data:`PIPE_CLASSES`, else
    ``ValueError`` (one line)."""
    if not pipe or any(c not in PIPE_CLASSES for c in pipe) or len(set(pipe)) != len(pipe):
        raise ValueError(f"augmentation pipe must be distinct letters of {PIPE_CLASSES!r} "
                         f"(b blit, g geometric, c colour), got {pipe!r}")
    return pipe


def _lowpass(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The anti-aliasing filter, ``[FILTER_TAPS]``, summing to 1: a Hann-windowed sinc with its
    cutoff at half the 2x-upsampled grid's Nyquist (the original image's Nyquist)."""
    t = torch.arange(FILTER_TAPS, dtype=torch.float64) - (FILTER_TAPS - 1) / 2
    h = torch.sinc(t / 2) * (0.5 + 0.5 * torch.cos(math.pi * t / (FILTER_TAPS / 2 + 0.5)))
    return (h / h.sum()).to(device=device, dtype=dtype)


def _mirror(i: torch.Tensor, n: int) -> torch.Tensor:
    """Integer indices ``i`` (any, also far outside) folded into ``[0, n)`` by symmetric
    reflection about the borders (edge pixels repeated): period ``2n``."""
    m = torch.remainder(i, 2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


def _pad_mirror(x: torch.Tensor, left: int, right: int, dim: int) -> torch.Tensor:
    """``x`` extended by ``left``/``right`` mirrored pixels along ``dim`` (any amount)."""
    n = x.shape[dim]
    idx = _mirror(torch.arange(-left, n + right, device=x.device), n)
    return x.index_select(dim, idx)


def _filter(x: torch.Tensor, h: torch.Tensor, dim: int, stride: int = 1) -> torch.Tensor:
    """Valid 1-D correlation of every channel of ``x`` ``[N, C, H, W]`` with ``h`` along ``dim``
    (2 = H, 3 = W), taking every ``stride``-th output."""
    C = x.shape[1]
    if dim == 2:
        w, s = h.view(1, 1, -1, 1), (stride, 1)
    else:
        w, s = h.view(1, 1, 1, -1), (1, stride)
    return F.conv2d(x, w.expand(C, 1, *w.shape[2:]), stride=s, groups=C)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, 2H, 2W]`` through the lowpass, mirrored at the borders: the
    band-limited image on a grid twice as fine (same dtype)."""
    h = _lowpass(x.device, x.dtype) * 2  # zero-stuffing halves the mean: the 2 restores it
    L = FILTER_TAPS
    for dim in (2, 3):
        n = x.shape[dim]
        m = (L + 3) // 4 + 1  # original pixels of margin: enough for the filter's reach
        xp = _pad_mirror(x, m, m, dim)
        shape = list(xp.shape)
        shape[dim] *= 2
        up = xp.new_zeros(shape)
        idx = [slice(None)] * 4
        idx[dim] = slice(0, None, 2)
        up[tuple(idx)] = xp
        y = _filter(up, h, dim)
        # Output j of the valid correlation is centred at padded position j + (L - 1) / 2;
        # fine pixel k is centred at (k - 0.5) in stuffed coordinates, shifted by the 2m margin.
        start = 2 * m - L // 2
        x = y.narrow(dim, start, 2 * n)
    return x


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, 2H, 2W]`` -> ``[N, C, H, W]``: the lowpass, mirrored at the borders, then every
    other sample, centred on the coarse pixels (same dtype)."""
    h = _lowpass(x.device, x.dtype)
    pad = FILTER_TAPS // 2 - 1
    for dim in (2, 3):
        x = _filter(_pad_mirror(x, pad, pad + 1, dim), h, dim, stride=2)
    return x


def _gate(u: torch.Tensor, p: torch.Tensor, value: torch.Tensor, identity: float) -> torch.Tensor:
    """``value`` where the draw ``u`` is below ``p``, else ``identity`` (all ``[N]``)."""
    return torch.where(u < p, value, torch.full_like(value, identity))


def _rand(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=like.device, dtype=like.dtype, generator=generator)


def _randn(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(n, device=like.device, dtype=like.dtype, generator=generator)


def _mat3(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` from 3x3 entries, each ``[N]`` or a number."""
    n = like.shape[0]
    return torch.stack([torch.stack([e if isinstance(e, torch.Tensor) else like.new_full((n,), e)
                                     for e in row], -1) for row in rows], -2)


# --- pixel blitting ----------------------------------------------------------------------
def blit_params(n: int, size: int, p: torch.Tensor, like: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random blits for ``n`` images of ``size`` px: ``(flip, quarter_turns, shift)``, int64
    ``[N]``, ``[N]``, ``[N, 2]`` (x, y in pixels); each of the three drawn with probability ``p``
    (0, 0 and (0, 0) otherwise)."""
    flip = _gate(_rand(n, like, generator), p, torch.floor(_rand(n, like, generator) * 2), 0.0)
    turns = _gate(_rand(n, like, generator), p, torch.floor(_rand(n, like, generator) * 4), 0.0)
    u = _rand(n, like, generator)
    t = (torch.stack([_rand(n, like, generator), _rand(n, like, generator)], -1) * 2 - 1) * INT_TRANSLATE
    shift = torch.where((u < p).unsqueeze(-1), torch.round(t * size), torch.zeros_like(t))
    return flip.long(), turns.long(), shift.long()


def blit(x: torch.Tensor, flip: torch.Tensor, turns: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Exact blits of square images ``x`` ``[N, C, S, S]``: mirror x where ``flip`` (int ``[N]``),
    then rotate by ``turns`` quarter turns counter-clockwise as displayed (int ``[N]``), then move
    by ``shift`` pixels (int ``[N, 2]``: +x right, +y down), the uncovered pixels mirrored in.
    One gather; output same shape and dtype."""
    N, C, H, W = x.shape
    if H != W:
        raise ValueError(f"blits need square images, got {H}x{W}")
    dev = x.device
    ys, xs = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    # Output pixel (y, x) reads the source pixel the inverse map sends it to: undo the shift,
    # then the rotation, then the flip.
    X = xs.unsqueeze(0) - shift[:, 0].view(N, 1, 1)
    Y = ys.unsqueeze(0) - shift[:, 1].view(N, 1, 1)
    X, Y = _mirror(X, W), _mirror(Y, H)
    k = turns.remainder(4).view(N, 1, 1)
    # Inverse of a counter-clockwise quarter turn as displayed (y down): (x, y) <- (S-1-y, x).
    Xr = torch.where(k == 0, X, torch.where(k == 1, W - 1 - Y, torch.where(k == 2, W - 1 - X, Y)))
    Yr = torch.where(k == 0, Y, torch.where(k == 1, X, torch.where(k == 2, H - 1 - Y, W - 1 - X)))
    Xr = torch.where(flip.view(N, 1, 1) != 0, W - 1 - Xr, Xr)
    index = (Yr * W + Xr).view(N, 1, H * W).expand(N, C, H * W)
    return x.reshape(N, C, H * W).gather(2, index).view(N, C, H, W)


# --- general geometric -------------------------------------------------------------------
def geometric_params(n: int, size: int, p: torch.Tensor, like: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random geometric transforms for ``n`` images of ``size`` px: ``[N, 3, 3]`` matrices (same
    dtype as ``like``) mapping source to output positions in pixels about the image centre, and
    which images any transform touched (bool ``[N]``); isotropic scale, rotation, anisotropic
    scale and fractional translation each drawn with probability ``p`` (the identity otherwise)."""
    u = _rand(n * 4, like, generator).view(4, n)
    s = _gate(u[0], p, torch.exp2(_randn(n, like, generator) * SCALE_STD), 1.0)
    theta = _gate(u[1], p, (_rand(n, like, generator) * 2 - 1) * math.pi, 0.0)
    a = _gate(u[2], p, torch.exp2(_randn(n, like, generator) * ANISO_STD), 1.0)
    t = _randn(n, like, generator), _randn(n, like, generator)
    tx = _gate(u[3], p, t[0] * FRAC_TRANSLATE_STD * size, 0.0)
    ty = _gate(u[3], p, t[1] * FRAC_TRANSLATE_STD * size, 0.0)
    return geometric_matrix(s, theta, a, tx, ty), (u < p).any(0)


def geometric_matrix(s: torch.Tensor, theta: torch.Tensor, a: torch.Tensor, tx: torch.Tensor,
                     ty: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` source -> output maps (pixels about the centre, y down) from ``[N]``
    parameters: scale by ``s``, rotate by ``theta`` (radians, clockwise as displayed), scale x by
    ``a`` and y by ``1 / a``, move by ``(tx, ty)`` pixels, in that order."""
    c, sn = torch.cos(theta), torch.sin(theta)
    scale = _mat3([[s, 0.0, 0.0], [0.0, s, 0.0], [0.0, 0.0, 1.0]], s)
    rot = _mat3([[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]], s)
    aniso = _mat3([[a, 0.0, 0.0], [0.0, 1.0 / a, 0.0], [0.0, 0.0, 1.0]], s)
    move = _mat3([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], s)
    return move @ aniso @ rot @ scale


def _bilinear_mirror(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """``x`` ``[N, C, H, W]`` sampled bilinearly at pixel positions ``px``, ``py`` ``[N, h, w]``
    (pixel i's centre at i), mirrored outside: ``[N, C, h, w]``. Gathers only, so its double
    backward exists."""
    N, C, H, W = x.shape
    x0, y0 = torch.floor(px), torch.floor(py)
    fx, fy = (px - x0).unsqueeze(1), (py - y0).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    flat = x.reshape(N, C, H * W)
    h, w = px.shape[1:]

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        index = (_mirror(yi, H) * W + _mirror(xi, W)).view(N, 1, h * w).expand(N, C, h * w)
        return flat.gather(2, index).view(N, C, h, w)

    top = torch.lerp(at(y0, x0), at(y0, x0 + 1), fx)
    bottom = torch.lerp(at(y0 + 1, x0), at(y0 + 1, x0 + 1), fx)
    return torch.lerp(top, bottom, fy)


def geometric(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Images ``x`` ``[N, C, H, W]`` moved by ``matrix`` ``[N, 3, 3]`` (source -> output, pixels
    about the centre), without aliasing: 2x lowpass upsampling, bilinear sampling of the fine
    grid at the inverse-mapped positions (mirrored outside), lowpass decimation. Same shape and
    dtype. The identity matrix gives the input only up to the filters' ripple (:func:`augment`
    passes untouched images through unfiltered)."""
    N, C, H, W = x.shape
    up = upsample2x(x)
    inv = torch.linalg.inv(matrix.detach())
    dev, dt = x.device, x.dtype
    # Fine pixel k's centre in original pixels about the centre: (k + 0.5) / 2 - size / 2.
    fy = (torch.arange(2 * H, device=dev, dtype=dt) + 0.5) / 2 - H / 2
    fx = (torch.arange(2 * W, device=dev, dtype=dt) + 0.5) / 2 - W / 2
    gy, gx = torch.meshgrid(fy, fx, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], 0).view(1, 3, -1)
    src = inv @ pts  # [N, 3, 4HW]
    # Back to fine-grid pixel indices (centre of fine pixel k at index k).
    px = ((src[:, 0] + W / 2) * 2 - 0.5).view(N, 2 * H, 2 * W)
    py = ((src[:, 1] + H / 2) * 2 - 0.5).view(N, 2 * H, 2 * W)
    return downsample2x(_bilinear_mirror(up, px, py))


# --- colour -----------------------------------------------------------------------------
def colour_params(n: int, p: torch.Tensor, like: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random colour transforms for ``n`` RGB images in [-1, 1]: ``[N, 4, 4]`` affine matrices
    on ``(r, g, b, 1)`` (same dtype as ``like``), and which images any transform touched (bool
    ``[N]``); brightness, contrast, luma flip, hue rotation and saturation each drawn with
    probability ``p`` (the identity otherwise)."""
    u = _rand(n * 5, like, generator).view(5, n)
    b = _gate(u[0], p, _randn(n, like, generator) * BRIGHTNESS_STD, 0.0)
    c = _gate(u[1], p, torch.exp2(_randn(n, like, generator) * CONTRAST_STD), 1.0)
    flip = _gate(u[2], p, torch.floor(_rand(n, like, generator) * 2), 0.0)
    theta = _gate(u[3], p, (_rand(n, like, generator) * 2 - 1) * math.pi, 0.0)
    s = _gate(u[4], p, torch.exp2(_randn(n, like, generator) * SATURATION_STD), 1.0)
    return colour_matrix(b, c, flip, theta, s), (u < p).any(0)


def colour_matrix(b: torch.Tensor, c: torch.Tensor, flip: torch.Tensor, theta: torch.Tensor,
                  s: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` affine colour maps on ``(r, g, b, 1)`` from ``[N]`` parameters, applied in
    this order: add ``b`` to every channel, multiply by ``c``, reflect along the grey axis where
    ``flip`` is 1, rotate the hue by ``theta`` radians about the grey axis, scale the chroma (the
    part off the grey axis) by ``s``."""
    n, dt, dev = b.shape[0], b.dtype, b.device
    eye = torch.eye(4, device=dev, dtype=dt).expand(n, 4, 4)
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev, dtype=dt) / math.sqrt(3)
    vv = torch.outer(v, v)  # projection on the grey axis
    # Rotation about the grey axis (Rodrigues): I + sin K + (1 - cos) K^2, K the cross product.
    K = torch.zeros(4, 4, device=dev, dtype=dt)
    K[0, 1], K[0, 2], K[1, 2] = -v[2], v[1], -v[0]
    K = K - K.T
    one = torch.zeros(4, 4, device=dev, dtype=dt)
    one[3, 3] = 1.0
    sn, cs = torch.sin(theta).view(n, 1, 1), torch.cos(theta).view(n, 1, 1)
    hue = eye + sn * K + (1 - cs) * (K @ K)
    luma = eye - 2 * flip.view(n, 1, 1) * vv
    sat = vv + one + (eye - vv - one) * s.view(n, 1, 1)
    contrast = torch.diag_embed(torch.stack([c, c, c, torch.ones_like(c)], -1))
    bright = eye.clone()
    bright[:, :3, 3] = b.view(n, 1)
    return sat @ hue @ luma @ contrast @ bright


def colour(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """RGB images ``x`` ``[N, 3, H, W]`` through affine colour matrices ``[N, 4, 4]``: same
    shape and dtype."""
    N, C, H, W = x.shape
    if C != 3:
        raise ValueError(f"colour augmentation needs 3 channels, got {C}")
    y = matrix[:, :3, :3] @ x.reshape(N, 3, H * W) + matrix[:, :3, 3:]
    return y.view(N, 3, H, W)


# --- the pipeline --------------------------------------------------------------------------
def augment(x: torch.Tensor, p: torch.Tensor, pipe: str = DEFAULT_PIPE,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Every image of ``x`` (float ``[N, 3, S, S]``) through the classes of ``pipe`` in the
    order b, g, c, each transform applied with probability ``p`` (0-d tensor, or a number).

    Same shape and dtype; differentiable (twice) in ``x``. An image none of a class's
    transforms touched passes that class unchanged, bit for bit, so ``p = 0`` returns ``x``'s
    values exactly. Never synchronises with the host.
    """
    check_pipe(pipe)
    N, C, H, W = x.shape
    p = torch.as_tensor(p, device=x.device, dtype=x.dtype)
    n = N
    if "b" in pipe:
        x = blit(x, *blit_params(n, H, p, x, generator))
    if "g" in pipe:
        m, moved = geometric_params(n, H, p, x, generator)
        x = torch.where(moved.view(N, 1, 1, 1), geometric(x, m), x)
    if "c" in pipe:
        m, changed = colour_params(n, p, x, generator)
        x = torch.where(changed.view(N, 1, 1, 1), colour(x, m), x)
    return x


class Augment:
    """The pipeline ``pipe`` at strength :attr:`p` (a 0-d float32 tensor on the images' device,
    moved in place by the training loop), drawing from ``generator``. Calling it augments float
    images ``[N, 3, S, S]`` (autocast off: always in their own dtype)."""

    def __init__(self, pipe: str, p: torch.Tensor, generator: torch.Generator | None = None) -> None:
        self.pipe = check_pipe(pipe)
        self.p, self.generator = p, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return augment(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x,
                           self.p, self.pipe, self.generator)
