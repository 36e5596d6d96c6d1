"""What a run does when things go wrong, end to end on tiny CPU runs: a second process on the
run folder, resumes with changed settings, numbers that cannot train, losses that turn
non-finite, a full disk, a damaged checkpoint, leftovers of interrupted writes, and generate
with more samples than fit in memory as one image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastpggan import atomic
from fastpggan.__main__ import main
from fastpggan.training.checkpoint import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--fmap-base", "64", "--fmap-max", "16", "--latent-dim", "16", "--batch", "8",
        "--num-faces", "32", "--workers", "0", "--grid", "2", "--no-tensorboard"]
RUN8 = ["train", "--res", "8", "--fade-kimg", "0.008", "--stable-kimg", "0.008", "--total-kimg", "0.024", *TINY]

pytestmark = pytest.mark.usefixtures("one_thread")


def _events(out: Path, name: str) -> list[dict]:
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "event" and r["event"] == name]


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


# --- one run per folder ---------------------------------------------------------------------
def test_second_process_on_the_same_out_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = textwrap.dedent("""
        import sys, time
        from fastpggan.training.runlock import RunLock
        RunLock(sys.argv[1]).acquire(); print("held", flush=True); time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in out.iterdir())
        for extra in ([], ["--resume", "auto"]):
            assert main([*RUN8, "--out", str(out), *extra]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"in use by another run (pid {holder.pid} on " in err[0]
        assert sorted(p.name for p in out.iterdir()) == before  # no config, cache, log
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_and_leftover_temp_files_are_cleaned_at_start(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    (out / ".lock").write_text(json.dumps({"pid": dead, "host": atomic.HOST, "started": 1.7e9}))
    leftovers = [out / f".ckpt-00000.008kimg-4px.pt.tmp-{atomic.HOST}-{dead}", out / ".config.json.tmp",
                 out / f".grid-4px-00000.008kimg.png.tmp-{atomic.HOST}-{dead}"]
    for p in leftovers:
        p.write_bytes(b"partial")
    cache_tmp = out / "cache" / f".0123456789abcdef0123.tmp-{atomic.HOST}-{dead}"
    cache_tmp.mkdir(parents=True)
    assert main([*RUN8, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"took over the lock of {out} left by a run that is no longer running (pid {dead}" in said
    assert "removed 3 leftover temp files" in said
    assert not any(p.exists() for p in [*leftovers, cache_tmp]) and not (out / ".lock").exists()


# --- resume policy ---------------------------------------------------------------------------
def test_resume_applies_allowed_changes_records_them_and_refuses_the_rest(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out)]) == 0
    log_before = (out / "log.jsonl").read_text()
    # refused: one line, exit 2, nothing written
    assert main([*RUN8, "--out", str(out), "--seed", "5", "--total-kimg", "0.04", "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed 5 (checkpoint: 0)" in err[0] and "another --out" in err[0]
    assert (out / "log.jsonl").read_text() == log_before
    # allowed: the learning rate really changes in both optimizers, and is recorded
    assert main([*RUN8, "--out", str(out), "--lr", "0.004", "--total-kimg", "0.04", "--tick-kimg", "0.008",
                 "--resume", "auto"]) == 0
    ev = _events(out, "resume")[-1]
    assert set(ev["changed"]["lr"][1].values()) == {0.004} and ev["changed"]["total_kimg"] == [0.024, 0.04]
    assert ev["changed"]["tick_kimg"] == [50.0, 0.008] and set(ev["changed"]) == {"lr", "total_kimg", "tick_kimg"}
    # the new tick interval counts from where the run was (a tick at 32 images, not at 50 kimg)
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in recs if r["kind"] == "tick"] == [0.032]
    state = load_checkpoint(list_checkpoints(out)[-1])
    assert state["progress"]["images"] == 40
    for opt in ("opt_g", "opt_d"):
        assert {g["lr"] for g in state[opt]["param_groups"]} == {0.004}
    assert "lr 0.001,1024:0.0015 -> 0.004" in capsys.readouterr().out


def test_shorter_schedule_than_the_run_has_seen_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out), "--total-kimg", "0.056"]) == 0
    assert main([*RUN8, "--out", str(out), "--resume", "auto"]) == 2  # total back to 0.024: before where the run is
    assert "the new schedule ends at" in capsys.readouterr().err


