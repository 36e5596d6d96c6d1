"""One training step's updates: the critic (WGAN-GP + drift), the generator, the G average.

:class:`TrainSteps` runs them eagerly or under ``torch.compile``, in fp32 or with autocast.
``torch.compile`` refuses double backward through an aot-autograd graph, and the penalty needs
one, so the compiled critic step is split: the two scoring passes (real, fake) run compiled and
the penalty pass runs eagerly on the same weights. ``bench/d_step_arrangements.py`` measures
this against the alternatives (the whole loss through ``torch.func`` as one compiled graph; lazy
penalty); see bench/RESULTS.md for the figures.

Graphs per resolution under compile: the fade phase passes ``fade`` as a 0-d tensor (its value
changes every step without a recompile), the stable phase a Python 1.0 (the old path is skipped);
G runs without grad (fakes for D) and with grad (G step); D runs with weight grads (D step) and
frozen (G step). So at most 4 graphs of G and 4 of D per resolution.

Conditional runs (the authors' AC-GAN) pass class labels as int64 tensors (never Python numbers,
so no value is baked into a graph): D's fakes are made with the reals' labels, G's with labels
the caller draws at the data's frequencies; the label cross-entropy (:func:`~fastpggan.loss.label_term`,
weight ``cond_weight``) joins the reals' and the fakes' terms of D's loss and G's loss. The
penalty pass takes the score alone.

Two compile backends (:data:`COMPILE_BACKENDS`): ``"inductor"`` (torch's default: generated
Triton code, CUDA GPUs of compute capability 7.0+ or the CPU) and ``"cudagraphs"`` (the traced
graphs replayed as CUDA graphs, no generated code: runs on any CUDA GPU, the GTX 1080's 6.1
included; on CPU tensors torch skips the graphs and runs the traced ops as they are).
:func:`resolve_compile` picks one for a device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
from torch import nn

from fastpggan.loss import (
    CriticTerms,
    critic_fake_term,
    critic_penalty_term,
    critic_real_term,
    g_loss_wgan,
    gradient_penalty,
    label_term,
    penalty_upscale,
)

Fade = float | torch.Tensor
PRECISIONS = ("fp32", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Graphs per compiled forward: up to 4 per resolution (see above) over 9 resolutions.
RECOMPILE_LIMIT = 64
COMPILE_BACKENDS = ("inductor", "cudagraphs")
# torch's inductor refuses CUDA GPUs below this (GPUTooOldForTriton); CUDA graphs do not.
INDUCTOR_MIN_CAPABILITY = (7, 0)
# Whether --compile is on by default on CUDA GPUs below INDUCTOR_MIN_CAPABILITY (with the
# cudagraphs backend). Off: no GPU measurement has shown it faster than eager there yet.
COMPILE_BY_DEFAULT_BELOW_INDUCTOR = False
# TensorFloat-32 (a 10-bit mantissa in fp32 convolutions and matmuls): Ampere and newer GPUs.
TF32_MIN_CAPABILITY = (8, 0)


def resolve_compile(
    flag: bool | None, backend: str, device_type: str, capability: tuple[int, int] | None
) -> tuple[bool, str]:
    """``(compile on?, backend)`` for ``--compile``/``--no-compile`` (``flag``, ``None`` when not
    given) and ``--compile-backend`` (``"auto"`` or one of :data:`COMPILE_BACKENDS`).

    ``capability`` is the CUDA device's compute capability (``None`` off CUDA): a pure function,
    so tests can pass a GTX 1080's ``(6, 1)``. ``auto`` is inductor on the CPU and on CUDA GPUs of
    capability 7.0+, cudagraphs below. Not given, compile is on for CUDA GPUs where inductor runs
    (and below only if :data:`COMPILE_BY_DEFAULT_BELOW_INDUCTOR`), and on whenever a backend is
    named. ``ValueError`` (one line) for a backend that cannot run on the device: inductor below
    capability 7.0, CUDA graphs off CUDA.
    """
    if backend not in ("auto", *COMPILE_BACKENDS):
        raise ValueError(f"--compile-backend must be auto or one of {COMPILE_BACKENDS}, got {backend!r}")
    cuda = device_type == "cuda"
    inductor_ok = not cuda or capability is None or tuple(capability) >= INDUCTOR_MIN_CAPABILITY
    chosen = backend if backend != "auto" else ("inductor" if inductor_ok else "cudagraphs")
    if flag is None:
        on = backend != "auto" or (cuda and (inductor_ok or COMPILE_BY_DEFAULT_BELOW_INDUCTOR))
    else:
        on = flag
    if on and chosen == "inductor" and not inductor_ok:
        assert capability is not None
        raise ValueError(
            f"--compile-backend inductor: torch's inductor needs a GPU of compute capability "
            f"{INDUCTOR_MIN_CAPABILITY[0]}.{INDUCTOR_MIN_CAPABILITY[1]}+, this one is "
            f"{capability[0]}.{capability[1]}; use --compile-backend cudagraphs (or auto)"
        )
    if on and chosen == "cudagraphs" and not cuda:
        raise ValueError(
            f"--compile-backend cudagraphs: CUDA graphs need a CUDA device, training runs on "
            f"{device_type}; use --compile-backend inductor (or auto) or --no-compile"
        )
    return on, chosen


def set_tf32(on: bool) -> None:
    """Let fp32 convolutions (cuDNN) and matmuls use TF32 (``on``) or keep them IEEE fp32.

    Process-wide, as torch's own switches are. Torch's defaults differ between the two (cuDNN
    convolutions TF32, matmuls IEEE), which is why a run states its choice instead of
    inheriting them. Set through the ``allow_tf32`` flags, not torch 2.9's per-backend
    ``fp32_precision``: torch refuses to read the flags once the two APIs disagree, and its own
    code (``torch.export`` among it) still reads the flags.
    """
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def tf32_note(tf32: bool, device_type: str, capability: tuple[int, int] | None) -> str | None:
    """One line when ``--tf32`` is asked for where it changes nothing (``None`` otherwise):
    off CUDA, or on a GPU below :data:`TF32_MIN_CAPABILITY` (a GTX 1080 is 6.1)."""
    if not tf32:
        return None
    if device_type != "cuda":
        return f"note: --tf32 has no effect on {device_type}: it computes in IEEE fp32"
    if capability is not None and tuple(capability) < TF32_MIN_CAPABILITY:
        return (f"note: --tf32 has no effect on this GPU (compute capability {capability[0]}."
                f"{capability[1]}; TF32 needs {TF32_MIN_CAPABILITY[0]}.{TF32_MIN_CAPABILITY[1]}+, "
                f"Ampere and newer): it computes in IEEE fp32")
    return None


def _full(t: torch.Tensor) -> torch.Tensor:
    """Autocast outputs (bf16/fp16) back to fp32; fp32 and fp64 pass through."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _clone(t: torch.Tensor) -> torch.Tensor:
    return t.clone()


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """``G_ema <- beta * G_ema + (1 - beta) * G`` for every parameter."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)


def reset_adam(opt: torch.optim.Optimizer) -> None:
    """Forget the moments (the authors reset Adam at every change of level of detail)."""
    opt.state.clear()


class TrainSteps:
    """The D and G updates of one training step.

    ``compile``: run G's and D's forward passes through ``torch.compile`` (the penalty pass stays
    eager) with ``compile_backend`` (``"inductor"`` or ``"cudagraphs"``, see the module's
    docstring; the fade stays a 0-d tensor input either way). ``precision``: ``"fp32"``, or ``"bf16"``/``"fp16"`` autocast for the G forward and
    D's scoring passes; the penalty always runs in fp32, and fp16 scales the losses
    (``GradScaler``). ``gp_every``: take the penalty every k-th critic step, scaled by k
    (1 = every step, the authors' recipe). ``gp_resolution``: ``"full"`` takes the penalty's norm
    with respect to the full-resolution image, as the authors do, ``"current"`` with respect to
    the current one (see :mod:`fastpggan.loss`). ``grad_sync``: called on D (and G) between the
    backward pass and the optimizer step; multi-process runs average the gradients over the
    ranks there (:meth:`.distributed.Distributed.sync_grads`). ``cond_weight``: the weight of
    the label terms of a conditional run (the authors' 1.0). ``augment``: applied to every
    image D sees (reals, fakes, the penalty's mixes, the G step's fakes; eager), the penalty's
    gradient taken with respect to the image before it (:mod:`fastpggan.augment`); ``None``:
    none (the authors' recipe).
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        *,
        compile: bool = False,
        compile_backend: str = "inductor",
        precision: str = "fp32",
        gp_lambda: float = 10.0,
        drift: float = 1e-3,
        gp_every: int = 1,
        gp_resolution: str = "full",
        grad_sync: Callable[[nn.Module], None] | None = None,
        cond_weight: float = 1.0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if gp_every < 1:
            raise ValueError(f"gp_every must be >= 1, got {gp_every}")
        if compile_backend not in COMPILE_BACKENDS:
            raise ValueError(
                f"compile_backend must be one of {COMPILE_BACKENDS}, got {compile_backend!r}"
            )
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        penalty_upscale(gp_resolution, 8, 8)  # ValueError now on a bad name, not at the first step
        self.gp_lambda, self.drift, self.gp_every = gp_lambda, drift, gp_every
        self.gp_resolution = gp_resolution
        self.grad_sync = grad_sync
        self.cond_weight = cond_weight
        if compile:
            torch._dynamo.config.recompile_limit = max(
                torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT
            )
            self.G_run = torch.compile(G, backend=compile_backend, dynamic=False)
            self.D_run = torch.compile(D, backend=compile_backend, dynamic=False)
        else:
            self.G_run, self.D_run = G, D
        # CUDA graph outputs live in a pool that the next replay may overwrite (torch then
        # raises on access): copy out what outlives the next compiled call.
        self._keep = _clone if compile and compile_backend == "cudagraphs" else _same
        device_type = next(G.parameters()).device.type
        self._autocast = (
            (lambda: torch.autocast(device_type, _AMP_DTYPES[precision]))
            if precision in _AMP_DTYPES
            else contextlib.nullcontext
        )
        scale = precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(device_type, enabled=scale)
        self.scaler_d = torch.amp.GradScaler(device_type, enabled=scale)
        self._last_gp: torch.Tensor | None = None
        if augment is not None:
            self.D_seen: Callable[..., torch.Tensor] = lambda x, fade, **kw: self.D(augment(x), fade, **kw)
            self.D_seen_run: Callable[..., torch.Tensor] = (
                lambda x, fade, **kw: self.D_run(augment(x), fade, **kw))
        else:
            self.D_seen, self.D_seen_run = self.D, self.D_run

    def _critic(
        self, images: torch.Tensor, fade: Fade, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's scores of ``images``, fp32 ``[B]``, and with ``labels`` (int64 ``[B]``) the label
        term of its logits (0-d), else ``None``."""
        with self._autocast():
            if labels is None:
                return _full(self.D_seen_run(images, fade)), None
            scores, logits = self.D_seen_run(images, fade, logits=True)
        return _full(scores), label_term(_full(logits), labels, self.cond_weight)

    def d_step(
        self,
        real: torch.Tensor,
        z: torch.Tensor,
        alpha: torch.Tensor,
        res: int,
        fade: Fade,
        step: int = 0,
        labels: torch.Tensor | None = None,
        heldout: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One critic update on ``real`` ``[B, 3, res, res]`` (fp32) and ``G(z)``.

        ``alpha`` ``[B, 1, 1, 1]`` mixes real and fake for the penalty, taken when
        ``step % gp_every == 0``. ``labels``: the reals' classes, int64 ``[B]`` (conditional
        runs only): the fakes are made with them and both label terms are added. Returns
        detached 0-d statistics ``d_loss, d_real, d_fake, gp`` (``gp`` is the latest penalty
        taken), with labels ``d_cond`` (the two label terms), and with ``heldout`` (held-out
        reals, prepared as ``real`` is; never trained on) ``d_heldout``: D's mean score of them
        as it sees them (augmented like the reals), without grad; the overfitting signal
        compares it with ``d_real`` and ``d_fake`` (:func:`.ada.overfit_ratio`).
        """
        gp_lambda = self.gp_lambda * self.gp_every
        g_args = () if labels is None else (labels,)
        with torch.no_grad(), self._autocast():
            fake = self._keep(_full(self.G_run(z, res, fade, *g_args)))
        # The loss is a sum of one term per pass (reals with drift, fakes, penalty), so each
        # pass is backpropagated at once and its graph freed: peak memory is that of one pass
        # (or of the penalty's double-backward graph), not of all three together.
        self.opt_d.zero_grad(set_to_none=True)
        real_scores, real_cond = self._critic(real, fade, labels)
        real_term = critic_real_term(real_scores, self.drift)
        if real_cond is not None:
            real_term = real_term + real_cond
        self.scaler_d.scale(real_term).backward()
        real_scores = self._keep(real_scores.detach())
        fake_scores, fake_cond = self._critic(fake, fade, labels)
        fake_term = critic_fake_term(fake_scores)
        if fake_cond is not None:
            fake_term = fake_term + fake_cond
        self.scaler_d.scale(fake_term).backward()
        gp = penalty_term = None
        if step % self.gp_every == 0:
            upscale = penalty_upscale(self.gp_resolution, self.D.resolution, res)
            gp = gradient_penalty(self.D_seen, real, fake, fade, alpha=alpha, upscale=upscale)
            penalty_term = critic_penalty_term(gp, gp_lambda)
            self.scaler_d.scale(penalty_term).backward()
        terms = CriticTerms(real_term, fake_term, penalty_term)
        stats = terms.stats(real_scores, fake_scores, gp)
        if real_cond is not None and fake_cond is not None:
            stats["d_cond"] = (real_cond + fake_cond).detach()
        if gp is not None:
            self._last_gp = stats["gp"]
        stats["gp"] = self._last_gp if self._last_gp is not None else torch.zeros_like(stats["d_loss"])
        if heldout is not None:  # scored before the update, by the D that scored the reals
            with torch.no_grad(), self._autocast():
                stats["d_heldout"] = _full(self.D_seen_run(heldout, fade)).mean()
        if self.grad_sync is not None:
            self.grad_sync(self.D)
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return stats

    def g_step(self, z: torch.Tensor, res: int, fade: Fade, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One generator update on latents ``z`` ``[B, latent_dim]`` (and, conditional, the
        classes to make, int64 ``[B]``, whose label term joins the loss); the detached loss (0-d)."""
        self.D.requires_grad_(False)  # D's weight gradients are not needed here
        try:
            if labels is None:
                with self._autocast():
                    loss = _full(g_loss_wgan(self.D_seen_run, self.G_run(z, res, fade), fade))
            else:
                with self._autocast():
                    fake = self.G_run(z, res, fade, labels)
                scores, cond = self._critic(fake, fade, labels)
                loss = -scores.mean() + cond
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss).backward()
            if self.grad_sync is not None:
                self.grad_sync(self.G)
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        finally:
            self.D.requires_grad_(True)
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """Loss-scaler state (fp16 only; empty dicts otherwise) for exact resume."""
        return {"scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("scaler_g"):
            self.scaler_g.load_state_dict(state["scaler_g"])
        if state.get("scaler_d"):
            self.scaler_d.load_state_dict(state["scaler_d"])
