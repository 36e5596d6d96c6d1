"""Multi-process training (gloo on the CPU): gradient averaging with the penalty's double
backward, per-rank data, a signal on one rank, and torchrun runs across a growth step with
resume 2 -> 2, 1 -> 2 and 2 -> 1 processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fastpggan.__main__ import main
from fastpggan.data import load_data, open_source, step_batch
from fastpggan.loss import d_loss_wgan_gp
from fastpggan.networks import Discriminator, Generator
from fastpggan.training import TrainConfig, Trainer, TrainSteps, latest_checkpoint, list_checkpoints, load_checkpoint
from fastpggan.training.distributed import Distributed, param_digest, rank_seed

ROOT = Path(__file__).resolve().parents[1]
# res 8 = a 4px phase (16 images) and an 8px phase (16 fading, 16 stable): a growth step.
TINY = ["--res", "8", "--fade-kimg", "0.016", "--stable-kimg", "0.016", "--total-kimg", "0.048", "--tick-kimg", "0.016", "--log-kimg", "0.008",
        "--ckpt-ticks", "1", "--keep-ckpts", "10", "--fmap-base", "64", "--fmap-max", "16",
        "--latent-dim", "16", "--num-faces", "32", "--workers", "0", "--grid", "2",
        "--no-tensorboard", "--device", "cpu"]
HALF = 4  # per-rank batch in the gradient test


pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int) -> Distributed:
    """In a spawned worker: the environment torchrun would set, then the process group."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    return Distributed.from_env("cpu")


def test_each_rank_takes_its_slice_of_one_global_draw():
    idx0, flip0 = step_batch(3, 56, 50, 4, rank=0)
    idx1, flip1 = step_batch(3, 56, 50, 4, rank=1)
    idx, flip = step_batch(3, 56, 50, 8)
    assert torch.equal(torch.cat([idx0, idx1]), idx) and torch.equal(torch.cat([flip0, flip1]), flip)
    assert not torch.equal(idx0, idx1)
    assert rank_seed(5, 0) == 5 and len({rank_seed(5, r) for r in range(4)}) == 4


# --- gradient averaging ------------------------------------------------------------------------
def _models() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    return Generator(16, 16, 64, 16, impl="reference"), Discriminator(16, 64, 16, 4, impl="reference")


def _steps(G: Generator, D: Discriminator, grad_sync=None) -> TrainSteps:
    adam = dict(lr=1e-3, betas=(0.0, 0.99))
    return TrainSteps(G, D, torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam),
                      grad_sync=grad_sync)


def _half(h: int) -> tuple[torch.Tensor, ...]:
    """Half ``h`` of a global batch of 2 * HALF: reals at 8px, D latents, penalty mixes, G latents."""
    g = torch.Generator().manual_seed(1)
    batch = (torch.rand(2 * HALF, 3, 8, 8, generator=g) * 2 - 1, torch.randn(2 * HALF, 16, generator=g),
             torch.rand(2 * HALF, 1, 1, 1, generator=g), torch.randn(2 * HALF, 16, generator=g))
    return tuple(t[h * HALF:(h + 1) * HALF] for t in batch)


FADE = 0.3  # 8px block fading in on a 16px model: both from-RGB paths used, the 16px one not


def _grads(m: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in m.parameters()]


