"""The authors' gradient penalty, computed at the current resolution, equals the penalty of a
critic that really sees the full-resolution image (float64, through autograd).

The authors' D always receives R x R images: reals and fakes of the current resolution are
nearest-upscaled by k = R / res and D average-pools them back down. Here that critic is built
literally (nearest upscale, then ``avg_pool2d(k)`` in front of the project's D), its penalty
taken by plain autograd with respect to the R x R mix, and compared per sample, and through the
second-order gradient into D's weights, with ``gradient_penalty(..., upscale=k)`` at the
current resolution.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastpggan import Discriminator
from fastpggan.loss import gradient_penalty, penalty_upscale

F64 = torch.float64
R = 32

pytestmark = pytest.mark.usefixtures("one_thread")


def full_resolution_penalty(D, real, fake, fade, alpha, k, target=1.0):
    """The authors' penalty, literally: x at R x R, D pooling it down to the current size."""
    up = lambda x: x.repeat_interleave(k, 2).repeat_interleave(k, 3)  # nearest upscale by k
    mixed = torch.lerp(up(real), up(fake), alpha).requires_grad_(True)
    scores = D(F.avg_pool2d(mixed, k) if k > 1 else mixed, fade)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    assert grad.shape[-1] == R
    return (grad.flatten(1).norm(dim=1) - target).square() / target**2


def param_grads(D, loss):
    return torch.autograd.grad(loss, [p for p in D.parameters()], allow_unused=True)


@pytest.mark.parametrize("res,fade", [(32, 1.0), (32, 0.3), (16, 1.0), (16, 0.7), (8, 0.45), (4, 1.0)])
def test_penalty_at_current_resolution_equals_full_resolution_critic(res, fade):
    torch.manual_seed(res)
    D = Discriminator(R, fmap_base=64, fmap_max=16, impl="reference").to(F64)
    with torch.no_grad():  # nonzero biases, so no layer is trivially linear
        for p in D.parameters():
            p.add_(0.1 * torch.randn_like(p))
    k = R // res
    assert penalty_upscale("full", R, res) == k and penalty_upscale("current", R, res) == 1
    n = 8
    real = torch.randn(n, 3, res, res, dtype=F64)
    fake = torch.randn(n, 3, res, res, dtype=F64)
    alpha = torch.rand(n, 1, 1, 1, dtype=F64)
    fade_t = torch.tensor(fade, dtype=F64)

    want = full_resolution_penalty(D, real, fake, fade_t, alpha, k)
    got = gradient_penalty(D, real, fake, fade_t, alpha=alpha, upscale=k)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    for g, w in zip(param_grads(D, got.sum()), param_grads(D, want.sum())):
        if w is None:
            assert g is None or torch.all(g == 0)
        else:
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-12)

    # The current-resolution form is a different constraint whenever k > 1.
    current = gradient_penalty(D, real, fake, fade_t, alpha=alpha, upscale=1)
    if k == 1:
        torch.testing.assert_close(current, want, rtol=1e-9, atol=1e-12)
    else:
        assert not torch.allclose(current, want, rtol=1e-3)


def test_penalty_upscale_refuses_unknown_names():
    with pytest.raises(ValueError, match="gp_resolution"):
        penalty_upscale("half", 32, 8)
