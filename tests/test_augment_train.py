"""Augmentation in training (--aug): every image D sees goes through it, the penalty's
gradient taken through it, p moved on the device by --aug ada, p restored exactly on resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from fastpggan.augment import Augment
from fastpggan.data import load_data, open_source
from fastpggan.loss import d_loss_wgan_gp, g_loss_wgan
from fastpggan.training import Trainer, latest_checkpoint, load_checkpoint
from fastpggan.training.ada import ADJUST_EVERY, AugmentStrength, overfit_ratio
from fastpggan.training.distributed import Distributed
from test_steps import assert_d_step_is, batch, make_steps, tiny_models
from test_train import _weights, tiny_config

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def _aug(p: float, seed: int = 7, pipe: str = "bgc") -> Augment:
    return Augment(pipe, torch.tensor(p, dtype=F64), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("res,fade", [(8, 1.0), (8, 0.4), (4, 1.0)], ids=["8px", "8px-fading", "4px"])
def test_d_and_g_steps_see_augmented_images_and_the_penalty_goes_through(res, fade):
    """The D step's loss, penalty included, is the reference loss of the critic that sees
    ``augment(x)``, drawing in the same order (reals, fakes, mixes): so the penalty's gradient is
    taken with respect to the image before augmentation, through it. The G step scores
    augmented fakes."""
    fade = torch.tensor(fade, dtype=F64) if fade != 1.0 else 1.0
    G, D = tiny_models()
    D_ref, G_ref = copy.deepcopy(D), copy.deepcopy(G)
    steps = make_steps(G, D, False, augment=_aug(0.8), gp_resolution="current")
    real, z_d, alpha, z_g = batch(res=res)
    stats = steps.d_step(real, z_d, alpha, res, fade)
    ref_aug = _aug(0.8)
    with torch.no_grad():
        fake = G_ref(z_d, res, fade)
    loss, want = d_loss_wgan_gp(lambda x, f: D_ref(ref_aug(x), f), real, fake, fade, alpha=alpha)
    assert_d_step_is(D, stats, D_ref, loss, want)
    plain = d_loss_wgan_gp(D_ref, real, fake, fade, alpha=alpha)[1]
    assert not torch.allclose(plain["d_real"], want["d_real"])  # the augmentation did something
    g = steps.g_step(z_g, res, fade)
    D_ref.requires_grad_(False)
    torch.testing.assert_close(g, g_loss_wgan(lambda x, f: D_ref(ref_aug(x), f), G_ref(z_g, res, fade), fade),
                               rtol=1e-12, atol=1e-12)


def test_p_zero_trains_exactly_as_without_augmentation():
    G, D = tiny_models()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    real, z_d, alpha, z_g = batch()
    plain, aug = make_steps(G, D, False), make_steps(G2, D2, False, augment=_aug(0.0))
    for s in (plain, aug):
        s.d_step(real, z_d, alpha, 8, 1.0)
        s.g_step(z_g, 8, 1.0)
    for a, b in ((G, G2), (D, D2)):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)


@pytest.mark.slow  # ~50 s on one CPU thread: inductor compiles G and D
def test_moving_p_does_not_recompile():
    torch._dynamo.reset()
    counters.clear()
    try:
        G, D = tiny_models(torch.float32)
        p = torch.tensor(0.2)
        steps = make_steps(G, D, True, augment=Augment("bgc", p, torch.Generator().manual_seed(0)))
        real, z_d, alpha, z_g = (t.float() for t in batch())
        steps.d_step(real, z_d, alpha, 8, 1.0)
        steps.g_step(z_g, 8, 1.0)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0
        for value in (0.0, 0.5, 1.0):
            p.fill_(value)
            steps.d_step(real, z_d, alpha, 8, 1.0)
            steps.g_step(z_g, 8, 1.0)
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        torch._dynamo.reset()


def _scores(rv: float, real: float = 1.0, fake: float = 0.0) -> dict[str, torch.Tensor]:
    """d_step statistics whose overfitting ratio is ``rv``."""
    held = real - rv * (real - fake)
    return {"d_real": torch.tensor(real), "d_fake": torch.tensor(fake), "d_heldout": torch.tensor(held)}


def test_overfit_ratio_is_adas_validation_form_free_of_the_critics_offset_and_scale():
    r, f, v = torch.tensor(2.0), torch.tensor(-2.0), torch.tensor(1.0)
    assert overfit_ratio(r, f, v).item() == pytest.approx(0.25)
    for shift, scale in ((5.0, 1.0), (-3.0, 7.0), (0.0, 0.01)):
        assert overfit_ratio(r * scale + shift, f * scale + shift, v * scale + shift).item() == pytest.approx(0.25)
    assert overfit_ratio(r, r, v).item() == 0.0  # reals not above the fakes: no signal
    assert overfit_ratio(f, r, v).item() == 0.0
    assert overfit_ratio(r, f, f).item() == pytest.approx(1.0)  # held-out scored as fakes


def test_ada_moves_p_towards_the_target_by_images_over_aug_kimg_and_clamps():
    s = AugmentStrength("ada", "bgc", 0.1, 0.6, 1.0, torch.device("cpu"), None, Distributed())
    high, low = _scores(0.9), _scores(0.2, real=-3.0, fake=-5.0)
    for _ in range(ADJUST_EVERY - 1):
        s.observe(high, 2)
    assert s.p.item() == pytest.approx(0.1)  # not yet: p moves every ADJUST_EVERY steps
    s.observe(high, 2)
    assert s.p.item() == pytest.approx(0.1 + 2 * ADJUST_EVERY / 1000)
    for _ in range(ADJUST_EVERY * 200):
        s.observe(high, 2)
    assert s.p.item() == 1.0
    # the ratio of the interval's mean scores decides: three steps at 0.9 and one whose
    # held-out reals score far above the reals pool to (0.1 * 3 + 4) / 4 held: below the target
    s.observe(high, 2), s.observe(high, 2), s.observe(high, 2), s.observe(_scores(-3.0), 2)
    assert s.p.item() == pytest.approx(1.0 - 2 * ADJUST_EVERY / 1000)
    for _ in range(ADJUST_EVERY * 200):
        s.observe(low, 2)
    assert s.p.item() == 0.0
    fixed = AugmentStrength("fixed", "bgc", 0.3, 0.6, 0.001, torch.device("cpu"), None, Distributed())
    for _ in range(ADJUST_EVERY * 3):
        fixed.observe(high, 2)
    assert fixed.p.item() == pytest.approx(0.3)
    off = AugmentStrength("off", "bgc", 0.3, 0.6, 0.001, torch.device("cpu"), None, Distributed())
    assert off.augment is None and off.p.item() == 0.0


def _ada_config(out, **kw):
    # aug_kimg tiny so that p moves visibly within a few steps
    return tiny_config(out, aug="ada", aug_p=0.2, aug_kimg=0.05, holdout=16, **kw)


def test_ada_resume_restores_p_and_weights_exactly(tmp_path):
    """Stopped mid-interval (6 steps: p moved once, two signals summed) and resumed: the same
    weights and the same p as an uninterrupted run, bit for bit."""
    data = load_data(open_source(None, 64 + 16), 16)  # 16 held-out faces after the 64
    total, n_steps = 10, 6
    straight = Trainer(_ada_config(tmp_path / "a"), data)
    assert straight.run(max_steps=total) == "paused"
    first = Trainer(_ada_config(tmp_path / "b"), data)
    assert first.run(max_steps=n_steps) == "paused"
    p_then = first.aug.p.clone()
    assert p_then.item() != 0.2  # p moved before the stop
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "b"))
    assert torch.equal(ckpt["augment"]["p"], p_then)
    del first
    resumed = Trainer(_ada_config(tmp_path / "b"), data, resume=ckpt)
    assert torch.equal(resumed.aug.p, p_then)
    assert resumed.run(max_steps=total - n_steps) == "paused"
    assert torch.equal(resumed.aug.p, straight.aug.p)
    a, b = _weights(straight), _weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the target may change on resume; the pipeline may not
    moved = Trainer(_ada_config(tmp_path / "b", aug_target=0.9), data, resume=ckpt)
    assert moved.resumed_changes["aug_target"] == [0.05, 0.9] and torch.equal(moved.aug.p, p_then)
    with pytest.raises(ValueError, match="--aug-pipe"):
        Trainer(_ada_config(tmp_path / "b", aug_pipe="gc"), data, resume=ckpt)


def test_p_and_the_signals_are_logged_and_on_the_tick_line(tmp_path):
    lines = []
    data = load_data(open_source(None, 64 + 16), 16)
    t = Trainer(_ada_config(tmp_path / "r"), data, echo=lines.append)
    t.run(max_steps=8)
    recs = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    logs = [r for r in recs if r["kind"] == "log"]
    assert logs and all(0.0 <= r["aug_p"] <= 1.0 for r in logs)
    for r in logs:  # r_v of the record's mean scores
        assert r["rv"] == pytest.approx(overfit_ratio(*torch.tensor([r["d_real"], r["d_fake"], r["d_heldout"]])).item(),
                                        abs=1e-3)
    assert any(" aug p " in line and " r_v " in line for line in lines if line.startswith("tick"))


def _ada_ranks_worker(rank: int, port: int, out: str) -> None:
    import test_distributed

    dist = test_distributed._join(rank, port)
    try:
        s = AugmentStrength("ada", "bgc", 0.5, 0.6, 1.0, torch.device("cpu"), None, dist)
        # rank 0 alone would raise p (r_v 1 > 0.6), rank 1 alone lower it (0 < 0.6); over
        # both, the mean scores weighted by images give held-out (6 * 0 + 2 * 1) / 8 = 0.25
        # between reals 1 and fakes 0: r_v 0.75, up
        signal, images = (_scores(1.0), 6) if rank == 0 else (_scores(0.0), 2)
        for _ in range(ADJUST_EVERY):
            s.observe(signal, images)
        torch.save(s.p.clone(), f"{out}/p{rank}.pt")
    finally:
        dist.close()


@pytest.mark.slow  # two spawned processes: ~5 s
def test_under_two_ranks_the_signal_is_summed_over_processes(tmp_path):
    import torch.multiprocessing as mp
    from test_distributed import _free_port

    mp.spawn(_ada_ranks_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    p0, p1 = (torch.load(tmp_path / f"p{r}.pt") for r in range(2))
    assert torch.equal(p0, p1)
    assert p0.item() == pytest.approx(0.5 + ADJUST_EVERY * 8 / 1000)
