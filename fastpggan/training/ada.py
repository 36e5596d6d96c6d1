"""The augmentation strength of a run (``--aug``): fixed, or adapted to the critic's overfitting
as ADA does, all on the training device.

Every D step reports the critic's mean scores of the reals, the fakes and a batch of held-out
reals (``d_real``, ``d_fake``, ``d_heldout``: :meth:`.steps.TrainSteps.d_step`);
:meth:`AugmentStrength.observe` adds them to sums on the device, and every
:data:`ADJUST_EVERY` steps :func:`overfit_ratio` of the sums (ADA's ``r_v``) moves ``p``:
up by ``images / (aug_kimg * 1000)`` while it is above ``aug_target``, down while below,
clamped to [0, 1]. Nothing is read back to the host; under torchrun the sums are
all-reduced first, so every rank moves ``p`` alike. ``p`` is one 0-d tensor that the
:class:`fastpggan.augment.Augment` reads in place, so moving it recompiles nothing.

The checkpoint holds ``p`` and the partial sums (:meth:`state_dict`): a resumed run continues
with exactly the ``p`` it stopped at.
"""

from __future__ import annotations

from typing import Any

import torch

from fastpggan.augment import Augment
from fastpggan.training.distributed import Distributed

# Steps between two moves of p (ADA's interval): its sums average the signal over that many.
ADJUST_EVERY = 4


def overfit_ratio(real: torch.Tensor, fake: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """ADA's validation heuristic ``r_v = (real - held) / (real - fake)`` from the critic's mean
    scores (0-d tensors) of the training reals, the fakes and held-out reals: 0 when the critic
    scores images it never trained on as it scores the training set, 1 when it scores them as
    fakes. Free of the WGAN critic's offset and scale, unlike ADA's ``mean(sign(D(real)))``
    (README, "Small datasets"). 0 while the critic does not yet score the reals above the fakes.
    """
    gap = real - fake
    return torch.where(gap > 0, (real - held) / gap.clamp_min(1e-8), torch.zeros_like(gap))


class AugmentStrength:
    """The run's augmentation: :attr:`augment` (``None`` with ``mode`` ``"off"``) and its
    strength :attr:`p` (0-d float32 on ``device``).

    ``mode``: ``"off"``, ``"fixed"`` (``p = p0`` throughout) or ``"ada"`` (``p`` starts at
    ``p0`` and follows the signal towards ``target``, by at most 1 per ``kimg`` thousand
    images). ``generator``: the augmentation's random source (the trainer's, saved in
    checkpoints).
    """

    def __init__(self, mode: str, pipe: str, p0: float, target: float, kimg: float,
                 device: torch.device, generator: torch.Generator | None, dist: Distributed) -> None:
        self.mode, self.target, self.kimg, self.dist = mode, target, kimg, dist
        self.p = torch.full((), p0 if mode != "off" else 0.0, device=device)
        # [d_real, d_fake, d_heldout] each summed weighted by the step's images, and the images,
        # since the last move
        self._acc = torch.zeros(4, device=device)
        self._steps = 0
        self.augment = Augment(pipe, self.p, generator) if mode != "off" else None

    def observe(self, stats: dict[str, torch.Tensor], images: int) -> None:
        """One D step's statistics (0-d tensors ``d_real``, ``d_fake``, ``d_heldout``: means over
        this rank's ``images`` reals); every :data:`ADJUST_EVERY`-th call moves ``p``
        (``"ada"`` only; no host sync)."""
        if self.mode != "ada":
            return
        # in place: no new tensor and no host copy per step
        for i, k in enumerate(("d_real", "d_fake", "d_heldout")):
            self._acc[i].add_(stats[k], alpha=images)
        self._acc[3].add_(images)
        self._steps += 1
        if self._steps % ADJUST_EVERY == 0:
            self._adjust()

    def _adjust(self) -> None:
        acc = self.dist.mean_(self._acc.clone()) * self.dist.world_size  # sums over the ranks
        real, fake, held = acc[:3] / acc[3].clamp_min(1.0)
        step = torch.sign(overfit_ratio(real, fake, held) - self.target) * acc[3] / (self.kimg * 1000.0)
        self.p.add_(step).clamp_(0.0, 1.0)
        self._acc.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "p": self.p.detach().cpu().clone(), "acc": self._acc.cpu().clone(),
                "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """A checkpoint's state (``None``: it predates augmentation). An ``"ada"`` run resumed
        from an ``"ada"`` checkpoint continues from its ``p`` and partial sums exactly; any
        other combination starts from this run's settings (fixed: ``--aug-p``)."""
        if state is None or self.mode != "ada" or state.get("mode") != "ada":
            return
        self.p.copy_(state["p"])
        self._acc.copy_(state["acc"])
        self._steps = int(state["steps"])
