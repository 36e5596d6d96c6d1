"""Command line: --help, and every bad input gets one line on stderr, exit code 2, no writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastpggan.__main__ import main
from fastpggan.training.checkpoint import FORMAT, checkpoint_name, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--fmap-base", "64", "--fmap-max", "16", "--latent-dim", "16", "--batch", "8",
        "--num-faces", "32", "--workers", "0", "--grid", "2", "--no-tensorboard"]


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def finished_run(tmp_path_factory) -> Path:
    """A finished 8px run (one checkpoint per phase end)."""
    out = tmp_path_factory.mktemp("run8") / "run"
    assert main(["train", "--res", "8", "--out", str(out), "--fade-kimg", "0.008", "--stable-kimg", "0.008",
                 "--total-kimg", "0.024", *TINY]) == 0
    return out


def _exit_code(argv: list[str]) -> int:
    """``main``'s return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def _bad_inputs(tmp: Path, run8: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty").mkdir()
    (tmp / "afile").write_text("x")
    ckpt8 = sorted(run8.glob("ckpt-*.pt"))[-1]
    evil = tmp / "evil" / checkpoint_name(8, 4)
    evil.parent.mkdir()

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    torch.save({"format": FORMAT, "G": RunsCode()}, evil)
    out = str(tmp / "out")
    return {
        "res not a power of two": (["--res", "12", "--out", out], "power of two"),
        "res too small": (["--res", "4", "--out", out], "power of two from 8 to 1024"),
        "res too large": (["--res", "2048", "--out", out], "power of two from 8 to 1024"),
        "res not a number": (["--res", "big", "--out", out], "invalid int value"),
        "missing data": (["--data", str(tmp / "nope"), "--out", out], "does not exist"),
        "empty data": (["--data", str(tmp / "empty"), "--out", out], "holds no files"),
        "fade negative": (["--fade-kimg", "-3", "--out", out], "--fade-kimg must be a finite number in [0, "),
        "stable negative": (["--stable-kimg", "-1", "--out", out], "--stable-kimg must be a finite number in [0, "),
        "total zero": (["--total-kimg", "0", "--out", out], "--total-kimg must be a finite number in (0, "),
        "no fade nor stable": (["--fade-kimg", "0", "--stable-kimg", "0", "--out", out], "cannot both be 0"),
        "total too short": (["--res", "32", "--total-kimg", "2000", "--out", out], "ends before 32px is reached"),
        "old flag": (["--kimg-per-phase", "8", "--out", out], "unrecognized arguments: --kimg-per-phase"),
        "unwritable out": (["--out", str(tmp / "afile" / "run")], "not writable"),
        "out is a file": (["--out", str(tmp / "afile")], "not a folder"),
        "bad batch": (["--batch", "4:x", "--out", out], "--batch"),
        "batch res not a power of two": (["--batch", "6:8", "--out", out], "--batch"),
        "other resolution": (["--res", "16", "--resume", str(ckpt8), "--out", out], "--res 16 (checkpoint: 8): it sets the networks' shapes"),
        "missing checkpoint": (["--resume", str(tmp / "no.pt"), "--out", out], "does not exist"),
        "crafted pickle": (["--res", "8", "--resume", str(evil), "--out", out], "refusing to load"),
        "run exists": (["--res", "8", "--out", str(run8)], "already holds a run"),
        "bad lr": (["--lr", "0", "--out", out], "--lr must be one rate"),
        "bad lr override": (["--lr", "0.001,1024:x", "--out", out], "--lr must be one rate"),
        "bad gp resolution": (["--gp-resolution", "half", "--out", out], "invalid choice: 'half'"),
        "bad ema": (["--ema-beta", "1", "--out", out], "--ema-beta"),
        "cudagraphs on the CPU": (["--compile-backend", "cudagraphs", "--device", "cpu", "--out", out],
                                  "CUDA graphs need a CUDA device"),
    }


def test_each_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, finished_run, capsys):
    cases = _bad_inputs(tmp_path, finished_run)
    before, before_run = _tree(tmp_path), _tree(finished_run)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the default --out (runs/...) would land here
    try:
        for name, (argv, expect) in cases.items():
            code = _exit_code(["train", *TINY, *argv])  # the case's flags win
            lines = capsys.readouterr().err.strip().splitlines()
            assert code == 2, name
            assert len(lines) == 1 and expect in lines[0], (name, lines)
    finally:
        os.chdir(cwd)
    assert _tree(tmp_path) == before and _tree(finished_run) == before_run
    assert not (tmp_path / "pwned").exists()


