"""The numbers PGGAN's fused ops are defined by, shared by the kernels and the references.

Imported as ``fastpggan.kernels.constants`` by the Triton kernels of this folder and by
:mod:`fastpggan.ops.reference`; it imports nothing, so the references need neither Triton nor
the kernels.
"""

# LeakyReLU's slope for negative inputs, in every conv and dense layer of G and D.
LRELU_SLOPE = 0.2
# Pixel norm: x / sqrt(mean over channels of x**2 + eps).
PIXEL_NORM_EPS = 1e-8
# Minibatch stddev: sqrt(var over the group + eps), so that a group of identical samples (or of
# one) gives a finite statistic and gradient.
MBSTD_EPS = 1e-8
