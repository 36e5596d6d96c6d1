"""The augmentation strength of a run (``--aug``): fixed, or adapted to the critic's overfitting
as ADA does, all on the training device.

Every D step reports its overfitting signal (:data:`SIGNAL`, a 0-d tensor from
:meth:`.steps.TrainSteps.d_step`); :meth:`AugmentStrength.observe` adds it to a sum on the
device, and every :data:`ADJUST_EVERY` steps moves ``p`` towards the target: up by
``images / (aug_kimg * 1000)`` while the signal's mean is above ``aug_target``, down while
below, clamped to [0, 1]. Nothing is read back to the host; under torchrun the sums are
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
# The d_step statistic that drives p: the midpoint form, not ADA's mean(sign(D(real))), which
# under WGAN-GP follows the critic's free offset (see the README, "Small datasets").
SIGNAL = "aug_rmid"


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
        # [sum of per-step signals weighted by the step's images, images] since the last move
        self._acc = torch.zeros(2, device=device)
        self._steps = 0
        self.augment = Augment(pipe, self.p, generator) if mode != "off" else None

    def observe(self, signal: torch.Tensor, images: int) -> None:
        """One D step's signal (0-d tensor, its mean over this rank's ``images`` reals); every
        :data:`ADJUST_EVERY`-th call moves ``p`` (``"ada"`` only; no host sync)."""
        if self.mode != "ada":
            return
        # in place: no new tensor and no host copy per step
        self._acc[0].add_(signal.detach(), alpha=images)
        self._acc[1].add_(images)
        self._steps += 1
        if self._steps % ADJUST_EVERY == 0:
            self._adjust()

    def _adjust(self) -> None:
        acc = self.dist.mean_(self._acc.clone()) * self.dist.world_size  # sums over the ranks
        mean = acc[0] / acc[1].clamp_min(1.0)
        step = torch.sign(mean - self.target) * acc[1] / (self.kimg * 1000.0)
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
