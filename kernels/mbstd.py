"""Triton kernels for minibatch standard deviation, its gradient and its gradient's gradient.

Semantics are :func:`fastpggan.ops.reference.minibatch_stddev`: with ``G`` members per group and
``M = N // G`` groups, sample ``n`` belongs to group ``n % M`` (member ``g = n // M``); the
statistic of group ``m`` is ``mean over (c, h, w) of sqrt(var_g(x) + 1e-8)`` (population
variance), written as channel ``C`` of every member of the group.

One program per group ``m`` does all of that group's work, looping over the ``K = C*H*W``
elements in tiles of ``BLOCK_G x BLOCK_K`` (every member at ``BLOCK_K`` positions), so the
statistic never leaves the program: no atomics, no second launch, no host sync. Minibatch stddev
runs once per D pass, at 4x4, on ``N * C * 16`` elements; ``M`` programs are enough for that.
Tensors are addressed through their own 4-D strides (NCHW or channels_last, any mix). Arithmetic
is float32 (float64 for float64 tensors).

The gradient ``dx`` needs ``x`` only: it is read from the forward output ``out[:, :C]``, which
the next conv keeps alive anyway, so the forward saves nothing of its own.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastpggan.kernels.constants import MBSTD_EPS

_EPS = tl.constexpr(MBSTD_EPS)
# Elements per program tile (BLOCK_G * BLOCK_K).
TILE_ELEMS = 2048


@triton.jit
def _offsets(k, C, H, W, sn, sc, sh, sw):
    # flat (c, h, w) index -> element offset, excluding the sample term
    hw = H * W
    c = k // hw
    r = k - c * hw
    h = r // W
    w = r - h * W
    return c * sc + h * sh + w * sw


@triton.jit
def _group_stats(x, gm, G):
    # mean and std over the group axis (0) of a [BLOCK_G, BLOCK_K] tile; rows g >= G are masked
    mu = tl.sum(x, axis=0) / G
    d = tl.where(gm[:, None], x - mu[None, :], 0.0)
    std = tl.sqrt(tl.sum(d * d, axis=0) / G + _EPS)
    return d, std


@triton.jit
def _dstat(dout_ptr, n, gm, C, H, W, sdn, sdc, sdh, sdw, ACC: tl.constexpr,
           BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr):
    # sum of dout over the extra channel C of every member: d loss / d stat
    acc = tl.zeros([BLOCK_K], dtype=ACC)
    for k0 in range(0, H * W, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        km = k < H * W
        h = k // W
        off = n[:, None] * sdn + C * sdc + (h * sdh + (k - h * W) * sdw)[None, :]
        v = tl.load(dout_ptr + off, mask=gm[:, None] & km[None, :], other=0.0)
        acc += tl.sum(v.to(ACC), axis=0)
    return tl.sum(acc, axis=0)


@triton.jit
def _fill_extra(ptr, val, n, gm, C, H, W, son, soc, soh, sow, BLOCK_K: tl.constexpr):
    # out[n, C, :, :] = val for every member n of the group
    for k0 in range(0, H * W, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        km = k < H * W
        h = k // W
        off = n[:, None] * son + C * soc + (h * soh + (k - h * W) * sow)[None, :]
        v = tl.zeros([BLOCK_K], dtype=tl.float32) + val
        tl.store(ptr + off, tl.broadcast_to(v[None, :], off.shape).to(ptr.dtype.element_ty),
                 mask=gm[:, None] & km[None, :])


@triton.jit
def mbstd_fwd(
    x_ptr, out_ptr,
    M, G, C, H, W,
    sxn, sxc, sxh, sxw,
    son, soc, soh, sow,
    FP64: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``out[:, :C] = x``; ``out[:, C] = stat[group]``. Grid ``(M,)``."""
    ACC = tl.float64 if FP64 else tl.float32
    m = tl.program_id(0).to(tl.int64)
    g = tl.arange(0, BLOCK_G)
    gm = g < G
    n = g * M + m
    K = C * H * W
    acc = tl.zeros([BLOCK_K], dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        km = k < K
        mask = gm[:, None] & km[None, :]
        x = tl.load(x_ptr + n[:, None] * sxn + _offsets(k, C, H, W, sxn, sxc, sxh, sxw)[None, :],
                    mask=mask, other=0.0)
        tl.store(out_ptr + n[:, None] * son + _offsets(k, C, H, W, son, soc, soh, sow)[None, :],
                 x, mask=mask)
        _, std = _group_stats(x.to(ACC), gm, G)
        acc += tl.where(km, std, 0.0)
    stat = tl.sum(acc, axis=0) / K
    _fill_extra(out_ptr, stat, n, gm, C, H, W, son, soc, soh, sow, BLOCK_K)


@triton.jit
def mbstd_bwd(
    dout_ptr, out_ptr, dx_ptr,
    M, G, C, H, W,
    sdn, sdc, sdh, sdw,
    son, soc, soh, sow,
    sgn, sgc, sgh, sgw,
    FP64: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``dx = dout[:, :C] + k * (x - mu) / std`` with ``k = dstat / (G * K)``. Grid ``(M,)``."""
    ACC = tl.float64 if FP64 else tl.float32
    m = tl.program_id(0).to(tl.int64)
    g = tl.arange(0, BLOCK_G)
    gm = g < G
    n = g * M + m
    K = C * H * W
    kk = _dstat(dout_ptr, n, gm, C, H, W, sdn, sdc, sdh, sdw, ACC, BLOCK_G, BLOCK_K) / (G * K)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        mask = gm[:, None] & (k < K)[None, :]
        x = tl.load(out_ptr + n[:, None] * son + _offsets(k, C, H, W, son, soc, soh, sow)[None, :],
                    mask=mask, other=0.0).to(ACC)
        d, std = _group_stats(x, gm, G)
        dy = tl.load(dout_ptr + n[:, None] * sdn + _offsets(k, C, H, W, sdn, sdc, sdh, sdw)[None, :],
                     mask=mask, other=0.0).to(ACC)
        dx = dy + kk * d / std[None, :]
        tl.store(dx_ptr + n[:, None] * sgn + _offsets(k, C, H, W, sgn, sgc, sgh, sgw)[None, :],
                 dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def mbstd_bwd2(
    ddx_ptr, dout_ptr, out_ptr, ddout_ptr, gx_ptr,
    M, G, C, H, W,
    sen, sec, seh, sew,
    sdn, sdc, sdh, sdw,
    son, soc, soh, sow,
    sfn, sfc, sfh, sfw,
    sgn, sgc, sgh, sgw,
    FP64: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Backward of ``mbstd_bwd`` for an incoming ``ddx`` (grad of ``dx``). Grid ``(M,)``.

    ``ddout[:, :C] = ddx``; ``ddout[:, C] = sum_{g,k}(ddx * (x - mu) / std) / (G * K)``;
    ``gx = k / std * (ddx - mean_g(ddx) - (x - mu) / std**2 * mean_g(ddx * (x - mu)))``.
    """
    ACC = tl.float64 if FP64 else tl.float32
    m = tl.program_id(0).to(tl.int64)
    g = tl.arange(0, BLOCK_G)
    gm = g < G
    n = g * M + m
    K = C * H * W
    kk = _dstat(dout_ptr, n, gm, C, H, W, sdn, sdc, sdh, sdw, ACC, BLOCK_G, BLOCK_K) / (G * K)
    q = tl.zeros([BLOCK_K], dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        mask = gm[:, None] & (k < K)[None, :]
        x = tl.load(out_ptr + n[:, None] * son + _offsets(k, C, H, W, son, soc, soh, sow)[None, :],
                    mask=mask, other=0.0).to(ACC)
        d, std = _group_stats(x, gm, G)
        e_raw = tl.load(ddx_ptr + n[:, None] * sen + _offsets(k, C, H, W, sen, sec, seh, sew)[None, :],
                        mask=mask, other=0.0)
        tl.store(ddout_ptr + n[:, None] * sfn + _offsets(k, C, H, W, sfn, sfc, sfh, sfw)[None, :],
                 e_raw.to(ddout_ptr.dtype.element_ty), mask=mask)
        e = e_raw.to(ACC)
        inv = 1.0 / std
        ed = tl.sum(e * d, axis=0)  # masked rows of e and d are 0
        q += tl.where(k < K, ed * inv, 0.0)
        e_mean = tl.sum(e, axis=0) / G
        gx = (kk * inv)[None, :] * (e - e_mean[None, :] - d * (inv * inv * ed / G)[None, :])
        tl.store(gx_ptr + n[:, None] * sgn + _offsets(k, C, H, W, sgn, sgc, sgh, sgw)[None, :],
                 gx.to(gx_ptr.dtype.element_ty), mask=mask)
    _fill_extra(ddout_ptr, tl.sum(q, axis=0) / (G * K), n, gm, C, H, W, sfn, sfc, sfh, sfw, BLOCK_K)
    # gx is the gradient w.r.t. the whole forward output; the grad op never reads its channel C
    _fill_extra(gx_ptr, 0.0, n, gm, C, H, W, sgn, sgc, sgh, sgw, BLOCK_K)