def test_all_unreadable_folder_exits_2_and_leaves_no_run(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("no images here")
    out = tmp_path / "run"
    assert main(["train", "--res", "8", "--data", str(tmp_path / "junk"), "--out", str(out), *TINY]) == 2
    assert "no readable images" in capsys.readouterr().err
    assert not out.exists()


def test_no_cuda_is_a_usage_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_py_help_and_bad_input_in_a_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    help_ = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True, env=env)
    assert help_.returncode == 0
    for flag in ("--res", "--data", "--out", "--fade-kimg", "--stable-kimg", "--total-kimg", "--batch",
                 "--resume", "--seed", "--device", "--fmap-max", "--fmap-base", "--lr", "--no-mirror",
                 "--gp-resolution", "--compile-backend"):
        assert flag in help_.stdout
    assert "--kimg-per-phase" not in help_.stdout and "--final-kimg" not in help_.stdout
    assert "(default: 256)" in help_.stdout and "(default: 600, the authors')" in help_.stdout
    assert "(default: 12000, the authors')" in help_.stdout and "1024:0.0015" in help_.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "train.py"), "--res", "12", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "power of two" in bad.stderr and not (tmp_path / "o").exists()


def test_resume_auto_continues_and_other_flags_parse(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--res", "8", "--out", str(out), "--fade-kimg", "0.008", "--stable-kimg", "0.008",
            "--no-mirror", "--seed", "3", "--lr", "0.002,8:0.003", "--gp-resolution", "current", *TINY]
    assert main(args + ["--total-kimg", "0.024", "--resume", "auto"]) == 0  # nothing to resume yet: starts fresh
    first = sorted(p.name for p in out.glob("ckpt-*.pt"))
    # A longer total continues the finished run at the final resolution.
    assert main(args + ["--total-kimg", "0.04", "--resume", "auto"]) == 0
    assert "resuming from" in capsys.readouterr().out
    after = sorted(p.name for p in out.glob("ckpt-*.pt"))
    assert after[-1] == "ckpt-00000.040kimg-8px.pt" and after != first
    phases = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    phases = [(r["res"], r["lr"]) for r in phases if r["kind"] == "phase"]
    assert phases == [(4, 0.002), (8, 0.003), (8, 0.003)]  # the resumed run logs its phase too
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["gp_resolution"] == "current" and cfg["lr"]["8"] == 0.003 and cfg["total_kimg"] == 0.04


def test_train_says_which_fused_ops_once_and_warns_nothing_on_cpu(tmp_path, capsys, recwarn):
    out = tmp_path / "run"
    assert main(["train", "--res", "8", "--out", str(out), "--fade-kimg", "0.008", "--stable-kimg", "0.008",
                 "--total-kimg", "0.024", "--device", "cpu", *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    fused = [line for line in lines if line.startswith("fused ops: ")]
    assert fused == ["fused ops: PyTorch reference (CPU; the Triton kernels run on CUDA GPUs)"]
    assert lines.index(fused[0]) < 5  # among the opening lines
    assert [str(w.message) for w in recwarn if issubclass(w.category, RuntimeWarning)] == []


@pytest.mark.parametrize("flags, want", [
    ([], (False, "cudagraphs")),
    (["--compile"], (True, "cudagraphs")),
    (["--compile-backend", "cudagraphs"], (True, "cudagraphs")),
    (["--no-compile"], (False, "cudagraphs")),
])
def test_compile_on_a_simulated_gtx_1080(monkeypatch, tmp_path, flags, want):
    import argparse

    from fastpggan.commands import train as cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 1))
    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    args = parser.parse_args(["--res", "8", "--out", str(tmp_path / "r"), "--impl", "reference", *flags])
    cfg = cli.resolve(args)
    assert (cfg.device, cfg.compile, cfg.compile_backend) == ("cuda", *want)
    args = parser.parse_args(["--res", "8", "--out", str(tmp_path / "r"), "--impl", "reference",
                              "--compile-backend", "inductor"])
    with pytest.raises(cli.UsageError, match="inductor needs a GPU of compute capability 7.0"):
        cli.resolve(args)
    assert not (tmp_path / "r").exists()


def test_usage_errors_reports_the_kinds_given_as_one_usage_line() -> None:
    from fastpggan.errors import UsageError, usage_errors

    with pytest.raises(UsageError) as e:
        with usage_errors():
            raise ValueError("--x must be positive, got -1")
    assert str(e.value) == "--x must be positive, got -1" and e.value.__cause__ is None
    with pytest.raises(UsageError) as e:
        with usage_errors(RuntimeError, prefix="--impl triton: "):
            raise RuntimeError("no GPU")
    assert str(e.value) == "--impl triton: no GPU"
    with pytest.raises(UsageError) as e:  # a UsageError keeps its own line: no second prefix
        with usage_errors(prefix="--y: "):
            raise UsageError("--y is bad")
    assert str(e.value) == "--y is bad"
    with pytest.raises(KeyError):  # other kinds are not input errors: they pass unchanged
        with usage_errors(ValueError):
            raise KeyError("bug")
