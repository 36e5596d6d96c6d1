"""WGAN-GP loss with the PGGAN drift term (Gulrajani et al. 2017; Karras et al. 2017).

D loss: the batch mean of ``D(fake) - D(real) + lambda * (||grad_x D(x_hat)||_2 - target)**2 /
target**2 + drift * D(real)**2``, with ``x_hat`` a per-sample random mix of real and fake, taken as
one term per pass (:class:`CriticTerms`: reals with drift, fakes, penalty), which training
backpropagates one by one and :func:`d_loss_wgan_gp` sums. G loss: ``-D(G(z))``. The penalty keeps its graph (``create_graph=True``), so D's
weights receive its second-order gradient. Every returned statistic is a detached tensor: the
loss functions never synchronise with the host.

Where the norm is taken: the authors' networks always see R x R images (reals and fakes of the
current resolution nearest-upscaled by ``k = R / res``, D average-pooling them back down), so
their ``x`` is the R x R image. Its gradient is the current-resolution gradient spread evenly
over each k x k block, ``upsample(grad) / k**2``, whose norm is ``||grad|| / k``. So their
penalty is computed here at the current resolution as ``(||grad|| / k - target)**2``
(``upscale=k``) without ever building an R x R tensor; ``upscale=1`` is the penalty with
respect to the current-resolution image (the seed article's form).

Conditional training (the authors' ``D_wgangp_acgan``/``G_wgan_acgan``) adds
:func:`label_term`, ``cond_weight * mean(CE(logits, labels))`` (softmax cross-entropy), to the
reals' and the fakes' terms of D's loss and to G's loss; the penalty uses the score alone.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

Critic = Callable[..., torch.Tensor]

GP_LAMBDA = 10.0
GP_TARGET = 1.0
DRIFT = 1e-3
COND_WEIGHT = 1.0  # the authors' weight of the label cross-entropy terms
# Added under the square root of the gradient norm so that an exactly-zero gradient gives a
# finite (zero) derivative instead of NaN; negligible against norms near the target of 1.
_NORM_EPS = 1e-12


def gradient_penalty(
    D: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    fade: float | torch.Tensor = 1.0,
    target: float = GP_TARGET,
    alpha: torch.Tensor | None = None,
    upscale: int = 1,
) -> torch.Tensor:
    """Per-sample penalty ``(||grad D(x_hat)|| / upscale - target)**2 / target**2``, ``[N]``.

    ``real``, ``fake``: ``[N, C, H, W]``. ``x_hat = real + alpha * (fake - real)`` with ``alpha``
    ``[N, 1, 1, 1]`` (uniform in [0, 1) when not given). The norm is taken per sample over all
    of C, H and W; ``upscale = k`` gives the norm with respect to the image nearest-upscaled by
    k (the authors' form, see the module doc). Differentiable with respect to D's parameters.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = torch.lerp(real.detach(), fake.detach(), alpha).requires_grad_(True)
    scores = D(mixed, fade)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return penalty_from_grad(grad, target, upscale)


def penalty_from_grad(grad: torch.Tensor, target: float = GP_TARGET, upscale: int = 1) -> torch.Tensor:
    """``(||grad_n||_2 / upscale - target)**2 / target**2`` per sample: ``[N, C, H, W]`` -> ``[N]``."""
    norms = (grad.square().sum(dim=(1, 2, 3)) + _NORM_EPS).sqrt()
    if upscale != 1:
        norms = norms / upscale
    return (norms - target).square() / target**2


def penalty_upscale(gp_resolution: str, resolution: int, res: int) -> int:
    """The ``upscale`` of :func:`gradient_penalty` for a run of final ``resolution`` training at
    ``res``: ``R / res`` for ``"full"`` (the authors'), 1 for ``"current"``."""
    if gp_resolution == "full":
        return resolution // res
    if gp_resolution == "current":
        return 1
    raise ValueError(f"gp_resolution must be 'full' or 'current', got {gp_resolution!r}")


class CriticTerms(NamedTuple):
    """The critic's loss as one term per pass, each a 0-d tensor that keeps its graph.

    ``real = mean(drift * D(real)**2 - D(real))``, ``fake = mean(D(fake))``, ``penalty =
    gp_lambda * mean(gp)`` (``None`` on a step that skips the penalty). The loss is their sum.
    A training step backpropagates each term as soon as its pass is done (each graph is then
    freed before the next pass is built); :func:`d_loss_wgan_gp` sums them. Both take the
    statistics from these same terms (:meth:`stats`).
    """

    real: torch.Tensor
    fake: torch.Tensor
    penalty: torch.Tensor | None

    def loss(self) -> torch.Tensor:
        total = self.real + self.fake
        return total + self.penalty if self.penalty is not None else total

    def stats(self, real_scores: torch.Tensor, fake_scores: torch.Tensor, gp: torch.Tensor | None
              ) -> dict[str, torch.Tensor]:
        """Detached 0-d statistics: ``d_loss`` (the sum of the terms), ``d_real``, ``d_fake``
        (mean scores of the ``[N]`` score tensors) and, with a penalty ``[N]``, ``gp`` (its mean)."""
        with torch.no_grad():
            d_loss = self.loss()
        stats = {
            "d_loss": d_loss,
            "d_real": real_scores.detach().mean(),
            "d_fake": fake_scores.detach().mean(),
        }
        if gp is not None:
            stats["gp"] = gp.detach().mean()
        return stats


def critic_real_term(real_scores: torch.Tensor, drift: float = DRIFT) -> torch.Tensor:
    """The reals' term, ``mean(drift * s**2 - s)`` of their scores ``[N]``."""
    return (drift * real_scores.square() - real_scores).mean()


def critic_fake_term(fake_scores: torch.Tensor) -> torch.Tensor:
    """The fakes' term, ``mean(s)`` of their scores ``[N]``."""
    return fake_scores.mean()


def critic_penalty_term(gp: torch.Tensor, gp_lambda: float = GP_LAMBDA) -> torch.Tensor:
    """The penalty's term, ``gp_lambda * mean(gp)`` of the per-sample penalties ``[N]``."""
    return gp_lambda * gp.mean()


def critic_terms(
    real_scores: torch.Tensor,
    fake_scores: torch.Tensor,
    gp: torch.Tensor | None,
    gp_lambda: float = GP_LAMBDA,
    drift: float = DRIFT,
) -> CriticTerms:
    """All three terms at once, from the scores ``[N]`` and the penalties ``[N]`` (or ``None``)."""
    penalty = critic_penalty_term(gp, gp_lambda) if gp is not None else None
    return CriticTerms(critic_real_term(real_scores, drift), critic_fake_term(fake_scores), penalty)


def d_loss_wgan_gp(
    D: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    fade: float | torch.Tensor = 1.0,
    gp_lambda: float = GP_LAMBDA,
    drift: float = DRIFT,
    target: float = GP_TARGET,
    alpha: torch.Tensor | None = None,
    upscale: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator loss (scalar) and detached statistics (``upscale``: see
    :func:`gradient_penalty`).

    ``fake`` is detached here: this loss trains D only. Real and fake are scored in separate
    passes, as the authors do, because minibatch stddev mixes the samples of a batch.
    Statistics: ``d_real``, ``d_fake`` (mean scores), ``gp`` (mean penalty), ``d_loss``.
    """
    real_scores = D(real, fade)
    fake_scores = D(fake.detach(), fade)
    gp = gradient_penalty(D, real, fake, fade, target=target, alpha=alpha, upscale=upscale)
    terms = critic_terms(real_scores, fake_scores, gp, gp_lambda, drift)
    return terms.loss(), terms.stats(real_scores, fake_scores, gp)


def g_loss_wgan(D: Critic, fake: torch.Tensor, fade: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Generator loss ``-mean(D(fake))`` (scalar); gradients flow into ``fake``."""
    return -D(fake, fade).mean()


def label_term(logits: torch.Tensor, labels: torch.Tensor, cond_weight: float = COND_WEIGHT) -> torch.Tensor:
    """``cond_weight * mean_n CE(logits_n, labels_n)``: softmax cross-entropy of D's label
    logits ``[N, K]`` (float32 or float64) against class indices int64 ``[N]``; 0-d."""
    return cond_weight * torch.nn.functional.cross_entropy(logits, labels)
