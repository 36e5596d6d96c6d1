"""Conditional training (the authors' AC-GAN): networks, losses and the training step.

The losses are checked in float64 against a straightforward transcription of the authors'
``D_wgangp_acgan`` / ``G_wgan_acgan`` (per-sample loss vectors, softmax cross-entropy written out
as ``-sum(onehot * log_softmax)``, minibatch mean last), one SGD step each, as test_steps.py
does for the unconditional step.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from fastpggan import Discriminator, Generator
from fastpggan.training import TrainSteps

F64 = torch.float64
K = 3  # classes

pytestmark = pytest.mark.usefixtures("one_thread")


from test_steps import _fresh_dynamo  # noqa: F401,E402  (autouse: every test starts without graphs)
from test_steps import batch as steps_batch  # noqa: E402


def tiny_cond(dtype=F64, label_size=K):
    torch.manual_seed(5)
    G = Generator(8, latent_dim=8, fmap_base=32, fmap_max=8, impl="reference", label_size=label_size).to(dtype)
    D = Discriminator(8, fmap_base=32, fmap_max=8, impl="reference", label_size=label_size).to(dtype)
    return G, D


def batch(n=6, res=8, dtype=F64):
    """:func:`test_steps.batch` and two draws of classes: the reals', G's."""
    g = torch.Generator().manual_seed(17)
    return (*steps_batch(n, res, dtype), torch.randint(K, (n,), generator=g), torch.randint(K, (n,), generator=g))


def sgd_steps(G, D, compile=False, **kw):
    return TrainSteps(G, D, torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1),
                      compile=compile, **kw)


def assert_same_params(a, b, rtol=1e-12):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        err = (p - q).abs().max().item()
        assert err <= rtol * max(p.abs().max().item(), 1.0), f"{name}: {err:.3e}"


# --- the authors' losses, transcribed -----------------------------------------------------
def _softmax_ce(onehot, logits):  # tf.nn.softmax_cross_entropy_with_logits_v2, per sample
    return -(onehot * torch.log_softmax(logits, dim=1)).sum(1)


def authors_d_loss(G, D, reals, labels, z, alpha, res, fade, upscale=1, wgan_lambda=10.0,
                   wgan_epsilon=1e-3, wgan_target=1.0, cond_weight=1.0):
    onehot = torch.nn.functional.one_hot(labels, K).to(reals.dtype)
    with torch.no_grad():
        fakes = G(z, res, fade, labels)  # D's fakes carry the reals' labels
    real_scores, real_labels_out = D(reals, fade, logits=True)
    fake_scores, fake_labels_out = D(fakes, fade, logits=True)
    loss = fake_scores - real_scores
    mixed = (reals + (fakes - reals) * alpha).requires_grad_(True)
    mixed_scores, _ = D(mixed, fade, logits=True)  # the penalty takes the score output only
    (grads,) = torch.autograd.grad(mixed_scores.sum(), mixed, create_graph=True)
    # + 1e-12: fastpggan.loss's guard against the NaN of sqrt'(0), the one departure from theirs
    # (it moves a norm of 0.007, as in this tiny net, by 7e-11)
    norms = (grads.square().sum((1, 2, 3)) + 1e-12).sqrt() / upscale
    loss = loss + (norms - wgan_target).square() * (wgan_lambda / wgan_target**2)
    loss = loss + real_scores.square() * wgan_epsilon
    loss = loss + (_softmax_ce(onehot, real_labels_out) + _softmax_ce(onehot, fake_labels_out)) * cond_weight
    return loss.mean()


def authors_g_loss(G, D, z, labels, res, fade, cond_weight=1.0):
    onehot = torch.nn.functional.one_hot(labels, K).to(z.dtype)
    fake_scores, fake_labels_out = D(G(z, res, fade, labels), fade, logits=True)
    return (-fake_scores + _softmax_ce(onehot, fake_labels_out) * cond_weight).mean()


def _sgd(model, loss, lr=0.1):
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


# --- networks ---------------------------------------------------------------------------
def test_generator_pixel_norms_the_latent_and_one_hot_together() -> None:
    # The conditional G is the unconditional G of latent size latent_dim + K fed [z, one_hot]:
    # the pixel norm is over the concatenation, before the first dense layer.
    G, _ = tiny_cond()
    plain = Generator(8, latent_dim=8 + K, fmap_base=32, fmap_max=8, impl="reference").to(F64)
    plain.load_state_dict(G.state_dict())
    z = torch.randn(5, 8, dtype=F64)
    labels = torch.tensor([0, 2, 1, 2, 0])
    cat = torch.cat([z, torch.nn.functional.one_hot(labels, K).to(F64)], 1)
    for res, fade in ((4, 1.0), (8, 0.4), (8, 1.0)):
        torch.testing.assert_close(G(z, res, fade, labels), plain(cat, res, fade), rtol=0, atol=0)
    assert not torch.allclose(G(z, 8, 1.0, labels), G(z, 8, 1.0, (labels + 1) % K))


def test_discriminator_score_then_logits_and_parameter_counts() -> None:
    G, D = tiny_cond()
    G0 = Generator(8, latent_dim=8, fmap_base=32, fmap_max=8, impl="reference")
    D0 = Discriminator(8, fmap_base=32, fmap_max=8, impl="reference")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(G) - count(G0) == K * 16 * G.nf(1)  # the dense layer's extra inputs
    assert count(D) - count(D0) == K * (D.nf(0) + 1)  # K more outputs (weights and biases)
    assert D.out.weight.shape[0] == 1 + K
    x = torch.randn(4, 3, 8, 8, dtype=F64)
    scores, logits = D(x, 1.0, logits=True)
    assert scores.shape == (4,) and logits.shape == (4, K)
    torch.testing.assert_close(D(x, 1.0), scores, rtol=0, atol=0)
    with pytest.raises(ValueError, match="labels"):
        G(torch.randn(2, 8, dtype=F64), 8)
    with pytest.raises(ValueError, match="no label logits"):
        D0(x.float(), 1.0, logits=True)


# --- the losses and the step ------------------------------------------------------------
@pytest.mark.parametrize("res,fade,upscale,gp_resolution", [
    (8, 0.6, 1, "full"), (4, 1.0, 2, "full"), (4, 1.0, 1, "current")])
def test_d_step_is_the_authors_acgan_loss(res, fade, upscale, gp_resolution) -> None:
    G, D = tiny_cond()
    D_ref = copy.deepcopy(D)
    steps = sgd_steps(G, D, gp_resolution=gp_resolution)
    real, z_d, alpha, _, labels, _ = batch(res=res)
    fade_t = torch.tensor(fade, dtype=F64) if fade != 1.0 else 1.0
    stats = steps.d_step(real, z_d, alpha, res, fade_t, labels=labels)
    want = authors_d_loss(G, D_ref, real, labels, z_d, alpha, res, fade_t, upscale=upscale)
    torch.testing.assert_close(stats["d_loss"], want.detach(), rtol=1e-12, atol=1e-12)
    _sgd(D_ref, want)
    assert_same_params(D, D_ref)
    assert stats["d_cond"] > 0


def test_g_step_is_the_authors_acgan_loss() -> None:
    G, D = tiny_cond()
    G_ref = copy.deepcopy(G)
    steps = sgd_steps(G, D)
    _, _, _, z_g, _, g_labels = batch()
    fade = torch.tensor(0.3, dtype=F64)
    loss = steps.g_step(z_g, 8, fade, labels=g_labels)
    assert all(p.grad is None for p in D.parameters())  # G's step leaves D's weights alone
    want = authors_g_loss(G_ref, D, z_g, g_labels, 8, fade)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-12, atol=1e-12)
    _sgd(G_ref, want)
    assert_same_params(G, G_ref)


def test_cond_weight_zero_leaves_only_the_wgan_loss() -> None:
    G, D = tiny_cond()
    steps = sgd_steps(copy.deepcopy(G), copy.deepcopy(D), cond_weight=0.0)
    real, z_d, alpha, z_g, labels, g_labels = batch()
    stats = steps.d_step(real, z_d, alpha, 8, 1.0, labels=labels)
    want = authors_d_loss(G, D, real, labels, z_d, alpha, 8, 1.0, cond_weight=0.0)
    torch.testing.assert_close(stats["d_loss"], want.detach(), rtol=1e-12, atol=1e-12)
    assert stats["d_cond"] == 0


def test_compiled_conditional_step_matches_eager_and_labels_do_not_recompile() -> None:
    G, D = tiny_cond()
    eager = sgd_steps(G, D)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    compiled = sgd_steps(G2, D2, compile=True)
    real, z_d, alpha, z_g, labels, g_labels = batch()
    fade = torch.tensor(0.5, dtype=F64)
    graphs = None
    for shift in range(3):  # new label values every step: the same graphs
        lab, g_lab = (labels + shift) % K, (g_labels + shift) % K
        s_e = eager.d_step(real, z_d, alpha, 8, fade, labels=lab)
        s_c = compiled.d_step(real, z_d, alpha, 8, fade, labels=lab)
        g_e = eager.g_step(z_g, 8, fade, labels=g_lab)
        g_c = compiled.g_step(z_g, 8, fade, labels=g_lab)
        for k in s_e:
            torch.testing.assert_close(s_c[k], s_e[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g_c, g_e, rtol=1e-9, atol=1e-12)
        if graphs is None:
            graphs = counters["stats"]["unique_graphs"]
            assert graphs == 4  # G without and with grad, D with weight grads and frozen
    assert counters["stats"]["unique_graphs"] == graphs
    assert_same_params(D2, D, 1e-9)
    assert_same_params(G2, G, 1e-9)


def test_a_conditional_critic_sees_augmented_images() -> None:
    """With --aug, D's label logits come from the augmented images too (reals, then fakes: the
    augmentation's draws in that order), and p = 0 changes nothing."""
    from fastpggan.augment import Augment
    from fastpggan.loss import label_term

    def aug(p: float) -> Augment:
        return Augment("bgc", torch.tensor(p, dtype=F64), torch.Generator().manual_seed(3))

    G, D = tiny_cond()
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    real, z_d, alpha, z_g, labels, g_labels = batch()
    stats = sgd_steps(G, D, augment=aug(0.8)).d_step(real, z_d, alpha, 8, 1.0, labels=labels)
    ref = aug(0.8)
    with torch.no_grad():
        fake = G_ref(z_d, 8, 1.0, labels)
        want = sum(label_term(D_ref(ref(x), 1.0, logits=True)[1], labels) for x in (real, fake))
        plain = sum(label_term(D_ref(x, 1.0, logits=True)[1], labels) for x in (real, fake))
    torch.testing.assert_close(stats["d_cond"], want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(want, plain)  # the augmentation reached the label logits

    G0, D0 = tiny_cond()
    G1, D1 = copy.deepcopy(G0), copy.deepcopy(D0)
    for steps in (sgd_steps(G0, D0), sgd_steps(G1, D1, augment=aug(0.0))):
        steps.d_step(real, z_d, alpha, 8, 1.0, labels=labels)
        steps.g_step(z_g, 8, 1.0, labels=g_labels)
    for a, b in ((G0, G1), (D0, D1)):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
