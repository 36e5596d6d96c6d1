"""The training step under torch.compile: same parameters as eager, no recompiles for the fade.

Compiled against eager is compared in float64 with plain SGD, so a parameter difference is
exactly lr times a gradient difference: inductor reorders float64 sums, which moves results by
a few ulps (relative 1e-12 at most here), hence the 1e-9 bound. Adam would hide nothing but
would blur the comparison: its first step is about lr * sign(grad), so a gradient that is zero
in one and 1e-17 in the other becomes a full lr apart.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from fastpggan import Discriminator, Generator
from fastpggan.__main__ import main
from fastpggan.training import TrainSteps
from fastpggan.training.steps import resolve_compile, set_tf32, tf32_note

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def tiny_models(dtype=F64):
    torch.manual_seed(3)
    G = Generator(8, latent_dim=8, fmap_base=32, fmap_max=8, impl="reference").to(dtype)
    D = Discriminator(8, fmap_base=32, fmap_max=8, impl="reference").to(dtype)
    return G, D


def make_steps(G, D, compile: bool, **kw) -> TrainSteps:
    opt_g = torch.optim.SGD(G.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(D.parameters(), lr=0.1)
    return TrainSteps(G, D, opt_g, opt_d, compile=compile, **kw)


def batch(n=6, res=8, dtype=F64):
    g = torch.Generator().manual_seed(11)
    real = torch.randn(n, 3, res, res, generator=g, dtype=dtype)
    z_d = torch.randn(n, 8, generator=g, dtype=dtype)
    alpha = torch.rand(n, 1, 1, 1, generator=g, dtype=dtype)
    z_g = torch.randn(n, 8, generator=g, dtype=dtype)
    return real, z_d, alpha, z_g


def run_step(steps: TrainSteps, fade, res=8):
    real, z_d, alpha, z_g = batch(res=res)
    stats = steps.d_step(real, z_d, alpha, res, fade)
    g_loss = steps.g_step(z_g, res, fade)
    return stats, g_loss


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module, rtol: float = 1e-9) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        err = (p - q).abs().max().item()
        assert err <= rtol * max(p.abs().max().item(), 1.0), f"{name}: {err:.3e}"


@pytest.mark.parametrize("fade", [torch.tensor(0.3, dtype=F64), 1.0], ids=["fading", "stable"])
def test_compiled_step_matches_eager(fade) -> None:
    G, D = tiny_models()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    eager, compiled = make_steps(G, D, False), make_steps(G2, D2, True)
    assert compiled.G_run is not G
    for _ in range(2):
        s_e, g_e = run_step(eager, fade)
        s_c, g_c = run_step(compiled, fade)
        for k in s_e:
            torch.testing.assert_close(s_c[k], s_e[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g_c, g_e, rtol=1e-9, atol=1e-12)
    assert_same_params(D2, D)
    assert_same_params(G2, G)
    # The penalty moved D's weights, in the compiled run as in the eager one.
    no_gp = make_steps(D=D0, G=G0, compile=True, gp_lambda=0.0)
    run_step(no_gp, fade)
    run_step(no_gp, fade)
    assert max((p - q).abs().max().item() for p, q in zip(D0.parameters(), D2.parameters())) > 1e-3


def test_cudagraphs_backend_step_matches_eager() -> None:
    # The backend a GTX 1080 compiles with. On CPU tensors torch skips the CUDA graphs and runs
    # the traced aot-autograd graphs as they are: this checks the tracing, the fade as a tensor
    # input, and the copies TrainSteps makes of outputs that outlive the next compiled call.
    G, D = tiny_models()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager = make_steps(G, D, False)
    graphs = make_steps(G2, D2, True, compile_backend="cudagraphs")
    fade = torch.tensor(0.3, dtype=F64)
    for value in (0.3, 0.7):
        fade.fill_(value)
        s_e, g_e = run_step(eager, fade)
        s_c, g_c = run_step(graphs, fade)
        for k in s_e:
            torch.testing.assert_close(s_c[k], s_e[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g_c, g_e, rtol=1e-9, atol=1e-12)
    assert_same_params(D2, D)
    assert_same_params(G2, G)
    # one trace per (network, grad mode), shared by both fade values
    assert counters["stats"]["unique_graphs"] == 4


def test_unknown_compile_backend_is_refused() -> None:
    G, D = tiny_models()
    with pytest.raises(ValueError, match="compile_backend must be one of"):
        make_steps(G, D, True, compile_backend="eager")


@pytest.mark.parametrize(
    "flag, backend, device, capability, want",
    [
        (None, "auto", "cpu", None, (False, "inductor")),
        (True, "auto", "cpu", None, (True, "inductor")),
        (None, "auto", "cuda", (8, 0), (True, "inductor")),
        (None, "auto", "cuda", (7, 0), (True, "inductor")),
        # GTX 1080: no inductor; cudagraphs only when asked (no GPU measurement shows it faster)
        (None, "auto", "cuda", (6, 1), (False, "cudagraphs")),
        (True, "auto", "cuda", (6, 1), (True, "cudagraphs")),
        (None, "cudagraphs", "cuda", (6, 1), (True, "cudagraphs")),
        (None, "cudagraphs", "cuda", (9, 0), (True, "cudagraphs")),
        (False, "cudagraphs", "cuda", (6, 1), (False, "cudagraphs")),
        (False, "inductor", "cuda", (6, 1), (False, "inductor")),
        (False, "cudagraphs", "cpu", None, (False, "cudagraphs")),
    ],
)
def test_resolve_compile(flag, backend, device, capability, want) -> None:
    assert resolve_compile(flag, backend, device, capability) == want


@pytest.mark.parametrize(
    "flag, backend, device, capability, message",
    [
        (True, "inductor", "cuda", (6, 1), "inductor needs a GPU of compute capability 7.0"),
        (None, "inductor", "cuda", (6, 1), "this one is 6.1"),
        (True, "cudagraphs", "cpu", None, "CUDA graphs need a CUDA device"),
        (None, "cudagraphs", "cpu", None, "training runs on cpu"),
        (None, "fast", "cpu", None, "--compile-backend must be"),
    ],
)
def test_resolve_compile_refuses_what_cannot_run(flag, backend, device, capability, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_compile(flag, backend, device, capability)


def test_set_tf32_sets_convolutions_and_matmuls_and_back() -> None:
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    before = [f.allow_tf32 for f in flags]
    try:
        set_tf32(True)
        on = [f.allow_tf32 for f in flags]
        set_tf32(False)
        off = [f.allow_tf32 for f in flags]
        conv = getattr(torch.backends.cudnn, "conv", None)
        if conv is not None and hasattr(conv, "fp32_precision"):  # torch 2.9+: the same, seen anew
            assert conv.fp32_precision != "tf32" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    finally:
        for f, v in zip(flags, before):
            f.allow_tf32 = v
    assert on == [True, True] and off == [False, False]


@pytest.mark.parametrize("tf32, device, capability, note", [
    (False, "cpu", None, None),
    (False, "cuda", (6, 1), None),
    (True, "cuda", (8, 0), None),
    (True, "cuda", (9, 0), None),
    (True, "cpu", None, "no effect on cpu"),
    (True, "cuda", (6, 1), "compute capability 6.1; TF32 needs 8.0+"),
    (True, "cuda", (7, 5), "compute capability 7.5; TF32 needs 8.0+"),
])
def test_tf32_note_only_where_tf32_changes_nothing(tf32, device, capability, note) -> None:
    line = tf32_note(tf32, device, capability)
    assert line is None if note is None else (note in line and "\n" not in line)


def test_lazy_penalty_scales_by_k() -> None:
    # With gp_every=2 the first step takes 2 * lambda * gp; the second takes none.
    G, D = tiny_models()
    lazy = make_steps(copy.deepcopy(G), copy.deepcopy(D), False, gp_every=2)
    twice = make_steps(copy.deepcopy(G), copy.deepcopy(D), False, gp_lambda=20.0)
    none = make_steps(copy.deepcopy(G), copy.deepcopy(D), False, gp_lambda=0.0)
    real, z_d, alpha, _ = batch()
    lazy.d_step(real, z_d, alpha, 8, 1.0, step=0)
    twice.d_step(real, z_d, alpha, 8, 1.0)
    assert_same_params(lazy.D, twice.D, 1e-12)
    stats = lazy.d_step(real, z_d, alpha, 8, 1.0, step=1)
    none.D.load_state_dict(twice.D.state_dict())
    none.G.load_state_dict(lazy.G.state_dict())
    none.d_step(real, z_d, alpha, 8, 1.0)
    assert_same_params(lazy.D, none.D, 1e-12)
    assert stats["gp"] > 0  # the latest penalty taken is still reported


def test_changing_fade_does_not_recompile() -> None:
    G, D = tiny_models(torch.float32)
    steps = make_steps(G, D, True)
    fade = torch.tensor(0.1)
    real, z_d, alpha, z_g = (t.float() for t in batch())
    steps.d_step(real, z_d, alpha, 8, fade)
    steps.g_step(z_g, 8, fade)
    graphs = counters["stats"]["unique_graphs"]
    # G without and with grad, D with weight grads and frozen: fastpggan/training/steps.py
    assert graphs == 4
    for value in (0.4, 0.75, 0.999):
        fade.fill_(value)
        steps.d_step(real, z_d, alpha, 8, fade)
        steps.g_step(z_g, 8, fade)
    assert counters["stats"]["unique_graphs"] == graphs


def test_tiny_run_with_compile(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["train", "--res", "8", "--out", str(out), "--fade-kimg", "0.016", "--stable-kimg", "0.016", "--total-kimg", "0.048", "--compile",
            "--fmap-base", "32", "--fmap-max", "8", "--latent-dim", "8", "--batch", "8",
            "--num-faces", "32", "--workers", "0", "--grid", "2", "--no-tensorboard",
            "--tick-kimg", "0.016"]
    assert main(args) == 0
    log = (out / "log.jsonl").read_text()
    assert '"compile"' in log and list(out.glob("ckpt-*.pt")) and list(out.glob("grid-8px-*.png"))


@pytest.mark.parametrize("res,gp_resolution,upscale", [(8, "full", 1), (4, "full", 2), (4, "current", 1)])
def test_d_step_equals_the_reference_loss(res, gp_resolution, upscale) -> None:
    # TrainSteps backpropagates the loss pass by pass (to free each graph early); the sum of the
    # parts must be the loss of fastpggan.loss.d_loss_wgan_gp, with the penalty's norm taken
    # w.r.t. the full 8x8 image (upscale R/res) or the current one as asked.
    from fastpggan.loss import d_loss_wgan_gp

    G, D = tiny_models()
    D_ref = copy.deepcopy(D)
    steps = make_steps(G, D, False, gp_resolution=gp_resolution)
    real, z_d, alpha, _ = batch(res=res)
    fade = torch.tensor(0.6, dtype=F64) if res > 4 else 1.0
    stats = steps.d_step(real, z_d, alpha, res, fade)
    with torch.no_grad():
        fake = G(z_d, res, fade)
    assert_d_step_is(D, stats, D_ref, *d_loss_wgan_gp(D_ref, real, fake, fade, alpha=alpha, upscale=upscale))


def assert_d_step_is(D, stats, D_ref, loss, want) -> None:
    """``D`` after one SGD step (lr 0.1, :func:`make_steps`) and the step's ``stats`` are those
    of the reference ``loss`` (and its statistics ``want``) on ``D_ref``, to 1e-12."""
    loss.backward()
    with torch.no_grad():
        for p in D_ref.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert_same_params(D, D_ref, 1e-12)
    for k in want:
        torch.testing.assert_close(stats[k], want[k], rtol=1e-12, atol=1e-12)


def test_d_step_scores_held_out_reals_before_the_update_and_trains_as_without_them() -> None:
    G, D = tiny_models()
    D_ref, G_ref = copy.deepcopy(D), copy.deepcopy(G)
    real, z_d, alpha, _ = batch()
    held = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    fade = torch.tensor(0.6, dtype=F64)
    with torch.no_grad():
        want = D(held, fade).mean()  # the critic before this step's update
    stats = make_steps(G, D, False).d_step(real, z_d, alpha, 8, fade, heldout=held)
    torch.testing.assert_close(stats["d_heldout"], want, rtol=1e-12, atol=1e-12)
    plain = make_steps(G_ref, D_ref, False).d_step(real, z_d, alpha, 8, fade)
    assert "d_heldout" not in plain
    assert_same_params(D, D_ref, 0.0)  # scoring them trained nothing
    for k in plain:
        assert torch.equal(stats[k], plain[k])