def _grad_sync_worker(rank: int, port: int, out: str) -> None:
    dist = _join(rank, port)
    try:
        G, D = _models()
        steps = _steps(G, D, dist.sync_grads)
        real, z_d, alpha, z_g = _half(rank)
        steps.d_step(real, z_d, alpha, 8, torch.tensor(FADE))
        d_grads, d_after = _grads(D), {k: v.clone() for k, v in D.state_dict().items()}
        steps.g_step(z_g, 8, torch.tensor(FADE))
        torch.save({"d_grads": d_grads, "d_after": d_after, "g_grads": _grads(G)}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.close()


def _assert_same(expected: list, got: list) -> None:
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert (e is None) == (g is None)
        if e is not None:
            assert torch.equal(e, g)


def test_two_ranks_average_the_per_rank_gradients_penalty_included(tmp_path):
    """Minibatch-stddev groups stay within each rank's batch, so a 2-rank step equals one
    process computing each half's loss (penalty and its double backward included) separately
    and averaging the gradients: bitwise, for D and then for G."""
    mp.spawn(_grad_sync_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    per_half = []
    for h in range(2):
        G, D = _models()
        real, z_d, alpha, _ = _half(h)
        _steps(G, D).d_step(real, z_d, alpha, 8, torch.tensor(FADE))
        per_half.append(_grads(D))
    expected = [None if a is None else (a + b) / 2 for a, b in zip(*per_half)]
    assert any(e is None for e in expected) and sum(e is not None for e in expected) > 10
    for r in ranks:
        _assert_same(expected, r["d_grads"])
    for k, v in ranks[0]["d_after"].items():
        assert torch.equal(v, ranks[1]["d_after"][k]), k

    # The same average, up to rounding, as one backward through the mean of the halves' losses.
    G, D = _models()
    losses = []
    for h in range(2):
        real, z_d, alpha, _ = _half(h)
        with torch.no_grad():
            fake = G(z_d, 8, torch.tensor(FADE))
        # TrainSteps' default penalty is the authors': norm w.r.t. the 16x16 image, k = 16 / 8.
        losses.append(d_loss_wgan_gp(D, real, fake, torch.tensor(FADE), alpha=alpha, upscale=2)[0])
    ((losses[0] + losses[1]) / 2).backward()
    for e, p in zip(expected, D.parameters()):
        if e is not None:
            torch.testing.assert_close(p.grad, e)

    per_half = []
    for h in range(2):
        G, D = _models()
        D.load_state_dict(ranks[0]["d_after"])
        _steps(G, D).g_step(_half(h)[3], 8, torch.tensor(FADE))
        per_half.append(_grads(G))
    expected = [None if a is None else (a + b) / 2 for a, b in zip(*per_half)]
    assert sum(e is not None for e in expected) > 10
    for r in ranks:
        _assert_same(expected, r["g_grads"])


# --- a signal on one rank ------------------------------------------------------------------------
def _tiny_config(out: Path) -> TrainConfig:
    return TrainConfig(resolution=8, num_faces=16, out=str(out), fade_kimg=0.032, stable_kimg=0.032, total_kimg=0.096, batch={4: 8, 8: 8},
                       latent_dim=16, fmap_base=64, fmap_max=16, grid=2, tick_kimg=1.0, log_kimg=1.0,
                       tensorboard=False, progress=False)


def _signal_worker(rank: int, port: int, out: str) -> None:
    dist = _join(rank, port)
    try:
        t = Trainer(_tiny_config(Path(out) / "run"), load_data(open_source(None, 16), 8), dist=dist)
        if rank == 1:  # SIGTERM to this rank alone, during its third step
            import fastpggan.training.run as run

            orig = run.ema_update

            def ema_then_signal(*a):
                orig(*a)
                if t.progress.step == 2:
                    os.kill(os.getpid(), signal.SIGTERM)

            run.ema_update = ema_then_signal
        result = t.run()
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(
            {"result": result, "by": t.stopped_by, "step": t.progress.step}))
    finally:
        dist.close()


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    mp.spawn(_signal_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # Rank 1 votes to stop after step 3; every rank reads the votes one step later.
    assert ranks[0] == ranks[1] == {"result": "interrupted", "by": int(signal.SIGTERM), "step": 4}
    (ckpt,) = list_checkpoints(tmp_path / "run")
    state = load_checkpoint(ckpt)
    assert state["progress"]["step"] == 4 and state["progress"]["images"] == 4 * 2 * 4
    assert state["ranks"]["world_size"] == 2 and len(set(state["ranks"]["param_sha256"])) == 1


# --- torchrun ------------------------------------------------------------------------------------
def _torchrun(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "train.py"), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_ranks_all_stop_when_another_run_holds_the_folder(tmp_path):
    from fastpggan.training.runlock import RunLock

    out = tmp_path / "run"
    with RunLock(out):  # this test's process holds the folder: the 2-process run must not start
        proc = _torchrun("--out", str(out), "--batch", "8", *TINY, cwd=tmp_path, ok=False)
        assert f"in use by another run (pid {os.getpid()} on " in proc.stderr
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


def test_torchrun_refuses_a_batch_that_does_not_divide_over_the_processes(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun("--out", str(out), "--batch", "8,8:7", *TINY, cwd=tmp_path, ok=False)
    line = "train: error: --batch 7 does not divide over 2 processes (--batch is the global minibatch, split evenly over them); at 8 px"
    assert proc.stderr.count(line) == 2  # one line from each process
    assert "exitcode  : 2" in proc.stderr and "fastpggan/training" not in proc.stderr  # ours: no traceback
    assert not out.exists()  # nothing written
    assert Distributed(0, 4).local_batch(16) == 4 and Distributed().local_batch(7) == 7


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(latest_checkpoint(out))
    return {f"{m}.{k}": v for m in ("G", "D", "G_ema") for k, v in state[m].items()}


def test_torchrun_two_processes_across_growth_then_resume(tmp_path, capsys):
    a = tmp_path / "a"
    proc = _torchrun("--out", str(a), "--batch", "8", *TINY, cwd=tmp_path)
    # Rank 0 alone prints and writes: one config, one log, one set of checkpoints and grids.
    assert proc.stdout.count("training 8px on 2 cpu processes") == 1 and proc.stdout.count("done:") == 1
    names = sorted(p.name for p in a.iterdir())
    # A tick at 16 images (still 4px: the authors' schedule takes one more 4px step there), the
    # 4px phase end at 24, a tick at 32, the end at 48.
    ckpts = ["ckpt-00000.016kimg-4px.pt", "ckpt-00000.024kimg-8px.pt", "ckpt-00000.032kimg-8px.pt",
             "ckpt-00000.048kimg-8px.pt"]
    grids = ["grid-4px-00000.016kimg.png", "grid-4px-00000.024kimg.png", "grid-8px-00000.032kimg.png",
             "grid-8px-00000.048kimg.png"]
    assert names == sorted(["cache", "config.json", "log.jsonl", *ckpts, *grids])
    recs = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    events = [r["event"] for r in recs if r["kind"] == "event"]
    assert events == ["start", "done"] and recs[0]["world_size"] == 2
    logs = [r for r in recs if r["kind"] == "log"]
    assert [r["kimg"] for r in logs] == [0.008 * i for i in range(1, 7)] and {r["batch"] for r in logs} == {8}
    assert [r["res"] for r in recs if r["kind"] == "phase_end"] == [4, 8]
    # Every rank held bitwise the same weights: each rank's digest, gathered into the
    # checkpoint, equals the digest of the weights rank 0 saved.
    state = load_checkpoint(a / ckpts[-1])
    assert state["progress"]["images"] == 48 and state["progress"]["step"] == 6
    assert state["ranks"]["param_sha256"] == [param_digest(state[m] for m in ("G", "D", "G_ema"))] * 2
    assert len(state["rng"]["gen_ranks"]) == 2

    # Resume under 2 processes from the checkpoint at the end of 4px: the same weights as
    # the run that was not interrupted.
    b = tmp_path / "b"
    proc = _torchrun("--out", str(b), "--batch", "8", "--resume", str(a / ckpts[1]), *TINY, cwd=tmp_path)
    assert "resuming from" in proc.stdout and "reseeded" not in proc.stdout
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k

    # 2 -> 1 process: continues from the same checkpoint, latents reseeded (the note says so).
    c = tmp_path / "c"
    assert main(["train", "--out", str(c), "--batch", "8", "--resume", str(a / ckpts[1]), *TINY]) == 0
    assert "note: resumed from 2 to 1 processes; latents reseeded" in capsys.readouterr().out
    state = load_checkpoint(latest_checkpoint(c))
    assert state["progress"]["images"] == 48 and state["progress"]["step"] == 3 + 3
    assert "ranks" not in state and "gen_ranks" not in state["rng"]
    assert json.loads((c / "log.jsonl").read_text().splitlines()[0])["event"] == "resume"


def test_torchrun_resumes_a_single_process_checkpoint(tmp_path):
    single = tmp_path / "single"
    assert main(["train", "--out", str(single), "--batch", "8", *TINY]) == 0
    first = list_checkpoints(single)[0]
    assert first.name == "ckpt-00000.016kimg-4px.pt"
    two = tmp_path / "two"
    proc = _torchrun("--out", str(two), "--batch", "8", "--resume", str(first), *TINY, cwd=tmp_path)
    assert proc.stdout.count("note: resumed from 1 to 2 processes; latents reseeded") == 1
    state = load_checkpoint(latest_checkpoint(two))
    assert state["progress"]["images"] == 48 and state["progress"]["step"] == 2 + 4
    assert len(set(state["ranks"]["param_sha256"])) == 1


@pytest.mark.slow
def test_torchrun_with_aug_ada_moves_p_alike_and_resumes_exactly(tmp_path):
    # p moves from the signal summed over both ranks (fast: --aug-kimg 0.01); a resume from
    # the end of 4px under 2 processes ends with the uninterrupted run's weights and p.
    aug = ["--aug", "ada", "--aug-p", "0.2", "--aug-kimg", "0.01", "--batch", "8", "--holdout", "16"]
    a, b = tmp_path / "a", tmp_path / "b"
    _torchrun("--out", str(a), *aug, *TINY, cwd=tmp_path)
    end = load_checkpoint(latest_checkpoint(a))
    assert end["augment"]["p"].item() != 0.2
    assert end["ranks"]["param_sha256"] == [param_digest(end[m] for m in ("G", "D", "G_ema"))] * 2
    _torchrun("--out", str(b), *aug, "--resume", str(a / "ckpt-00000.024kimg-8px.pt"), *TINY, cwd=tmp_path)
    again = load_checkpoint(latest_checkpoint(b))
    assert torch.equal(again["augment"]["p"], end["augment"]["p"])
    wa, wb = _final_weights(a), _final_weights(b)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
