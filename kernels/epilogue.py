"""Triton kernels for the conv epilogues: bias + LeakyReLU 0.2 (+ pixel norm) + output scale.

Every tensor is seen as a 3-D ``[N, C, S]`` array through its own strides ``(sn, sc, ss)``: a
4-D NCHW or channels_last activation merges H and W into S; a 2-D ``[N, C]`` dense activation is
passed as ``[1, C, N]`` (the batch becomes the position axis). One program owns a tile of
``BLOCK_C x BLOCK_S`` elements: every channel (``BLOCK_C >= C``, so pixel norm's reduction over
channels stays in registers) at ``BLOCK_S`` positions of one sample ``n``. Arithmetic is float32
(float64 for float64 tensors, so that the ops can be gradchecked); loads and stores keep the
tensors' own dtypes.

Forward (``epilogue_fwd``) saves nothing but its output ``y`` and, for pixel norm, the per-position
``rstd = 1/sqrt(mean_c(a**2) + eps)`` (``[N, S]``, float32; float64 for float64 tensors): ``y``
is the next layer's input, kept alive by that layer anyway, and both LeakyReLU's mask and the pre-norm activation ``a = y/(s*rstd)``
are recovered from it. Backward (``epilogue_bwd``) is one pass that also writes per-program
partial bias gradients ``[programs, C]`` (float32), summed afterwards by a small torch reduction.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastpggan.kernels.constants import LRELU_SLOPE, PIXEL_NORM_EPS

_SLOPE = tl.constexpr(LRELU_SLOPE)
_EPS = tl.constexpr(PIXEL_NORM_EPS)
# Elements per program tile, spread at 128 per warp: ptxas gives the backward ~64 registers at a
# full tile of 16 warps (4096-element tiles needed ~120 at 16 warps and spilled at 4).
TILE_ELEMS = 2048
ELEMS_PER_WARP = 128
# The bias-gradient partials have one row per program; keep that buffer small.
MAX_BWD_PROGRAMS = 1024
MAX_CHANNELS = TILE_ELEMS


@triton.jit
def _lrelu_grad(g, y, s):
    # g * leaky_relu'(t), the sign of t read from the saved output y = s * leaky_relu(t):
    # sign(t) = sign(y) * sign(s). s == 0 makes every y and g zero, whichever slope is picked.
    # (multiplying g by the constant keeps float64 exact; a float32 0.2 factor would not)
    pos = tl.where(s > 0, y > 0, y < 0)
    return tl.where(pos, g, g * _SLOPE)


@triton.jit
def epilogue_fwd(
    x_ptr, b_ptr, y_ptr, rstd_ptr,
    C, S, out_scale,
    sxn, sxc, sxs,
    syn, syc, sys_,
    PIXNORM: tl.constexpr, FP64: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """``y = [pixel_norm](leaky_relu(x + b)) * out_scale``; ``rstd[n, s]`` stored when PIXNORM."""
    ACC = tl.float64 if FP64 else tl.float32
    pid_s = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    cm = c < C
    mask = cm[:, None] & (s < S)[None, :]
    x = tl.load(x_ptr + n * sxn + c[:, None] * sxc + s[None, :] * sxs, mask=mask, other=0.0)
    b = tl.load(b_ptr + c, mask=cm, other=0.0).to(ACC)
    t = x.to(ACC) + b[:, None]
    a = tl.where(t > 0, t, t * _SLOPE)
    if PIXNORM:
        # masked channels hold lrelu(0 + 0) = 0, so they add nothing to the sum of squares
        r = 1.0 / tl.sqrt(tl.sum(a * a, axis=0) / C + _EPS)  # [BLOCK_S]
        a = a * r[None, :]
        tl.store(rstd_ptr + n * S + s, r.to(rstd_ptr.dtype.element_ty), mask=s < S)
    y = a * out_scale
    tl.store(y_ptr + n * syn + c[:, None] * syc + s[None, :] * sys_, y.to(y_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def epilogue_bwd(
    dy_ptr, y_ptr, rstd_ptr, dx_ptr, db_ptr,
    C, S, out_scale, tiles_per_prog,
    sdn, sdc, sds,
    syn, syc, sys_,
    sgn, sgc, sgs,
    PIXNORM: tl.constexpr, WRITE_DB: tl.constexpr, FP64: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """``dx`` of the epilogue from ``dy``, the saved ``y`` (and ``rstd``); optional bias partials.

    With ``a = y / (s r)``: ``dx = mask * r * (s * dy - y * mean_c(dy * y) / s)`` for pixel norm,
    ``dx = mask * s * dy`` without. The program handles ``tiles_per_prog`` consecutive position
    tiles of sample ``n`` and writes ``sum`` of its ``dx`` per channel to row
    ``n * num_programs(0) + pid`` of ``db`` (only when WRITE_DB).
    """
    ACC = tl.float64 if FP64 else tl.float32
    pid_s = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    cm = c < C
    s_scale = tl.zeros([], ACC) + out_scale
    inv_s = tl.where(s_scale != 0, 1.0 / tl.where(s_scale != 0, s_scale, 1.0), 0.0)
    db_acc = tl.zeros([BLOCK_C], dtype=ACC)
    for i in range(0, tiles_per_prog):
        s = (pid_s * tiles_per_prog + i) * BLOCK_S + tl.arange(0, BLOCK_S)
        sm = s < S
        mask = cm[:, None] & sm[None, :]
        dy = tl.load(dy_ptr + n * sdn + c[:, None] * sdc + s[None, :] * sds, mask=mask,
                     other=0.0).to(ACC)
        y = tl.load(y_ptr + n * syn + c[:, None] * syc + s[None, :] * sys_, mask=mask,
                    other=0.0).to(ACC)
        if PIXNORM:
            r = tl.load(rstd_ptr + n * S + s, mask=sm, other=0.0).to(ACC)
            dot = tl.sum(dy * y, axis=0) / C  # [BLOCK_S]; masked entries are 0
            dx = _lrelu_grad(r[None, :] * (s_scale * dy - y * (dot * inv_s)[None, :]), y, s_scale)
        else:
            dx = _lrelu_grad(s_scale * dy, y, s_scale)
        dx = tl.where(mask, dx, 0.0)
        tl.store(dx_ptr + n * sgn + c[:, None] * sgc + s[None, :] * sgs,
                 dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if WRITE_DB:
            db_acc += tl.sum(dx, axis=1)
    if WRITE_DB:
        row = n * tl.num_programs(0) + pid_s
        tl.store(db_ptr + row * C + c, db_acc.to(db_ptr.dtype.element_ty), mask=cm)