# --- numbers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--fade-kimg", "inf"), ("--stable-kimg", "nan"),
    ("--total-kimg", "1e999"), ("--ema-beta", "nan"), ("--tick-kimg", "1e-9"), ("--log-kimg", "0"),
    ("--metric-every", "nan"), ("--metric-every", "-1"), ("--seed", str(2**70)), ("--grid", "100000"), ("--latent-dim", str(10**12)),
    ("--num-faces", str(10**12)), ("--batch", "99999999"), ("--keep-ckpts", "0"),
])
def test_numbers_that_cannot_train_exit_2_before_any_write(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
    assert not out.exists()


# --- non-finite losses -----------------------------------------------------------------------
def test_non_finite_losses_stop_with_the_last_finite_checkpoint(tmp_path, capsys, monkeypatch):
    from fastpggan.training.steps import TrainSteps

    real_g_step = TrainSteps.g_step
    calls = {"n": 0}

    def diverging(self, *a, **k):  # the run's weights blow up at the 6th step
        calls["n"] += 1
        if calls["n"] == 6:
            with torch.no_grad():
                next(self.G.parameters()).fill_(float("nan"))
        return real_g_step(self, *a, **k)

    monkeypatch.setattr(TrainSteps, "g_step", diverging)
    out = tmp_path / "run"
    args = [*RUN8, "--out", str(out), "--tick-kimg", "0.008", "--ckpt-ticks", "1", "--keep-ckpts", "2",
            "--total-kimg", "0.104"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite losses" in err[0] and "ckpt-00000.040kimg-8px.pt" in err[0]
    ckpts = list_checkpoints(out)
    assert [p.name for p in ckpts][-1] == "ckpt-00000.040kimg-8px.pt"  # the step before the NaN
    for p in ckpts:  # every checkpoint kept is finite
        s = load_checkpoint(p)
        assert all(torch.isfinite(t).all() for m in ("G", "D", "G_ema") for t in s[m].values())
    assert _events(out, "non-finite losses")


# --- disk full -------------------------------------------------------------------------------
def test_disk_full_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    real_open = atomic._open_temp
    written: list[str] = []

    def filling(path):
        if len([w for w in written if "ckpt-" in w]) >= 2 and "ckpt-" in path.name:
            raise OSError(28, "No space left on device")
        written.append(path.name)
        return real_open(path)

    monkeypatch.setattr(atomic, "_open_temp", filling)
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out), "--tick-kimg", "0.008", "--ckpt-ticks", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastpggan train: error: disk full") and str(out) in err[0]
    assert "last good checkpoint" in err[0]
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if ".tmp" in n]
    assert len(list_checkpoints(out)) == 2 and all(load_checkpoint(p) for p in list_checkpoints(out))


# --- damaged checkpoints -----------------------------------------------------------------------
def test_resume_auto_falls_back_from_a_damaged_checkpoint_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out)]) == 0
    newest = list_checkpoints(out)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([*RUN8, "--out", str(out), "--total-kimg", "0.04", "--resume", "auto"]) == 0
    said = capsys.readouterr().out
    assert f"{newest.name}' is damaged" in said and "resuming from the newest good one" in said
    assert (out / (newest.name + ".damaged")).exists()
    # generate refuses a damaged file with one line
    bad = out / (newest.name + ".damaged")
    assert main(["generate", "--ckpt", str(bad), "--out", str(tmp_path / "s.png")]) == 2
    assert "damaged" in capsys.readouterr().err


# --- generate with bounded memory ------------------------------------------------------------
@pytest.fixture
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("g") / "run"
    assert main([*RUN8, "--out", str(out)]) == 0
    return list_checkpoints(out)[-1]


