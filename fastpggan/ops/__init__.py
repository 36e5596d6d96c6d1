"""PGGAN's fused ops, each declared once here and exposed as one public function.

An op's declaration (:class:`~fastpggan.ops.registry.FusedOp`, read by every other module:
the self-check, the ahead-of-time compile, the benchmarks and tests) names its pure-PyTorch
reference in :mod:`fastpggan.ops.reference`, its Triton implementation (the ``torch.library`` ops
of :mod:`fastpggan.ops.triton_ops`, imported lazily: a machine without Triton still imports this
package), its self-check inputs (:mod:`fastpggan.ops.verify`) and the kernels it launches. Its
public function takes the reference's arguments plus ``impl``, which picks the implementation
(:mod:`fastpggan.ops.dispatch`); :func:`describe_impl` says in one line which one a device gets.
"""

from __future__ import annotations

import torch

from fastpggan.ops import dispatch, reference
from fastpggan.ops.dispatch import (
    IMPLS,
    Impl,
    check_impl,
    check_ops,
    describe_impl,
    impl_problem,
    load_triton_ops,
    resolve_impl,
)
from fastpggan.ops.reference import mbstd_group_size, pixel_norm
from fastpggan.ops.registry import (
    FusedOp,
    KernelFile,
    SelfCheck,
    activation,
    activation_and_bias,
    register,
)

__all__ = [
    "IMPLS",
    "Impl",
    "bias_lrelu",
    "bias_lrelu_pixelnorm",
    "check_impl",
    "check_ops",
    "describe_impl",
    "impl_problem",
    "mbstd_group_size",
    "minibatch_stddev",
    "pixel_norm",
    "reference",
    "resolve_impl",
]

# The kernel files. Launch configurations are compiled ahead of time at PGGAN's shapes: for the
# epilogues, feature maps of nf(stage) channels at 4x4..1024x1024 and the dense layers' [N, 512]
# (seen as [1, 512, N]) for N up to 128; for minibatch stddev, the groups of batches of 1..128.
EPILOGUE = KernelFile(
    "epilogue",
    fp32=frozenset({"b_ptr", "rstd_ptr", "db_ptr", "out_scale"}),  # parameters and statistics
    config="epilogue_config",
    shapes=tuple((c, 4**k) for c in (16, 32, 64, 128, 256, 512) for k in range(1, 11))
    + tuple((512, n) for n in (1, 2, 4, 8, 16, 32, 64, 128)),
    quick=True,
)
MBSTD = KernelFile(
    "mbstd",
    fp32=frozenset(),
    config="mbstd_config",
    shapes=tuple((mbstd_group_size(n),) for n in range(1, 129)),
)
# Not 1: the references skip the multiplication at out_scale=1.
_CHECK_SCALE = 0.7
# Awkward shapes: odd channel counts and sizes, a dense [N, C] input; an uneven group (6 samples
# make groups of 3, the largest divisor of 6 up to 4) for minibatch stddev.
_EPILOGUE_SHAPES = ((3, 5, 3, 5), (4, 5))


BIAS_LRELU = register(FusedOp(
    name="bias_lrelu",
    label="d_epilogue",
    reference=reference.bias_lrelu,
    triton=lambda T, x, bias, out_scale: T.bias_lrelu(x, bias, float(out_scale)),
    check=SelfCheck(_EPILOGUE_SHAPES, activation_and_bias, (_CHECK_SCALE,),
                    twice_differentiable=True),
    kernels=(
        EPILOGUE.use("epilogue_fwd", PIXNORM=False),
        EPILOGUE.use("epilogue_bwd", PIXNORM=False, WRITE_DB=True),  # backward
        EPILOGUE.use("epilogue_bwd", PIXNORM=False, WRITE_DB=False),  # the differentiable grad op
    ),
))


def bias_lrelu(
    x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0, impl: Impl = "auto"
) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) * out_scale``; ``x`` ``[N, C, *]``, ``bias`` ``[C]``.

    Any float dtype; differentiable to any order (the Triton version: its backward is itself a
    differentiable op, so WGAN-GP's double backward works).
    """
    return dispatch.run(BIAS_LRELU, impl, x, bias, out_scale)


BIAS_LRELU_PIXELNORM = register(FusedOp(
    name="bias_lrelu_pixelnorm",
    label="g_epilogue",
    reference=reference.bias_lrelu_pixelnorm,
    triton=lambda T, x, bias, out_scale: T.bias_lrelu_pixelnorm(x, bias, float(out_scale))[0],
    check=SelfCheck(_EPILOGUE_SHAPES, activation_and_bias, (_CHECK_SCALE,),
                    twice_differentiable=False),
    kernels=(
        EPILOGUE.use("epilogue_fwd", PIXNORM=True),
        EPILOGUE.use("epilogue_bwd", PIXNORM=True, WRITE_DB=True),
    ),
))


def bias_lrelu_pixelnorm(
    x: torch.Tensor, bias: torch.Tensor, out_scale: float = 1.0, impl: Impl = "auto"
) -> torch.Tensor:
    """``pixel_norm(leaky_relu(x + bias, 0.2)) * out_scale``; ``x`` ``[N, C, *]``.

    The Triton version is differentiable once (the generator is never differentiated twice).
    """
    return dispatch.run(BIAS_LRELU_PIXELNORM, impl, x, bias, out_scale)


MINIBATCH_STDDEV = register(FusedOp(
    name="minibatch_stddev",
    label="mbstd",
    reference=reference.minibatch_stddev,
    # the group size is a function of the static batch size: no host sync, a constant when traced
    triton=lambda T, x, group_size: T.minibatch_stddev(x, mbstd_group_size(x.shape[0], group_size)),
    check=SelfCheck(((6, 3, 3, 5),), activation, (4,), twice_differentiable=True),
    kernels=(MBSTD.use("mbstd_fwd"), MBSTD.use("mbstd_bwd"), MBSTD.use("mbstd_bwd2")),
))


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, impl: Impl = "auto") -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C + 1, H, W]``; see :func:`reference.minibatch_stddev`."""
    return dispatch.run(MINIBATCH_STDDEV, impl, x, group_size)
