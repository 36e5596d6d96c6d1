"""The Triton kernels registered as PyTorch custom ops, with their autograd formulas.

Registered with ``torch.library.triton_op`` + ``wrap_triton`` so that ``torch.compile`` on CUDA
traces into the kernels (no graph break), and ``register_autograd`` for the gradients. Ops
(namespace ``fastpggan``; ``s`` is ``out_scale``; ``x``, ``y``, ``dy``... are ``[N, C, *]``):

    bias_lrelu(x, b, s) -> y                   D epilogue, differentiable to any order
    bias_lrelu_grad(dy, y, s) -> dx            its backward; its own backward is itself
    bias_lrelu_bwd(dy, y, s) -> dx, db_part    fused first-order backward (no graph kept)
    bias_lrelu_pixelnorm(x, b, s) -> y, rstd   G epilogue (rstd ``[N, S]``), first order
    bias_lrelu_pixelnorm_bwd(dy, y, rstd, s) -> dx, db_part
    minibatch_stddev(x, G) -> out              ``[N, C, H, W]`` -> ``[N, C + 1, H, W]``
    minibatch_stddev_grad(dout, out, G) -> dx  differentiable once more (WGAN-GP needs that)
    minibatch_stddev_grad2(ddx, dout, out, G) -> ddout, gout

``db_part`` is ``[programs, C]`` and, like ``rstd``, float32 (float64 for float64 inputs): per-program partial bias gradients, summed here.
The StyleGAN2 ``bias_act`` pattern gives the second-order gradients: the backward of an op is an
op with its own autograd formula. The D-side gradient ops save the forward *outputs* (``y``,
``out``), which the next layer keeps alive anyway, never a copy of the input.

On CPU tensors the kernels run only under ``TRITON_INTERPRET=1`` (tests), launched directly
(not through ``wrap_triton``), and skipped for fake tensors (shape propagation needs only the
allocations).
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake
from torch.library import register_autograd, triton_op, wrap_triton

from fastpggan.kernels import epilogue as ek
from fastpggan.kernels import mbstd as mk
from fastpggan.ops import toolchain

INTERPRETED = toolchain.interpreted(ek.epilogue_fwd)


def _launch(kernel, grid: tuple[int, ...], probe: Tensor, *args, **meta) -> None:
    if INTERPRETED:
        if is_fake(probe):
            return  # the interpreter would run on fake storage; shapes are already known
        # launched directly: nothing traces into CPU kernels, and torch 2.7's wrap_triton
        # refuses interpreted ones (newer torch hands them back unwrapped)
        kernel[grid](*args, **meta)
        return
    wrap_triton(kernel)[grid](*args, **meta)


# ------------------------------------------------------------------------------------------------
# Epilogues: tensors viewed as [N, C, S]


def _view3(t: Tensor) -> tuple[Tensor, int, int, int, tuple[int, int, int]]:
    """``(t', N, C, S, (sn, sc, ss))`` with ``t'`` = ``t`` or a contiguous copy if H..W can't merge.

    A 2-D ``[N, C]`` tensor is seen as ``[1, C, N]``: the batch becomes the position axis.
    """
    if t.dim() == 2:
        return t, 1, t.shape[1], t.shape[0], (0, t.stride(1), t.stride(0))
    spatial = [(sz, st) for sz, st in zip(t.shape[2:], t.stride()[2:]) if sz != 1]
    mergeable = all(spatial[i][1] == spatial[i + 1][1] * spatial[i + 1][0]
                    for i in range(len(spatial) - 1))
    if not mergeable:
        t = t.contiguous()
        spatial = [(sz, st) for sz, st in zip(t.shape[2:], t.stride()[2:]) if sz != 1]
    ss = spatial[-1][1] if spatial else 1
    n, c = t.shape[0], t.shape[1]
    return t, n, c, t[0, 0].numel() if n and c else 0, (t.stride(0), t.stride(1), ss)


def epilogue_config(c: int, s: int) -> tuple[int, int, int]:
    """``(BLOCK_C, BLOCK_S, num_warps)`` used for ``C`` channels at ``S`` positions per sample."""
    if c > ek.MAX_CHANNELS:
        raise ValueError(f"the Triton epilogues take at most {ek.MAX_CHANNELS} channels, got {c}")
    block_c = triton.next_power_of_2(c)
    block_s = max(1, min(triton.next_power_of_2(max(s, 1)), ek.TILE_ELEMS // block_c))
    num_warps = min(16, max(1, block_c * block_s // ek.ELEMS_PER_WARP))
    return block_c, block_s, num_warps


def _empty_like(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    # same strides as t (NCHW or channels_last stays so); t is dense after _view3
    return torch.empty_strided(t.shape, t.stride(), dtype=dtype or t.dtype, device=t.device)


def _acc_dtype(t: Tensor) -> torch.dtype:
    # the kernels' arithmetic type: float64 for float64 tensors (gradcheck), else float32
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _fwd(x: Tensor, bias: Tensor, out_scale: float, pixnorm: bool) -> tuple[Tensor, Tensor]:
    x, n, c, s, sx = _view3(x)
    y = _empty_like(x)
    rstd = torch.empty((n, s) if pixnorm else (0,), dtype=_acc_dtype(x), device=x.device)
    if x.numel():
        block_c, block_s, warps = epilogue_config(c, s)
        _launch(ek.epilogue_fwd, (triton.cdiv(s, block_s), n), x,
                x, bias, y, rstd, c, s, float(out_scale), *sx, *_view3(y)[4],
                PIXNORM=pixnorm, FP64=x.dtype == torch.float64,
                BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps)
    return y, rstd


def _bwd(dy: Tensor, y: Tensor, rstd: Tensor | None, out_scale: float, write_db: bool
         ) -> tuple[Tensor, Tensor]:
    y, n, c, s, sy = _view3(y)
    dy, _, _, _, sd = _view3(dy)
    dx = _empty_like(y)
    block_c, block_s, warps = epilogue_config(c, s)
    tiles = triton.cdiv(s, block_s)
    # enough tiles per program that the partial-bias buffer stays under MAX_BWD_PROGRAMS rows
    per_prog = triton.cdiv(n * tiles, ek.MAX_BWD_PROGRAMS) if write_db else 1
    progs = triton.cdiv(tiles, per_prog)
    db = torch.empty((n * progs, c) if write_db else (0,), dtype=_acc_dtype(y), device=y.device)
    if y.numel():
        _launch(ek.epilogue_bwd, (progs, n), y,
                dy, y, rstd if rstd is not None else y, dx, db, c, s, float(out_scale), per_prog,
                *sd, *sy, *_view3(dx)[4],
                PIXNORM=rstd is not None, WRITE_DB=write_db, FP64=y.dtype == torch.float64,
                BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps)
    return dx, db


def _reduce_dims(x: Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


@triton_op("fastpggan::bias_lrelu", mutates_args=())
def bias_lrelu(x: Tensor, bias: Tensor, out_scale: float) -> Tensor:
    return _fwd(x, bias, out_scale, pixnorm=False)[0]


@triton_op("fastpggan::bias_lrelu_grad", mutates_args=())
def bias_lrelu_grad(dy: Tensor, y: Tensor, out_scale: float) -> Tensor:
    return _bwd(dy, y, None, out_scale, write_db=False)[0]


@triton_op("fastpggan::bias_lrelu_bwd", mutates_args=())
def bias_lrelu_bwd(dy: Tensor, y: Tensor, out_scale: float) -> tuple[Tensor, Tensor]:
    return _bwd(dy, y, None, out_scale, write_db=True)


@triton_op("fastpggan::bias_lrelu_pixelnorm", mutates_args=())
def bias_lrelu_pixelnorm(x: Tensor, bias: Tensor, out_scale: float) -> tuple[Tensor, Tensor]:
    return _fwd(x, bias, out_scale, pixnorm=True)


@triton_op("fastpggan::bias_lrelu_pixelnorm_bwd", mutates_args=())
def bias_lrelu_pixelnorm_bwd(dy: Tensor, y: Tensor, rstd: Tensor, out_scale: float
                             ) -> tuple[Tensor, Tensor]:
    return _bwd(dy, y, rstd, out_scale, write_db=True)


def _save_output(ctx, inputs, output) -> None:
    y = output[0] if isinstance(output, tuple) else output
    ctx.save_for_backward(y, *(output[1:] if isinstance(output, tuple) else ()))
    ctx.out_scale = inputs[-1]
    ctx.bias_dtype = inputs[1].dtype


def _bias_lrelu_backward(ctx, dy: Tensor):
    (y,) = ctx.saved_tensors
    s = ctx.out_scale
    if torch.is_grad_enabled():
        # create_graph=True (WGAN-GP): keep a graph through the differentiable grad op
        dx = bias_lrelu_grad(dy, y, s)
        return dx, dx.sum(_reduce_dims(dx)).to(ctx.bias_dtype), None
    dx, db = bias_lrelu_bwd(dy, y, s)
    return dx, db.sum(0).to(ctx.bias_dtype), None


def _bias_lrelu_grad_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])
    ctx.out_scale = inputs[2]


def _bias_lrelu_grad_backward(ctx, ddx: Tensor):
    # dx = dy * s * lrelu'(y): linear in dy; lrelu' is piecewise constant, so d/dy is zero
    (y,) = ctx.saved_tensors
    return bias_lrelu_grad(ddx, y, ctx.out_scale), None, None


def _g_setup(ctx, inputs, output) -> None:
    _save_output(ctx, inputs, output)
    ctx.mark_non_differentiable(output[1])


def _g_backward(ctx, dy: Tensor, _drstd: Tensor | None):
    y, rstd = ctx.saved_tensors
    if torch.is_grad_enabled() and dy.requires_grad:
        raise NotImplementedError(
            "double backward through the Triton G epilogue (bias_lrelu_pixelnorm) is not "
            "implemented; use impl='reference' for it"
        )
    dx, db = bias_lrelu_pixelnorm_bwd(dy, y, rstd, ctx.out_scale)
    return dx, db.sum(0).to(ctx.bias_dtype), None


register_autograd("fastpggan::bias_lrelu", _bias_lrelu_backward, setup_context=_save_output)
register_autograd("fastpggan::bias_lrelu_grad", _bias_lrelu_grad_backward,
                  setup_context=_bias_lrelu_grad_setup)
register_autograd("fastpggan::bias_lrelu_pixelnorm", _g_backward, setup_context=_g_setup)


# ------------------------------------------------------------------------------------------------
# Minibatch stddev: one program per group


def mbstd_config(group: int) -> tuple[int, int, int]:
    """``(BLOCK_G, BLOCK_K, num_warps)`` used for groups of ``group`` samples."""
    block_g = triton.next_power_of_2(group)
    return block_g, max(16, mk.TILE_ELEMS // block_g), 8


def _strides4(t: Tensor) -> tuple[int, ...]:
    return tuple(t.stride())


def _check4(x: Tensor, group: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"minibatch_stddev expects [N, C, H, W], got shape {tuple(x.shape)}")
    if group < 1 or x.shape[0] % group:
        raise ValueError(f"group size {group} must divide the batch {x.shape[0]}")


def _out_like(x: Tensor, channels: int) -> Tensor:
    n, _, h, w = x.shape
    fmt = (torch.channels_last
           if x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous()
           else torch.contiguous_format)
    return torch.empty((n, channels, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)


def _mbstd_launch(kernel, ref: Tensor, group: int, *tensors: Tensor) -> None:
    n, c, h, w = ref.shape
    if n == 0:
        return
    block_g, block_k, warps = mbstd_config(group)
    strides = [s for t in tensors for s in _strides4(t)]
    _launch(kernel, (n // group,), ref, *tensors, n // group, group, c, h, w, *strides,
            FP64=ref.dtype == torch.float64, BLOCK_G=block_g, BLOCK_K=block_k, num_warps=warps)


@triton_op("fastpggan::minibatch_stddev", mutates_args=())
def minibatch_stddev(x: Tensor, group: int) -> Tensor:
    _check4(x, group)
    out = _out_like(x, x.shape[1] + 1)
    _mbstd_launch(mk.mbstd_fwd, x, group, x, out)
    return out


@triton_op("fastpggan::minibatch_stddev_grad", mutates_args=())
def minibatch_stddev_grad(dout: Tensor, out: Tensor, group: int) -> Tensor:
    x = out[:, :-1]
    dx = _out_like(x, x.shape[1])
    _mbstd_launch(mk.mbstd_bwd, x, group, dout, out, dx)
    return dx


@triton_op("fastpggan::minibatch_stddev_grad2", mutates_args=())
def minibatch_stddev_grad2(ddx: Tensor, dout: Tensor, out: Tensor, group: int
                           ) -> tuple[Tensor, Tensor]:
    x = out[:, :-1]
    ddout = _out_like(out, out.shape[1])
    gout = _out_like(out, out.shape[1])
    _mbstd_launch(mk.mbstd_bwd2, x, group, ddx, dout, out, ddout, gout)
    return ddout, gout


def _mbstd_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(output)
    ctx.group = inputs[1]


def _mbstd_backward(ctx, dout: Tensor):
    (out,) = ctx.saved_tensors
    return minibatch_stddev_grad(dout, out, ctx.group), None


def _mbstd_grad_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.group = inputs[2]


def _mbstd_grad_backward(ctx, ddx: Tensor):
    dout, out = ctx.saved_tensors
    # gout: gradient w.r.t. `out` (its channel C is zero: the grad op reads only out[:, :C])
    ddout, gout = minibatch_stddev_grad2(ddx, dout, out, ctx.group)
    return ddout, gout, None


register_autograd("fastpggan::minibatch_stddev", _mbstd_backward, setup_context=_mbstd_setup)
register_autograd("fastpggan::minibatch_stddev_grad", _mbstd_grad_backward,
                  setup_context=_mbstd_grad_setup)
