"""Triton kernels for PGGAN's own layers (imported as ``fastpggan.kernels``).

This folder is installed under the ``fastpggan`` package (see ``pyproject.toml``), never as a
top-level ``kernels`` module. Kernels here are raw Triton code; the public, dispatching ops that
call them live in :mod:`fastpggan.ops`, each beside its pure-PyTorch reference.

Modules: ``epilogue`` (bias + LeakyReLU [+ pixel norm] + output scale, forward and backward, for
G and D), ``mbstd`` (minibatch stddev, its gradient and its gradient's gradient), and
``constants`` (LeakyReLU's slope and the epsilons, which the references in
:mod:`fastpggan.ops.reference` import too). Compile the kernels ahead of time for real GPUs with
``python -m fastpggan.ops.aot`` (no GPU needed).
"""