def test_generate_many_samples_writes_several_sheets(ckpt, tmp_path, capsys, monkeypatch):
    import fastpggan.sampling as sheets
    from PIL import Image

    monkeypatch.setattr(sheets, "MAX_SHEET_SIDE", 256)  # 4 x 4 cells of 64 px per sheet
    out = tmp_path / "s.png"
    assert main(["generate", "--ckpt", str(ckpt), "--n", "40", "--out", str(out)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["s-001.png", "s-002.png", "s-003.png"]
    assert Image.open(tmp_path / "s-001.png").size == (4 * 65 - 1, 4 * 65 - 1)
    assert Image.open(tmp_path / "s-003.png").size == (4 * 65 - 1, 2 * 65 - 1)
    assert "3 sheets" in capsys.readouterr().out
    # sample i is the same whatever --n: the first sheet of 40 is the sheet of 16
    assert main(["generate", "--ckpt", str(ckpt), "--n", "16", "--out", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").tobytes() == Image.open(tmp_path / "s-001.png").tobytes()


def test_generate_walk_too_large_is_refused_with_the_limit(ckpt, tmp_path, capsys, monkeypatch):
    import fastpggan.sampling as sheets

    monkeypatch.setattr(sheets, "MAX_GIF_BYTES", 1 << 20)
    out = tmp_path / "w.gif"
    assert main(["generate", "--ckpt", str(ckpt), "--n", "16", "--interpolate", "50", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--interpolate" in err and "limit" in err and not out.exists()


@pytest.mark.parametrize("argv", [["--n", "0"], ["--n", str(10**12)], ["--seed", "-1"], ["--interpolate", "0"]])
def test_generate_numbers_are_checked(ckpt, tmp_path, capsys, argv):
    assert main(["generate", "--ckpt", str(ckpt), "--out", str(tmp_path / "x.gif" if "--interpolate" in argv
                 else tmp_path / "x.png"), *argv]) == 2
    assert argv[0] in capsys.readouterr().err


# --- printable paths ----------------------------------------------------------------------------
def test_paths_that_are_not_text_print_on_a_strict_terminal(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(data / f"ok{i}.png")
    with open(os.fsencode(str(data)) + b"/bad-\xff.png", "wb") as f:
        f.write(b"not an image")
    out = os.fsencode(str(tmp_path)) + b"/run-\xfe"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8:strict", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), *RUN8[1:], "--data", str(data), "--out", os.fsdecode(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bad-\\xff.png" in r.stdout and "run-\\xfe" in r.stdout


def test_disk_full_while_caching_the_data_exits_1_and_leaves_no_run(tmp_path, capsys, monkeypatch):
    def full(fd, offset, length):  # the OS: no room for the image cache
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full: could not write the image cache" in err[0]
    assert not out.exists()


# --- stop signals ------------------------------------------------------------------------------
@pytest.mark.parametrize("signame", ["SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"])
def test_every_stop_signal_checkpoints_like_sigterm(tmp_path, capsys, monkeypatch, signame):
    import signal

    import fastpggan.training.run as run

    sig = getattr(signal, signame)
    before = signal.getsignal(sig)
    real_ema, sent = run.ema_update, []

    def ema_then_signal(*a):  # a real signal to this process, during the first step
        real_ema(*a)
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(run, "ema_update", ema_then_signal)
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out)]) == 128 + sig
    said = [ln for ln in capsys.readouterr().out.splitlines() if "stopped by" in ln]
    assert len(said) == 1 and said[0].startswith(f"stopped by {signame}: checkpoint ")
    (ckpt,) = list_checkpoints(out)
    assert load_checkpoint(ckpt)["progress"]["step"] == 1
    assert _events(out, f"stopped by {signame}") and not (out / ".lock").exists()
    assert signal.getsignal(sig) == before  # handlers restored


def test_sighup_to_a_training_process_writes_a_checkpoint(tmp_path):
    import signal

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), *RUN8[1:], "--total-kimg", "100", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("4px from "):  # the first phase has begun: training is under way
                break
        proc.send_signal(signal.SIGHUP)  # the terminal closed: an SSH session ended
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGHUP, err[-2000:]
    assert rest.count("stopped by SIGHUP: checkpoint ") == 1 and not err.strip()
    (ckpt,) = list_checkpoints(out)
    assert load_checkpoint(ckpt)["progress"]["images"] > 0 and not (out / ".lock").exists()


def test_sigterm_while_caching_the_images_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import signal

    from fastpggan.data import dataset

    real_item, calls = dataset._Decode.__getitem__, []

    def item_then_signal(self, i):
        calls.append(i)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_item(self, i)

    monkeypatch.setattr(dataset._Decode, "__getitem__", item_then_signal)
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main([*RUN8, "--out", str(out), "--cache-dir", str(cache)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped by SIGTERM before training started" in err[0], err
    assert len(calls) < 32 and not out.exists() and list(cache.iterdir()) == []


# --- the decoded-image cache is checked --------------------------------------------------------
def _image_folder(folder: Path, n: int = 6) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (30 * i, 255 - 30 * i, 7 * i)).save(folder / f"im{i}.png")
    return folder


def _damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif how == "zero-filled":
        path.write_bytes(bytes(size))
    else:  # the pixels zeroed, the .npy header intact
        arr = __import__("numpy").load(path, mmap_mode="r+")
        arr[:] = 0
        arr.flush()
        del arr


@pytest.mark.parametrize("how", ["truncated", "zero-filled", "pixels zeroed"])
def test_a_damaged_image_cache_is_rebuilt_from_the_data_with_one_line(tmp_path, how):
    import numpy as np

    from fastpggan.data import load_data, open_source

    source = open_source(str(_image_folder(tmp_path / "data")))
    cache = tmp_path / "cache"
    first = load_data(source, 8, cache)
    want = {r: np.array(a) for r, a in first.levels.items()}
    assert not [n for n in first.report() if "is damaged (" in n]
    (folder,) = cache.iterdir()
    _damage(folder / "res8.npy", how)
    again = load_data(source, 8, cache)
    warned = [line for line in again.report() if "is damaged (" in line]
    assert len(warned) == 1 and "res8.npy" in warned[0] and "rebuilt it from" in warned[0], warned
    assert all(np.array_equal(again.levels[r], want[r]) for r in want)  # the real pixels again
    assert [line for line in load_data(source, 8, cache).report() if "is damaged (" in line] == []
    if how == "pixels zeroed":  # a rank after rank 0 checks sizes and headers, not the pixels
        _damage(folder / "res8.npy", how)
        unchecked = load_data(source, 8, cache, verify_contents=False)
        assert not [n for n in unchecked.report() if "is damaged (" in n] and not unchecked.levels[8].any()


def test_a_damaged_cache_whose_data_is_gone_is_refused_and_resume_never_trains_on_it(tmp_path, capsys):
    data = _image_folder(tmp_path / "data", 8)
    out = tmp_path / "run"
    args = [*RUN8, "--data", str(data), "--out", str(out)]
    assert main(args) == 0
    (cached,) = (out / "cache").iterdir()
    _damage(cached / "res4.npy", "pixels zeroed")
    ckpts = list_checkpoints(out)
    for p in data.iterdir():  # the images replaced in place: same names, sizes and dates
        st = p.stat()
        p.write_bytes(b"\0" * st.st_size)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    assert main([*args, "--total-kimg", "0.04", "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "res4.npy's contents do not match their checksum" in err[0], err
    assert "cannot be rebuilt" in err[0] and list_checkpoints(out) == ckpts


# --- checkpoints usable where they should be -------------------------------------------------------
def test_non_finite_weights_are_refused_by_every_command(ckpt, tmp_path, capsys):
    from fastpggan.training.checkpoint import CHECKSUM, save_checkpoint

    state = load_checkpoint(ckpt)
    del state[CHECKSUM]
    next(iter(state["G_ema"].values())).fill_(float("nan"))
    bad = save_checkpoint(state, tmp_path / "nan.pt")  # a valid checksum over NaN weights
    for argv in (["generate", "--ckpt", str(bad), "--out", str(tmp_path / "s.png")],
                 ["evaluate", "--ckpt", str(bad), "--metric", "diversity"],
                 ["export", "--ckpt", str(bad), "--out", str(tmp_path / "g.pt2")],
                 [*RUN8, "--out", str(tmp_path / "run2"), "--total-kimg", "0.04", "--resume", str(bad)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds non-finite weights (NaN or inf in G_ema." in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]


def test_non_finite_losses_after_a_resume_into_a_new_folder_name_the_resumed_checkpoint(ckpt, tmp_path, capsys,
                                                                                       monkeypatch):
    from fastpggan.training.steps import TrainSteps

    real_g_step = TrainSteps.g_step

    def diverging(self, *a, **k):
        with torch.no_grad():
            next(self.G.parameters()).fill_(float("nan"))
        return real_g_step(self, *a, **k)

    monkeypatch.setattr(TrainSteps, "g_step", diverging)
    out = tmp_path / "run2"
    argv = [*RUN8, "--out", str(out), "--total-kimg", "0.104", "--log-kimg", "0.008", "--resume", str(ckpt)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite losses" in err[0] and "no checkpoint was written yet" not in err[0]
    assert "since this run resumed at 0.024 kimg: resume again from the checkpoint it started from" in err[0]


def test_a_triton_trained_checkpoint_samples_on_a_cpu(ckpt, tmp_path):
    from fastpggan.training.checkpoint import CHECKSUM, save_checkpoint

    state = load_checkpoint(ckpt)
    del state[CHECKSUM]
    state["config"]["impl"] = "triton"  # as a GPU run records it
    tri = save_checkpoint(state, tmp_path / "triton.pt")
    code = textwrap.dedent("""
        import sys
        from fastpggan.__main__ import main
        tri, out = sys.argv[1], sys.argv[2]
        print("auto", main(["generate", "--ckpt", tri, "--n", "4", "--out", out + "/auto.png"]))
        print("reference", main(["generate", "--ckpt", tri, "--n", "4", "--out", out + "/ref.png", "--impl", "reference"]))
        print("triton", main(["generate", "--ckpt", tri, "--n", "4", "--out", out + "/tri.png", "--impl", "triton"]))
    """)
    # Triton's CPU interpreter off: on this machine the kernels cannot run, as on any CPU-only one
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "0", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", code, str(tri), str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=300)
    codes = [line for line in r.stdout.splitlines() if not line.startswith("wrote ")]
    assert codes == ["auto 0", "reference 0", "triton 2"], r.stdout + r.stderr[-2000:]
    assert (tmp_path / "auto.png").read_bytes() == (tmp_path / "ref.png").read_bytes()
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastpggan generate: error: --impl triton: "), err
    assert not (tmp_path / "tri.png").exists()


# --- places to write, checked before any work ----------------------------------------------------
def _nothing_left(tmp_path: Path, *keep: str) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_a_cache_dir_that_is_a_file_or_under_one_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for cache, says in ((tmp_path / "file", "exists and is not a folder"),
                        (tmp_path / "file" / "sub", "is a file, not a folder")):
        assert main([*RUN8, "--out", str(tmp_path / "run"), "--cache-dir", str(cache)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--cache-dir" in err[0] and says in err[0], err
    _nothing_left(tmp_path, "file")


def test_a_read_only_out_or_cache_dir_is_one_line(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access, real_statvfs = os.access, os.statvfs

    class _ReadOnly:  # what statvfs says of a filesystem mounted read-only
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    monkeypatch.setattr(os, "statvfs", lambda p: _ReadOnly() if Path(p) == ro else real_statvfs(p))
    for argv, flag in (([*RUN8, "--out", str(ro / "run")], "--out"),
                       ([*RUN8, "--out", str(tmp_path / "run"), "--cache-dir", str(ro / "c")], "--cache-dir")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag} " in err[0] and "not writable (a read-only filesystem on" in err[0], err
    _nothing_left(tmp_path, "ro")
    assert list(ro.iterdir()) == []


def test_a_disk_full_at_the_start_leaves_no_lock_and_no_folder(tmp_path, capsys, monkeypatch):
    def full(fd, data, offset):  # the lock's first write: the disk has no room
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    assert main([*RUN8, "--out", str(tmp_path / "a" / "b" / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot take the lock of run folder" in err[0] and "no space left" in err[0], err
    _nothing_left(tmp_path)


def test_a_cache_folder_that_refuses_writes_mid_build_is_one_line(tmp_path, capsys, monkeypatch):
    import numpy as np

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np.lib.format, "open_memmap", refused)
    cache = tmp_path / "cache"
    assert main([*RUN8, "--out", str(tmp_path / "run"), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the image cache in" in err[0] and "Permission denied" in err[0], err
    _nothing_left(tmp_path, "cache")
    assert list(cache.iterdir()) == []


# --- data reports that say what happened ---------------------------------------------------------
def test_zip_members_of_one_name_after_the_first_are_skipped_and_counted(tmp_path):
    import io
    import warnings
    import zipfile

    import numpy as np
    from PIL import Image

    from fastpggan.data import load_data, open_source

    def png(colour) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buf, "PNG")
        return buf.getvalue()

    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate names it writes
        for i in range(10):
            z.writestr("same.png", png((10 * i, 0, 0)))
            z.writestr(f"other{i}.png", png((0, 10 * i, 0)))
    source = open_source(str(path))
    assert len(source) == 11 and source.duplicates == ("same.png",) * 9
    data = load_data(source, 8)
    assert data.count == 11
    assert np.array_equal(data.levels[8][source.names.index("same.png")], np.zeros((8, 8, 3), np.uint8))  # the first
    (warned,) = [line for line in data.report() if "zip members" in line]
    assert warned.startswith("warning: skipped 9 zip members whose name an earlier member already has")
    assert "same.png 10 times" in warned


def test_too_few_images_for_the_run_get_one_warning(tmp_path, capsys):
    from fastpggan.commands.train import MANY_EPOCHS, _few_images

    assert main([*RUN8, "--out", str(tmp_path / "a"), "--num-faces", "4"]) == 0
    said = capsys.readouterr().out.splitlines()
    (warned,) = [ln for ln in said if ln.startswith("warning: the data holds")]
    assert warned.startswith("warning: the data holds 4 images, fewer than one minibatch at 4px (8)")
    assert main([*RUN8, "--out", str(tmp_path / "b")]) == 0  # 24 images shown of 32: fine
    assert "warning: the run shows" not in capsys.readouterr().out
    many = ["--num-faces", "8", "--total-kimg", "0.45"]  # each face about 56 times
    assert main([*RUN8, "--out", str(tmp_path / "c"), *many]) == 0
    said = capsys.readouterr().out
    assert said.count("warning: the run shows each of its 8 training images about 56 times; past 50") == 1
    assert said.count("--aug ada (README, Small datasets)") == 1  # the one line names it
    assert main([*RUN8, "--out", str(tmp_path / "d"), *many, "--aug", "fixed", "--aug-p", "0.1"]) == 0
    said = capsys.readouterr().out
    assert said.count("warning: the run shows each of its 8") == 1 and "--aug ada" not in said
    assert _few_images(100, 8, 100 * MANY_EPOCHS, "off") is None  # at the line: no warning
    assert _few_images(100, 8, 100 * MANY_EPOCHS + 1, "off") is not None


def test_an_unlistable_folder_is_called_a_folder_and_names_stay_on_one_line(tmp_path, monkeypatch):
    from PIL import Image

    from fastpggan.data import load_data, open_source

    root = _image_folder(tmp_path / "data", 3)
    (root / "locked").mkdir()
    Image.new("RGB", (8, 8)).save(root / "locked" / "x.png")
    (root / "bad\nname.png").write_bytes(b"not an image")
    real_scandir = os.scandir

    def scandir(path):  # what a folder without read permission does (root would read it anyway)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = load_data(open_source(str(root)), 8).report()
    assert report[0].startswith("data: 3 images from")
    assert report[1] == "warning: skipped 1 files that are not readable images (e.g. bad\\nname.png: " \
        + report[1].split(": ", 2)[2]
    assert report[2].startswith("warning: skipped 1 folder(s) that cannot be listed, with everything in "
                                "them (e.g. locked: PermissionError: Permission denied)")
    assert all("\n" not in line for line in report) and len(report) == 3


# --- smaller things ----------------------------------------------------------------------------------
def test_resume_with_a_folder_says_so_and_names_resume_auto(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*RUN8, "--out", str(tmp_path / "other"), "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder, not a checkpoint file" in err[0], err
    assert f"--resume auto --out {out}" in err[0] and not (tmp_path / "other").exists()


@pytest.mark.parametrize("spec", ["8:16,8:32", "16,4:8,4:8"])
def test_a_resolution_given_twice_in_batch_is_refused(tmp_path, capsys, spec):
    out = tmp_path / "run"
    assert main([*RUN8, "--out", str(out), "--batch", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    px = "8px" if spec.startswith("8:") else "4px"
    assert len(err) == 1 and f"--batch gives {px} more than once" in err[0], err
    assert not out.exists()


def test_an_average_slower_than_the_run_gets_one_warning(tmp_path, capsys):
    # RUN8: 24 images at batch 8 = 3 steps; beta 0.5 averages over 2 steps, 0.9 over 10
    assert main([*RUN8, "--out", str(tmp_path / "a"), "--ema-beta", "0.5"]) == 0
    assert "--ema-beta" not in capsys.readouterr().out
    assert main([*RUN8, "--out", str(tmp_path / "b"), "--ema-beta", "0.9"]) == 0
    said = [ln for ln in capsys.readouterr().out.splitlines() if "--ema-beta" in ln]
    assert len(said) == 1 and said[0].startswith("warning: --ema-beta 0.9 averages the generator over about 10 steps")
    assert "more than the 3 steps of the whole run" in said[0]


def test_sigterm_to_the_whole_job_while_workers_decode_is_one_line(tmp_path):
    import signal

    code = textwrap.dedent("""
        import sys, time
        from fastpggan.data import dataset
        real = dataset._Decode.__getitem__
        def slow(self, i):  # decoding that takes a while, in the worker processes
            if i == 0:
                print("decoding", flush=True)
            time.sleep(0.05)
            return real(self, i)
        dataset._Decode.__getitem__ = slow
        from fastpggan.__main__ import main
        sys.exit(main(sys.argv[1:]))
    """)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    argv = [*RUN8, "--num-faces", "400", "--workers", "2", "--out", str(out)]
    # a session of its own: the signal goes to its process group, as a scheduler sends it to a job
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "decoding"
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM before training started" in lines[0], err[-2000:]
    assert not out.exists()
